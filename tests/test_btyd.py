"""BTYD baselines (training/btyd.py): the RFM summary on a hand-built log, and the fitted models against a
world simulated from BG/NBD's own story, whose holdout purchases they must forecast."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from funnelcast.training.btyd import MODELS, fit_btyd, predict_btyd, rfm_summary
from funnelcast.training.metrics import expected_calibration_error

END = pd.Timestamp("2024-03-01", tz="UTC")


def _log(rows):
    return pd.DataFrame(rows, columns=["customer_id", "timestamp", "event_type", "amount"]).assign(
        timestamp=lambda f: pd.to_datetime(f["timestamp"], utc=True, format="ISO8601"))


def test_rfm_summary_counts_purchase_days_in_periods():
    events = _log([
        ("a", "2024-01-01 09:00", "order", 10.0),
        ("a", "2024-01-01 18:00", "order", 5.0),  # the same day: one purchase of 15
        ("a", "2024-01-15", "order", 20.0),
        ("a", "2024-01-29", "order", np.nan),  # no amount: a purchase of 0
        ("a", "2024-02-05", "page_view", np.nan),  # not a purchase
        ("a", "2024-03-01", "order", 99.0),  # at the end: not in the calibration period
        ("b", "2024-02-16", "order", 7.0),
    ])
    s = rfm_summary(events, END, purchase_types=["order"])
    assert list(s.index) == ["a", "b"]
    # a: purchase days 1 Jan, 15 Jan, 29 Jan; the period's last day is 29 February.
    assert s.loc["a"].tolist() == pytest.approx([2.0, 4.0, 59 / 7, 10.0])  # repeat days' mean spend (20 + 0) / 2
    assert s.loc["b"].tolist() == pytest.approx([0.0, 0.0, 13 / 7, 0.0])
    assert rfm_summary(events, END, period_days=1.0).loc["a", "T"] == 59.0
    # Without purchase_types every row is a purchase: the page view is then a purchase day.
    assert rfm_summary(events, END).loc["a", "frequency"] == 3.0


def _bg_nbd_world(n: int, seed: int, r=0.6, alpha=4.0, a=0.8, b=2.5, weeks=39.0, holdout=39.0):
    """Customers born (a first purchase) uniformly over the first 12 weeks, buying again at gamma(r, alpha)
    Poisson rates per week and dropping out after each repeat purchase with a beta(a, b) probability:
    BG/NBD's own story."""
    rng = np.random.default_rng(seed)
    birth = rng.uniform(0, 12, n)
    rate = rng.gamma(r, 1 / alpha, n)
    drop = rng.beta(a, b, n)
    times = [birth]
    now, alive = birth.copy(), np.ones(n, dtype=bool)
    while alive.any():  # one step per purchase number, over every customer at once
        now = now + rng.exponential(1 / np.maximum(rate, 1e-12))
        alive &= now < weeks + holdout
        times.append(np.where(alive, now, np.nan))
        alive &= rng.random(n) >= drop  # after each repeat purchase, gone for good with probability p
    when = np.concatenate(times)
    who = np.tile(np.arange(n), len(times))
    keep = ~np.isnan(when)
    start = pd.Timestamp("2024-01-01", tz="UTC")
    events = pd.DataFrame({"customer_id": [f"c{i}" for i in who[keep]],
                           "timestamp": start + pd.to_timedelta(when[keep] * 7, unit="D"),
                           "event_type": "order", "amount": rng.gamma(4.0, 10.0, keep.sum())})
    return events, start + pd.Timedelta(weeks=weeks), start + pd.Timedelta(weeks=weeks + holdout)


def test_btyd_models_forecast_a_bg_nbd_world():
    events, end, holdout_end = _bg_nbd_world(15_000, seed=3)
    summary = rfm_summary(events, end)
    fit = fit_btyd(summary)
    assert set(fit.models) == set(MODELS) and fit.errors == {} and fit.gamma_gamma is not None
    assert set(fit.notes) <= {*MODELS, "gamma_gamma"}  # a fit that needed the penalised retry says so
    later = events.loc[(events["timestamp"] >= end) & (events["timestamp"] < holdout_end)]
    later_days = later.assign(day=later["timestamp"].dt.floor("D")).drop_duplicates(["customer_id", "day"])
    bought = summary.index.isin(later_days["customer_id"]).astype(int)
    purchases = later_days.groupby("customer_id").size().reindex(summary.index).fillna(0).to_numpy()
    spend = later.groupby("customer_id")["amount"].sum().reindex(summary.index).fillna(0).to_numpy()
    predictions = predict_btyd(fit, summary, horizon_days=39 * 7)
    for name, p in predictions.items():
        assert p.index.equals(summary.index)
        assert p["p_any"].between(0, 1).all() and p["p_alive"].between(0, 1).all()
        assert (p["p_any"] <= p["p_alive"] + 1e-9).all()  # only a customer still alive can buy
        assert (p["expected_purchases"] >= p["p_any"] - 1e-9).all()  # E[N] >= P(N >= 1)
    # BG/NBD is this world's own model: its parameters come back, P(any purchase) is calibrated against
    # what the world did next, and the totals are close. (MBG/NBD and Pareto/NBD are misspecified here:
    # they let a customer with no repeat purchase be gone, which this world never does.)
    assert fit.params()["bg_nbd"] == pytest.approx({"r": 0.6, "alpha": 4.0, "a": 0.8, "b": 2.5}, rel=0.15)
    bg = predictions["bg_nbd"]
    assert expected_calibration_error(bought, bg["p_any"].to_numpy()) < 0.02
    assert bg["expected_purchases"].sum() == pytest.approx(purchases.sum(), rel=0.05)
    assert bg["expected_spend"].sum() == pytest.approx(spend.sum(), rel=0.1)


def test_unknown_model_and_a_model_that_cannot_fit_are_named(capsys):
    with pytest.raises(ValueError, match=r"unknown BTYD model\(s\) \['gamma'\]"):
        fit_btyd(pd.DataFrame({"frequency": [1.0], "recency": [1.0], "T": [2.0], "monetary_value": [1.0]}), ["gamma"])
    nobody_returns = pd.DataFrame({"frequency": [0.0] * 50, "recency": [0.0] * 50, "T": np.linspace(1, 30, 50),
                                   "monetary_value": [0.0] * 50})
    fit = fit_btyd(nobody_returns)
    assert fit.gamma_gamma is None and fit.gamma_gamma_error  # no repeat spender to fit spend on
    # Identical order values: Gamma-Gamma's optimiser fails unpenalised, and lifetimes prints scipy's result
    # to stdout when it does; it must stay out of stdout (`funnelcast train --json` prints there).
    flat = pd.DataFrame({"frequency": [1.0] * 40, "recency": np.linspace(1, 20, 40), "T": [30.0] * 40,
                         "monetary_value": [5.0] * 40})
    flat_fit = fit_btyd(flat, ["bg_nbd"])
    assert "gamma_gamma" in flat_fit.notes or flat_fit.gamma_gamma_error  # the unpenalised fit failed, and says so
    assert capsys.readouterr().out == ""
    for name in MODELS:
        assert (name in fit.models) != (name in fit.errors)  # each either fitted or says why not

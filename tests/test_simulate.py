"""The simulator: deterministic by seed, realistic in shape, and its truth is the real probability."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from funnelcast.features.events import validate_customers, validate_events
from funnelcast.features.funnel import FunnelConfig
from funnelcast.features.simulate import simulate
from funnelcast.features.snapshots import build_training_set, snapshot_cutoffs


@pytest.fixture(scope="module")
def sim(config):
    return simulate(3000, config, start="2024-01-01", end="2025-07-01", seed=11)


@pytest.fixture(scope="module")
def joined(sim, config):
    table = build_training_set(sim.events, sim.customers, config, data_end=sim.end).frame
    return table.merge(sim.truth, on=["customer_id", "cutoff"], how="left", suffixes=("", "_true"))


def test_same_seed_same_data_and_other_seed_other_data(config):
    a = simulate(200, config, start="2024-01-01", end="2024-06-01", seed=5)
    b = simulate(200, config, start="2024-01-01", end="2024-06-01", seed=5)
    c = simulate(200, config, start="2024-01-01", end="2024-06-01", seed=6)
    pd.testing.assert_frame_equal(a.events, b.events)
    pd.testing.assert_frame_equal(a.truth, b.truth)
    assert not a.events["timestamp"].equals(c.events["timestamp"])


def test_output_passes_the_event_contract_unchanged(sim, config):
    events, summary = validate_events(sim.events, config, as_of=sim.end)
    assert summary.dropped == {} and summary.altered == {}
    assert len(events) == len(sim.events)
    customers, _ = validate_customers(sim.customers, config)
    assert set(events["customer_id"]) <= set(customers["customer_id"])
    assert sim.events["timestamp"].min() >= sim.start and sim.events["timestamp"].max() < sim.end


def test_journeys_have_the_ingredients_of_real_ones(sim, config):
    ev = sim.events
    types = ev["event_type"].astype(str)
    purchases = ev[types.isin(config.purchase_event_types)]
    assert (purchases["amount"] > 0).all() and ev.loc[~types.isin(config.purchase_event_types), "amount"].isna().all()
    repeaters = purchases.groupby("customer_id").size()
    assert (repeaters >= 2).sum() > 50, "repeat purchases"
    for t in ("referral", "support_ticket", "loyalty_offer", "subscription_cancelled", "email_opened", "outbound_call"):
        assert (types == t).sum() > 0, t
    direction = ev["channel"].astype(str).map(config.channels)
    assert 0.2 < (direction == "inbound").mean() < 0.8, "a mix of inbound and outbound touches"
    per_customer = ev.groupby("customer_id").size()
    assert per_customer.std() > per_customer.mean() * 0.5, "heterogeneous customers"
    monthly = ev.set_index("timestamp").resample("MS").size()
    assert monthly.max() > 1.3 * monthly.iloc[3:].min(), "seasonality / growth"


def test_an_opened_email_was_sent_earlier_that_day(sim):
    ev = sim.events.assign(day=sim.events["timestamp"].dt.floor("D"), customer_id=sim.events["customer_id"].astype(str))
    opened = ev[ev["event_type"] == "email_opened"]
    sent = ev[ev["event_type"] == "email_sent"]
    assert len(opened) > 100
    # The k-th open of a customer's day is preceded by at least k sends that day.
    key = ["customer_id", "day"]
    o = opened.assign(k=opened.groupby(key).cumcount())
    pairs = o.merge(sent[key + ["timestamp"]], on=key, suffixes=("", "_sent"))
    earlier = pairs[pairs["timestamp_sent"] < pairs["timestamp"]].groupby(key + ["k"]).size()
    need = o.set_index(key + ["k"]).index
    assert (earlier.reindex(need, fill_value=0).to_numpy() >= need.get_level_values("k") + 1).all()


def test_a_cancellation_is_the_last_event_of_its_day(sim):
    ev = sim.events.assign(day=sim.events["timestamp"].dt.floor("D"), customer_id=sim.events["customer_id"].astype(str))
    last = ev.sort_values("timestamp").groupby(["customer_id", "day"]).tail(1)
    cancelled = ev[ev["event_type"] == "subscription_cancelled"]
    assert len(cancelled) > 5
    assert set(cancelled.index) <= set(last.index)


def test_truth_covers_the_config_cutoffs_and_its_stage_matches_observed_stage(sim, joined, config):
    assert sorted(sim.truth["cutoff"].unique()) == snapshot_cutoffs(sim.start, sim.end, config)
    assert joined["p_next_stage"].notna().sum() + joined["p_churn"].notna().sum() > 0
    assert (joined["stage"].astype(str) == joined["stage_true"].astype(str)).all()


@pytest.mark.parametrize(("label", "truth"), [
    ("convert_label", "p_next_stage"), ("churn_label", "p_churn"),
    ("convert_label", "p_next_stage_given_history"), ("churn_label", "p_churn_given_history"),
])
def test_truth_is_calibrated_against_realised_labels(joined, label, truth):
    """The exact truth predicts what the simulator then does: means and deciles match observed rates.
    The same holds for the truth given history (a wrong Bayes filter would be miscalibrated)."""
    d = joined[joined[label].notna()]
    y = d[label].astype(float).to_numpy()
    p = d[truth].to_numpy()
    assert not np.isnan(p).any()
    se = np.sqrt(p.mean() * (1 - p.mean()) / len(p))
    assert abs(y.mean() - p.mean()) < 4 * se + 0.005
    bins = pd.qcut(p, 5, duplicates="drop")
    by = pd.DataFrame({"y": y, "p": p, "bin": bins}).groupby("bin", observed=True)[["y", "p"]].mean()
    assert (by["y"] - by["p"]).abs().max() < 0.04
    assert roc_auc_score(y, p) > 0.8


@pytest.mark.parametrize(("label", "truth"), [("convert_label", "p_next_stage"), ("churn_label", "p_churn")])
def test_history_truth_is_blurrier_than_hidden_state_truth(joined, label, truth):
    """Knowing the hidden state beats knowing only the history: higher AUC and lower log loss, and the
    history truth is the hidden truth averaged over what the history leaves open (same mean)."""
    from sklearn.metrics import log_loss

    d = joined[joined[label].notna()]
    y = d[label].astype(float).to_numpy()
    hidden, history = d[truth].to_numpy(), d[f"{truth}_given_history"].to_numpy()
    assert roc_auc_score(y, hidden) > roc_auc_score(y, history) + 0.005
    assert log_loss(y, np.clip(hidden, 1e-9, 1 - 1e-9)) < log_loss(y, np.clip(history, 1e-9, 1 - 1e-9))
    assert abs(hidden.mean() - history.mean()) < 0.01
    assert np.corrcoef(hidden, history)[0, 1] > 0.7


def test_latent_traits_matter_beyond_what_behaviour_shows(joined):
    """Customers with identical recent behaviour still differ in true risk: the task is not trivial."""
    d = joined[joined["churn_label"].notna()]
    same = d[(d["count_activity_30d"] == 0) & (d["count_activity_90d"].between(3, 6))]
    assert len(same) > 30
    assert same["p_churn"].std() > 0.1


def test_explicit_churn_truth_is_calibrated(config):
    raw = config.model_dump(mode="json")
    raw["churn"]["definition"] = "explicit"
    cfg = FunnelConfig.model_validate(raw)
    s = simulate(3000, cfg, start="2024-01-01", end="2025-07-01", seed=2)
    t = build_training_set(s.events, s.customers, cfg, data_end=s.end).frame.merge(s.truth, on=["customer_id", "cutoff"])
    d = t[t["churn_label"].notna()]
    assert d["churn_label"].sum() > 30
    assert abs(d["churn_label"].astype(float).mean() - d["p_churn"].mean()) < 0.01
    assert abs(d["churn_label"].astype(float).mean() - d["p_churn_given_history"].mean()) < 0.01


def test_refuses_a_funnel_it_does_not_speak(config):
    raw = config.model_dump(mode="json")
    raw["stages"] = raw["stages"][:3]
    raw["churn"]["applies_from_stage"] = "consideration"
    raw["purchase_event_types"] = []
    cfg = FunnelConfig.model_validate(raw)
    with pytest.raises(ValueError, match="five-stage"):
        simulate(10, cfg)


def test_too_short_a_period_is_refused(config):
    with pytest.raises(ValueError, match="at least 30 days"):
        simulate(10, config, start="2024-01-01", end="2024-01-10")

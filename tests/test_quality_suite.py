"""The quality suite's own pieces (quality/): independent baseline features, the CDNOW loader, --set."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from funnelcast.features.errors import ConfigError
from funnelcast.features.funnel import config_from_dict
from quality import baselines, cdnow
from quality.run import SetError, apply_sets, parse_args, parse_sets

CONFIG = config_from_dict({
    "name": "tiny",
    "stages": [{"name": "visitor", "event_types": ["visit"]}, {"name": "buyer", "event_types": ["order"]}],
    "other_event_types": ["email"],
    "purchase_event_types": ["order"],
    "outbound_event_types": ["email"],
    "churn": {"applies_from_stage": "buyer"},
})
CUTOFF = pd.Timestamp("2024-04-01", tz="UTC")


def _events(rows):
    return pd.DataFrame(rows, columns=["customer_id", "timestamp", "event_type", "amount"]).assign(
        timestamp=lambda f: pd.to_datetime(f["timestamp"], utc=True, format="ISO8601"))


BEFORE = [
    ("x", "2024-01-01", "visit", np.nan),
    ("x", "2024-03-01", "order", 10.0),
    ("x", "2024-03-20", "visit", np.nan),
    ("x", "2024-03-20 15:00", "visit", np.nan),
    ("x", "2024-03-25", "email", np.nan),
]
AT_OR_AFTER = [
    ("x", "2024-04-01", "order", 50.0),  # exactly at the cutoff: not visible
    ("x", "2024-04-05", "order", 100.0),
    ("y", "2024-04-01", "visit", np.nan),  # y's only event is at the cutoff
]


def test_simple_features_exact_values_and_point_in_time():
    rows = pd.DataFrame({"customer_id": ["x", "y", "z", "x"],
                         "cutoff": [CUTOFF, CUTOFF, CUTOFF, pd.Timestamp("2024-03-15", tz="UTC")]},
                        index=[10, 11, 12, 13])
    full = baselines.simple_features(_events(BEFORE + AT_OR_AFTER), rows, CONFIG)
    past = baselines.simple_features(_events(BEFORE), rows, CONFIG)
    pd.testing.assert_frame_equal(full, past)  # events at or after the cutoff change nothing
    assert list(full.columns) == list(baselines.FEATURES) and list(full.index) == [10, 11, 12, 13]

    x = full.loc[10]
    expected = {
        "days_since_last_event": 7.0,  # the outbound email on 03-25
        "tenure_days": 91.0,  # 2024-01-01 → 2024-04-01
        "events_30d": 3.0,  # [03-02, 04-01): two visits on 03-20 and the email
        "events_90d": 4.0,  # [01-02, 04-01)
        "events_total": 5.0,
        "active_days_90d": 3.0,  # 03-01, 03-20, 03-25
        "purchases_total": 1.0,
        "purchases_90d": 1.0,
        "spend_total": 10.0,
        "days_since_last_purchase": 31.0,
        "days_since_last_own_activity": 12.0 - 15 / 24,  # the 15:00 visit on 03-20; the email is not the customer's
        "own_events_90d": 3.0,
        "events_prev_30d": 1.0,  # [02-01, 03-02): the order
        "trend_30d": 2.0,  # (3 + 1) / (1 + 1)
        "current_stage": 1.0,  # an order: the buyer stage
    }
    for name, value in expected.items():
        assert x[name] == pytest.approx(value), name

    earlier = full.loc[13]  # x at 2024-03-15
    assert earlier["days_since_last_event"] == pytest.approx(14.0)
    assert earlier["events_total"] == 2 and earlier["spend_total"] == 10.0 and earlier["current_stage"] == 1.0

    for unseen in (11, 12):  # y (only an event at the cutoff) and z (no events at all)
        row = full.loc[unseen]
        assert row["events_total"] == 0 and row["spend_total"] == 0 and row["trend_30d"] == 1.0
        assert np.isnan(row["days_since_last_event"]) and np.isnan(row["current_stage"])


def test_baselines_fit_and_predict_probabilities():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.random((400, len(baselines.FEATURES))) * 50, columns=list(baselines.FEATURES))
    X.iloc[::7, 0] = np.nan
    y = (X["events_30d"] + rng.normal(0, 5, 400) > 25).astype(int)
    p = baselines.baseline_probabilities(X, y, X.iloc[:50], seed=0, threads=1)
    assert set(p) == set(baselines.BASELINES)
    for probs in p.values():
        assert probs.shape == (50,) and np.all((probs >= 0) & (probs <= 1))
    with pytest.raises(ValueError, match="both classes"):
        baselines.fit_baselines(X, np.zeros(400, dtype=int))


CDNOW_TEXT = """customer_id  date number_of_cds  dollar_value
 00001 19970101  1   11.77
 00002 19970112  1   12.00
 00002 19970112  5   77.00
 00002 19970330  1   10.00
 00003 19970102  2   20.76
 00003 19970930  1   5.00
 00003 19971001  1   99.00
 00004 19971215  1   15.00
"""


def test_cdnow_loader_on_a_small_file(tmp_path):
    path = tmp_path / "CDNOW_master.txt"
    path.write_text(CDNOW_TEXT)
    ds = cdnow.load("1997-10-01", path=path)
    ev = ds.events
    assert ds.data_end == pd.Timestamp("1997-10-01", tz="UTC")
    assert ev["timestamp"].max() < ds.data_end and "00004" not in set(ev["customer_id"])
    got = {(r.customer_id, f"{r.timestamp:%Y%m%d}", r.event_type, r.amount) for r in ev.itertuples()}
    assert got == {
        ("00001", "19970101", "first_order", 11.77),
        ("00002", "19970112", "first_order", 89.0),  # two orders that day, merged, amounts summed
        ("00002", "19970330", "repeat_order", 10.0),
        ("00003", "19970102", "first_order", 20.76),
        ("00003", "19970930", "repeat_order", 5.0),
    }
    assert any("1 same-day orders merged" in n for n in ds.notes)
    assert any("2 order rows on or after 1997-10-01" in n for n in ds.notes)
    assert ds.truth is None and ds.config.stage_names == ("purchase", "loyalty")


def test_cdnow_loader_on_the_shipped_file():
    try:
        path = cdnow.cdnow_path()
    except cdnow.CdnowNotFound as exc:
        pytest.skip(f"the CDNOW file is not installed (pip install lifetimes, in the dev extra): {exc}")
    ds = cdnow.load()
    ev = ds.events
    assert ev["timestamp"].max() < pd.Timestamp("1997-10-01", tz="UTC")
    raw = pd.read_csv(path, sep=r"\s+", dtype=str)
    raw = raw[raw.iloc[:, 1] < "19971001"]
    days = raw.iloc[:, [0, 1]].drop_duplicates()
    assert len(ev) == len(days)
    assert any(f"{len(raw) - len(days):,} same-day orders merged" in n for n in ds.notes)
    assert not ev.duplicated(["customer_id", "timestamp"]).any()
    first = ev[ev["event_type"] == "first_order"]
    assert first["customer_id"].is_unique and set(first["customer_id"]) == set(ev["customer_id"])
    earliest = ev.groupby("customer_id")["timestamp"].min()
    assert (first.set_index("customer_id")["timestamp"] == earliest.loc[first["customer_id"]]).all()
    assert ev.loc[ev["event_type"] == "repeat_order", "amount"].sum() + first["amount"].sum() == pytest.approx(
        pd.to_numeric(raw.iloc[:, 3]).sum())


def test_set_parsing_and_applying():
    sets = parse_sets(["churn.horizon_days=30", "training.lightgbm.min_child_samples=100",
                       "features.windows_days=[7, 30]", "stages.0.name=browser", "source_timezone=null"])
    assert sets["churn.horizon_days"] == 30 and sets["features.windows_days"] == [7, 30]
    cfg = apply_sets(CONFIG, sets)
    assert cfg.churn.horizon_days == 30 and cfg.features.windows_days == [7, 30]
    assert cfg.training.lightgbm["min_child_samples"] == 100 and cfg.stage_names == ("browser", "buyer")
    assert CONFIG.churn.horizon_days == 60  # the original is untouched
    assert apply_sets(CONFIG, {}) is CONFIG
    with pytest.raises(SetError, match="key=value"):
        parse_sets(["churn.horizon_days"])
    with pytest.raises(SetError, match="no section"):
        apply_sets(CONFIG, parse_sets(["nothing.here=1"]))
    with pytest.raises(SetError, match="list index"):
        apply_sets(CONFIG, parse_sets(["stages.9.name=x"]))
    with pytest.raises(ConfigError, match="horizon_days"):
        apply_sets(CONFIG, parse_sets(["churn.horizon_days=-1"]))
    with pytest.raises(ConfigError, match="no_such_setting"):
        apply_sets(CONFIG, parse_sets(["churn.no_such_setting=1"]))


def test_runner_arguments():
    args = parse_args(["--datasets", "cdnow,sim-seed0", "--quick", "--set", "churn.horizon_days=30", "--out", "x"])
    assert args.datasets == ["cdnow", "sim-seed0"] and args.quick and args.parsed_sets == {"churn.horizon_days": 30}
    with pytest.raises(SystemExit):
        parse_args(["--datasets", "nope"])


def test_aims_of_a_row():
    from quality.run import _comparisons

    entry = {"test_positives": 400, "product": {"roc_auc": 0.80, "ece": 0.025},
             "logistic": {"roc_auc": 0.78}, "lightgbm": {"roc_auc": 0.79}, "truth": {"roc_auc": 0.85}}
    _comparisons(entry)
    assert entry["margin_over_best_baseline"] == pytest.approx(0.01) and entry["gap_to_truth"] == pytest.approx(0.05)
    assert entry["aims"] == {"auc_at_least_best_baseline": True, "ece_limit": 0.03, "ece_within_limit": True}
    entry = {"test_positives": 900, "product": {"error": "cannot train: too few cutoffs"}, "logistic": {"roc_auc": 0.7},
             "lightgbm": {"error": "x"}}
    _comparisons(entry)
    assert entry["margin_over_best_baseline"] is None and entry["best_baseline_roc_auc"] == 0.7
    assert entry["aims"] == {"auc_at_least_best_baseline": None, "ece_limit": 0.02, "ece_within_limit": None}


def test_ece_against_the_truth_sees_miscalibration_and_not_label_noise():
    from funnelcast.training.metrics import expected_calibration_error
    from quality.run import _per_stage, ece_vs_truth

    rng = np.random.default_rng(3)
    truth = rng.uniform(0.05, 0.6, 800)
    y = (rng.random(800) < truth).astype(int)
    assert ece_vs_truth(truth, truth) == 0.0
    assert expected_calibration_error(y, truth) > 0.02  # 800 outcomes: the truth's own ECE is mostly noise
    assert ece_vs_truth(truth * 0.8, truth) == pytest.approx(0.2 * truth.mean(), abs=1e-6)
    with_nan = truth.copy()
    with_nan[:10] = np.nan  # rows the truth does not cover are left out
    assert ece_vs_truth(truth * 0.8, with_nan) == pytest.approx(0.2 * truth[10:].mean(), abs=1e-6)
    test = pd.DataFrame({"stage": ["a"] * 400 + ["b"] * 400})
    out = _per_stage(test, y, {"product": np.r_[truth[:400], truth[400:] * 0.5], "truth": truth})
    assert out["a"]["product"]["ece_vs_truth"] == 0.0
    assert out["b"]["product"]["ece_vs_truth"] == pytest.approx(0.5 * truth[400:].mean(), abs=1e-6)
    assert "ece_vs_truth" not in out["a"]["truth"] and out["b"]["rows"] == 400


def _cutoff_entry(cutoff, product_auc, lr_auc, lgbm_auc, ece, positives=300, per_stage=None):
    from quality.run import _comparisons

    entry = {"test_cutoff": cutoff, "test_rows": 1000, "test_positives": positives,
             "product": {"roc_auc": product_auc, "ece": ece, "rows": 1000, "positives": positives}
             if product_auc is not None else {"error": "cannot train: no two classes"},
             "logistic": {"roc_auc": lr_auc, "ece": 0.01, "rows": 1000, "positives": positives},
             "lightgbm": {"roc_auc": lgbm_auc, "ece": 0.01, "rows": 1000, "positives": positives}}
    if per_stage is not None:
        entry["per_stage"] = per_stage
    _comparisons(entry)
    return entry


def test_test_cutoffs_are_the_latest_distinct_ones():
    from quality.run import test_cutoffs_of

    cutoffs = pd.Series(pd.to_datetime(["2024-01-01", "2024-03-01", "2024-02-01", "2024-03-01"], utc=True))
    assert test_cutoffs_of(cutoffs, 2) == [pd.Timestamp("2024-03-01", tz="UTC"), pd.Timestamp("2024-02-01", tz="UTC")]
    assert len(test_cutoffs_of(cutoffs, 5)) == 3  # fewer labelled cutoffs than asked: all of them


def test_cutoffs_combine_into_means_and_per_cutoff_margins():
    from quality.run import combine_cutoffs, table_rows

    stage = lambda ece: {"consideration": {"rows": 100, "positives": 10,  # noqa: E731
                                           "product": {"roc_auc": 0.7, "ece": ece, "ece_vs_truth": ece / 2}}}
    entries = [_cutoff_entry("c3", 0.80, 0.79, 0.75, 0.010, per_stage=stage(0.04)),
               _cutoff_entry("c2", 0.70, 0.66, 0.72, 0.030, per_stage=stage(0.02))]
    out = combine_cutoffs(entries, by_transition=True)
    assert out["product"]["roc_auc"] == pytest.approx(0.75) and out["product"]["ece"] == pytest.approx(0.02)
    assert out["product"]["positives"] == 600 and out["test_positives"] == 600
    # The margin is the mean of each cutoff's margin over its better baseline (+0.01 and -0.02),
    # not the mean AUC minus the better mean baseline (0.75 - 0.735 = +0.015).
    assert out["margin_over_best_baseline"] == pytest.approx(-0.005)
    assert out["aims"] == {"auc_at_least_best_baseline": False, "ece_limit": 0.03, "ece_within_limit": True}
    assert out["per_stage"]["consideration"]["rows"] == 200
    assert out["per_stage"]["consideration"]["product"]["ece"] == pytest.approx(0.03)
    assert out["per_stage"]["consideration"]["product"]["worst_ece_vs_truth"] == pytest.approx(0.02)
    assert out["per_cutoff"] == entries
    row = table_rows({"d": {"targets": {"convert": out}}})[0]
    assert row["cutoffs"] == "2/2" and row["margin"] == pytest.approx(-0.005)


def test_a_cutoff_the_product_cannot_train_fails_the_auc_aim():
    from quality.run import combine_cutoffs, table_rows

    out = combine_cutoffs([_cutoff_entry("c3", 0.90, 0.80, 0.80, 0.01), _cutoff_entry("c2", None, 0.8, 0.8, None)])
    assert out["scored_cutoffs"] == ["c3"] and out["product_failed_cutoffs"] == ["c2"]
    assert out["margin_over_best_baseline"] == pytest.approx(0.10)  # over the cutoffs both scored
    assert out["aims"]["auc_at_least_best_baseline"] is False
    assert table_rows({"d": {"targets": {"churn": out}}})[0]["cutoffs"] == "1/2"
    nothing = combine_cutoffs([_cutoff_entry("c1", None, 0.8, 0.7, None)])
    assert nothing["error"].startswith("cannot train") and nothing["margin_over_best_baseline"] is None
    assert nothing["logistic"]["roc_auc"] == 0.8


# ---- the value target (quality/value.py) ----------------------------------------------------------------

VALUE_EVENTS = [
    ("a", "2024-01-10", "order", 10.0),
    ("a", "2024-01-10 18:00", "order", 5.0),  # the same purchase day: one purchase day of 15
    ("a", "2024-02-10", "order", 30.0),
    ("a", "2024-03-20", "order", 60.0),
    ("a", "2024-04-01", "order", 999.0),  # at the cutoff: invisible
    ("b", "2024-03-31 23:00", "order", 7.0),
    ("b", "2024-03-30", "visit", np.nan),
    ("c", "2024-01-05", "visit", np.nan),  # never bought
]


def test_value_baselines_see_only_purchases_before_the_cutoff():
    from quality.value import last_window, purchases, rfm

    buys = purchases(_events(VALUE_EVENTS), CONFIG)
    ids = pd.Series(["a", "b", "c", "stranger"])
    np.testing.assert_allclose(last_window(buys, ids, CUTOFF, 30), [60.0, 7.0, 0.0, 0.0])
    np.testing.assert_allclose(last_window(buys, ids, CUTOFF, 90), [105.0, 7.0, 0.0, 0.0])
    summary = rfm(buys, CUTOFF)
    assert sorted(summary.index) == ["a", "b"]
    a, b = summary.loc["a"], summary.loc["b"]
    assert (a["frequency"], a["recency"], a["T"]) == (2.0, 70.0, 82.0)  # days 01-10, 02-10, 03-20; cutoff 04-01
    assert a["monetary_value"] == pytest.approx(45.0)  # repeat days only: (30 + 60) / 2
    assert (b["frequency"], b["recency"], b["T"], b["monetary_value"]) == (0.0, 0.0, 1.0, 0.0)


def test_value_cutoffs_combine_into_gini_margins_and_aims():
    from quality.run import table_rows
    from quality.value import combine_value_cutoffs, value_table_rows

    def entry(cutoff, product, last, lgbm, bg, total):
        m = lambda g, t=0.0: {"gini": g, "total_error": t, "mae": 1.0, "rows": 100, "spenders": 40}  # noqa: E731
        e = {"test_cutoff": cutoff, "test_rows": 100, "product": m(product, total), "last_window": m(last),
             "lightgbm": m(lgbm), "bg_nbd": m(bg)}
        from quality.value import _value_comparisons
        _value_comparisons(e)
        return e

    entries = [entry("c2", 0.60, 0.50, 0.58, 0.55, 0.05), entry("c1", 0.50, 0.40, 0.56, 0.45, -0.35)]
    assert entries[0]["gini_margin_over_best_baseline"] == pytest.approx(0.02)
    assert entries[1]["aims"] == {"gini_at_least_best_baseline": False, "total_within": 0.10, "total_within_aim": False}
    out = combine_value_cutoffs(entries)
    assert out["product"]["gini"] == pytest.approx(0.55) and out["product"]["rows"] == 200
    assert out["gini_margin_over_best_baseline"] == pytest.approx(-0.02)  # mean of +0.02 and -0.06
    assert out["aims"]["gini_at_least_best_baseline"] is False
    assert out["product"]["total_error"] == pytest.approx(-0.15) and out["aims"]["total_within_aim"] is False
    results = {"d": {"targets": {"value": out}}}
    assert table_rows(results) == []  # the binary table leaves the value record to its own
    row = value_table_rows(results)[0]
    assert row["cutoffs"] == "2/2" and row["product_gini"] == pytest.approx(0.55) and row["bg_nbd_gini"] == pytest.approx(0.50)


def test_outreach_rankings_share_of_lost_spend_on_hand_numbers():
    from quality.value import lost_shares

    # Ten buyers; the top 10 % is one buyer, the top 20 % two.
    p = np.array([0.9, 0.5, 0.1, 0.2, 0.3, 0.4, 0.05, 0.6, 0.7, 0.8])
    expected = np.array([1.0, 50.0, 100.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0])
    trailing = np.array([10.0, 20.0, 300.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    lost = np.array([0.0, 30.0, 60.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 10.0])
    out = lost_shares(p, expected, trailing, lost)
    assert out["rows"] == 10 and out["lost_total"] == 100.0
    # p x expected: 25 (b), 10 (c), 4 (j): the top one is b, the top two b and c.
    assert out["p_x_expected_top_10pct_lost_share"] == 0.3 and out["p_x_expected_top_20pct_lost_share"] == 0.9
    # odds x expected: a 9 x 1 = 9, b 50, c 11.1, j 20: b then j.
    assert out["odds_x_expected_top_20pct_lost_share"] == pytest.approx(0.4)
    # p x trailing: c 30, a 9, b 10: c then b. trailing: c then b.
    assert out["p_x_trailing_top_20pct_lost_share"] == pytest.approx(0.9)
    assert out["trailing_top_10pct_lost_share"] == pytest.approx(0.6)

"""The quality suite's event-log generators: funnelcast accepts their data sets end to end, and their
truth tables are probabilities of exactly funnelcast's labels (joined, calibrated, informative)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

import funnelcast as fc
from funnelcast.features.snapshots import snapshot_cutoffs
from funnelcast.features.targets import PROBABILITY_TARGETS, TARGETS
from quality.dataset import QualityDataset
from quality.generators import b2b, subscription

GENERATORS = {"subscription": subscription.generate, "b2b": b2b.generate}
N = 1200


@pytest.fixture(scope="module", params=sorted(GENERATORS))
def built(request) -> tuple[QualityDataset, fc.TrainingSet]:
    ds = GENERATORS[request.param](N, seed=3)
    project = fc.Project(ds.config, threads=1)
    data = project.load(ds.events, ds.customers)
    return ds, project.training_set(data, data_end=ds.data_end)


def _labelled_with_truth(ds: QualityDataset, ts: fc.TrainingSet, target: str) -> pd.DataFrame:
    rows = ts.rows(target)
    keys = pd.DataFrame({"customer_id": rows["customer_id"].astype(str).to_numpy(),
                         "cutoff": pd.to_datetime(rows["cutoff"], utc=True).to_numpy(),
                         "label": rows[TARGETS[target].label].astype(int).to_numpy()})
    keys["cutoff"] = pd.to_datetime(keys["cutoff"], utc=True)
    truth = ds.truth.assign(customer_id=ds.truth["customer_id"].astype(str))
    return keys.merge(truth[["customer_id", "cutoff", TARGETS[target].truth]], on=["customer_id", "cutoff"], how="left")


def test_events_follow_the_contract(built):
    ds, _ = built
    ev = ds.events
    assert {"customer_id", "timestamp", "event_type", "channel", "amount"} <= set(ev.columns)
    assert str(ev["timestamp"].dt.tz) == "UTC"
    assert ev["timestamp"].max() < ds.data_end
    assert set(ev["event_type"].unique()) <= set(ds.config.event_types)
    assert set(ev["channel"].dropna().unique()) <= set(ds.config.channels)
    purchase = ev["event_type"].isin(ds.config.purchase_event_types)
    assert ev.loc[purchase, "amount"].gt(0).all()
    assert ev.loc[~purchase, "amount"].isna().all()
    assert set(ev["customer_id"].unique()) == set(ds.customers["customer_id"])
    # Churners are silent after their churn event (they are active until that day, not after).
    churn = ev[ev["event_type"].isin(ds.config.churn.churn_event_types)].groupby("customer_id")["timestamp"].min()
    assert len(churn)
    last = ev.groupby("customer_id")["timestamp"].max()
    assert (last.loc[churn.index] == churn).all()


def test_funnelcast_labels_both_targets(built):
    ds, ts = built
    assert "value" in ds.targets  # the suite tests the value target wherever purchases carry amounts
    for target in ds.targets:
        if not TARGETS[target].is_probability:
            spend = ts.rows(target)[TARGETS[target].label].astype(float)
            assert len(spend) > 500 and (spend >= 0).all() and (spend > 0).any(), target
            continue
        labels = ts.rows(target)[TARGETS[target].label].astype(int)
        assert len(labels) > 500, target
        assert 0 < labels.sum() < len(labels), target


def test_truth_rows_sit_on_the_snapshot_cutoffs(built):
    ds, ts = built
    cutoffs = set(snapshot_cutoffs(ds.events["timestamp"].min(), ds.data_end, ds.config))
    assert set(ds.truth["cutoff"]) <= cutoffs
    assert set(ts.frame["cutoff"]) <= cutoffs
    assert not ds.truth.duplicated(["customer_id", "cutoff"]).any()
    for target in (t for t in ds.targets if TARGETS[t].is_probability):  # value has no truth probability
        horizon = pd.Timedelta(days=TARGETS[target].horizon_days(ds.config))
        has = ds.truth[TARGETS[target].truth].notna()
        assert (ds.truth.loc[has, "cutoff"] + horizon <= ds.data_end).all()
        p = ds.truth.loc[has, TARGETS[target].truth]
        assert p.between(0, 1).all()


@pytest.mark.parametrize("target", sorted(PROBABILITY_TARGETS))  # value has no truth probability
def test_truth_joins_and_is_calibrated(built, target):
    ds, ts = built
    rows = _labelled_with_truth(ds, ts, target)
    p = rows[TARGETS[target].truth]
    assert p.notna().mean() > 0.99, "labelled rows without a truth probability"
    rows = rows[p.notna()]
    p, y = rows[TARGETS[target].truth].to_numpy(), rows["label"].to_numpy()
    assert abs(p.mean() - y.mean()) < 0.03, (p.mean(), y.mean())
    assert roc_auc_score(y, p) > 0.65


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generators_are_deterministic(name):
    a, b = GENERATORS[name](100, seed=5), GENERATORS[name](100, seed=5)
    pd.testing.assert_frame_equal(a.events, b.events)
    pd.testing.assert_frame_equal(a.customers, b.customers)
    pd.testing.assert_frame_equal(a.truth, b.truth)


def test_monthly_charges_clip_to_short_months():
    day = lambda s: (pd.Timestamp(s) - pd.Timestamp("2025-01-01")).days  # noqa: E731
    start = np.array([day("2025-01-31"), day("2025-01-15"), day("2024-12-31")])
    got = subscription.add_months(start, np.array([1, 1, 2]))
    assert got.tolist() == [day("2025-02-28"), day("2025-02-15"), day("2025-02-28")]

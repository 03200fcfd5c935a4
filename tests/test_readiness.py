"""Readiness verdicts: the numbers behind them and the minimums that apply."""

from __future__ import annotations

import pandas as pd
import pytest

from funnelcast.features.events import validate_events
from funnelcast.features.funnel import FunnelConfig
from funnelcast.features.readiness import assess
from funnelcast.features.simulate import simulate


def _with(config: FunnelConfig, **readiness) -> FunnelConfig:
    raw = config.model_dump(mode="json")
    raw["readiness"].update(readiness)
    return FunnelConfig.model_validate(raw)


@pytest.fixture(scope="module")
def sim(config):
    return simulate(1500, config, start="2024-01-01", end="2025-01-01", seed=4, truth=False)


def test_enough_data_is_ready_for_every_target(sim, config):
    report = assess(sim.events, config, customers=sim.customers, data_end=sim.end)
    verdicts = {t.target: t for t in report.targets}
    assert set(verdicts) == {f"convert:{a}->{b}" for a, b in config.conversion_targets()} | {"churn", "value"}
    for t in report.targets:
        assert t.ready, t.verdict
        assert t.rows >= config.readiness.min_eligible and t.positives >= config.readiness.min_positives
    assert report.customers == sim.events["customer_id"].nunique() and report.events == len(sim.events)
    assert 360 < report.history_days < 366


def test_verdicts_name_the_shortfall_and_the_minimum(sim, config):
    strict = _with(config, min_positives=10**6, min_eligible=10**7)
    report = assess(sim.events, strict, data_end=sim.end)
    for t in report.targets:
        assert not t.ready
        assert f"needs {10**7:,}" in t.verdict and f"needs {10**6:,}" in t.verdict
    assert report.minimums["min_positives"] == 10**6


def test_short_history_is_not_ready_for_the_longer_horizon(sim, config):
    early = sim.events[sim.events["timestamp"] < pd.Timestamp("2024-05-20", tz="UTC")]
    report = assess(early, config)
    churn = next(t for t in report.targets if t.target == "churn")
    assert not churn.ready and "days of history, needs 150" in churn.verdict


def test_sparse_customers_warn_and_block(config):
    raw = pd.DataFrame({
        "customer_id": ["a", "b", "c", "c", "c"],
        "timestamp": ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z"],
        "event_type": ["blog_view", "order", "blog_view", "pricing_view", "mystery"],
    })
    raw_cfg = config.model_dump(mode="json")
    raw_cfg["unknown_event_types"] = "map_to_other"
    cfg = FunnelConfig.model_validate(raw_cfg)
    events, summary = validate_events(raw, cfg)
    report = assess(events, cfg, summary=summary)
    assert report.sparse_share == pytest.approx(2 / 3)
    assert any("fewer than 3 events" in w for w in report.warnings)
    assert all(not t.ready and "too many customers with too few events" in t.verdict for t in report.targets)
    assert report.event_type_counts["other"] == 1 and "loyalty_join" in report.never_seen
    assert sum(report.unmapped.values()) == 1 and "mystery" in next(iter(report.unmapped))


def test_no_events_is_not_ready(config):
    events, _ = validate_events(pd.DataFrame({"customer_id": [], "timestamp": [], "event_type": []}), config)
    report = assess(events, config)
    assert report.events == 0 and all(not t.ready for t in report.targets)


def test_a_horizon_longer_than_the_history_is_ready_with_a_shorter_label_window(sim, config):
    """A year of history and a 300-day churn horizon: no 300-day label fits after the 90 days of history
    a cutoff needs, and the verdict names label_days; with label_days 60 the history suffices."""
    raw = config.model_dump(mode="json")
    raw["churn"]["horizon_days"] = 300
    long = FunnelConfig.model_validate(raw)
    churn = next(t for t in assess(sim.events, long, data_end=sim.end).targets if t.target == "churn")
    assert not churn.ready and "needs 390" in churn.verdict and "churn.label_days" in churn.verdict
    raw["churn"]["label_days"] = 60
    report = assess(sim.events, FunnelConfig.model_validate(raw), data_end=sim.end)
    churn = next(t for t in report.targets if t.target == "churn")
    assert churn.ready, churn.verdict
    assert report.minimums["history_days_churn"] == 150

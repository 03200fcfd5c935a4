"""bench/value_at_risk.py's measure on hand-built numbers: the spend a customer went on to lose, and the
lost spend of each ranking's top of the outreach list."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import value_at_risk as bench  # noqa: E402

T = pd.Timestamp("2025-01-01", tz="UTC")


def test_lost_spend_is_the_fall_from_the_window_before_to_the_window_after():
    day = pd.Timedelta(days=1)
    events = pd.DataFrame({
        "customer_id": ["gone", "gone", "kept", "kept", "grew", "old", "visit"],
        "timestamp": [T - 10 * day, T - 400 * day, T - 20 * day, T + 5 * day, T + 1 * day, T - 400 * day, T - 1 * day],
        "event_type": ["order", "order", "order", "repeat_order", "order", "order", "page_view"],
        "amount": [100.0, 999.0, 50.0, 30.0, 80.0, 70.0, 5.0],
    })
    lost = bench.lost_spend(events, ["order", "repeat_order"], T, 365)
    # gone: 100 before (the 999 is older than the window), nothing after; kept: 50 -> 30; grew: more after.
    assert lost.to_dict() == {"gone": 100.0, "grew": 0.0, "kept": 20.0}


def test_each_ranking_is_scored_by_what_its_top_went_on_to_lose():
    table = pd.DataFrame({
        "customer_id": ["a", "b", "c", "d"],
        "status": ["customer", "customer", "customer", "churned"],  # d is not on the list
        "churn_probability": [0.9, 0.1, 0.5, np.nan],
        "value_at_risk": [9.0, 30.0, 1.0, np.nan],
        "value_basis": ["expected_next_365d"] * 4,
    })
    lost = pd.Series({"a": 10.0, "b": 0.0, "c": 40.0, "d": 500.0})
    trailing = pd.Series({"a": 10.0, "b": 300.0, "c": 100.0, "d": 1000.0})
    out = bench.compare(table, lost, trailing, tops=(1, 2))
    assert out["customers_listed"] == 3 and out["lost_spend_of_all_listed"] == 50.0
    assert out["value_at_risk"]["top_1"] == {"lost_spend": 0.0, "share_of_lost": 0.0}  # b first
    assert out["value_at_risk"]["top_2"]["lost_spend"] == 10.0  # b, a
    assert out["churn_x_trailing"]["top_1"]["lost_spend"] == 40.0  # c: 0.5 x 100 = 50 beats b's 30 and a's 9
    assert out["trailing_spend"]["top_2"] == {"lost_spend": 40.0, "share_of_lost": pytest.approx(0.8)}  # b, c

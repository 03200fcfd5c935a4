"""Order logs as a source (features/orders.py, the ``order-log`` preset): hand-built logs with the events,
labels and counts they must give."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from funnelcast.features.errors import ConfigError, EventDataError
from funnelcast.features.events import validate_source
from funnelcast.features.funnel import PRESETS, FunnelConfig, load_config
from funnelcast.features.orders import ABSORBED, MERGED
from funnelcast.features.snapshots import build_training_set

PRESET = load_config("order-log")


def _with(**order_log) -> FunnelConfig:
    raw = PRESET.model_dump(mode="json")
    raw["order_log"] |= order_log
    return FunnelConfig.model_validate(raw)


ORDERS = pd.DataFrame({
    "customer_id": ["a", "a", "a", "b", " b", "c"],
    "date": ["2024-01-05", "2024-01-05 15:00", "2024-02-01", "2024-01-10", "2024-03-01", "2024-02-02"],
    "amount": [10.0, 5.0, 20.0, 7.0, np.nan, 3.0],
    "quantity": [1, 2, 1, 1, 1, None],
})


def test_the_preset_reads_an_order_log_as_first_and_repeat_orders():
    events, summary = validate_source(ORDERS, PRESET)
    assert events[["customer_id", "event_type"]].values.tolist() == [
        ["a", "first_order"], ["a", "repeat_order"], ["b", "first_order"], ["b", "repeat_order"], ["c", "first_order"]]
    # a's two orders of 5 January are one: the day's first time, amounts and quantities summed.
    assert events["timestamp"].iloc[0] == pd.Timestamp("2024-01-05", tz="UTC")
    assert events["amount"].iloc[0] == 15.0 and json.loads(events["properties"].iloc[0]) == {"quantity": 3.0}
    assert np.isnan(events["amount"].iloc[3])  # an order without an amount stays one, amount unknown
    assert pd.isna(events["properties"].iloc[4])  # no quantity given
    assert (summary.rows_read, summary.rows_out) == (6, 5)
    assert summary.dropped == {MERGED: 1} and summary.altered == {ABSORBED: 1}


def test_keeping_same_day_orders_and_the_local_day():
    events, summary = validate_source(ORDERS, _with(same_day="keep"))
    assert len(events) == 6 and summary.dropped == {} and summary.altered == {}
    assert events["event_type"].tolist()[:3] == ["first_order", "repeat_order", "repeat_order"]
    # The calendar day is the source's: 23:30 and 00:30 UTC are one evening in New York, two days in UTC.
    late = pd.DataFrame({"customer_id": ["x", "x"], "timestamp": ["2024-05-01T23:30:00Z", "2024-05-02T00:30:00Z"],
                         "amount": [1.0, 2.0]})
    assert len(validate_source(late, PRESET)[0]) == 2
    raw = PRESET.model_dump(mode="json") | {"source_timezone": "America/New_York"}
    in_new_york, summary = validate_source(late, FunnelConfig.model_validate(raw))
    assert len(in_new_york) == 1 and in_new_york["amount"].iloc[0] == 3.0 and summary.dropped == {MERGED: 1}


@pytest.mark.parametrize(("change", "message"), [
    (lambda f: f.drop(columns="amount"), r"needs the columns customer_id, timestamp \(or date\) and amount; missing: amount"),
    (lambda f: f.drop(columns="date"), r"missing: timestamp or date"),
    (lambda f: f.assign(amount=[10.0, 5.0, -20.0, 7.0, 1.0, 3.0]), r"negative purchase amounts: row 3: -20.0"),
    (lambda f: f.assign(customer_id=["a", None, "a", "b", "b", "c"]), r"customer_id.*row 2"),
    (lambda f: f.assign(quantity=[1, "two", 1, 1, 1, 1]), r"'quantity' has 1 non-numeric values: row 2"),
    (lambda f: f.assign(date=["2024-01-05", "soon", "2024-02-01", "2024-01-10", "2024-03-01", "2024-02-02"]), r"'date'.*row 2"),
])
def test_a_bad_order_log_is_named_by_column_and_its_own_row(change, message):
    with pytest.raises(EventDataError, match=message):
        validate_source(change(ORDERS.copy()), PRESET)


def test_order_log_settings_are_validated():
    raw = PRESET.model_dump(mode="json")
    raw["order_log"]["repeat_order_event"] = "reorder"
    with pytest.raises(ConfigError, match=r"order_log names event types no stage or other_event_types lists: \['reorder'\]"):
        from funnelcast.features.funnel import config_from_dict

        config_from_dict(raw)
    with pytest.raises(ConfigError, match="does not exist.*order-log"):
        load_config("no-such-preset.yaml")
    assert set(PRESETS) == {"five-stage", "order-log"} and load_config("five-stage") == load_config()


def test_labels_of_a_hand_built_order_log():
    """first → repeat within 90 days, and churn (no order in 90 days) for buyers, at one cutoff."""
    orders = pd.DataFrame({
        "customer_id": ["once", "again", "again", "late", "late", "busy", "busy", "busy"],
        "date": ["2024-01-10", "2024-01-20", "2024-03-01", "2024-01-15", "2024-06-01", "2024-01-02", "2024-02-10",
                 "2024-03-20"],
        "amount": [5.0, 5.0, 8.0, 5.0, 9.0, 3.0, 4.0, 6.0],
    })
    events, _ = validate_source(orders, PRESET)
    cutoff = pd.Timestamp("2024-02-15", tz="UTC")
    table = build_training_set(events, None, PRESET, cutoffs=[cutoff], data_end="2024-12-31").frame.set_index("customer_id")
    # Conversion: one-time buyers at the cutoff; a repeat order in [cutoff, cutoff + 90 days) converts.
    assert table.loc["once", "convert_label"] == 0  # never ordered again
    assert table.loc["again", "convert_label"] == 1  # 1 March
    assert table.loc["late", "convert_label"] == 0  # 1 June is 107 days later
    assert not table.loc["busy", "convert_eligible"]  # already a repeat buyer (loyalty): nothing to convert to
    # Churn: every buyer; churned = no order in the 90 days after the cutoff.
    assert table.loc["once", "churn_label"] == 1 and table.loc["late", "churn_label"] == 1
    assert table.loc["again", "churn_label"] == 0 and table.loc["busy", "churn_label"] == 0
    assert table.loc["busy", "stage"] == "loyalty" and table.loc["again", "stage"] == "purchase"


def test_the_command_line_reads_an_order_log_csv(tmp_path: Path):
    path = tmp_path / "orders.csv"
    ORDERS.to_csv(path, index=False)
    exe = str(Path(sys.executable).with_name("funnelcast"))
    r = subprocess.run([exe, "check", "--config", "order-log", "--events", str(path), "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    validation = json.loads(r.stdout)["validation"]
    assert validation["rows_read"] == 6 and validation["rows_out"] == 5
    assert validation["dropped"] == {MERGED: 1} and validation["altered"] == {ABSORBED: 1}

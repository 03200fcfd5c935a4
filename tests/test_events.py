"""The event contract: validation of events and customers, and one reader interface for CSV, Parquet
and SQL. Every error must name the source, the column, the row (1-based) and the offending value."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from funnelcast.features.events import (
    EVENT_COLUMNS,
    EventDataError,
    SqlSource,
    parse_source,
    read_customers,
    read_events,
    read_table,
    validate_customers,
    validate_events,
)
from funnelcast.features.funnel import OTHER, FunnelConfig

UTC_NS = pd.DatetimeTZDtype("ns", "UTC")


def with_settings(config: FunnelConfig, **changes) -> FunnelConfig:
    raw = config.model_dump(mode="json")
    raw.update(changes)
    return FunnelConfig.model_validate(raw)


def events(**columns) -> pd.DataFrame:
    """A raw events frame; defaults fill the required columns to the longest given column's length."""
    n = max(len(v) for v in columns.values())
    base = {"customer_id": ["c1"] * n, "timestamp": [f"2024-01-{d:02d}T12:00:00Z" for d in range(1, n + 1)], "event_type": ["blog_view"] * n}
    base.update(columns)
    return pd.DataFrame(base)


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text).tz_convert("UTC") if pd.Timestamp(text).tzinfo else pd.Timestamp(text, tz="UTC")


# ---- validate_events: the happy path ---------------------------------------------------------------

@pytest.fixture()
def raw_events() -> pd.DataFrame:
    """Four events for two customers, deliberately out of order, using every contract column."""
    return pd.DataFrame(
        {
            "customer_id": ["c2", "007", "007", "c2"],
            "timestamp": ["2024-01-03T09:00:00Z", "2024-01-02T10:00:00+01:00", "2024-01-01T08:30:00Z", "2024-01-01T12:00:00Z"],
            "event_type": ["order", "pricing_view", "ad_click", "blog_view"],
            "channel": ["direct", None, "ads", "search"],
            "amount": [120.5, np.nan, np.nan, np.nan],
            "properties": ['{"sku": "a-1"}', None, None, None],
        }
    )


def test_validate_events_happy_path(raw_events: pd.DataFrame, config: FunnelConfig) -> None:
    before = raw_events.copy()
    out, summary = validate_events(raw_events, config, source="unit")
    pd.testing.assert_frame_equal(raw_events, before)  # the input is not modified
    assert list(out.columns) == list(EVENT_COLUMNS)
    assert out["timestamp"].dtype == UTC_NS
    for col in ("customer_id", "event_type", "channel", "properties"):
        assert out[col].dtype == pd.StringDtype(), col
    assert out["amount"].dtype == np.float64
    # sorted by customer, then time
    assert out["customer_id"].tolist() == ["007", "007", "c2", "c2"]
    assert out["timestamp"].tolist() == [
        ts("2024-01-01T08:30:00Z"), ts("2024-01-02T09:00:00Z"), ts("2024-01-01T12:00:00Z"), ts("2024-01-03T09:00:00Z"),
    ]
    assert out["event_type"].tolist() == ["ad_click", "pricing_view", "blog_view", "order"]
    assert out["channel"].tolist() == ["ads", pd.NA, "search", "direct"]
    assert out["amount"].isna().tolist() == [True, True, True, False]
    assert out["amount"].iloc[3] == 120.5
    assert out["properties"].tolist() == [pd.NA, pd.NA, pd.NA, '{"sku": "a-1"}']
    assert out.index.tolist() == [0, 1, 2, 3]
    assert (summary.source, summary.rows_read, summary.rows_out) == ("unit", 4, 4)
    assert summary.dropped == {} and summary.altered == {} and summary.ignored_columns == []
    assert summary.lines() == ["unit: 4 rows read, 4 kept"]


def test_optional_columns_may_be_absent(config: FunnelConfig) -> None:
    out, summary = validate_events(events(customer_id=["b", "a"]), config)
    assert list(out.columns) == list(EVENT_COLUMNS)
    assert out["channel"].isna().all() and out["channel"].dtype == pd.StringDtype()
    assert out["properties"].isna().all() and out["properties"].dtype == pd.StringDtype()
    assert out["amount"].isna().all() and out["amount"].dtype == np.float64
    assert out["customer_id"].tolist() == ["a", "b"]
    assert summary.rows_out == 2


def test_customer_ids_and_event_types_are_stripped(config: FunnelConfig) -> None:
    out, _ = validate_events(events(customer_id=[" c1 ", "c1"], event_type=[" order", "order "]), config)
    assert out["customer_id"].tolist() == ["c1", "c1"]
    assert out["event_type"].tolist() == ["order", "order"]


def test_same_time_keeps_input_order(config: FunnelConfig) -> None:
    raw = events(timestamp=["2024-01-01T12:00:00Z"] * 3, event_type=["pricing_view", "cart_add", "order"])
    out, _ = validate_events(raw, config)
    assert out["event_type"].tolist() == ["pricing_view", "cart_add", "order"]


def test_empty_events_frame(config: FunnelConfig) -> None:
    raw = pd.DataFrame({"customer_id": pd.Series([], dtype=str), "timestamp": pd.Series([], dtype=str), "event_type": pd.Series([], dtype=str)})
    out, summary = validate_events(raw, config)
    assert len(out) == 0 and list(out.columns) == list(EVENT_COLUMNS)
    assert out["timestamp"].dtype == UTC_NS
    assert (summary.rows_read, summary.rows_out) == (0, 0)


# ---- validate_events: each error -------------------------------------------------------------------

def test_missing_required_columns_lists_missing_and_found(config: FunnelConfig) -> None:
    raw = pd.DataFrame({"customer_id": ["c1"], "when": ["2024-01-01T00:00:00Z"], "what": ["order"]})
    with pytest.raises(
        EventDataError,
        match=re.escape("unit: events lack required column(s) ['timestamp', 'event_type']; found columns ['customer_id', 'when', 'what']"),
    ):
        validate_events(raw, config, source="unit")


@pytest.mark.parametrize("bad", [None, np.nan, "", "   "])
def test_null_or_empty_customer_id(config: FunnelConfig, bad) -> None:
    raw = events(customer_id=["c1", "c2", bad])
    with pytest.raises(EventDataError, match=r"^unit: events has 1 null or empty customer_id values: row 3$"):
        validate_events(raw, config, source="unit")


def test_null_event_type(config: FunnelConfig) -> None:
    raw = events(event_type=["order", None])
    with pytest.raises(EventDataError, match=r"^unit: column 'event_type' has 1 null values: row 2$"):
        validate_events(raw, config, source="unit")


@pytest.mark.parametrize("bad", ["not a date", "2024-02-30T10:00:00Z", "2024-13-01T00:00:00+01:00", "01/02/2024 10:00Z"])
def test_unparseable_timestamp_names_column_row_and_value(utc_config: FunnelConfig, bad: str) -> None:
    raw = events(timestamp=["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", bad])
    with pytest.raises(
        EventDataError, match=rf"^unit: column 'timestamp' has 1 (?:missing or )?unparseable timestamps: row 3: {re.escape(repr(bad))}\. Expected ISO 8601"
    ):
        validate_events(raw, utc_config, source="unit")


def test_missing_timestamp(config: FunnelConfig) -> None:
    raw = events(timestamp=["2024-01-01T00:00:00Z", None])
    with pytest.raises(EventDataError, match=r"unit: column 'timestamp' has 1 missing or unparseable timestamps: row 2"):
        validate_events(raw, config, source="unit")


def test_many_bad_rows_are_sampled_not_dumped(utc_config: FunnelConfig) -> None:
    raw = events(timestamp=[f"bad{i}" for i in range(8)])
    with pytest.raises(EventDataError, match=r"^unit: column 'timestamp' has 8 (?:missing or )?unparseable timestamps: row 1: 'bad0', .*row 5: 'bad4' \(and 3 more\)\. Expected") as info:
        validate_events(raw, utc_config, source="unit")
    assert "bad5" not in str(info.value)


def test_numeric_timestamps_are_refused(config: FunnelConfig) -> None:
    raw = events(timestamp=[1704067200, 1704153600])
    with pytest.raises(EventDataError, match=r"unit: column 'timestamp' is numeric \(int64\); timestamps must be ISO 8601"):
        validate_events(raw, config, source="unit")


def test_naive_timestamps_refused_without_source_timezone(config: FunnelConfig) -> None:
    assert config.source_timezone is None
    raw = events(timestamp=["2024-01-15T12:00:00Z", "2024-01-15 12:00:00"])
    with pytest.raises(
        EventDataError,
        match=r"^unit: column 'timestamp' has 1 timestamps without a time zone \(row 2: '2024-01-15 12:00:00'\) and the config declares no source_timezone",
    ):
        validate_events(raw, config, source="unit")


def test_naive_timestamps_converted_from_source_timezone(config: FunnelConfig) -> None:
    berlin = with_settings(config, source_timezone="Europe/Berlin")
    raw = events(
        customer_id=["winter", "summer", "offset"],
        timestamp=["2024-01-15 12:00:00", "2024-07-15T12:00:00", "2024-01-15T12:00:00Z"],
    )
    out, _ = validate_events(raw, berlin)
    got = dict(zip(out["customer_id"], out["timestamp"]))
    assert got["winter"] == pd.Timestamp("2024-01-15 11:00", tz="UTC")  # CET, UTC+1
    assert got["summer"] == pd.Timestamp("2024-07-15 10:00", tz="UTC")  # CEST, UTC+2
    assert got["offset"] == pd.Timestamp("2024-01-15 12:00", tz="UTC")  # an explicit offset wins over the zone


def test_nonexistent_local_time_is_an_error(config: FunnelConfig) -> None:
    berlin = with_settings(config, source_timezone="Europe/Berlin")
    raw = events(timestamp=["2024-03-30 02:30:00", "2024-03-31 02:30:00"])  # clocks jump 02:00 -> 03:00 on the 31st
    with pytest.raises(EventDataError, match=r"column 'timestamp' has 1 missing or unparseable timestamps: row 2: '2024-03-31 02:30:00'.*Europe/Berlin"):
        validate_events(raw, berlin)


def test_naive_datetime_column_refused_without_zone_and_converted_with_one(config: FunnelConfig) -> None:
    raw = events(timestamp=pd.to_datetime(["2024-01-15 12:00", "2024-07-15 12:00"]))
    with pytest.raises(EventDataError, match=r"unit: column 'timestamp' holds timestamps without a time zone and the config declares no source_timezone"):
        validate_events(raw, config, source="unit")
    out, _ = validate_events(raw, with_settings(config, source_timezone="Europe/Berlin"))
    assert out["timestamp"].tolist() == [pd.Timestamp("2024-01-15 11:00", tz="UTC"), pd.Timestamp("2024-07-15 10:00", tz="UTC")]
    assert out["timestamp"].dtype == UTC_NS


def test_aware_datetime_column_is_converted_to_utc(config: FunnelConfig) -> None:
    raw = events(timestamp=pd.to_datetime(["2024-01-15 12:00", "2024-07-15 12:00"]).tz_localize("America/New_York"))
    out, _ = validate_events(raw, config)
    assert out["timestamp"].tolist() == [pd.Timestamp("2024-01-15 17:00", tz="UTC"), pd.Timestamp("2024-07-15 16:00", tz="UTC")]
    assert out["timestamp"].dtype == UTC_NS


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2024-01-15T12:00:00+02:00", "2024-01-15 10:00"),
        ("2024-01-15T12:00:00Z", "2024-01-15 12:00"),
        ("2024-01-15 12:00:00-05:00", "2024-01-15 17:00"),
        ("2024-01-15T12:00:00+0530", "2024-01-15 06:30"),
        ("2024-01-15T12:00:00.250+01:00", "2024-01-15 11:00:00.250"),
        ("2024-01-15T00:30:00+02:00", "2024-01-14 22:30"),
    ],
)
def test_offsets_are_converted_to_utc_without_source_timezone(config: FunnelConfig, text: str, utc: str) -> None:
    out, _ = validate_events(events(timestamp=[text]), config)
    assert out["timestamp"].iloc[0] == pd.Timestamp(utc, tz="UTC")
    assert out["timestamp"].dtype == UTC_NS


def test_mixed_offsets_in_one_column(config: FunnelConfig) -> None:
    raw = events(customer_id=["a", "b", "c"], timestamp=["2024-01-15T12:00:00+02:00", "2024-01-15T12:00:00Z", "2024-01-15T12:00:00-01:00"])
    out, _ = validate_events(raw, config)
    assert out["timestamp"].dt.hour.tolist() == [10, 12, 13]


def test_date_only_timestamp_is_naive_and_refused_without_source_timezone(config: FunnelConfig) -> None:
    with pytest.raises(EventDataError, match=r"column 'timestamp' has 1 timestamps without a time zone \(row 1: '2024-01-15'\)"):
        validate_events(events(timestamp=["2024-01-15"]), config)


def test_date_only_timestamp_is_localised_in_source_timezone(config: FunnelConfig) -> None:
    out, _ = validate_events(events(timestamp=["2024-01-15"]), with_settings(config, source_timezone="Europe/Berlin"))
    assert out["timestamp"].iloc[0] == pd.Timestamp("2024-01-14 23:00", tz="UTC")


@pytest.mark.parametrize("bad", ["0001-01-01T00:00:00Z", "9999-12-31T00:00:00+01:00", "1500-06-01T00:00:00Z"])
def test_timestamps_outside_nanosecond_range_are_an_error(config: FunnelConfig, bad: str) -> None:
    raw = events(timestamp=["2024-01-01T00:00:00Z", bad])
    with pytest.raises(EventDataError, match=rf"^unit: column 'timestamp' has 1 timestamps outside the years 1678-2261: row 2: {re.escape(repr(bad))}$"):
        validate_events(raw, config, source="unit")


def test_naive_timestamps_outside_range_are_an_error(utc_config: FunnelConfig) -> None:
    raw = events(timestamp=["2024-01-01 00:00:00", "3000-01-01 00:00:00"])
    with pytest.raises(EventDataError, match=r"^unit: column 'timestamp' has 1 timestamps outside the years 1678-2261: row 2: '3000-01-01 00:00:00'$"):
        validate_events(raw, utc_config, source="unit")


def test_negative_amount(config: FunnelConfig) -> None:
    raw = events(event_type=["order", "order", "order"], amount=["10", "-5", None])
    with pytest.raises(
        EventDataError, match=r"^unit: column 'amount' has 1 negative purchase amounts: row 2: '-5'\. Refunds are not purchases"
    ):
        validate_events(raw, config, source="unit")


def test_non_numeric_amount(config: FunnelConfig) -> None:
    raw = events(event_type=["order"] * 3, amount=["10", None, "12,50"])
    with pytest.raises(EventDataError, match=r"^unit: column 'amount' has 1 non-numeric values: row 3: '12,50'$"):
        validate_events(raw, config, source="unit")


def test_infinite_amount(config: FunnelConfig) -> None:
    raw = events(event_type=["order"] * 2, amount=[10.0, np.inf])
    with pytest.raises(EventDataError, match=r"^unit: column 'amount' has 1 infinite values: row 2: .*inf"):
        validate_events(raw, config, source="unit")


def test_amount_text_is_parsed(config: FunnelConfig) -> None:
    out, _ = validate_events(events(event_type=["order"] * 3, amount=["10", "0", None]), config)
    assert out["amount"].tolist()[:2] == [10.0, 0.0] and np.isnan(out["amount"].iloc[2])


def test_events_at_or_after_as_of_are_an_error(config: FunnelConfig) -> None:
    raw = events(timestamp=["2024-01-10T00:00:00Z", "2024-01-20T00:00:00Z", "2024-01-19T23:59:59Z", "2024-02-01T00:00:00+01:00"])
    with pytest.raises(
        EventDataError,
        match=re.escape("unit: 2 events are at or after the run's as-of time 2024-01-20T00:00:00+00:00: row 2: '2024-01-20T00:00:00Z', row 4: '2024-02-01T00:00:00+01:00'"),
    ):
        validate_events(raw, config, source="unit", as_of=pd.Timestamp("2024-01-20"))


def test_events_before_as_of_pass(config: FunnelConfig) -> None:
    raw = events(timestamp=["2024-01-10T00:00:00Z", "2024-01-19T23:59:59Z"])
    out, _ = validate_events(raw, config, as_of=pd.Timestamp("2024-01-20T01:00:00+01:00"))  # = 00:00 UTC
    assert len(out) == 2


def test_unknown_event_types_error_lists_values_with_counts(config: FunnelConfig) -> None:
    raw = events(event_type=["order", "fax", "telegram", "fax"])
    with pytest.raises(
        EventDataError,
        match=r"^unit: column 'event_type' has values the funnel config does not know: 'fax' \(2 rows\), 'telegram' \(1 rows\); "
        r"first at row 2: 'fax', row 3: 'telegram', row 4: 'fax'\. .*unknown_event_types: map_to_other$",
    ):
        validate_events(raw, config, source="unit")


def test_unknown_event_types_mapped_to_other_and_counted(config: FunnelConfig) -> None:
    lenient = with_settings(config, unknown_event_types="map_to_other")
    raw = events(event_type=["order", "fax", "telegram", "fax"])
    out, summary = validate_events(raw, lenient, source="unit")
    assert out["event_type"].tolist() == ["order", OTHER, OTHER, OTHER]
    [(reason, n)] = summary.altered.items()
    assert n == 3
    assert reason.startswith("event_type not in config mapped to 'other'") and "'fax' (2 rows)" in reason and "'telegram' (1 rows)" in reason
    assert summary.rows_out == 4 and summary.dropped == {}
    assert any(line.startswith("  altered 3: event_type") for line in summary.lines())


def test_event_type_vocabulary_is_case_sensitive(config: FunnelConfig) -> None:
    with pytest.raises(EventDataError, match=r"'Order' \(1 rows\)"):
        validate_events(events(event_type=["Order"]), config)


def test_unknown_channels_mapped_to_other_by_default(config: FunnelConfig) -> None:
    assert config.unknown_channels == "map_to_other"
    raw = events(channel=["email", "pigeon", None, "pigeon", "ads"])
    out, summary = validate_events(raw, config, source="unit")
    assert out["channel"].tolist() == ["email", OTHER, pd.NA, OTHER, "ads"]
    [(reason, n)] = summary.altered.items()
    assert n == 2 and reason.startswith("channel not in config mapped to 'other'") and "'pigeon' (2 rows)" in reason


def test_unknown_channels_error_under_error_policy(config: FunnelConfig) -> None:
    strict = with_settings(config, unknown_channels="error")
    raw = events(channel=["email", None, "pigeon"])
    with pytest.raises(
        EventDataError,
        match=r"^unit: column 'channel' has values the funnel config does not know: 'pigeon' \(1 rows\); first at row 3: 'pigeon'\. .*unknown_channels: map_to_other$",
    ):
        validate_events(raw, strict, source="unit")


def test_exact_duplicates_dropped_and_counted(config: FunnelConfig) -> None:
    row = {"customer_id": "c1", "timestamp": "2024-01-05T10:00:00Z", "event_type": "order", "channel": "direct", "amount": "20"}
    near = dict(row, amount="25")  # differs only in amount: a second order, kept
    same_instant = dict(row, timestamp="2024-01-05T11:00:00+01:00")  # the same event written with another offset
    raw = pd.DataFrame([row, row, near, row, same_instant])
    out, summary = validate_events(raw, config, source="unit")
    assert summary.dropped == {"exact duplicate events": 3}
    assert (summary.rows_read, summary.rows_out) == (5, 2)
    assert out["amount"].tolist() == [20.0, 25.0]
    assert "  dropped 3: exact duplicate events" in summary.lines()


def test_extra_columns_reported_as_ignored(config: FunnelConfig) -> None:
    raw = events(session_id=["s1", "s2"], user_agent=["x", "y"])
    out, summary = validate_events(raw, config)
    assert summary.ignored_columns == ["session_id", "user_agent"]
    assert list(out.columns) == list(EVENT_COLUMNS)
    assert summary.as_dict()["ignored_columns"] == ["session_id", "user_agent"]
    assert summary.lines()[-1] == "  columns not in the contract, ignored: session_id, user_agent"


def test_non_string_properties_become_json(config: FunnelConfig) -> None:
    raw = events(properties=[{"b": 1, "a": "x"}, '{"kept": "as is"}'])
    out, _ = validate_events(raw, config)
    assert out["properties"].tolist() == ['{"a": "x", "b": 1}', '{"kept": "as is"}']


def test_validating_the_canonical_frame_again_changes_nothing(raw_events: pd.DataFrame, config: FunnelConfig, tmp_path: Path) -> None:
    canonical, _ = validate_events(raw_events, config)
    canonical.to_parquet(tmp_path / "canonical.parquet", index=False)
    again, _ = read_events(tmp_path / "canonical.parquet", config)
    pd.testing.assert_frame_equal(again, canonical)


# ---- validate_customers ----------------------------------------------------------------------------

def test_customers_duplicate_id(config: FunnelConfig) -> None:
    raw = pd.DataFrame({"customer_id": ["a", "b", "a "], "plan": ["x", "y", "z"]})
    with pytest.raises(EventDataError, match=r"^crm: customer_id must be unique, but 2 rows share ids: row 1: 'a', row 3: 'a'$"):
        validate_customers(raw, config, source="crm")


def test_customers_null_id(config: FunnelConfig) -> None:
    raw = pd.DataFrame({"customer_id": ["a", None, "c"]})
    with pytest.raises(EventDataError, match=r"^crm: customers has 1 null or empty customer_id values: row 2$"):
        validate_customers(raw, config, source="crm")


def test_customers_missing_id_column(config: FunnelConfig) -> None:
    raw = pd.DataFrame({"id": ["a"]})
    with pytest.raises(EventDataError, match=re.escape("crm: customers lack required column(s) ['customer_id']; found columns ['id']")):
        validate_customers(raw, config, source="crm")


def test_customers_attributes(config: FunnelConfig) -> None:
    raw = pd.DataFrame(
        {
            "customer_id": ["b", "a", "c"],
            "signup_date": ["2024-01-15T09:00:00+01:00", "2024-02-01T00:00:00Z", None],
            "plan": ["pro", "free", None],
            "seats": ["3", "1", None],  # numeric text
            "mrr": [49.0, 0.0, 12.5],
            "employees": [10, 2, 250],
            "is_agency": [True, False, False],
        }
    )
    out, summary = validate_customers(raw, config, source="crm")
    assert out["customer_id"].tolist() == ["a", "b", "c"]
    assert out["customer_id"].dtype == pd.StringDtype()
    assert out["signup_date"].dtype == UTC_NS
    assert out["signup_date"].iloc[0] == pd.Timestamp("2024-02-01 00:00", tz="UTC")
    assert out["signup_date"].iloc[1] == pd.Timestamp("2024-01-15 08:00", tz="UTC")
    assert pd.isna(out["signup_date"].iloc[2])
    assert isinstance(out["plan"].dtype, pd.CategoricalDtype)
    assert out["plan"].tolist()[:2] == ["free", "pro"] and pd.isna(out["plan"].iloc[2])
    for col in ("seats", "mrr", "employees", "is_agency"):
        assert out[col].dtype == np.float64, col
    assert out["seats"].tolist()[:2] == [1.0, 3.0]
    assert out["employees"].tolist() == [2.0, 10.0, 250.0]
    assert out["is_agency"].tolist() == [0.0, 1.0, 0.0]
    assert (summary.rows_read, summary.rows_out) == (3, 3)


def test_customers_naive_signup_date_uses_source_timezone(config: FunnelConfig) -> None:
    raw = pd.DataFrame({"customer_id": ["a"], "signup_date": ["2024-07-01 08:00:00"]})
    with pytest.raises(EventDataError, match=r"crm: column 'signup_date' has 1 timestamps without a time zone \(row 1: '2024-07-01 08:00:00'\)"):
        validate_customers(raw, config, source="crm")
    out, _ = validate_customers(raw, with_settings(config, source_timezone="Europe/Berlin"))
    assert out["signup_date"].iloc[0] == pd.Timestamp("2024-07-01 06:00", tz="UTC")


def test_customers_bad_date_names_column_row_and_value(utc_config: FunnelConfig) -> None:
    raw = pd.DataFrame({"customer_id": ["a", "b"], "signup_date": ["2024-01-15T00:00:00Z", "last tuesday"]})
    with pytest.raises(EventDataError, match=r"^crm: column 'signup_date' has 1 (?:missing or )?unparseable timestamps: row 2: 'last tuesday'"):
        validate_customers(raw, utc_config, source="crm")


def test_customers_bad_date_after_a_null_names_the_right_row(utc_config: FunnelConfig) -> None:
    raw = pd.DataFrame({"customer_id": ["a", "b", "c"], "signup_date": [None, "2024-01-15T00:00:00Z", "last tuesday"]})
    with pytest.raises(EventDataError) as info:
        validate_customers(raw, utc_config, source="crm")
    assert "row 3: 'last tuesday'" in str(info.value), str(info.value)


def test_customers_unusable_attribute_name(config: FunnelConfig) -> None:
    raw = pd.DataFrame({"customer_id": ["a"], "plan type": ["pro"]})
    with pytest.raises(EventDataError, match=r"crm: attribute column 'plan type' is not a usable name"):
        validate_customers(raw, config, source="crm")


# ---- sources ---------------------------------------------------------------------------------------

def test_parse_source() -> None:
    assert parse_source("sqlite:///e.db#events") == SqlSource("sqlite:///e.db", table="events")
    assert parse_source("sqlite:///e.db#table=events") == SqlSource("sqlite:///e.db", table="events")
    assert parse_source("postgresql+psycopg://h/db#query=SELECT * FROM e WHERE x = '#'") == SqlSource(
        "postgresql+psycopg://h/db", query="SELECT * FROM e WHERE x = '#'"
    )
    assert parse_source("data/events.csv") == Path("data/events.csv")
    assert parse_source("file:///tmp/events.csv") == Path("/tmp/events.csv")
    assert parse_source(Path("x.parquet")) == Path("x.parquet")
    src = SqlSource("sqlite:///e.db", table="t")
    assert parse_source(src) is src


def test_sql_source_hides_the_password() -> None:
    src = parse_source("postgresql://ana:s3cret@db.example/shop#events")
    assert str(src) == "postgresql://ana:***@db.example/shop (table events)"
    with pytest.raises(EventDataError) as info:
        parse_source("postgresql://ana:s3cret@db.example/shop")
    assert "s3cret" not in str(info.value) and "ana:***@" in str(info.value)


def _csv(tmp_path: Path, raw: pd.DataFrame) -> str:
    raw.to_csv(tmp_path / "events.csv", index=False)
    return str(tmp_path / "events.csv")


def _parquet(tmp_path: Path, raw: pd.DataFrame) -> str:
    raw.to_parquet(tmp_path / "events.parquet", index=False)
    return str(tmp_path / "events.parquet")


def _parquet_dir(tmp_path: Path, raw: pd.DataFrame) -> str:
    folder = tmp_path / "events"
    folder.mkdir()
    raw.iloc[:2].to_parquet(folder / "part-0.parquet", index=False)
    raw.iloc[2:].to_parquet(folder / "part-1.parquet", index=False)
    return str(folder)


def _sqlite(tmp_path: Path, raw: pd.DataFrame) -> str:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/e.db")
    raw.to_sql("events", engine, index=False)
    engine.dispose()
    return f"sqlite:///{tmp_path}/e.db"


def _sqlite_table(tmp_path: Path, raw: pd.DataFrame) -> str:
    return _sqlite(tmp_path, raw) + "#events"


def _sqlite_table_kw(tmp_path: Path, raw: pd.DataFrame) -> str:
    return _sqlite(tmp_path, raw) + "#table=events"


def _sqlite_query(tmp_path: Path, raw: pd.DataFrame) -> str:
    return _sqlite(tmp_path, raw) + "#query=SELECT customer_id, timestamp, event_type, channel, amount, properties FROM events"


def _sqlite_source(tmp_path: Path, raw: pd.DataFrame) -> SqlSource:
    return SqlSource(_sqlite(tmp_path, raw), table="events")


@pytest.mark.parametrize(
    "write", [_csv, _parquet, _parquet_dir, _sqlite_table, _sqlite_table_kw, _sqlite_query, _sqlite_source],
    ids=["csv", "parquet", "parquet-dir", "sqlite-table", "sqlite-table=", "sqlite-query", "sqlsource"],
)
def test_every_reader_yields_the_same_canonical_frame(tmp_path: Path, raw_events: pd.DataFrame, config: FunnelConfig, write) -> None:
    expected, _ = validate_events(raw_events, config)
    spec = write(tmp_path, raw_events)
    got, summary = read_events(spec, config)
    pd.testing.assert_frame_equal(got, expected)
    assert (summary.rows_read, summary.rows_out) == (4, 4)
    assert summary.source == str(parse_source(spec))


@pytest.mark.postgres
def test_postgres_table_yields_the_same_canonical_frame(
    postgres_url: str, postgres_table: str, raw_events: pd.DataFrame, config: FunnelConfig
) -> None:
    expected, _ = validate_events(raw_events, config)
    engine = sa.create_engine(postgres_url)
    raw_events.to_sql(postgres_table, engine, index=False)
    engine.dispose()
    got, summary = read_events(f"{postgres_url}#{postgres_table}", config)
    pd.testing.assert_frame_equal(got, expected)
    assert summary.source == f"{postgres_url} (table {postgres_table})"
    got, _ = read_events(f'{postgres_url}#query=SELECT * FROM "{postgres_table}" ORDER BY customer_id', config)
    pd.testing.assert_frame_equal(got, expected)


@pytest.mark.postgres
def test_postgres_timestamptz_column(postgres_url: str, postgres_table: str, raw_events: pd.DataFrame, config: FunnelConfig) -> None:
    expected, _ = validate_events(raw_events, config)
    typed = raw_events.assign(timestamp=pd.to_datetime(raw_events["timestamp"], utc=True, format="ISO8601"))
    engine = sa.create_engine(postgres_url)
    typed.to_sql(postgres_table, engine, index=False)  # TIMESTAMP WITH TIME ZONE
    engine.dispose()
    got, _ = read_events(f"{postgres_url}#table={postgres_table}", config)
    pd.testing.assert_frame_equal(got, expected)


@pytest.mark.postgres
def test_postgres_missing_table(postgres_url: str, postgres_table: str, config: FunnelConfig) -> None:
    with pytest.raises(EventDataError, match=rf"\(table {postgres_table}\): the database has no table '{postgres_table}'"):
        read_events(f"{postgres_url}#{postgres_table}", config)


def test_csv_is_read_as_text(tmp_path: Path, raw_events: pd.DataFrame) -> None:
    raw, name, _ = read_table(_csv(tmp_path, raw_events))
    assert name == str(tmp_path / "events.csv")
    assert raw["customer_id"].tolist() == ["c2", "007", "007", "c2"]  # leading zeros survive
    assert raw["amount"].iloc[0] == "120.5"
    assert raw["channel"].isna().tolist() == [False, True, False, False]  # an empty field is null


def test_read_events_as_of(tmp_path: Path, raw_events: pd.DataFrame, config: FunnelConfig) -> None:
    spec = _csv(tmp_path, raw_events)
    assert len(read_events(spec, config, as_of="2024-01-04")[0]) == 4
    with pytest.raises(EventDataError, match=r"events\.csv: 1 events are at or after the run's as-of time 2024-01-03T00:00:00\+00:00: row 1: '2024-01-03T09:00:00Z'"):
        read_events(spec, config, as_of="2024-01-03")


def test_read_customers_csv_and_parquet_agree(tmp_path: Path, config: FunnelConfig) -> None:
    raw = pd.DataFrame(
        {"customer_id": ["b", "a"], "signup_date": ["2024-01-15T09:00:00+01:00", "2024-02-01T00:00:00Z"], "plan": ["pro", "free"], "seats": [3.0, 1.0]}
    )
    raw.to_csv(tmp_path / "c.csv", index=False)
    raw.to_parquet(tmp_path / "c.parquet", index=False)
    from_csv, summary = read_customers(tmp_path / "c.csv", config)
    from_parquet, _ = read_customers(tmp_path / "c.parquet", config)
    pd.testing.assert_frame_equal(from_csv, from_parquet)
    assert from_csv["signup_date"].tolist() == [pd.Timestamp("2024-02-01", tz="UTC"), pd.Timestamp("2024-01-15 08:00", tz="UTC")]
    assert summary.source == str(tmp_path / "c.csv")


# ---- reader errors ---------------------------------------------------------------------------------

def test_missing_file(tmp_path: Path, config: FunnelConfig) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(EventDataError, match=rf"^{re.escape(str(path))}: no such file or directory$"):
        read_events(path, config)


def test_unknown_extension(tmp_path: Path, config: FunnelConfig) -> None:
    path = tmp_path / "events.json"
    path.write_text("[]")
    with pytest.raises(EventDataError, match=rf"^{re.escape(str(path))}: unknown file type '\.json'; use \.csv, \.parquet or a directory"):
        read_events(path, config)


def test_corrupt_parquet(tmp_path: Path, config: FunnelConfig) -> None:
    path = tmp_path / "events.parquet"
    path.write_bytes(b"this is not parquet")
    with pytest.raises(EventDataError, match=rf"^{re.escape(str(path))}: could not be read: "):
        read_events(path, config)


def test_empty_csv(tmp_path: Path, config: FunnelConfig) -> None:
    path = tmp_path / "events.csv"
    path.write_text("")
    with pytest.raises(EventDataError, match=rf"^{re.escape(str(path))}: could not be read: "):
        read_events(path, config)


def test_sql_url_without_table(config: FunnelConfig) -> None:
    with pytest.raises(EventDataError, match=r"^SQL source 'sqlite:///e\.db' names no table or query; append '#TABLE'"):
        read_events("sqlite:///e.db", config)


def test_missing_sql_table(tmp_path: Path, raw_events: pd.DataFrame, config: FunnelConfig) -> None:
    url = _sqlite(tmp_path, raw_events)
    with pytest.raises(EventDataError, match=rf"^{re.escape(url)} \(table evnts\): the database has no table 'evnts'$"):
        read_events(f"{url}#evnts", config)


def test_bad_sql_query(tmp_path: Path, raw_events: pd.DataFrame, config: FunnelConfig) -> None:
    url = _sqlite(tmp_path, raw_events)
    with pytest.raises(EventDataError, match=rf"^{re.escape(url)} \(query 'SELECT \* FROM nope'\): the database refused the read: .*no such table: nope"):
        read_events(f"{url}#query=SELECT * FROM nope", config)


def test_unusable_database_url(config: FunnelConfig) -> None:
    with pytest.raises(EventDataError, match=r"^nosuchdb://host/x \(table events\): not a usable database URL"):
        read_events("nosuchdb://host/x#events", config)


def test_unreachable_database(config: FunnelConfig) -> None:
    with pytest.raises(EventDataError, match=r"^postgresql\+psycopg://postgres@127\.0\.0\.1:1/test \(table events\): the database refused the read: "):
        read_events("postgresql+psycopg://postgres@127.0.0.1:1/test#events", config)


# ---- one encoder, two shapes of input ----------------------------------------------------------

def test_a_table_and_json_events_encode_to_the_same_arrays_with_the_same_counts(config: FunnelConfig) -> None:
    """EventEncoder: a customer's events as a table row set and as a request's JSON list are one contract."""
    from funnelcast.features.events import DUPLICATES, EventEncoder, mapped_to_other

    records = [
        {"customer_id": "c1", "timestamp": "2024-03-01T10:00:00+01:00", "event_type": "order", "channel": "direct", "amount": 20.5},
        {"customer_id": "c1", "timestamp": "2024-02-01T00:00:00Z", "event_type": "blog_view", "channel": "carrier_pigeon"},
        {"customer_id": "c1", "timestamp": "2024-02-01T00:00:00Z", "event_type": "blog_view", "channel": "carrier_pigeon"},
        {"customer_id": "c1", "timestamp": "2024-01-15T08:30:00Z", "event_type": "newsletter_signup", "properties": {"src": "x"}},
        # Nanoseconds (what pandas writes) survive a request as they survive a table: a feature that
        # differs in the 12th digit can cross a tree's threshold (a skew CI once caught in /score_events).
        {"customer_id": "c1", "timestamp": "2024-01-20T08:30:00.123456789Z", "event_type": "blog_view"},
        {"customer_id": "c1", "timestamp": "2024-01-21T08:30:00.0000005+02:00", "event_type": "blog_view"},
    ]
    encoder = EventEncoder(config)
    from_table, table_summary = encoder.frame(pd.DataFrame(records))
    from_json, json_summary = encoder.records(records)
    for field in ("customer_ids", "starts", "customer", "ts", "event_type", "channel", "amount"):
        np.testing.assert_array_equal(getattr(from_table, field), getattr(from_json, field), err_msg=field)
    for summary in (table_summary, json_summary):
        assert summary.rows_read == 6 and summary.rows_out == 5
        assert summary.count(DUPLICATES) == 1 and summary.count(mapped_to_other("channel")) == 2
    assert table_summary.altered == json_summary.altered and table_summary.dropped == json_summary.dropped
    assert from_json.ts[1] % 10**9 == 123_456_789 and from_json.ts[2] % 10**9 == 500  # in time order
    # The same refusals, in each shape's words.
    bad = [dict(records[0], amount=-1.0)]
    with pytest.raises(EventDataError, match="negative purchase amount"):
        encoder.frame(pd.DataFrame(bad))
    with pytest.raises(EventDataError, match=r"events\[0\]\.amount -1\.0 is a negative purchase amount"):
        encoder.records(bad)


# ---- a folder of Parquet files whose files differ ----------------------------------------------

def test_a_parquet_folder_whose_files_differ_loses_nothing_silently(tmp_path: Path, utc_config: FunnelConfig) -> None:
    folder = tmp_path / "events"
    folder.mkdir()
    first = pd.DataFrame({"customer_id": ["a", "b"], "timestamp": ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"],
                          "event_type": ["order", "order"]})
    later = pd.DataFrame({"customer_id": ["c"], "timestamp": ["2024-01-03T00:00:00Z"],
                          "event_type": pd.Categorical(["order"]), "channel": ["direct"], "campaign": ["x1"]})
    first.to_parquet(folder / "part-0.parquet")
    later.to_parquet(folder / "part-1.parquet")
    events, summary = read_events(folder, utc_config)
    assert len(events) == 3 and summary.rows_read == summary.rows_out == 3
    # The channel the later file has survives; the first file's rows are counted as read without one.
    assert events.set_index("customer_id").loc["c", "channel"] == "direct"
    assert events.set_index("customer_id").loc[["a", "b"], "channel"].isna().all()
    assert summary.altered == {"part-0.parquet has no column 'channel': its rows read with channel missing": 2,
                               "part-0.parquet has no column 'campaign': its rows read with campaign missing": 2}
    assert summary.ignored_columns == ["campaign"]  # an extra column is listed, not dropped unseen


def test_a_parquet_folder_whose_files_disagree_on_a_type_is_refused(tmp_path: Path, utc_config: FunnelConfig) -> None:
    folder = tmp_path / "events"
    folder.mkdir()
    base = {"customer_id": ["a"], "timestamp": ["2024-01-01T00:00:00Z"], "event_type": ["order"]}
    pd.DataFrame({**base, "amount": [5.0]}).to_parquet(folder / "part-0.parquet")
    pd.DataFrame({**base, "amount": ["five"]}).to_parquet(folder / "part-1.parquet")
    with pytest.raises(EventDataError, match=r"the files disagree on column 'amount': double in part-0\.parquet; \w*string in part-1"):
        read_events(folder, utc_config)

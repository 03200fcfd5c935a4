"""The vectorised feature engine against hand-computed rows, a plain-Python reference and properties.

Time semantics under test (features/behaviour.py): an event is visible at cutoff ``t`` iff
``ts < t``; window ``w`` days is ``t - w days <= ts < t``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from funnelcast.features.behaviour import compute_features, feature_spec
from funnelcast.features.events import EventArrays, validate_customers, validate_events
from funnelcast.features.snapshots import FRAME_EXTRAS, build_features
from funnelcast.features.timestamps import DAY_NS, stated_ns
from funnelcast.features.errors import ConfigError
from funnelcast.features.funnel import (
    DEFAULT_FEATURE_FAMILIES,
    FEATURE_FAMILIES,
    FunnelConfig,
    config_from_dict,
    load_config,
)

try:  # tests/ is on sys.path under pytest's default import mode
    from reference import reference_features
except ImportError:  # pragma: no cover - tests imported as a package
    from tests.reference import reference_features

CONFIG = load_config()  # the default funnel (same as the ``config`` fixture); module level for strategies
SPEC = feature_spec(CONFIG)
COLUMNS = list(SPEC.columns)
STD = "std_days_between_purchases"

T = pd.Timestamp("2024-03-01", tz="UTC")
D = pd.Timedelta(days=1)
H = pd.Timedelta(hours=1)
S = pd.Timedelta(seconds=1)
NS = pd.Timedelta(1, unit="ns")
SECOND = 1 / 86_400


# ---- helpers -----------------------------------------------------------------------------------

def raw_frame(rows: list[tuple]) -> pd.DataFrame:
    """(customer_id, timestamp, event_type[, channel[, amount]]) tuples as a raw event frame."""
    full = [tuple(r) + (None,) * (5 - len(r)) for r in rows]
    return pd.DataFrame(
        {
            "customer_id": pd.Series([r[0] for r in full], dtype=object),
            "timestamp": pd.Series([r[1] for r in full], dtype="datetime64[ns, UTC]"),
            "event_type": pd.Series([r[2] for r in full], dtype=object),
            "channel": pd.Series([r[3] for r in full], dtype=object),
            "amount": pd.Series([np.nan if r[4] is None else r[4] for r in full], dtype="float64"),
        }
    )


def canonical(rows: list[tuple], config=CONFIG) -> pd.DataFrame:
    return validate_events(raw_frame(rows), config)[0]


def without_extras(frame: pd.DataFrame) -> pd.DataFrame:
    """A feature frame's ids, cutoff and model columns (not the stage and eligibility columns it also carries)."""
    return frame[[c for c in frame.columns if c not in FRAME_EXTRAS or c in ("customer_id", "cutoff")]]


def assert_matches_reference(got: pd.DataFrame, ref: pd.DataFrame, std_atol: float = 1e-9) -> None:
    got = without_extras(got)
    assert list(got["customer_id"]) == list(ref["customer_id"])
    assert list(got.columns) == list(ref.columns)
    assert (got["cutoff"] == ref["cutoff"]).all()
    tight = [c for c in ref.columns[2:] if c != STD]  # the reference's config's columns (not always CONFIG's)
    np.testing.assert_allclose(
        got[tight].to_numpy(np.float64), ref[tight].to_numpy(np.float64), rtol=1e-9, atol=1e-9, equal_nan=True
    )
    # std of purchase gaps is held to the same 1e-9 (two-pass variance; see test_std_of_gaps_is_exact).
    np.testing.assert_allclose(got[STD].to_numpy(np.float64), ref[STD].to_numpy(np.float64), rtol=1e-9, atol=std_atol, equal_nan=True)


def rows_by_id(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    values = frame[COLUMNS].to_numpy(np.float64)
    return {cid: values[i] for i, cid in enumerate(frame["customer_id"])}


# ---- golden rows -------------------------------------------------------------------------------

GOLDEN_ROWS = [
    # alice: the whole journey; purchases at T-30d (100), T-10d (50), T-2d (30)
    ("alice", T - 100 * D, "ad_impression", "ads"),
    ("alice", T - 80 * D, "search_visit", "search"),
    ("alice", T - 60 * D, "newsletter_signup", None),
    ("alice", T - 40 * D, "pricing_view", "direct"),
    ("alice", T - 30 * D, "order", "direct", 100.0),  # exactly at T-30d: inside the 30d window
    ("alice", T - 10 * D, "repeat_order", "direct", 50.0),
    ("alice", T - 7 * D, "email_sent", "email"),  # exactly at T-7d: inside the 7d window
    ("alice", T - 2 * D, "repeat_order", "direct", 30.0),
    ("alice", T, "support_ticket", None),  # exactly at the cutoff: invisible
    ("alice", T + D, "order", "direct", 999.0),
    # bob: a few days old, at interest; his pricing view at the cutoff is invisible
    ("bob", T - 3 * D - 6 * H, "blog_view", "social"),
    ("bob", T - D - 12 * H, "form_fill", None),
    ("bob", T - D - H, "blog_view", "social"),
    ("bob", T - 12 * H, "email_opened", "email"),
    ("bob", T, "pricing_view", "direct"),
    # carol: two orders one second apart straddling the 90d window edge, one without an amount
    ("carol", T - 120 * D, "email_sent", "email"),
    ("carol", T - 90 * D - S, "order", "referral", 20.0),
    ("carol", T - 90 * D, "order", None, None),
    # erin: activity on both sides of the trend windows' edges (T-30d, T-60d)
    ("erin", T - 60 * D - S, "search_visit", "search"),  # 60 days + 1 s: before the previous window
    ("erin", T - 60 * D, "social_visit", "social"),  # previous window
    ("erin", T - 45 * D, "email_sent", "email"),  # outbound: not activity
    ("erin", T - 30 * D - S, "email_opened", "email"),  # previous window
    ("erin", T - 30 * D, "ad_click", "ads"),  # last window
    # dave: nothing before the cutoff, so no row
    ("dave", T, "cart_add", "direct"),
    ("dave", T + 2 * D, "order", "direct", 10.0),
]

NAN = float("nan")
GOLDEN = {
    "alice": {
        "count_events_7d": 2, "count_events_30d": 4, "count_events_90d": 7, "count_events_all_time": 8,
        "count_email_sent_7d": 1, "count_marketing_touch_7d": 1, "count_outbound_7d": 1,
        "count_activity_7d": 1, "count_activity_30d": 3, "count_activity_all_time": 6,
        "count_order_all_time": 1, "count_order_30d": 1, "count_repeat_order_30d": 2,
        "count_stage_loyalty_all_time": 2, "count_stage_purchase_all_time": 1,
        "count_ad_impression_90d": 0, "count_ad_impression_all_time": 1,
        "count_support_ticket_all_time": 0, "count_support_all_time": 0,
        "active_days_7d": 2, "active_days_30d": 4, "active_days_all_time": 8,
        "count_channel_direct_all_time": 4, "count_channel_email_all_time": 1, "count_channel_ads_all_time": 1,
        "count_inbound_all_time": 5, "count_outbound_all_time": 2, "inbound_share_all_time": 5 / 7,
        "spend_7d": 30, "spend_30d": 180, "spend_90d": 180, "spend_all_time": 180,
        "days_since_last_event": 2, "tenure_days": 100,
        "days_since_last_stage_awareness": 80, "days_since_last_stage_interest": 60,
        "days_since_last_stage_consideration": 40, "days_since_last_stage_purchase": 30,
        "days_since_last_stage_loyalty": 2,
        "days_since_last_support": NAN, "days_since_last_marketing_touch": 7,
        "days_since_last_activity": 2, "days_since_last_purchase": 2,
        "current_stage": 4, "days_in_current_stage": 10,
        "days_to_reach_stage_interest": 40, "days_to_reach_stage_consideration": 60,
        "days_to_reach_stage_purchase": 70, "days_to_reach_stage_loyalty": 90,
        "activity_last_30d": 3, "activity_prev_30d": 2, "activity_trend": 0.2,
        "days_since_first_purchase": 30, "avg_order_value": 60, "max_order_value": 100,
        "mean_days_between_purchases": 14, "std_days_between_purchases": 6, "last_days_between_purchases": 8,
    },
    "bob": {
        "count_events_7d": 4, "count_events_all_time": 4, "count_blog_view_7d": 2,
        "count_pricing_view_all_time": 0, "count_stage_consideration_all_time": 0,
        "count_stage_awareness_all_time": 2, "count_stage_interest_all_time": 1,
        "active_days_7d": 3, "active_days_all_time": 3,
        "count_activity_all_time": 4, "count_marketing_touch_all_time": 1,
        "count_inbound_all_time": 2, "count_outbound_all_time": 1, "inbound_share_all_time": 2 / 3,
        "count_channel_social_all_time": 2, "count_channel_direct_all_time": 0,
        "days_since_last_event": 0.5, "tenure_days": 3.25,
        "days_since_last_marketing_touch": 0.5, "days_since_last_stage_consideration": NAN,
        "current_stage": 1, "days_in_current_stage": 1.5,
        "days_to_reach_stage_interest": 1.75, "days_to_reach_stage_consideration": NAN,
        "days_to_reach_stage_purchase": NAN, "days_to_reach_stage_loyalty": NAN,
        "activity_last_30d": 4, "activity_prev_30d": 0, "activity_trend": 1.0,
        "spend_all_time": 0, "avg_order_value": NAN, "max_order_value": NAN,
        "days_since_first_purchase": NAN, "days_since_last_purchase": NAN,
        "mean_days_between_purchases": NAN, "std_days_between_purchases": NAN, "last_days_between_purchases": NAN,
    },
    "carol": {
        "count_events_90d": 1, "count_events_all_time": 3, "count_order_90d": 1, "count_order_all_time": 2,
        "count_email_sent_all_time": 1, "count_activity_all_time": 2,
        "spend_90d": 0, "spend_all_time": 20, "avg_order_value": 20, "max_order_value": 20,
        "active_days_90d": 1, "active_days_all_time": 3,
        "count_inbound_all_time": 1, "count_outbound_all_time": 1, "inbound_share_all_time": 0.5,
        "count_channel_referral_all_time": 1, "count_channel_other_all_time": 0,
        "days_since_last_event": 90, "tenure_days": 120, "days_since_last_activity": 90,
        "current_stage": 3, "days_in_current_stage": 90 + SECOND,
        "days_to_reach_stage_interest": 30 - SECOND, "days_to_reach_stage_consideration": 30 - SECOND,
        "days_to_reach_stage_purchase": 30 - SECOND, "days_to_reach_stage_loyalty": NAN,
        "days_since_last_stage_awareness": NAN,
        "activity_last_30d": 0, "activity_prev_30d": 0, "activity_trend": 0.0,
        "days_since_first_purchase": 90 + SECOND, "mean_days_between_purchases": SECOND,
        "std_days_between_purchases": 0.0, "last_days_between_purchases": SECOND,
    },
    "erin": {
        "count_events_30d": 1, "count_events_90d": 5, "count_activity_all_time": 4, "count_activity_30d": 1,
        "activity_last_30d": 1, "activity_prev_30d": 2, "activity_trend": -1 / 3,
        "active_days_30d": 1, "active_days_all_time": 5,
        "count_inbound_all_time": 2, "count_outbound_all_time": 3, "inbound_share_all_time": 0.4,
        "count_channel_ads_all_time": 1, "count_marketing_touch_all_time": 2,
        "days_since_last_marketing_touch": 30 + SECOND, "days_since_last_activity": 30,
        "current_stage": 0, "days_in_current_stage": 60 + SECOND, "tenure_days": 60 + SECOND,
        "days_to_reach_stage_interest": NAN, "spend_all_time": 0,
    },
}


@pytest.fixture(scope="module")
def golden_events() -> pd.DataFrame:
    """The golden log, canonical but with rows shuffled (the engine must not rely on input order)."""
    return canonical(GOLDEN_ROWS).sample(frac=1.0, random_state=7).reset_index(drop=True)


def test_golden_fixture_is_canonical_and_shuffled(golden_events):
    assert len(golden_events) == len(GOLDEN_ROWS)
    assert not golden_events["timestamp"].is_monotonic_increasing


def test_golden_rows(golden_events, config):
    frame = build_features(golden_events, None, T, config)
    assert list(frame["customer_id"]) == ["alice", "bob", "carol", "erin"]  # dave has nothing before T
    assert (frame["cutoff"] == T).all()
    assert list(without_extras(frame).columns[2:]) == list(feature_spec(config).columns)
    assert list(frame.columns[-4:]) == ["stage", "convert_eligible", "churn_eligible", "value_eligible"]
    got = frame.set_index("customer_id")
    for cid, expected in GOLDEN.items():
        for name, value in expected.items():
            assert name in got.columns, name
            actual = got.at[cid, name]
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(actual), f"{cid}.{name}: expected NaN, got {actual}"
            else:
                assert actual == pytest.approx(value, rel=1e-12, abs=1e-12), f"{cid}.{name}: expected {value}, got {actual}"


def test_golden_events_at_cutoff_are_invisible(golden_events, config):
    """Moving the cutoff 1 ns later makes the events exactly at T visible; 1 ns earlier hides T-7d's edge."""
    later = build_features(golden_events, None, T + NS, config).set_index("customer_id")
    assert later.at["alice", "count_support_ticket_all_time"] == 1
    assert later.at["bob", "current_stage"] == 2
    assert later.at["dave", "count_cart_add_all_time"] == 1
    # at T + 1ns the email at T-7d is 7 days + 1 ns old: out of the 7d window
    assert later.at["alice", "count_email_sent_7d"] == 0
    earlier = build_features(golden_events, None, T - NS, config).set_index("customer_id")
    assert earlier.at["alice", "count_email_sent_7d"] == 1
    assert earlier.at["alice", "count_events_7d"] == 2


def test_golden_equals_reference(golden_events, config):
    for cutoff in (T, T + NS, T - NS, T - 7 * D, T - 30 * D, T - 90 * D, T + 3 * D, T - 200 * D, T + 200 * D):
        assert_matches_reference(build_features(golden_events, None, cutoff, config), reference_features(golden_events, cutoff, config))


def test_naive_cutoff_is_utc(golden_events, config):
    a = build_features(golden_events, None, "2024-03-01", config)
    b = build_features(golden_events, None, T, config)
    c = build_features(golden_events, None, pd.Timestamp("2024-03-01 01:00", tz="Europe/Berlin"), config)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(b, c)
    assert stated_ns("2024-03-01", None, "cutoff") == T.value


def test_naive_cutoff_is_the_source_timezone_where_the_config_has_one(golden_events, config):
    """One rule for stated times: a naive cutoff is local time in source_timezone (else UTC, above)."""
    berlin = config.model_copy(update={"source_timezone": "Europe/Berlin"})
    a = build_features(golden_events, None, "2024-03-01 01:00", berlin)
    b = build_features(golden_events, None, T, config)
    assert (a["cutoff"] == T).all()
    pd.testing.assert_frame_equal(without_extras(a), without_extras(b))


def test_std_of_gaps_is_exact(config):
    gap = 7_349_393 * S  # four purchases with three identical gaps of 85.06 days
    base = T - 300 * D
    rows = [("p", base + i * gap, "order", "direct", 10.0) for i in range(4)]
    rows += [("q", base, "order", "direct", 1.0), ("q", base + 100.123 * D, "order"), ("q", base + 200.247 * D, "order")]
    events = canonical(rows)
    got = build_features(events, None, T, config).set_index("customer_id")
    ref = reference_features(events, T, config).set_index("customer_id")
    assert ref.at["p", STD] == 0.0
    assert got.at["p", STD] == 0.0
    np.testing.assert_allclose(got.at["q", STD], ref.at["q", STD], rtol=1e-9, atol=1e-9)


# ---- random logs -------------------------------------------------------------------------------

BASE = pd.Timestamp("2024-01-01", tz="UTC")
SPAN_SECONDS = 200 * 86_400
PURCHASE = set(CONFIG.purchase_event_types)
CHANNELS = list(CONFIG.channel_names) + [None]
# purchases weighted up so customers often have several (gap statistics), every type still drawn
TYPES = list(CONFIG.event_types) + sorted(PURCHASE) * 5


AMOUNTS = st.one_of(st.none(), st.integers(0, 100_000).map(lambda x: x / 100), st.floats(0, 1e4, allow_nan=False))


def event_rows(ids: list[str], min_size: int = 0, max_size: int = 40, start: pd.Timestamp = BASE, span: int = SPAN_SECONDS,
               types: list[str] = TYPES):
    """Random events of ``ids`` at whole seconds in ``[start, start + span]``; amounts on purchases only."""
    event = st.tuples(
        st.sampled_from(ids), st.integers(0, span), st.sampled_from(types), st.sampled_from(CHANNELS), AMOUNTS
    ).map(lambda e: (e[0], start + e[1] * S, e[2], e[3], e[4] if e[2] in PURCHASE else None))
    return st.lists(event, min_size=min_size, max_size=max_size)


@st.composite
def logs(draw, types: list[str] = TYPES):
    """(rows, cutoff): 1–6 customers, 0–40 events over ~200 days; cutoffs often on an edge."""
    n_customers = draw(st.integers(1, 6))
    ids = [f"c{i}" for i in range(n_customers)]
    rows = draw(event_rows(ids, types=types))
    mode = draw(st.sampled_from(["random", "at_event", "window_edge"]))
    if mode == "random" or not rows:
        cutoff = BASE + draw(st.integers(-2 * 86_400, SPAN_SECONDS + 30 * 86_400)) * S
    else:
        ts = draw(st.sampled_from(rows))[1]
        if mode == "at_event":
            cutoff = ts + draw(st.sampled_from([-1, 0, 1])) * NS
        else:
            w = draw(st.sampled_from([1, 7, 30, 60, 90]))
            cutoff = ts + w * D + draw(st.sampled_from([-1, 0, 1])) * NS
    return rows, cutoff


FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(FAST, max_examples=150)
@given(logs())
def test_engine_equals_reference_on_random_logs(log):
    rows, cutoff = log
    events = canonical(rows)
    got = build_features(events, None, cutoff, CONFIG)
    ref = reference_features(events, cutoff, CONFIG)
    # the std column gets an absolute tolerance that covers the one-pass cancellation: gaps are
    # <= ~200 days, so the variance is off by a few ulps of 4e4 (~1e-10) and the std by ~1e-5 at most
    assert_matches_reference(got, ref)


# ---- properties --------------------------------------------------------------------------------

def features_of(rows: list[tuple], cutoff) -> pd.DataFrame:
    return build_features(canonical(rows), None, cutoff, CONFIG)


@st.composite
def future_edits(draw, types: list[str] = TYPES):
    """A log, a cutoff, and the same log with events at or after the cutoff changed, added, removed."""
    rows, cutoff = draw(logs(types))
    ids = sorted({r[0] for r in rows} | {"c0", "new"})
    past = [r for r in rows if r[1] < cutoff]
    edited = list(past)
    for r in (r for r in rows if r[1] >= cutoff):
        action = draw(st.sampled_from(["keep", "drop", "change"]))
        if action == "keep":
            edited.append(r)
        elif action == "change":
            et = draw(st.sampled_from(types))
            later = cutoff + draw(st.integers(0, 100 * 86_400)) * S
            amount = draw(st.floats(0, 1e4)) if et in PURCHASE else None
            edited.append((r[0], later, et, draw(st.sampled_from(CHANNELS)), amount))
    added = draw(event_rows(ids, max_size=10, start=cutoff, span=100 * 86_400, types=types))
    at_cutoff = draw(st.lists(st.tuples(st.sampled_from(ids), st.sampled_from(types)), max_size=3))
    edited += added + [(cid, cutoff, et, "direct", 5.0 if et in PURCHASE else None) for cid, et in at_cutoff]
    return rows, edited, cutoff


@FAST
@given(future_edits())
def test_events_at_or_after_cutoff_change_nothing(case):
    rows, edited, cutoff = case
    pd.testing.assert_frame_equal(features_of(rows, cutoff), features_of(edited, cutoff), check_exact=True)


@FAST
@given(logs(), st.data())
def test_duplicates_removed_by_validation_change_nothing(log, data):
    rows, cutoff = log
    raw = raw_frame(rows)
    extra = data.draw(st.lists(st.integers(0, max(len(rows) - 1, 0)), max_size=20)) if rows else []
    doubled = pd.concat([raw, raw.iloc[extra]], ignore_index=True).sample(frac=1.0, random_state=data.draw(st.integers(0, 2**31)))
    once = validate_events(raw, CONFIG)[0]
    twice, summary = validate_events(doubled, CONFIG)
    assert summary.dropped.get("exact duplicate events", 0) >= len(extra)
    pd.testing.assert_frame_equal(build_features(once, None, cutoff, CONFIG), build_features(twice, None, cutoff, CONFIG), check_exact=True)


@FAST
@given(logs(), st.data())
def test_row_depends_only_on_own_events(log, data):
    rows, cutoff = log
    ids = sorted({r[0] for r in rows} | {"c0"})
    touched = data.draw(st.lists(st.sampled_from(ids + ["new_a", "zz_new"]), min_size=1, max_size=3, unique=True))
    extra = data.draw(event_rows(touched, min_size=1, max_size=15, start=cutoff - 150 * D, span=200 * 86_400))
    before = rows_by_id(features_of(rows, cutoff))
    after = rows_by_id(features_of(rows + extra, cutoff))
    for cid, row in before.items():
        if cid not in touched:
            np.testing.assert_array_equal(after[cid], row, err_msg=cid)
    assert set(after) - set(touched) == set(before) - set(touched)


@FAST
@given(logs(), st.permutations(["zeta", "a", "m0", "b9", "q", "k", "x2"]))
def test_renaming_customers_permutes_rows(log, names):
    rows, cutoff = log
    rename = {f"c{i}": names[i] for i in range(6)}
    before = features_of(rows, cutoff)
    after = features_of([(rename[r[0]],) + tuple(r[1:]) for r in rows], cutoff)
    assert list(after["customer_id"]) == sorted(after["customer_id"])
    assert sorted(after["customer_id"]) == sorted(rename[c] for c in before["customer_id"])
    b, a = rows_by_id(before), rows_by_id(after)
    for cid, row in b.items():
        np.testing.assert_array_equal(a[rename[cid]], row, err_msg=cid)


@FAST
@given(logs(), st.randoms(use_true_random=False))
def test_input_row_order_never_matters(log, rnd):
    rows, cutoff = log
    events = canonical(rows)
    order = list(range(len(events)))
    rnd.shuffle(order)
    shuffled = events.iloc[order].reset_index(drop=True)
    a = build_features(events, None, cutoff, CONFIG)
    b = build_features(shuffled, None, cutoff, CONFIG)
    assert list(a["customer_id"]) == list(b["customer_id"])
    # ties in time may add amounts in another order: allow a few ulps, nothing more
    np.testing.assert_allclose(b[COLUMNS].to_numpy(np.float64), a[COLUMNS].to_numpy(np.float64), rtol=1e-12, atol=0, equal_nan=True)


# ---- single customer, chunks -------------------------------------------------------------------

def check_single_and_chunks(events: pd.DataFrame, cutoff, config: FunnelConfig = CONFIG) -> None:
    t = stated_ns(cutoff, None, "cutoff")
    spec = feature_spec(config)
    arrays = EventArrays.from_frame(events, config)
    batch = compute_features(arrays, t, spec)
    for chunk in (1, 2, 5):
        for threads in (1, 3):
            np.testing.assert_array_equal(compute_features(arrays, t, spec, chunk=chunk, threads=threads), batch)
    for i, cid in enumerate(arrays.customer_ids):
        one = EventArrays.from_frame(events[events["customer_id"] == cid], config)
        assert list(one.customer_ids) == [cid]
        np.testing.assert_array_equal(compute_features(one, t, spec)[0], batch[i], err_msg=str(cid))
    # build_features' rows are the batch rows of the customers with a visible event
    frame = build_features(events, None, cutoff, config)
    index = {cid: i for i, cid in enumerate(arrays.customer_ids)}
    for j, cid in enumerate(frame["customer_id"]):
        np.testing.assert_array_equal(frame[list(spec.columns)].to_numpy(np.float64)[j], batch[index[cid]])


def test_single_customer_and_chunks_on_golden(golden_events):
    for cutoff in (T, T - 7 * D, T + 5 * D):
        check_single_and_chunks(golden_events, cutoff)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(logs())
def test_single_customer_and_chunks_on_random_logs(log):
    rows, cutoff = log
    check_single_and_chunks(canonical(rows), cutoff)


# ---- customers table ---------------------------------------------------------------------------

def test_customers_table_attributes_and_customers_without_events(golden_events, config):
    raw = pd.DataFrame(
        {
            "customer_id": ["alice", "bob", "carol", "dave", "eve", "erin"],
            "signup_date": ["2024-01-31T00:00:00Z", "2024-03-01T00:00:00Z", "2024-03-05T00:00:00Z", None, "2023-03-02T00:00:00Z", "2024-02-29T23:59:59Z"],
            "plan": ["pro", "free", "free", "pro", "team", "team"],
            "seats": [3, 1, 1, 10, 2, 7],
        }
    )
    customers, _ = validate_customers(raw, config)
    frame = build_features(golden_events, customers, T, config)
    assert list(frame["customer_id"]) == ["alice", "bob", "carol", "dave", "erin", "eve"]
    assert "signup_date" not in frame.columns
    assert list(without_extras(frame).columns[-3:]) == ["days_since_signup_date", "plan", "seats"]
    got = frame.set_index("customer_id")
    assert got.at["alice", "days_since_signup_date"] == 30  # 2024 is a leap year: Jan 31 -> Mar 1
    assert math.isnan(got.at["bob", "days_since_signup_date"])  # exactly at the cutoff: not yet
    assert math.isnan(got.at["carol", "days_since_signup_date"])  # after the cutoff
    assert math.isnan(got.at["dave", "days_since_signup_date"])  # unknown
    assert got.at["eve", "days_since_signup_date"] == 365
    assert got.at["erin", "days_since_signup_date"] == pytest.approx(SECOND, rel=1e-12)
    assert list(got["plan"].astype(str)) == ["pro", "free", "free", "pro", "team", "team"]
    assert list(got["seats"]) == [3.0, 1.0, 1.0, 10.0, 7.0, 2.0]
    # customers without a visible event: zero counts, NaN recencies and stage
    for cid in ("dave", "eve"):
        counts = [c for c in COLUMNS if c.startswith(("count_", "active_days_", "spend_", "activity_"))]
        assert (got.loc[cid, counts] == 0).all(), cid
        recencies = [c for c in COLUMNS if c.startswith(("days_", "tenure", "current_stage", "inbound_share", "avg_", "max_", "mean_", "std_", "last_"))]
        assert got.loc[cid, recencies].isna().all(), cid
    # behaviour features are unchanged by the table, and match the reference
    plain = build_features(golden_events, None, T, config).set_index("customer_id")
    pd.testing.assert_frame_equal(got.loc[plain.index, COLUMNS], plain[COLUMNS])
    ref = reference_features(golden_events, T, config, customers=customers)
    behaviour = list(ref.columns[:-3])
    assert_matches_reference(frame[behaviour], ref[behaviour])
    assert list(without_extras(frame).columns) == list(ref.columns)
    np.testing.assert_allclose(frame["days_since_signup_date"], ref["days_since_signup_date"], equal_nan=True)


def test_customers_table_covers_customer_not_in_events_only(config):
    events = canonical([("a", T - D, "order", "direct", 5.0)])
    customers, _ = validate_customers(pd.DataFrame({"customer_id": ["z"], "vip": [True]}), config)
    frame = build_features(events, customers, T, config).set_index("customer_id")
    assert list(frame.index) == ["a", "z"]
    assert math.isnan(frame.at["a", "vip"]) and frame.at["z", "vip"] == 1.0
    assert frame.at["z", "count_events_all_time"] == 0 and math.isnan(frame.at["z", "days_since_last_event"])


def test_cutoff_resolution_is_nanoseconds(config):
    """An event 1 ns before the cutoff is visible, with 1 ns of recency."""
    events = canonical([("a", T - NS, "search_visit", "search")])
    row = build_features(events, None, T, config).iloc[0]
    assert row["count_events_7d"] == 1 and row["active_days_7d"] == 1
    assert row["days_since_last_event"] == pytest.approx(1 / DAY_NS, rel=1e-9)


# ---- optional feature families -----------------------------------------------------------------

def _with_pairs() -> FunnelConfig:
    """The default funnel plus a resolution event and two paired event types (one sharing its close type)."""
    raw = load_config().model_dump(mode="json")
    raw["features"]["families"] = list(FEATURE_FAMILIES)  # every family, whatever the default
    raw["other_event_types"].append("ticket_resolved")
    raw["features"]["paired_event_types"] = [
        {"name": "tickets", "opens": "support_ticket", "closes": "ticket_resolved"},
        {"name": "callbacks", "opens": "support_call", "closes": "ticket_resolved"},
    ]
    return FunnelConfig.model_validate(raw)


PAIRS = _with_pairs()
# every type drawn, the paired ones and purchases often (open balances, FIFO ages, gaps)
PAIR_TYPES = list(PAIRS.event_types) + ["support_ticket", "ticket_resolved", "support_call"] * 6 + sorted(PURCHASE) * 4

FAMILY_ROWS = [
    ("fam", T - 100 * D, "order", "direct", 10.0),  # active day 99 (whole days before T)
    ("fam", T - 70 * D, "repeat_order", "direct", 20.0),  # day 69
    ("fam", T - 40 * D, "repeat_order", "direct", 5.0),  # day 39 ...
    ("fam", T - 40 * D + H, "repeat_order", "direct", 5.0),  # ... the same active day
    ("fam", T - 20 * D, "support_ticket", None),  # day 19
    ("fam", T - 12 * D, "support_ticket", None),  # day 11
    ("fam", T - 10 * D, "ticket_resolved", None),  # day 9: resolves the first ticket (first in, first out)
    ("fam", T - 5 * D, "support_ticket", None),  # day 4
    ("fam", T - 3 * D, "repeat_order", "direct", 30.0),  # day 2
    ("fam", T - 2 * D, "email_sent", "email"),  # day 1: outbound, not activity
    ("fam", T, "support_ticket", None),  # at the cutoff: invisible
    ("fam", T + D, "ticket_resolved", None),  # after it
    # FIFO by count: the close before the second open resolves the first open
    ("fifo", T - 9 * D, "support_ticket", None),
    ("fifo", T - 2 * D, "ticket_resolved", None),
    ("fifo", T - D, "support_ticket", None),
    # more closes than opens (history before the log): nothing open
    ("closer", T - 8 * D, "ticket_resolved", None),
    ("closer", T - 6 * D, "ticket_resolved", None),
    ("closer", T - 4 * D, "support_ticket", None),
]


def _half(age: float, half_life: float) -> float:
    return 0.5 ** (age / half_life)


AGES = [100, 70, 40, 40 - 1 / 24, 20, 12, 10, 5, 3, 2]  # the visible events of "fam", in days
FAMILY = {
    "fam": {
        # type_recency
        "days_since_last_type_repeat_order": 3, "days_since_first_type_repeat_order": 70,
        "days_since_last_type_order": 100, "days_since_first_type_order": 100,
        "days_since_last_type_support_ticket": 5, "days_since_first_type_support_ticket": 20,
        "days_since_last_type_ticket_resolved": 10, "days_since_first_type_email_sent": 2,
        "days_since_last_type_blog_view": NAN, "days_since_first_type_blog_view": NAN,
        # rates: 9 actions, 5 purchases, tenure 100 days, 9 active days
        "rate_activity_per_tenure_day": 9 / 100, "rate_activity_per_active_day": 1.0,
        "rate_purchases_per_tenure_day": 5 / 100, "rate_purchases_per_active_day": 5 / 9,
        # decay
        "decayed_support_half_life_14d": _half(20, 14) + _half(12, 14) + _half(5, 14),
        "decayed_stage_loyalty_half_life_60d": _half(70, 60) + _half(40, 60) + _half(40 - 1 / 24, 60) + _half(3, 60),
        "decayed_stage_purchase_half_life_14d": _half(100, 14),
        "decayed_marketing_touch_half_life_60d": _half(2, 60),
        "decayed_events_half_life_14d": sum(_half(a, 14) for a in AGES),
        "decayed_activity_half_life_60d": sum(_half(a, 60) for a in AGES if a != 2),
        "decayed_stage_awareness_half_life_14d": 0.0,
        # gaps between distinct active days; overdue = days since the last / mean gap
        "mean_gap_days_purchase": 97 / 3, "last_gap_days_purchase": 37, "overdue_purchase": 3 / (97 / 3),  # 99, 69, 39, 2
        "mean_gap_days_stage_loyalty": 33.5, "last_gap_days_stage_loyalty": 37, "overdue_stage_loyalty": 3 / 33.5,
        "mean_gap_days_support": 7.5, "last_gap_days_support": 7, "overdue_support": 5 / 7.5,  # 19, 11, 4
        "mean_gap_days_activity": 97 / 7, "last_gap_days_activity": 2, "overdue_activity": 3 / (97 / 7),
        "mean_gap_days_stage_purchase": NAN, "last_gap_days_stage_purchase": NAN, "overdue_stage_purchase": NAN,
        "mean_gap_days_marketing_touch": NAN, "overdue_marketing_touch": NAN,
        # trends over [T-30d, T) vs [T-60d, T-30d)
        "stage_loyalty_trend": (1 - 2) / 3, "support_trend": 1.0, "marketing_touch_trend": 1.0,
        "stage_purchase_trend": 0.0, "stage_awareness_trend": 0.0, "spend_trend": (30 - 10) / 40,
        # pairs: 3 tickets opened, 1 resolved: the second one (T-12d) is the oldest open
        "open_tickets": 2, "days_since_oldest_open_tickets": 12,
        "open_callbacks": 0, "days_since_oldest_open_callbacks": NAN,
        # diversity: order is older than 90 days
        "distinct_event_types_90d": 4, "distinct_event_types_all_time": 5,
        # the core columns are unchanged by the families
        "mean_days_between_purchases": (100 - 3) / 4, "activity_trend": (5 - 2) / 7,
        # calendar: 2024-03-01 is day 19,783 after 1970-01-01; 54 years of 365.2425 days end on day
        # 19,723.095, so the cutoff is 59.905 days into its year
        "cutoff_year_sin": math.sin(2 * math.pi * 59.905 / 365.2425),
        "cutoff_year_cos": math.cos(2 * math.pi * 59.905 / 365.2425),
    },
    "fifo": {"open_tickets": 1, "days_since_oldest_open_tickets": 1, "open_callbacks": 0,
             "cutoff_year_sin": math.sin(2 * math.pi * 59.905 / 365.2425)},  # every customer alike
    "closer": {"open_tickets": 0, "days_since_oldest_open_tickets": NAN, "open_callbacks": 0},
}


def assert_values(frame: pd.DataFrame, expected: dict[str, dict[str, float]]) -> None:
    got = frame.set_index("customer_id")
    for cid, values in expected.items():
        for name, value in values.items():
            actual = got.at[cid, name]
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(actual), f"{cid}.{name}: expected NaN, got {actual}"
            else:
                assert actual == pytest.approx(value, rel=1e-12, abs=1e-12), f"{cid}.{name}: expected {value}, got {actual}"


@pytest.fixture(scope="module")
def family_events() -> pd.DataFrame:
    return canonical(FAMILY_ROWS, PAIRS).sample(frac=1.0, random_state=3).reset_index(drop=True)


def test_default_families_are_the_kept_ones_and_every_familys_block_follows_the_core_ones(config):
    assert config.features.families == list(DEFAULT_FEATURE_FAMILIES) == ["trends", "pairs"]
    assert FunnelConfig.model_validate({**config.model_dump(mode="json"), "features": {}}).features.families == [
        "trends", "pairs"]  # the YAML and the pydantic default agree
    spec = feature_spec(config)
    assert list(spec.layout)[-2:] == ["trends", "pairs"] and spec.layout["trends"].start == spec.layout["purchases"].stop
    assert spec.layout["pairs"].stop == spec.layout["pairs"].start  # no paired event types configured
    every = feature_spec(PAIRS)
    assert list(every.layout)[-len(FEATURE_FAMILIES):] == list(FEATURE_FAMILIES)
    assert every.layout["type_recency"].start == every.layout["purchases"].stop


def test_family_values_by_hand(family_events):
    frame = build_features(family_events, None, T, PAIRS)
    assert_values(frame, FAMILY)
    assert_matches_reference(frame, reference_features(family_events, T, PAIRS))


def test_family_values_ignore_events_at_and_after_the_cutoff(family_events):
    """At T + 1 ns the ticket at T is visible: a third open ticket, support no longer overdue."""
    later = build_features(family_events, None, T + NS, PAIRS).set_index("customer_id")
    assert later.at["fam", "open_tickets"] == 3
    assert later.at["fam", "days_since_last_type_support_ticket"] == pytest.approx(1 / DAY_NS, rel=1e-6)
    assert later.at["fam", "overdue_support"] == pytest.approx((1 / DAY_NS) / (19 / 3), rel=1e-6)  # days 19, 11, 4, 0
    visible = canonical([r for r in FAMILY_ROWS if r[1] < T], PAIRS)
    pd.testing.assert_frame_equal(
        build_features(visible, None, T, PAIRS), build_features(family_events, None, T, PAIRS), check_exact=True
    )


def test_family_values_equal_reference_at_many_cutoffs(family_events, golden_events):
    for cutoff in (T, T + NS, T - NS, T - 3 * D, T - 40 * D, T - 40 * D + H + NS, T - 100 * D + NS, T + 2 * D):
        got = build_features(family_events, None, cutoff, PAIRS)
        assert_matches_reference(got, reference_features(family_events, cutoff, PAIRS))
        check_single_and_chunks(family_events, cutoff, PAIRS)
    golden = canonical(GOLDEN_ROWS, PAIRS)
    assert_matches_reference(build_features(golden, None, T, PAIRS), reference_features(golden, T, PAIRS))


def test_each_family_switched_off_removes_exactly_its_columns(family_events):
    full = feature_spec(PAIRS)
    values = build_features(family_events, None, T, PAIRS)
    raw = PAIRS.model_dump(mode="json")
    for family in FEATURE_FAMILIES:
        raw["features"]["families"] = [f for f in FEATURE_FAMILIES if f != family]
        config = FunnelConfig.model_validate(raw)
        spec = feature_spec(config)
        removed = full.columns[full.layout[family]]
        assert removed, family
        assert spec.columns == tuple(c for c in full.columns if c not in removed), family
        assert family not in spec.layout
        assert config.data_hash() != PAIRS.data_hash()
        without = build_features(family_events, None, T, config)
        pd.testing.assert_frame_equal(without, values.drop(columns=list(removed)), check_exact=True)
    # none: the core columns, with the values they always had
    raw["features"]["families"] = []
    core = feature_spec(FunnelConfig.model_validate(raw))
    assert core.columns == full.columns[: full.layout["purchases"].stop]
    assert len(core.columns) == 195 + 4  # the default core, plus four windowed counts of ticket_resolved


def test_new_family_columns_per_family_for_the_default_funnel(config):
    raw = config.model_dump(mode="json")
    raw["features"]["families"] = list(FEATURE_FAMILIES)
    spec = feature_spec(FunnelConfig.model_validate(raw))
    assert len(feature_spec(config).columns) == 195 + 8  # the default: core and trends
    sizes = {f: spec.layout[f].stop - spec.layout[f].start for f in FEATURE_FAMILIES}
    k, stages, groups = len(config.event_types), len(config.stages), len(config.event_groups)
    assert sizes == {
        "type_recency": 2 * k,  # 54
        "rates": 4,
        "decay": 2 * (stages + groups + 2),  # 18: two half-lives over stages, groups, activity, events
        "gaps": 3 * (stages + groups + 2),  # 27: stages, groups, activity, purchase
        "trends": stages + groups + 1,  # 8
        "pairs": 0,
        "diversity": 2,
        "calendar": 2,
    }
    assert len(spec.columns) == 195 + 115


def test_paired_event_types_must_be_known_distinct_and_named_once():
    raw = PAIRS.model_dump(mode="json")
    raw["features"]["paired_event_types"] = [{"name": "tickets", "opens": "support_ticket", "closes": "ticket_closed"}]
    with pytest.raises(ConfigError, match=r"features\.paired_event_types\.tickets .*'ticket_closed'"):
        config_from_dict(raw)
    raw["features"]["paired_event_types"] = [{"name": "tickets", "opens": "support_ticket", "closes": "support_ticket"}]
    with pytest.raises(ConfigError, match="same event type 'support_ticket'"):
        config_from_dict(raw)
    raw["features"]["paired_event_types"] = [{"name": "tickets", "opens": "support_ticket", "closes": "ticket_resolved"}] * 2
    with pytest.raises(ConfigError, match=r"paired_event_types names repeat: \['tickets'\]"):
        config_from_dict(raw)
    raw["features"]["paired_event_types"] = [{"name": "tickets", "opens": "support_ticket", "closes": "ticket_resolved", "x": 1}]
    with pytest.raises(ConfigError, match="x"):
        config_from_dict(raw)


def test_family_options_are_validated():
    raw = load_config().model_dump(mode="json")
    for families, message in ((["gaps", "gaps"], "feature families repeat"), (["lags"], "features.families.0")):
        bad = {**raw, "features": {**raw["features"], "families": families}}
        with pytest.raises(ConfigError, match=message):
            config_from_dict(bad)
    for half_lives in ([60, 14], [0], []):
        bad = {**raw, "features": {**raw["features"], "decay_half_lives_days": half_lives}}
        with pytest.raises(ConfigError, match="decay_half_lives_days"):
            config_from_dict(bad)


def test_family_columns_are_in_the_clash_check():
    """An event group named ``spend`` has a trend named like the spend trend: refused, named."""
    raw = load_config().model_dump(mode="json")
    raw["event_groups"]["spend"] = ["order"]
    with pytest.raises(ConfigError, match="spend_trend"):
        feature_spec(FunnelConfig.model_validate(raw))
    raw["features"]["families"] = ["gaps"]  # without trends the names are distinct
    assert "decayed_spend_half_life_14d" not in feature_spec(FunnelConfig.model_validate(raw)).columns


def test_family_phrases():
    from funnelcast.serving.reasons import Phrasebook

    book = Phrasebook(feature_spec(PAIRS))
    assert book.phrase("overdue_purchase", 40 / 30) == "purchase overdue: 1.3 times the usual gap since the last"
    assert book.phrase("overdue_purchase", 0.5) == "next purchase not due yet (50% of the usual gap since the last)"
    assert book.phrase("mean_gap_days_purchase", 30.0) == "purchases usually every 30 days"
    assert book.phrase("overdue_support", NAN) == "fewer than two days with support events"
    assert book.phrase("open_tickets", 2.0) == "2 support tickets open"
    assert book.phrase("days_since_oldest_open_tickets", 12.0) == "a support ticket open for 12 days"
    assert book.phrase("days_since_last_type_support_ticket", 5.0) == "last support ticket 5 days ago"
    assert book.phrase("days_since_last_type_email_opened", NAN) == "no email opened events yet"
    assert book.phrase("support_trend", -1 / 3) == "support events down 50% on the 30 days before"
    assert book.concept("overdue_purchase") == book.concept("mean_days_between_purchases")
    assert book.concept("open_tickets") == book.concept("days_since_oldest_open_tickets")
    assert book.concept("days_since_last_type_order") == book.concept("count_order_30d")
    generic = [c for c in feature_spec(PAIRS).columns if c not in book._book]
    assert generic == []


@settings(FAST, max_examples=100)
@given(logs(PAIR_TYPES))
def test_families_equal_reference_on_random_logs(log):
    rows, cutoff = log
    events = canonical(rows, PAIRS)
    assert_matches_reference(build_features(events, None, cutoff, PAIRS), reference_features(events, cutoff, PAIRS))


@FAST
@given(future_edits(PAIR_TYPES))
def test_families_ignore_events_at_or_after_cutoff(case):
    rows, edited, cutoff = case
    pd.testing.assert_frame_equal(
        build_features(canonical(rows, PAIRS), None, cutoff, PAIRS),
        build_features(canonical(edited, PAIRS), None, cutoff, PAIRS),
        check_exact=True,
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(logs(PAIR_TYPES))
def test_families_single_customer_and_chunks_on_random_logs(log):
    rows, cutoff = log
    check_single_and_chunks(canonical(rows, PAIRS), cutoff, PAIRS)


def random_arrays(config: FunnelConfig, n_customers: int, n_events: int, seed: int) -> EventArrays:
    """Seeded random events as arrays (no pandas): enough per chunk for the batch code paths (the long-input
    branches of the gap and pair code), types weighted towards the paired and purchase types."""
    rng = np.random.default_rng(seed)
    types = list(config.event_types)
    weights = np.ones(len(types))
    for t in ("support_ticket", "ticket_resolved", "support_call", *PURCHASE):
        if t in types:
            weights[types.index(t)] = 6.0
    customer = np.sort(rng.integers(0, n_customers, n_events))
    ts = BASE.value + rng.integers(0, 200 * DAY_NS, n_events)
    noon = rng.random(n_events) < 0.3  # some events at the same instant (noon of their day): ties
    ts[noon] = BASE.value + (ts[noon] - BASE.value) // DAY_NS * DAY_NS + DAY_NS // 2
    order = np.lexsort((ts, customer))
    customer, ts = customer[order], ts[order]
    event_type = rng.choice(len(types), n_events, p=weights / weights.sum())
    purchase = np.isin(event_type, [types.index(t) for t in PURCHASE])
    amount = np.where(purchase & (rng.random(n_events) < 0.9), rng.integers(0, 10_000, n_events) / 100, np.nan)
    return EventArrays(
        customer_ids=np.array([f"r{i:05d}" for i in range(n_customers)], dtype=object),
        starts=np.searchsorted(customer, np.arange(n_customers + 1)).astype(np.int64),
        customer=customer.astype(np.int64), ts=ts.astype(np.int64), event_type=event_type.astype(np.int64),
        channel=rng.integers(0, len(config.channel_names) + 1, n_events).astype(np.int64), amount=amount,
    )


EVERY_FAMILY = FunnelConfig.model_validate(
    {**CONFIG.model_dump(mode="json"), "features": {**CONFIG.features.model_dump(mode="json"), "families": list(FEATURE_FAMILIES)}})


@pytest.mark.parametrize("config", [EVERY_FAMILY, PAIRS], ids=["default-funnel-every-family", "pairs"])
def test_batch_code_paths_equal_one_customer_at_a_time(config):
    """A batch chunk takes the long-input branches (one group at a time, flatnonzero per group); a request
    the short ones: identical rows, at any chunking or threading."""
    spec = feature_spec(config)
    arrays = random_arrays(config, 400, 30_000, seed=5)
    for cutoff in (BASE + 120 * D, BASE + 300 * D):
        t = cutoff.value
        batch = compute_features(arrays, t, spec, threads=1)
        assert np.isfinite(batch[:, spec.layout["gaps"]]).any()
        np.testing.assert_array_equal(compute_features(arrays, t, spec, chunk=150, threads=2), batch)
        for i in range(0, arrays.n_customers, 7):
            one = compute_features(arrays.customers_slice(i, i + 1), t, spec)[0]
            np.testing.assert_array_equal(one, batch[i], err_msg=str(i))


def test_calendar_family_is_a_point_on_the_year_circle():
    from funnelcast.features.behaviour import year_position

    def at(day: str) -> np.ndarray:
        return np.array(year_position(pd.Timestamp(day, tz="UTC").value))

    # New Year's Eve sits next to New Year's Day, and half a year away is the opposite point.
    assert np.linalg.norm(at("2024-12-31") - at("2025-01-01")) < 2 * math.pi / 365
    np.testing.assert_allclose(at("2025-07-02T12:00"), -at("2025-01-01"), atol=0.01)
    # The same day a year later is (nearly) the same point; another season is not.
    np.testing.assert_allclose(at("2025-11-15"), at("2024-11-15"), atol=0.02)
    assert np.linalg.norm(at("2025-11-15") - at("2025-08-15")) > 1

"""Labels, eligibility and snapshot cutoffs (features/labels.py, features/snapshots.py).

Labels look at ``[cutoff, cutoff + horizon)``; features at events strictly before the cutoff; a label
whose horizon runs past ``data_end`` is unknown (<NA>), and a row with no known label is absent.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from funnelcast.features.behaviour import feature_spec
from funnelcast.features.events import validate_events
from funnelcast.features.funnel import FunnelConfig, load_config
from funnelcast.features.snapshots import build_training_set, snapshot_cutoffs
from funnelcast.features.targets import TARGETS

try:  # tests/ is on sys.path under pytest's default import mode
    from reference import _missing, customer_features, events_by_customer, to_utc
except ImportError:  # pragma: no cover - tests imported as a package
    from tests.reference import _missing, customer_features, events_by_customer, to_utc

CONFIG = load_config()


def _with(**changes) -> FunnelConfig:
    raw = load_config().model_dump(mode="json")
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        raw[section][key] = value
    return FunnelConfig.model_validate(raw)


EXPLICIT = _with(churn__definition="explicit")

T = pd.Timestamp("2024-06-01", tz="UTC")
D = pd.Timedelta(days=1)
S = pd.Timedelta(seconds=1)
NS = pd.Timedelta(1, unit="ns")
END = T + 365 * D


def canonical(rows: list[tuple], config: FunnelConfig = CONFIG) -> pd.DataFrame:
    full = [tuple(r) + (None,) * (5 - len(r)) for r in rows]
    raw = pd.DataFrame(
        {
            "customer_id": pd.Series([r[0] for r in full], dtype=object),
            "timestamp": pd.Series([r[1] for r in full], dtype="datetime64[ns, UTC]"),
            "event_type": pd.Series([r[2] for r in full], dtype=object),
            "channel": pd.Series([r[3] for r in full], dtype=object),
            "amount": pd.Series([np.nan if r[4] is None else r[4] for r in full], dtype="float64"),
        }
    )
    return validate_events(raw, config)[0]


def training(rows, config=CONFIG, cutoffs=(T,), data_end=END) -> pd.DataFrame:
    return build_training_set(canonical(rows, config), None, config, cutoffs=list(cutoffs), data_end=data_end).frame


def labels(rows, config=CONFIG, cutoff=T, data_end=END) -> pd.DataFrame:
    table = training(rows, config, (cutoff,), data_end)
    assert table["customer_id"].is_unique
    assert str(table["convert_label"].dtype) == "Int8" and str(table["churn_label"].dtype) == "Int8"
    return table.set_index("customer_id")


def label(table: pd.DataFrame, cid: str, which: str):
    """0, 1, or None for <NA>; KeyError when the row is absent."""
    v = table.at[cid, f"{which}_label"]
    return None if pd.isna(v) else int(v)


# ---- next-stage conversion ---------------------------------------------------------------------

CONVERSION_ROWS = [
    ("conv_in", T - 10 * D, "newsletter_signup"),
    ("conv_in", T + 30 * D - S, "pricing_view"),  # last second of the window
    ("conv_edge", T - 10 * D, "newsletter_signup"),
    ("conv_edge", T + 30 * D, "pricing_view"),  # exactly cutoff + horizon: outside
    ("conv_at", T - 10 * D, "newsletter_signup"),
    ("conv_at", T, "pricing_view"),  # at the cutoff: invisible to features, inside the window
    ("conv_before", T - 20 * D, "newsletter_signup"),
    ("conv_before", T - S, "pricing_view"),  # before the cutoff: makes the stage, never the label
    ("conv_before", T + D, "newsletter_signup"),
    ("conv_before", T + 2 * D, "demo_request"),  # same stage again: no conversion
    ("conv_skip", T - 5 * D, "blog_view"),
    ("conv_skip", T + 5 * D, "order", "direct", 10.0),  # skipping stages converts
    ("conv_none", T - 10 * D, "newsletter_signup"),
    ("conv_none", T + 3 * D, "email_sent", "email"),
    ("conv_last", T - 5 * D, "repeat_order", "direct", 20.0),  # loyalty: no next stage
    ("conv_last", T + D, "referral"),
    ("conv_lapsed", T - 180 * D - S, "newsletter_signup"),  # inactive longer than 180 days
    ("conv_lapsed", T + D, "pricing_view"),
    ("conv_lapsed_edge", T - 180 * D, "newsletter_signup"),  # exactly 180 days: still active
    ("conv_lapsed_edge", T + D, "pricing_view"),
    ("conv_touched", T - 200 * D, "newsletter_signup"),  # outbound touches are not activity
    ("conv_touched", T - D, "email_sent", "email"),
    ("conv_touched", T - D, "ad_impression", "ads"),
    ("conv_touched", T + D, "pricing_view"),
    ("conv_outbound_only", T - 5 * D, "ad_impression", "ads"),
    ("conv_outbound_only", T + D, "newsletter_signup"),
]


@pytest.fixture(scope="module")
def conversion_table() -> pd.DataFrame:
    return labels(CONVERSION_ROWS)


@pytest.mark.parametrize(
    "cid, expected",
    [("conv_in", 1), ("conv_edge", 0), ("conv_at", 1), ("conv_before", 0), ("conv_skip", 1), ("conv_none", 0), ("conv_lapsed_edge", 1)],
)
def test_conversion_label(conversion_table, cid, expected):
    assert label(conversion_table, cid, "convert") == expected


def test_conversion_stage_is_point_in_time(conversion_table):
    stages = conversion_table["stage"].astype(str)
    assert stages["conv_at"] == "interest" and conversion_table.at["conv_at", "current_stage"] == 1
    assert stages["conv_before"] == "consideration"
    assert stages["conv_last"] == "loyalty"


def test_last_stage_is_not_eligible_for_conversion(conversion_table):
    assert label(conversion_table, "conv_last", "convert") is None
    assert label(conversion_table, "conv_last", "churn") == 0  # churn-eligible: the row stays


def test_lapsed_customers_are_not_eligible(conversion_table):
    for cid in ("conv_lapsed", "conv_touched", "conv_outbound_only"):
        assert cid not in conversion_table.index, cid
    assert "conv_lapsed_edge" in conversion_table.index


def test_lapse_boundary_is_exact_at_nanoseconds():
    table = labels([("a", T - 180 * D - NS, "newsletter_signup"), ("a", T + D, "pricing_view"), ("anchor", T - D, "newsletter_signup")])
    assert "a" not in table.index


# ---- churn: inactivity (default config) --------------------------------------------------------

CHURN_ROWS = [
    ("stay", T - 10 * D, "order", "direct", 5.0),
    ("stay", T + 60 * D - S, "search_visit", "search"),
    ("edge", T - 10 * D, "order", "direct", 5.0),
    ("edge", T + 60 * D, "search_visit", "search"),  # exactly cutoff + horizon: outside
    ("outbound", T - 10 * D, "order", "direct", 5.0),
    ("outbound", T + 5 * D, "email_sent", "email"),
    ("outbound", T + 6 * D, "ad_impression", "ads"),
    ("outbound", T + 7 * D, "loyalty_offer", "email"),
    ("outbound", T + 8 * D, "outbound_call", "sales_call"),
    ("cancel", T - 10 * D, "order", "direct", 5.0),
    ("cancel", T + 3 * D, "subscription_cancelled"),  # a churn event is not activity
    ("support", T - 10 * D, "order", "direct", 5.0),
    ("support", T + 30 * D, "support_ticket"),
    ("before", T - 10 * D, "order", "direct", 5.0),
    ("before", T - S, "search_visit", "search"),  # before the cutoff: not in the window
    ("at", T - 10 * D, "order", "direct", 5.0),
    ("at", T, "search_visit", "search"),  # at the cutoff: in the window
    ("interest", T - 5 * D, "newsletter_signup"),
    ("stale", T - 60 * D - S, "order", "direct", 5.0),  # no activity within the last 60 days
    ("stale_edge", T - 60 * D, "order", "direct", 5.0),  # exactly 60 days: eligible
    ("touched", T - 100 * D, "order", "direct", 5.0),
    ("touched", T - D, "email_sent", "email"),  # an outbound touch does not make one active
    ("touched", T + D, "search_visit", "search"),
]


@pytest.fixture(scope="module")
def churn_table() -> pd.DataFrame:
    return labels(CHURN_ROWS)


@pytest.mark.parametrize(
    "cid, expected",
    [("stay", 0), ("edge", 1), ("outbound", 1), ("cancel", 1), ("support", 0), ("before", 1), ("at", 0), ("stale_edge", 1)],
)
def test_inactivity_churn_label(churn_table, cid, expected):
    assert label(churn_table, cid, "churn") == expected


def test_inactivity_churn_eligibility(churn_table):
    assert label(churn_table, "interest", "churn") is None  # before the purchase stage
    assert label(churn_table, "interest", "convert") == 0
    assert label(churn_table, "stale", "churn") is None  # already inactive for longer than the horizon
    assert label(churn_table, "stale", "convert") == 0  # ... but still within conversion's 180 days
    assert label(churn_table, "touched", "churn") is None
    assert label(churn_table, "touched", "convert") == 0


# ---- churn: explicit ---------------------------------------------------------------------------

EXPLICIT_ROWS = [
    ("x_cancel", T - 200 * D, "order", "direct", 5.0),  # long inactive: explicit churn does not care
    ("x_cancel", T + 10 * D, "subscription_cancelled"),
    ("x_quiet", T - 300 * D, "order", "direct", 5.0),
    ("x_edge", T - 10 * D, "order", "direct", 5.0),
    ("x_edge", T + 60 * D, "subscription_cancelled"),
    ("x_at", T - 10 * D, "order", "direct", 5.0),
    ("x_at", T, "subscription_cancelled"),
    ("x_already", T - 20 * D, "order", "direct", 5.0),
    ("x_already", T - 5 * D, "subscription_cancelled"),
    ("x_already", T + 5 * D, "subscription_cancelled"),
    ("x_interest", T - 5 * D, "newsletter_signup"),
    ("x_interest", T + D, "subscription_cancelled"),
    ("x_active", T - 10 * D, "order", "direct", 5.0),  # silent afterwards, but never cancels
]


def test_explicit_churn():
    assert EXPLICIT.churn.definition == "explicit"
    table = labels(EXPLICIT_ROWS, config=EXPLICIT)
    assert label(table, "x_cancel", "churn") == 1
    assert label(table, "x_quiet", "churn") == 0
    assert label(table, "x_edge", "churn") == 0
    assert label(table, "x_at", "churn") == 1
    assert label(table, "x_active", "churn") == 0
    assert label(table, "x_already", "churn") is None  # cancelled before the cutoff: not eligible
    assert label(table, "x_already", "convert") == 0
    assert label(table, "x_interest", "churn") is None
    assert "x_quiet" in table.index and label(table, "x_quiet", "convert") is None  # lapsed for conversion


def test_churn_definition_changes_only_churn_labels():
    a = labels(EXPLICIT_ROWS, config=EXPLICIT)
    b = labels(EXPLICIT_ROWS, config=CONFIG)
    assert label(b, "x_active", "churn") == 1  # silent for the horizon: churned by inactivity
    # Inactive for 300 days: churned under inactivity, so no churn or conversion label; a buyer still has a
    # value label (spend in the next 90 days: none).
    assert label(b, "x_quiet", "churn") is None and label(b, "x_quiet", "convert") is None
    assert b.loc["x_quiet", "value_label"] == 0.0
    common = a.index.intersection(b.index)
    pd.testing.assert_series_equal(a.loc[common, "convert_label"], b.loc[common, "convert_label"])


# ---- unknown labels ----------------------------------------------------------------------------

UNKNOWN_ROWS = [
    ("u_interest", T - 5 * D, "newsletter_signup"),
    ("u_interest", T + 10 * D, "pricing_view"),
    ("u_buyer", T - 5 * D, "order", "direct", 5.0),  # eligible for both
    ("u_loyal", T - 5 * D, "repeat_order", "direct", 5.0),  # churn only
]


def test_labels_past_data_end_are_unknown_not_negative():
    table = labels(UNKNOWN_ROWS, data_end=T + 45 * D)  # conversion (30d) known, churn (60d) not
    assert label(table, "u_interest", "convert") == 1
    assert label(table, "u_buyer", "convert") == 0
    assert table["churn_label"].isna().all()
    assert "u_loyal" not in table.index  # its only label is unknown: no row


@pytest.mark.parametrize(
    "data_end, convert_known, churn_known",
    [(T + 30 * D - NS, False, False), (T + 30 * D, True, False), (T + 60 * D - NS, True, False), (T + 60 * D, True, True)],
)
def test_label_known_iff_horizon_ends_by_data_end(data_end, convert_known, churn_known):
    if not (convert_known or churn_known):
        with pytest.raises(ValueError, match="no .customer, cutoff. row has a known label"):
            labels(UNKNOWN_ROWS, data_end=data_end)
        return
    table = labels(UNKNOWN_ROWS, data_end=data_end)
    assert table["convert_label"].notna().any() == convert_known
    assert table.loc[table.index != "u_loyal", "convert_label"].notna().all() == convert_known
    assert table["churn_label"].notna().any() == churn_known
    assert ("u_loyal" in table.index) == churn_known


def test_several_cutoffs_each_with_its_own_horizon():
    rows = UNKNOWN_ROWS + [("u_buyer", T + 40 * D, "search_visit", "search")]
    table = training(rows, cutoffs=[T, T + 30 * D], data_end=T + 75 * D)
    first = table[table["cutoff"] == T].set_index("customer_id")
    second = table[table["cutoff"] == T + 30 * D].set_index("customer_id")
    assert label(first, "u_buyer", "churn") == 0 and label(first, "u_buyer", "convert") == 0
    assert second["churn_label"].isna().all()  # T + 30d + 60d > data_end
    assert label(second, "u_buyer", "convert") == 0
    assert second.at["u_interest", "current_stage"] == 2  # the pricing view at T + 10d is history now
    assert "u_loyal" not in second.index


# ---- a reference for labels, and properties ----------------------------------------------------

def reference_rows(events: pd.DataFrame, cutoffs, config: FunnelConfig, data_end) -> dict[tuple[str, pd.Timestamp], tuple]:
    """(customer, cutoff) -> (convert, churn, value, value_later, convert_later, convert_later_days,
    churn_later, churn_later_days), None for unknown; rows with no known label left out. value: spend of
    purchase events in [t, t + label_days) for buyers (churn stage or later, churned or not);
    value_later: the next label_days, known only when that window closes too. Under label_days
    (convert/churn learn a shorter window than their horizon): <target>_later is the outcome over the
    longest window up to the horizon that closes by data_end, known where the label is and that window
    is longer than the label's; <target>_later_days its days."""
    end = to_utc(data_end)
    stage_of = {et: i for i, s in enumerate(config.stages) for et in s.event_types}
    last_stage = len(config.stages) - 1
    churn_from = [s.name for s in config.stages].index(config.churn.applies_from_stage)
    qualifying = set(config.qualifying_event_types)
    churn_types = set(config.churn.churn_event_types)
    h_conv = (config.conversion.label_days or config.conversion.horizon_days) * D
    h_churn = (config.churn.label_days or config.churn.horizon_days) * D
    full_churn = config.churn.horizon_days * D  # "churned already": inactive for the whole horizon
    h_value = config.value.label_days * D
    purchases = set(config.purchase_event_types)

    def spend(evs, start, stop):
        return sum(0.0 if _missing(e.amount) else e.amount for e in evs if e.event_type in purchases and start <= e.ts < stop)

    out = {}
    per_customer = events_by_customer(events)
    for cutoff in cutoffs:
        t = to_utc(cutoff)
        for cid, evs in per_customer.items():
            stage = customer_features(evs, t, config)["current_stage"]
            if math.isnan(stage):
                continue
            past = [e for e in evs if e.ts < t]
            conv = churn = None
            longest = {name: min(getattr(config, name).horizon_days, (end - t) // D) for name in ("conversion", "churn")}

            def converts(days):
                return int(any(t <= e.ts < t + days * D and stage_of.get(e.event_type, -1) > stage for e in evs))

            def churns(days):
                window = [e for e in evs if t <= e.ts < t + days * D]
                if config.churn.definition == "inactivity":
                    return int(not any(e.event_type in qualifying for e in window))
                return int(any(e.event_type in churn_types for e in window))

            active_conv = any(e.event_type in qualifying and e.ts >= t - config.conversion.active_within_days * D for e in past)
            if stage < last_stage and active_conv and t + h_conv <= end:
                conv = converts(h_conv // D)
            if stage >= churn_from and t + h_churn <= end:
                if config.churn.definition == "inactivity":
                    if any(e.event_type in qualifying and e.ts >= t - full_churn for e in past):
                        churn = churns(h_churn // D)
                elif not any(e.event_type in churn_types for e in past):
                    churn = churns(h_churn // D)
            mapped = []
            for label, section, h, outcome in ((conv, "conversion", h_conv, converts), (churn, "churn", h_churn, churns)):
                longer = label is not None and longest[section] * D > h
                mapped += [outcome(longest[section]) if longer else None, longest[section] if longer else None]
            value = later = None
            if stage >= churn_from and t + h_value <= end:
                value = spend(evs, t, t + h_value)
                if t + 2 * h_value <= end:
                    later = spend(evs, t + h_value, t + 2 * h_value)
            if conv is not None or churn is not None or value is not None:
                out[(cid, t)] = (conv, churn, value, later, *mapped)
    return out


BASE = T - 150 * D
PURCHASE = set(CONFIG.purchase_event_types)
CHANNELS = list(CONFIG.channel_names) + [None]
TYPES = list(CONFIG.event_types) + ["order", "repeat_order", "subscription_cancelled", "search_visit", "email_sent", "pricing_view"] * 2
ANCHOR = [("anchor", T - 40 * D, "newsletter_signup")]  # eligible at both cutoffs: a training set has a row


def event_rows(ids, start, span_seconds, max_size=40):
    event = st.tuples(st.sampled_from(ids), st.integers(0, span_seconds), st.sampled_from(TYPES), st.sampled_from(CHANNELS)).map(
        lambda e: (e[0], start + e[1] * S, e[2], e[3], 10.0 if e[2] in PURCHASE else None)
    )
    return st.lists(event, max_size=max_size)


STAGE_TYPES = [s.event_types for s in CONFIG.stages]
EDGE_TYPES = ["search_visit", "newsletter_signup", "pricing_view", "order", "repeat_order", "email_sent", "subscription_cancelled"]


@st.composite
def label_logs(draw):
    """Up to 6 customers with a history that reaches a random stage, random events around the
    cutoffs ``T - 30d`` and ``T``, and events on the eligibility and horizon edges of both."""
    ids = [f"c{i}" for i in range(draw(st.integers(1, 6)))]
    rows = []
    for cid in ids:
        stage = draw(st.integers(0, len(STAGE_TYPES) - 1))
        for s in range(draw(st.integers(0, stage)), stage + 1):
            et = draw(st.sampled_from(STAGE_TYPES[s]))
            rows.append((cid, T - draw(st.integers(0, 200 * 86_400)) * S, et, "direct", 10.0 if et in PURCHASE else None))
    rows += draw(event_rows(ids, T - 100 * D, 190 * 86_400))
    edge = st.tuples(
        st.sampled_from(ids),
        st.sampled_from([T - 30 * D, T]),
        st.sampled_from([-180 * D, -60 * D, 30 * D, 60 * D]),
        st.sampled_from([-S, -NS, pd.Timedelta(0), NS, S]),
        st.sampled_from(EDGE_TYPES),
    )
    for cid, cutoff, offset, jitter, et in draw(st.lists(edge, max_size=8)):
        if offset < pd.Timedelta(0) and abs(jitter) == NS:
            jitter = jitter * 10**9  # see test_lapse_boundary_is_exact_at_nanoseconds
        rows.append((cid, cutoff + offset + jitter, et, "direct", 10.0 if et in PURCHASE else None))
    for cid, cutoff, et in draw(st.lists(st.tuples(st.sampled_from(ids), st.sampled_from([T - 30 * D, T]), st.sampled_from(EDGE_TYPES)), max_size=3)):
        rows.append((cid, cutoff, et, "direct", 10.0 if et in PURCHASE else None))  # exactly at a cutoff
    return rows + ANCHOR


SLOW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


MAPPED = _with(conversion__horizon_days=60, conversion__label_days=30, churn__horizon_days=90, churn__label_days=45)
MAPPED_EXPLICIT = _with(churn__definition="explicit", churn__horizon_days=90, churn__label_days=45)


@pytest.mark.parametrize("config", [CONFIG, EXPLICIT, MAPPED, MAPPED_EXPLICIT],
                         ids=["inactivity", "explicit", "label_days", "label_days-explicit"])
@settings(SLOW, max_examples=100)
@given(rows=label_logs(), end_days=st.sampled_from([29, 30, 45, 60, 61, 75, 120]))
def test_labels_equal_reference_on_random_logs(config, rows, end_days):
    events = canonical(rows, config)
    cutoffs = [T - 30 * D, T]
    data_end = T + end_days * D
    expected = reference_rows(events, cutoffs, config, data_end)
    if not expected:
        with pytest.raises(ValueError, match="no .customer, cutoff. row has a known label"):
            build_training_set(events, None, config, cutoffs=cutoffs, data_end=data_end)
        return
    table = build_training_set(events, None, config, cutoffs=cutoffs, data_end=data_end).frame
    def known(v, kind):
        return None if pd.isna(v) else kind(v)

    mapped = ("convert_later", "convert_later_days", "churn_later", "churn_later_days")
    for target in ("convert", "churn"):  # a target's later columns exist exactly under its label_days
        assert (f"{target}_later" in table) == TARGETS[target].mapped(config)
    for column in mapped:
        if column not in table:
            table[column] = pd.array([pd.NA] * len(table), dtype="Int8")
    got = {
        (r[0], r[1]): (known(r[2], int), known(r[3], int), known(r[4], float), known(r[5], float),
                       *(known(v, int) for v in r[6:]))
        for r in table[["customer_id", "cutoff", "convert_label", "churn_label", "value_label", "value_later", *mapped]
                       ].itertuples(index=False)
    }
    assert got.keys() == expected.keys()
    for key, want in expected.items():
        assert got[key][:2] == want[:2] and got[key][4:] == want[4:], key
        for g, w in zip(got[key][2:4], want[2:4], strict=True):  # spend: sums of floats
            assert (g is None) == (w is None) and (w is None or g == pytest.approx(w)), key


@st.composite
def late_edits(draw, horizon_days: int):
    """A log, and the same log with events at or after T + horizon changed, added or removed."""
    rows = draw(label_logs())
    late = T + horizon_days * D
    ids = sorted({r[0] for r in rows} | {"c0", "newcomer"})
    edited = [r for r in rows if r[1] < late]
    for r in (r for r in rows if r[1] >= late):
        action = draw(st.sampled_from(["keep", "drop", "change"]))
        if action == "keep":
            edited.append(r)
        elif action == "change":
            et = draw(st.sampled_from(TYPES))
            edited.append((r[0], late + draw(st.integers(0, 60 * 86_400)) * S, et, "direct", 1.0 if et in PURCHASE else None))
    edited += draw(event_rows(ids, late, 60 * 86_400, max_size=10))
    edited += [(c, late, et, None, 3.0 if et in PURCHASE else None) for c, et in draw(st.lists(st.tuples(st.sampled_from(ids), st.sampled_from(TYPES)), max_size=3))]
    return rows, edited


@pytest.mark.parametrize("config", [CONFIG, EXPLICIT], ids=["inactivity", "explicit"])
@SLOW
@given(case=late_edits(90))
def test_events_after_the_longest_horizon_change_nothing(config, case):
    rows, edited = case
    # The longest window of the last cutoff, the value label's, ends at T + 90d (the value label's later
    # window, T + 90d..T + 180d, runs past data_end at both cutoffs: unknown, whatever the events).
    cutoffs = [T - 30 * D, T]
    a = training(rows, config, cutoffs, data_end=T + 100 * D)
    b = training(edited, config, cutoffs, data_end=T + 100 * D)
    pd.testing.assert_frame_equal(a, b, check_exact=True)


@SLOW
@given(case=late_edits(30))
def test_events_after_the_conversion_horizon_change_no_feature_or_conversion_label(case):
    rows, edited = case
    a = training(rows, CONFIG, [T], data_end=T + 100 * D).set_index("customer_id")
    b = training(edited, CONFIG, [T], data_end=T + 100 * D).set_index("customer_id")
    conv_a, conv_b = a[a["convert_label"].notna()], b[b["convert_label"].notna()]
    later = ["churn_label", "value_label", "value_later"]  # windows longer than conversion's
    pd.testing.assert_frame_equal(conv_a.drop(columns=later), conv_b.drop(columns=later), check_exact=True)
    columns = list(feature_spec(CONFIG).columns) + ["stage"]
    common = a.index.intersection(b.index)
    pd.testing.assert_frame_equal(a.loc[common, columns], b.loc[common, columns], check_exact=True)


# ---- snapshot cutoffs --------------------------------------------------------------------------

def brute_force_cutoffs(data_start: pd.Timestamp, data_end: pd.Timestamp, config: FunnelConfig) -> list[pd.Timestamp]:
    snap = config.snapshots
    anchor = pd.Timestamp(snap.anchor_date).tz_localize("UTC")
    step = snap.every_days * D
    earliest = data_start + snap.min_history_days * D
    k = (earliest - anchor) // step - 1  # integer Timedelta division: exact
    out = []
    while (c := anchor + k * step) < data_end:
        if c >= earliest:
            out.append(c)
        k += 1
    return out


def test_snapshot_cutoffs_default_grid():
    got = snapshot_cutoffs("2024-01-01", "2024-09-01", CONFIG)
    # anchor 2000-01-01, every 30 days; the first on or after 2024-03-31 (90 days of history)
    assert got[0] == pd.Timestamp("2024-04-24", tz="UTC")  # anchor + 296 * 30 days
    assert got == brute_force_cutoffs(pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-09-01", tz="UTC"), CONFIG)
    assert all(b - a == 30 * D for a, b in zip(got, got[1:]))
    assert got[-1] == pd.Timestamp("2024-08-22", tz="UTC") and len(got) == 5


def test_snapshot_cutoffs_edges():
    first = pd.Timestamp("2024-04-24", tz="UTC")
    start = first - 90 * D
    assert snapshot_cutoffs(start, first + 30 * D, CONFIG) == [first]  # data_end on the grid: excluded
    assert snapshot_cutoffs(start, first + 30 * D + NS, CONFIG) == [first, first + 30 * D]
    assert snapshot_cutoffs(start + S, first + 60 * D, CONFIG) == [first + 30 * D]  # one second short of history
    assert snapshot_cutoffs(start, first, CONFIG) == []
    # naive inputs are UTC; zoned inputs are converted
    assert snapshot_cutoffs("2024-01-01", "2024-09-01", CONFIG) == snapshot_cutoffs(
        pd.Timestamp("2024-01-01 02:00", tz="Europe/Berlin"), pd.Timestamp("2024-09-01", tz="UTC"), CONFIG
    )


@settings(max_examples=150, deadline=None)
@given(
    start_seconds=st.integers(-3 * 365 * 86_400, 3 * 365 * 86_400),
    span_seconds=st.integers(0, 400 * 86_400),
    every=st.sampled_from([1, 7, 30, 91]),
    anchor=st.dates(min_value=pd.Timestamp("1990-01-01").date(), max_value=pd.Timestamp("2030-12-31").date()),
    history=st.sampled_from([0, 1, 90, 365]),
)
def test_snapshot_cutoffs_on_grid_with_history_before_end(start_seconds, span_seconds, every, anchor, history):
    raw = load_config().model_dump(mode="json")
    raw["snapshots"].update(every_days=every, anchor_date=anchor.isoformat(), min_history_days=history)
    config = FunnelConfig.model_validate(raw)
    start = pd.Timestamp("2024-01-01", tz="UTC") + start_seconds * S
    end = start + span_seconds * S
    got = snapshot_cutoffs(start, end, config)
    anchor_ts = pd.Timestamp(anchor).tz_localize("UTC")
    for c in got:
        assert str(c.tz) == "UTC" and c == c.normalize()
        assert (c - anchor_ts).value % (every * D).value == 0  # on the anchor grid
        assert c - start >= history * D
        assert c < end
    assert got == brute_force_cutoffs(start, end, config)  # and none is missing


def test_snapshot_cutoffs_respect_history_at_nanosecond_resolution():
    grid = pd.Timestamp("2024-08-22", tz="UTC")  # anchor + 300 * 30 days
    start = grid - 90 * D + NS
    got = snapshot_cutoffs(start, grid + 100 * D, CONFIG)
    assert got[0] - start >= 90 * D


def test_default_cutoffs_come_from_the_grid():
    rows = [("a", pd.Timestamp("2024-01-01 10:00", tz="UTC") + k * 7 * D, "search_visit", "search") for k in range(40)]
    rows += [("a", pd.Timestamp("2024-01-02", tz="UTC"), "order", "direct", 1.0)]
    events = canonical(rows)
    table = build_training_set(events, None, CONFIG).frame
    end = events["timestamp"].max() + NS
    grid = snapshot_cutoffs(events["timestamp"].min(), end, CONFIG)
    assert set(table["cutoff"]) <= set(grid)
    for c in table["cutoff"]:
        assert c + 60 * D <= end or pd.isna(table.loc[table["cutoff"] == c, "churn_label"]).all()

"""A plain-Python reference for the behaviour features: the oracle for point-in-time correctness.

Written from the documented semantics (``features/behaviour.py`` module docstring), not from the
array code: it loops over customers and their events with ``pandas.Timestamp`` / ``Timedelta``
arithmetic. The only thing it takes from the engine is the column list of ``feature_spec``, and it
checks that the names it derives itself from the config are exactly those columns.

Semantics implemented here:

* an event at ``ts`` is visible at cutoff ``t`` iff ``ts < t``;
* window ``w`` days holds the visible events with ``t - w days <= ts``; ``all_time`` holds them all;
* ``active_days_*`` counts the distinct values of ``floor((t - 1ns - ts) / 1 day)`` in the window;
* durations are ``(later - earlier) / 1 day`` as floats; a recency with nothing to measure is NaN;
* ``current_stage`` is the furthest stage evidenced by a visible event (NaN if none);
  ``days_in_current_stage`` runs from the first visible event evidencing that stage (or a later one);
* ``days_to_reach_stage_X`` is from the first visible event to the first visible event of stage X
  or any later stage;
* ``activity_last_Td`` / ``activity_prev_Td`` count qualifying events in ``[t - T, t)`` and
  ``[t - 2T, t - T)``; ``activity_trend = (last - prev) / (last + prev)``, 0 when both are 0;
* purchase features use the visible events of ``purchase_event_types``: amounts ignore NaN for the
  average and maximum and count as 0 in spend; gaps are between consecutive purchase timestamps,
  their std the population standard deviation.

Optional families (each only when named in ``features.families``):

* ``days_since_last_type_X`` / ``days_since_first_type_X``: from the last / first visible event of type X;
* ``rate_{activity,purchases}_per_tenure_day``: the count over ``max(tenure_days, 1)``;
  ``..._per_active_day``: over ``active_days_all_time``; NaN without visible events;
* ``decayed_G_half_life_Hd``: the sum of ``0.5 ** (age / H)`` over the visible events of G, age in days;
* gaps, per stage and marker group: the group's *active days* are the distinct day numbers above;
  ``mean_gap_days_G`` / ``last_gap_days_G`` are the mean / last difference between consecutive ones;
  ``overdue_G = days_since_last_G / mean_gap_days_G`` (NaN below two active days);
* ``G_trend`` per stage and event group, like ``activity_trend``; ``spend_trend`` the same over spend;
* per paired entry P: ``open_P = max(opens - closes, 0)``; ``days_since_oldest_open_P`` from the
  (closes + 1)-th open when opens > closes (the k-th close resolves the k-th open), else NaN;
* ``distinct_event_types_{L}d`` / ``_all_time``: distinct types in the longest window L / ever.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from funnelcast.features.behaviour import feature_spec
from funnelcast.features.funnel import FunnelConfig

DAY = pd.Timedelta(days=1)
ONE_NS = pd.Timedelta(1, unit="ns")
NAN = float("nan")


def to_utc(value: Any) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def days(delta: pd.Timedelta) -> float:
    return delta / DAY


@dataclass(frozen=True)
class Event:
    ts: pd.Timestamp
    event_type: str
    channel: str | None
    amount: float  # NaN where absent


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) or v is pd.NaT


def events_by_customer(events: pd.DataFrame) -> dict[str, list[Event]]:
    """Every event of every customer (visible or not), in time order."""
    out: dict[str, list[Event]] = {}
    has_channel = "channel" in events.columns
    has_amount = "amount" in events.columns
    for i in range(len(events)):
        row = events.iloc[i]
        channel = row["channel"] if has_channel else None
        amount = row["amount"] if has_amount else None
        out.setdefault(str(row["customer_id"]), []).append(
            Event(
                ts=to_utc(row["timestamp"]),
                event_type=str(row["event_type"]),
                channel=None if _missing(channel) else str(channel),
                amount=NAN if _missing(amount) else float(amount),
            )
        )
    for evs in out.values():
        evs.sort(key=lambda e: e.ts)
    return out


def feature_names(config: FunnelConfig) -> list[str]:
    """The feature columns as the reference derives them from the config (compared as a set: the
    engine's order within a block is its own layout choice)."""
    wl = [f"{w}d" for w in config.features.windows_days] + ["all_time"]
    stages = [s.name for s in config.stages]
    groups = [f"stage_{s}" for s in stages] + list(config.event_groups) + ["activity", "events"]
    trend = config.features.trend_days
    names: list[str] = []
    names += [f"count_{t}_{w}" for t in config.event_types for w in wl]
    names += [f"count_{g}_{w}" for g in groups for w in wl]
    names += [f"active_days_{w}" for w in wl]
    names += [f"count_channel_{c}_all_time" for c in config.channel_names]
    names += [f"count_{d}_{w}" for d in ("inbound", "outbound") for w in wl]
    names += ["inbound_share_all_time"]
    names += [f"spend_{w}" for w in wl]
    names += ["days_since_last_event", "tenure_days"]
    names += [f"days_since_last_stage_{s}" for s in stages]
    names += [f"days_since_last_{m}" for m in list(config.event_groups) + ["activity", "purchase"]]
    names += ["current_stage", "days_in_current_stage"]
    names += [f"days_to_reach_stage_{s}" for s in stages[1:]]
    names += [f"activity_last_{trend}d", f"activity_prev_{trend}d", "activity_trend"]
    names += [
        "days_since_first_purchase",
        "avg_order_value",
        "max_order_value",
        "mean_days_between_purchases",
        "std_days_between_purchases",
        "last_days_between_purchases",
    ]
    names += _family_names(config)
    return names


def _family_names(config: FunnelConfig) -> list[str]:
    on = set(config.features.families)
    stages = [f"stage_{s.name}" for s in config.stages]
    groups = stages + list(config.event_groups) + ["activity", "events"]
    names: list[str] = []
    if "type_recency" in on:
        names += [f"days_since_{w}_type_{t}" for w in ("last", "first") for t in config.event_types]
    if "rates" in on:
        names += [f"rate_{g}_per_{d}" for g in ("activity", "purchases") for d in ("tenure_day", "active_day")]
    if "decay" in on:
        names += [f"decayed_{g}_half_life_{h}d" for g in groups for h in config.features.decay_half_lives_days]
    if "gaps" in on:
        marked = stages + list(config.event_groups) + ["activity", "purchase"]
        names += [f"{what}_{g}" for g in marked for what in ("mean_gap_days", "last_gap_days", "overdue")]
    if "trends" in on:
        names += [f"{g}_trend" for g in stages + list(config.event_groups)] + ["spend_trend"]
    if "pairs" in on:
        names += [f"{what}_{p.name}" for p in config.features.paired_event_types for what in ("open", "days_since_oldest_open")]
    if "diversity" in on:
        names += [f"distinct_event_types_{max(config.features.windows_days)}d", "distinct_event_types_all_time"]
    if "calendar" in on:
        names += ["cutoff_year_sin", "cutoff_year_cos"]
    return names


def family_features(visible: list[Event], t: pd.Timestamp, config: FunnelConfig) -> dict[str, float]:
    """The optional families' values for one customer's visible events (loops, Timestamp arithmetic)."""
    on = set(config.features.families)
    f: dict[str, float] = {}
    activity_types = set(config.qualifying_event_types)
    purchase_types = set(config.purchase_event_types)
    stages = [(f"stage_{s.name}", set(s.event_types)) for s in config.stages]
    event_groups = [(name, set(members)) for name, members in config.event_groups.items()]

    def day_number(e: Event) -> int:
        return (t - ONE_NS - e.ts) // DAY

    def of(types: set[str]) -> list[Event]:
        return [e for e in visible if e.event_type in types]

    if "type_recency" in on:
        for et in config.event_types:
            stamps = [e.ts for e in visible if e.event_type == et]
            f[f"days_since_last_type_{et}"] = days(t - max(stamps)) if stamps else NAN
            f[f"days_since_first_type_{et}"] = days(t - min(stamps)) if stamps else NAN
    if "rates" in on:
        active_days = len({day_number(e) for e in visible})
        tenure = days(t - min(e.ts for e in visible)) if visible else NAN
        for name, types in (("activity", activity_types), ("purchases", purchase_types)):
            n = len(of(types))
            f[f"rate_{name}_per_tenure_day"] = n / max(tenure, 1.0) if visible else NAN
            f[f"rate_{name}_per_active_day"] = n / active_days if active_days else NAN
    if "decay" in on:
        groups = stages + event_groups + [("activity", activity_types), ("events", set(config.event_types))]
        for name, types in groups:
            for h in config.features.decay_half_lives_days:
                f[f"decayed_{name}_half_life_{h}d"] = sum(0.5 ** (days(t - e.ts) / h) for e in of(types))
    if "gaps" in on:
        marked = stages + event_groups + [("activity", activity_types), ("purchase", purchase_types)]
        for name, types in marked:
            events = of(types)
            active = sorted({day_number(e) for e in events}, reverse=True)  # earliest day first
            gaps = [a - b for a, b in zip(active, active[1:])]
            mean = sum(gaps) / len(gaps) if gaps else NAN
            f[f"mean_gap_days_{name}"] = mean
            f[f"last_gap_days_{name}"] = float(gaps[-1]) if gaps else NAN
            f[f"overdue_{name}"] = days(t - max(e.ts for e in events)) / mean if gaps else NAN
    if "trends" in on:
        trend = config.features.trend_days

        def ratio(last: float, prev: float) -> float:
            return (last - prev) / (last + prev) if last + prev > 0 else 0.0

        def period(e: Event) -> int:  # 0: [t - T, t), 1: [t - 2T, t - T), 2: before
            return 0 if e.ts >= t - trend * DAY else 1 if e.ts >= t - 2 * trend * DAY else 2

        for name, types in stages + event_groups:
            periods = [period(e) for e in of(types)]
            f[f"{name}_trend"] = ratio(periods.count(0), periods.count(1))
        spent = [0.0, 0.0, 0.0]
        for e in of(purchase_types):
            spent[period(e)] += 0.0 if math.isnan(e.amount) else e.amount
        f["spend_trend"] = ratio(spent[0], spent[1])
    if "pairs" in on:
        for pair in config.features.paired_event_types:
            opened = sorted(e.ts for e in visible if e.event_type == pair.opens)
            closed = sum(1 for e in visible if e.event_type == pair.closes)
            f[f"open_{pair.name}"] = float(max(len(opened) - closed, 0))
            f[f"days_since_oldest_open_{pair.name}"] = days(t - opened[closed]) if len(opened) > closed else NAN
    if "diversity" in on:
        longest = max(config.features.windows_days)
        recent = {e.event_type for e in visible if e.ts >= t - longest * DAY}
        f[f"distinct_event_types_{longest}d"] = float(len(recent))
        f["distinct_event_types_all_time"] = float(len({e.event_type for e in visible}))
    if "calendar" in on:
        # Calendar arithmetic, not the product's modulo: the fraction of a 365.2425-day year since 1970.
        year = 365.2425 * pd.Timedelta(days=1)
        turn = ((t - pd.Timestamp("1970-01-01", tz="UTC")) % year) / year
        f["cutoff_year_sin"], f["cutoff_year_cos"] = math.sin(2 * math.pi * turn), math.cos(2 * math.pi * turn)
    return f


def customer_features(all_events: list[Event], t: pd.Timestamp, config: FunnelConfig) -> dict[str, float]:
    """One customer's features at cutoff ``t`` from the events strictly before it."""
    visible = [e for e in all_events if e.ts < t]
    windows: list[tuple[str, pd.Timestamp | None]] = [(f"{w}d", t - w * DAY) for w in config.features.windows_days]
    windows.append(("all_time", None))

    def in_window(e: Event, start: pd.Timestamp | None) -> bool:
        return start is None or e.ts >= start

    stage_of: dict[str, int] = {}
    for i, stage in enumerate(config.stages):
        for et in stage.event_types:
            stage_of[et] = i
    purchase_types = set(config.purchase_event_types)
    activity_types = set(config.qualifying_event_types)
    groups: list[tuple[str, set[str]]] = [(f"stage_{s.name}", set(s.event_types)) for s in config.stages]
    groups += [(name, set(members)) for name, members in config.event_groups.items()]
    groups += [("activity", activity_types), ("events", set(config.event_types))]

    f: dict[str, float] = {}
    for et in config.event_types:
        for label, start in windows:
            f[f"count_{et}_{label}"] = float(sum(1 for e in visible if e.event_type == et and in_window(e, start)))
    for name, members in groups:
        for label, start in windows:
            f[f"count_{name}_{label}"] = float(sum(1 for e in visible if e.event_type in members and in_window(e, start)))
    for label, start in windows:
        day_numbers = {(t - ONE_NS - e.ts) // DAY for e in visible if in_window(e, start)}
        f[f"active_days_{label}"] = float(len(day_numbers))
    for ch in config.channel_names:
        f[f"count_channel_{ch}_all_time"] = float(sum(1 for e in visible if e.channel == ch))

    def direction(e: Event) -> str | None:
        return None if e.channel is None else config.channels.get(e.channel)

    for d in ("inbound", "outbound"):
        for label, start in windows:
            f[f"count_{d}_{label}"] = float(sum(1 for e in visible if direction(e) == d and in_window(e, start)))
    n_in, n_out = f["count_inbound_all_time"], f["count_outbound_all_time"]
    f["inbound_share_all_time"] = n_in / (n_in + n_out) if n_in + n_out > 0 else NAN

    purchases = [e for e in visible if e.event_type in purchase_types]
    for label, start in windows:
        total = 0.0
        for e in purchases:
            if in_window(e, start) and not math.isnan(e.amount):
                total += e.amount
        f[f"spend_{label}"] = total

    def since(ts: list[pd.Timestamp]) -> float:
        return days(t - max(ts)) if ts else NAN

    f["days_since_last_event"] = since([e.ts for e in visible])
    f["tenure_days"] = days(t - min(e.ts for e in visible)) if visible else NAN
    for s in config.stages:
        f[f"days_since_last_stage_{s.name}"] = since([e.ts for e in visible if e.event_type in s.event_types])
    for name, members in config.event_groups.items():
        f[f"days_since_last_{name}"] = since([e.ts for e in visible if e.event_type in members])
    f["days_since_last_activity"] = since([e.ts for e in visible if e.event_type in activity_types])
    f["days_since_last_purchase"] = since([e.ts for e in purchases])

    staged = [(stage_of[e.event_type], e.ts) for e in visible if e.event_type in stage_of]
    if staged:
        current = max(s for s, _ in staged)
        f["current_stage"] = float(current)
        f["days_in_current_stage"] = days(t - min(ts for s, ts in staged if s >= current))
    else:
        f["current_stage"] = NAN
        f["days_in_current_stage"] = NAN
    first = min((e.ts for e in visible), default=None)
    for i, s in enumerate(config.stages[1:], start=1):
        reached = [ts for st, ts in staged if st >= i]
        f[f"days_to_reach_stage_{s.name}"] = days(min(reached) - first) if reached else NAN

    trend = config.features.trend_days
    acts = [e for e in visible if e.event_type in activity_types]
    last = sum(1 for e in acts if e.ts >= t - trend * DAY)
    prev = sum(1 for e in acts if t - 2 * trend * DAY <= e.ts < t - trend * DAY)
    f[f"activity_last_{trend}d"] = float(last)
    f[f"activity_prev_{trend}d"] = float(prev)
    f["activity_trend"] = (last - prev) / (last + prev) if last + prev > 0 else 0.0

    amounts = [e.amount for e in purchases if not math.isnan(e.amount)]
    f["days_since_first_purchase"] = days(t - min(e.ts for e in purchases)) if purchases else NAN
    f["avg_order_value"] = sum(amounts) / len(amounts) if amounts else NAN
    f["max_order_value"] = max(amounts) if amounts else NAN
    times = sorted(e.ts for e in purchases)
    gaps = [days(b - a) for a, b in zip(times, times[1:])]
    if gaps:
        mean = sum(gaps) / len(gaps)
        f["mean_days_between_purchases"] = mean
        f["std_days_between_purchases"] = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps))
        f["last_days_between_purchases"] = gaps[-1]
    else:
        f["mean_days_between_purchases"] = NAN
        f["std_days_between_purchases"] = NAN
        f["last_days_between_purchases"] = NAN
    f.update(family_features(visible, t, config))
    return f


def reference_features(
    events: pd.DataFrame, cutoff: Any, config: FunnelConfig, customers: pd.DataFrame | None = None
) -> pd.DataFrame:
    """What ``build_features(events, customers, cutoff, config)`` must return, computed by loops.

    Rows: every customer with an event strictly before the cutoff, plus every customer of
    ``customers``, sorted by id. Columns: customer_id, cutoff, the features, then attributes
    (datetime attributes become ``days_since_<col>``, NaN unless strictly before the cutoff).
    """
    columns = list(feature_spec(config).columns)  # the engine's column order (a layout choice)
    names = feature_names(config)
    assert len(set(columns)) == len(columns), "feature_spec(config).columns repeats a name"
    assert set(names) == set(columns), (
        "the reference's feature names differ from feature_spec(config).columns: "
        f"{sorted(set(names) ^ set(columns))}"
    )
    t = to_utc(cutoff)
    per_customer = events_by_customer(events)
    ids = {c for c, evs in per_customer.items() if any(e.ts < t for e in evs)}
    if customers is not None:
        ids |= {str(c) for c in customers["customer_id"]}
    ids_sorted = sorted(ids)
    rows = []
    for cid in ids_sorted:
        f = customer_features(per_customer.get(cid, []), t, config)
        assert set(f) == set(columns), sorted(set(f) ^ set(columns))
        rows.append([f[c] for c in columns])
    frame = pd.DataFrame(rows, columns=columns, dtype="float64") if rows else pd.DataFrame({c: pd.Series(dtype="float64") for c in columns})
    frame.insert(0, "cutoff", pd.Series([t] * len(ids_sorted), dtype="datetime64[ns, UTC]"))
    frame.insert(0, "customer_id", pd.array(ids_sorted, dtype="string"))
    if customers is not None and customers.shape[1] > 1:
        table = {str(r["customer_id"]): r for _, r in customers.iterrows()}
        for col in customers.columns:
            if col == "customer_id":
                continue
            values = []
            is_date = isinstance(customers[col].dtype, pd.DatetimeTZDtype)
            for cid in ids_sorted:
                v = table[cid][col] if cid in table else None
                if is_date:
                    values.append(days(t - v) if not _missing(v) and v < t else NAN)
                else:
                    values.append(None if _missing(v) else v)
            frame[f"days_since_{col}" if is_date else col] = values
    return frame

"""Point-in-time behaviour vectors: one row per customer from that customer's events strictly before a cutoff.

The hot path of everything (training sets over many cutoffs, batch scoring, one customer's HTTP
request) runs here, once, over arrays sorted by customer then time:

* event types and channels are small integer codes;
* a cutoff turns each event's age into a *window bucket* (``searchsorted`` over the configured
  windows), so one ``bincount`` over (customer, type, bucket) yields every windowed count and a
  ``cumsum`` over buckets nests the windows;
* firsts and lasts per stage or group are ``np.minimum.at``/``np.maximum.at`` over the prefix.

No loop runs per customer or per event, and each customer's row is a function of that customer's
events alone, so customers can be processed in chunks (here, to bound memory) or on separate workers.

Time semantics: an event at timestamp ``ts`` is visible at ``cutoff`` iff ``ts < cutoff``. Window
``w`` days holds the events with ``cutoff - w days <= ts < cutoff``. Durations are in days (float).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.funnel import FunnelConfig

DAY_NS = 86_400 * 10**9
_NEVER_LATE = np.iinfo(np.int64).min
_NEVER_EARLY = np.iinfo(np.int64).max
CHUNK_CUSTOMERS = 32_768


@dataclass(frozen=True, eq=False)
class FeatureSpec:
    """Everything the array code needs from a funnel config, plus the column layout it fills."""

    config: FunnelConfig
    windows: np.ndarray  # int64 days, ascending
    window_labels: tuple[str, ...]  # "7d", "30d", ..., "all_time"
    type_stage: np.ndarray  # (K,) stage index or -1
    type_purchase: np.ndarray  # (K,) bool
    type_activity: np.ndarray  # (K,) bool: the customer's own (qualifying) activity
    group_names: tuple[str, ...]  # counted groups: stages, event groups, activity, all events
    group_matrix: np.ndarray  # (K, G) 0/1
    marker_names: tuple[str, ...]  # groups with a days_since_last_* feature (beyond stages)
    marker_masks: tuple[np.ndarray, ...]  # (K,) bool each
    channel_inbound: np.ndarray  # (Ch+1,) bool; last slot = missing channel
    channel_outbound: np.ndarray
    columns: tuple[str, ...]
    layout: dict[str, slice]

    @property
    def n_types(self) -> int:
        return len(self.type_stage)

    @property
    def n_stages(self) -> int:
        return len(self.config.stages)

    @property
    def n_channels(self) -> int:
        return len(self.channel_inbound)  # including the "missing" slot


_SPECS: dict[int, tuple[FunnelConfig, FeatureSpec]] = {}


def feature_spec(config: FunnelConfig) -> FeatureSpec:
    """The feature layout for ``config``, cached per config object (configs are frozen)."""
    hit = _SPECS.get(id(config))
    if hit is not None and hit[0] is config:
        return hit[1]
    if len(_SPECS) > 64:
        _SPECS.clear()
    spec = _make_spec(config)
    _SPECS[id(config)] = (config, spec)
    return spec


def _make_spec(config: FunnelConfig) -> FeatureSpec:
    types = config.event_types
    k = len(types)
    code = {t: i for i, t in enumerate(types)}
    stage_of = config.stage_of_event_type
    type_stage = np.array([stage_of.get(t, -1) for t in types], dtype=np.int64)

    def mask(names: list[str] | tuple[str, ...]) -> np.ndarray:
        m = np.zeros(k, dtype=bool)
        m[[code[n] for n in names if n in code]] = True
        return m

    type_purchase = mask(config.purchase_event_types)
    type_activity = mask(config.qualifying_event_types)
    group_names: list[str] = []
    cols: list[np.ndarray] = []
    for i, stage in enumerate(config.stage_names):
        group_names.append(f"stage_{stage}")
        cols.append(type_stage == i)
    for name, members in config.event_groups.items():
        group_names.append(name)
        cols.append(mask(members))
    group_names += ["activity", "events"]
    cols += [type_activity, np.ones(k, dtype=bool)]
    group_matrix = np.stack(cols, axis=1).astype(np.float64)

    marker_names = tuple(config.event_groups) + ("activity", "purchase")
    marker_masks = tuple(mask(m) for m in config.event_groups.values()) + (type_activity, type_purchase)

    channels = config.channel_names
    inbound = np.array([config.channels.get(c) == "inbound" for c in channels] + [False])
    outbound = np.array([config.channels.get(c) == "outbound" for c in channels] + [False])

    windows = np.asarray(config.features.windows_days, dtype=np.int64)
    wl = tuple(f"{w}d" for w in windows) + ("all_time",)
    stages = config.stage_names
    trend = config.features.trend_days

    blocks: list[tuple[str, list[str]]] = [
        # Window-major inside each block: the engine's count arrays are (customer, window, type).
        ("type_counts", [f"count_{t}_{w}" for w in wl for t in types]),
        ("group_counts", [f"count_{g}_{w}" for w in wl for g in group_names]),
        ("active_days", [f"active_days_{w}" for w in wl]),
        ("channel_counts", [f"count_channel_{c}_all_time" for c in channels]),
        ("direction_counts", [f"count_{d}_{w}" for d in ("inbound", "outbound") for w in wl]),
        ("inbound_share", ["inbound_share_all_time"]),
        ("spend", [f"spend_{w}" for w in wl]),
        ("recency", ["days_since_last_event", "tenure_days"]),
        ("stage_recency", [f"days_since_last_stage_{s}" for s in stages]),
        ("marker_recency", [f"days_since_last_{m}" for m in marker_names]),
        ("stage", ["current_stage", "days_in_current_stage"]),
        ("time_to_stage", [f"days_to_reach_stage_{s}" for s in stages[1:]]),
        ("trend", [f"activity_last_{trend}d", f"activity_prev_{trend}d", "activity_trend"]),
        (
            "purchases",
            [
                "days_since_first_purchase",
                "avg_order_value",
                "max_order_value",
                "mean_days_between_purchases",
                "std_days_between_purchases",
                "last_days_between_purchases",
            ],
        ),
    ]
    columns: list[str] = []
    layout: dict[str, slice] = {}
    for key, names in blocks:
        layout[key] = slice(len(columns), len(columns) + len(names))
        columns += names
    if len(set(columns)) != len(columns):
        seen: set[str] = set()
        clash = sorted({c for c in columns if c in seen or seen.add(c)})  # type: ignore[func-returns-value]
        raise ValueError(f"the funnel config yields clashing feature names {clash}; rename the groups or event types")
    return FeatureSpec(
        config=config,
        windows=windows,
        window_labels=wl,
        type_stage=type_stage,
        type_purchase=type_purchase,
        type_activity=type_activity,
        group_names=tuple(group_names),
        group_matrix=group_matrix,
        marker_names=marker_names,
        marker_masks=marker_masks,
        channel_inbound=inbound,
        channel_outbound=outbound,
        columns=tuple(columns),
        layout=layout,
    )


@dataclass(frozen=True, eq=False)
class EventArrays:
    """Events as integer-coded arrays sorted by customer then time; ``starts`` delimits each customer."""

    customer_ids: np.ndarray  # (C,) ids in code order
    starts: np.ndarray  # (C+1,) int64 offsets into the event arrays
    customer: np.ndarray  # (N,) int64 codes, non-decreasing
    ts: np.ndarray  # (N,) int64 ns since epoch, UTC; non-decreasing within a customer
    event_type: np.ndarray  # (N,) int64 codes into config.event_types
    channel: np.ndarray  # (N,) int64 codes into config.channel_names; len(channels) = missing
    amount: np.ndarray  # (N,) float64, NaN where absent

    @property
    def n_customers(self) -> int:
        return len(self.customer_ids)

    @classmethod
    def from_frame(cls, events: pd.DataFrame, config: FunnelConfig, customer_ids: Any = None) -> EventArrays:
        """Encode a canonical (validated) event frame.

        ``customer_ids`` fixes the customer axis (customers without events get empty segments);
        by default it is the sorted distinct ids of ``events``. Events of customers not listed are
        not encoded.
        """
        ids = np.asarray(events["customer_id"].to_numpy(dtype=object))
        if customer_ids is None:
            universe = np.unique(ids)
        else:
            universe = np.unique(np.asarray(customer_ids, dtype=object))
        codes = pd.Index(universe).get_indexer(ids).astype(np.int64)  # -1: not on the customer axis
        ts = _ns(events["timestamp"])
        etype = pd.Categorical(events["event_type"], categories=list(config.event_types)).codes.astype(np.int64)
        if (etype < 0).any():
            bad = pd.unique(events["event_type"][etype < 0])[:5]
            raise ValueError(f"event types {list(bad)} are not in the funnel config; validate events first")
        channels = list(config.channel_names)
        if "channel" in events.columns:
            ch = pd.Categorical(events["channel"], categories=channels).codes.astype(np.int64)
            ch[ch < 0] = len(channels)
        else:
            ch = np.full(len(events), len(channels), dtype=np.int64)
        amount = events["amount"].to_numpy(dtype=np.float64, na_value=np.nan) if "amount" in events.columns else np.full(len(events), np.nan)
        keep = codes >= 0
        order = np.lexsort((ts, codes))
        order = order[keep[order]]
        codes = codes[order]
        return cls(
            customer_ids=universe,
            starts=np.searchsorted(codes, np.arange(len(universe) + 1)).astype(np.int64),
            customer=codes,
            ts=ts[order],
            event_type=etype[order],
            channel=ch[order],
            amount=amount[order],
        )

    def customers_slice(self, c0: int, c1: int) -> EventArrays:
        """The events of customers ``c0 <= code < c1``, recoded from 0."""
        a, b = self.starts[c0], self.starts[c1]
        return EventArrays(
            customer_ids=self.customer_ids[c0:c1],
            starts=self.starts[c0 : c1 + 1] - a,
            customer=self.customer[a:b] - c0,
            ts=self.ts[a:b],
            event_type=self.event_type[a:b],
            channel=self.channel[a:b],
            amount=self.amount[a:b],
        )


def _ns(ts: pd.Series) -> np.ndarray:
    values = ts.dt.tz_convert("UTC") if isinstance(ts.dtype, pd.DatetimeTZDtype) else ts
    return values.to_numpy(dtype="datetime64[ns]").view(np.int64)


def cutoff_ns(cutoff: Any) -> int:
    """A cutoff (date, string or timestamp; naive means UTC) as int64 nanoseconds since epoch."""
    ts = pd.Timestamp(cutoff)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.as_unit("ns").value)


def compute_features(arrays: EventArrays, cutoff: int, spec: FeatureSpec, chunk: int = CHUNK_CUSTOMERS) -> np.ndarray:
    """The (customers × features) float64 matrix at ``cutoff`` (int ns), columns ``spec.columns``.

    Customers are processed in chunks of ``chunk`` to bound memory; a chunk's rows depend only on
    its own customers' events, so chunking never changes a value.
    """
    c = arrays.n_customers
    out = np.empty((c, len(spec.columns)), dtype=np.float64)
    for c0 in range(0, c, chunk):
        c1 = min(c, c0 + chunk)
        part = arrays if (c0 == 0 and c1 == c) else arrays.customers_slice(c0, c1)
        _fill(part, cutoff, spec, out[c0:c1])
    return out


def _fill(a: EventArrays, t: int, spec: FeatureSpec, out: np.ndarray) -> None:
    """Fill ``out`` (C × F) for the customers of ``a`` at cutoff ``t``."""
    lay = spec.layout
    c = a.n_customers
    k = spec.n_types
    n_windows = len(spec.windows)
    b = n_windows + 1  # window buckets plus all-time
    b1 = b + 1  # plus a bucket for events at or after the cutoff
    cust, ts, et = a.customer, a.ts, a.event_type

    valid = ts < t
    age_days = (t - 1 - ts) // DAY_NS  # whole days before the cutoff; window w holds age_days < w
    bucket = np.searchsorted(spec.windows, age_days, side="right")
    bucket[~valid] = b

    # Windowed counts per event type as (customer, bucket, type); nesting the windows is a cumsum
    # over buckets, and group counts are one matrix product with the membership matrix.
    cust_bucket = cust * b1 + bucket
    raw = np.bincount(cust_bucket * k + et, minlength=c * b1 * k).reshape(c, b1, k)
    type_counts = np.cumsum(raw[:, :b, :], axis=1, dtype=np.float64)
    out[:, lay["type_counts"]] = type_counts.reshape(c, b * k)
    out[:, lay["group_counts"]] = (type_counts.reshape(c * b, k) @ spec.group_matrix).reshape(c, -1)

    new_day = np.ones(len(ts), dtype=np.float64)
    if len(ts) > 1:
        new_day[1:] = (cust[1:] != cust[:-1]) | (age_days[1:] != age_days[:-1])
    out[:, lay["active_days"]] = _nested(np.bincount(cust_bucket, weights=new_day, minlength=c * b1), c, b1, b)

    n_ch = spec.n_channels
    raw_ch = np.bincount((cust * n_ch + a.channel) * b1 + bucket, minlength=c * n_ch * b1).reshape(c, n_ch, b1)
    ch_counts = np.cumsum(raw_ch[:, :, :b], axis=2)
    out[:, lay["channel_counts"]] = ch_counts[:, :-1, -1]
    inbound = ch_counts[:, spec.channel_inbound, :].sum(axis=1)
    outbound = ch_counts[:, spec.channel_outbound, :].sum(axis=1)
    out[:, lay["direction_counts"]] = np.concatenate([inbound, outbound], axis=1)
    directed = inbound[:, -1] + outbound[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        out[:, lay["inbound_share"]] = (inbound[:, -1] / directed)[:, None]

    purchase = spec.type_purchase[et] & valid
    amount = np.where(purchase, np.nan_to_num(a.amount), 0.0)
    out[:, lay["spend"]] = _nested(np.bincount(cust_bucket, weights=amount, minlength=c * b1), c, b1, b)

    # Recency and tenure from segment ends: the visible events are a prefix of each customer's segment.
    n_visible = type_counts[:, -1, :].sum(axis=1).astype(np.int64)
    has = n_visible > 0
    first_idx = a.starts[:-1]
    last_idx = first_idx + n_visible - 1
    safe_ts = ts if len(ts) else np.zeros(1, dtype=np.int64)
    last_ts = np.where(has, safe_ts[np.clip(last_idx, 0, max(len(ts) - 1, 0))], _NEVER_LATE)
    first_ts = np.where(has, safe_ts[np.clip(first_idx, 0, max(len(ts) - 1, 0))], _NEVER_EARLY)
    out[:, lay["recency"]] = np.stack([_days_since(t, last_ts), _days_since(t, first_ts)], axis=1)

    # Stage evidence: first and last event of each stage before the cutoff.
    s = spec.n_stages
    stage = spec.type_stage[et]
    m = valid & (stage >= 0)
    keys = cust[m] * s + stage[m]
    stage_last = np.full(c * s, _NEVER_LATE, dtype=np.int64)
    np.maximum.at(stage_last, keys, ts[m])
    stage_first = np.full(c * s, _NEVER_EARLY, dtype=np.int64)
    np.minimum.at(stage_first, keys, ts[m])
    stage_last = stage_last.reshape(c, s)
    out[:, lay["stage_recency"]] = _days_since(t, stage_last)
    # A stage is reached when it or any later stage is first evidenced.
    reached = np.minimum.accumulate(stage_first.reshape(c, s)[:, ::-1], axis=1)[:, ::-1]
    n_reached = (reached < _NEVER_EARLY).sum(axis=1)
    current = n_reached - 1
    reached_current = reached[np.arange(c), np.maximum(current, 0)]
    out[:, lay["stage"]] = np.stack(
        [np.where(current >= 0, current, np.nan), np.where(current >= 0, _days_since(t, reached_current), np.nan)], axis=1
    )
    with np.errstate(invalid="ignore"):
        to_stage = (reached[:, 1:] - first_ts[:, None]) / DAY_NS
    out[:, lay["time_to_stage"]] = np.where(reached[:, 1:] < _NEVER_EARLY, to_stage, np.nan)

    markers = np.empty((c, len(spec.marker_masks)), dtype=np.float64)
    for j, member in enumerate(spec.marker_masks):
        mm = valid & member[et]
        last = np.full(c, _NEVER_LATE, dtype=np.int64)
        np.maximum.at(last, cust[mm], ts[mm])
        markers[:, j] = _days_since(t, last)
    out[:, lay["marker_recency"]] = markers

    trend_days = spec.config.features.trend_days
    act = valid & spec.type_activity[et]
    recent = np.bincount(cust, weights=act & (age_days < trend_days), minlength=c)
    previous = np.bincount(cust, weights=act & (age_days >= trend_days) & (age_days < 2 * trend_days), minlength=c)
    total = recent + previous
    trend = np.divide(recent - previous, total, out=np.zeros(c), where=total > 0)
    out[:, lay["trend"]] = np.stack([recent, previous, trend], axis=1)

    out[:, lay["purchases"]] = _purchase_stats(cust[purchase], ts[purchase], a.amount[purchase], c, t)


def _nested(flat_counts: np.ndarray, c: int, b1: int, b: int) -> np.ndarray:
    return np.cumsum(flat_counts.reshape(c, b1)[:, :b], axis=1)


def _days_since(t: int, ts: np.ndarray) -> np.ndarray:
    """(t - ts) in days; NaN where ``ts`` is a never-seen sentinel."""
    seen = (ts != _NEVER_LATE) & (ts != _NEVER_EARLY)
    return np.where(seen, (t - ts) / DAY_NS, np.nan)


def _purchase_stats(pc: np.ndarray, pt: np.ndarray, pa: np.ndarray, c: int, t: int) -> np.ndarray:
    """First-purchase recency, order value and inter-purchase gap statistics, per customer."""
    res = np.full((c, 6), np.nan)
    if len(pc) == 0:
        return res
    boundary = np.empty(len(pc), dtype=bool)
    boundary[0] = True
    boundary[1:] = pc[1:] != pc[:-1]
    firsts = np.flatnonzero(boundary)
    res[pc[firsts], 0] = (t - pt[firsts]) / DAY_NS
    has_amount = ~np.isnan(pa)
    n_amount = np.bincount(pc, weights=has_amount, minlength=c)
    total = np.bincount(pc, weights=np.where(has_amount, pa, 0.0), minlength=c)
    with np.errstate(invalid="ignore", divide="ignore"):
        res[:, 1] = np.where(n_amount > 0, total / n_amount, np.nan)
    biggest = np.full(c, -np.inf)
    np.maximum.at(biggest, pc[has_amount], pa[has_amount])
    res[:, 2] = np.where(np.isfinite(biggest), biggest, np.nan)

    same = ~boundary[1:]
    gaps = ((pt[1:] - pt[:-1]) / DAY_NS)[same]
    if len(gaps):
        gc = pc[1:][same]
        n = np.bincount(gc, minlength=c)
        sums = np.bincount(gc, weights=gaps, minlength=c)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = sums / n
            # Two passes (deviations from each customer's mean): exact where sum-of-squares cancels.
            spread = np.bincount(gc, weights=(gaps - mean[gc]) ** 2, minlength=c)
            res[:, 3] = mean
            res[:, 4] = np.sqrt(spread / n)
        last = np.r_[gc[1:] != gc[:-1], True]
        res[gc[last], 5] = gaps[last]
    return res


# ---- the pandas edge ---------------------------------------------------------------------------

def attribute_features(customers: pd.DataFrame | None, ids: np.ndarray, cutoff: int) -> pd.DataFrame:
    """Static attributes aligned to ``ids``: dates become ``days_since_<col>`` (NaN until they happen)."""
    if customers is None or customers.shape[1] <= 1:
        return pd.DataFrame(index=pd.RangeIndex(len(ids)))
    table = customers.set_index("customer_id").reindex(pd.Index(ids, dtype=object))
    out = {}
    for col in table.columns:
        values = table[col]
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            ns = values.to_numpy(dtype="datetime64[ns]").view(np.int64)
            known = values.notna().to_numpy() & (ns < cutoff)
            out[f"days_since_{col}"] = np.where(known, (cutoff - ns) / DAY_NS, np.nan)
        else:
            out[col] = values.to_numpy() if not isinstance(values.dtype, pd.CategoricalDtype) else values.array
    return pd.DataFrame(out).reset_index(drop=True)


def build_features(
    events: pd.DataFrame, customers: pd.DataFrame | None, cutoff: Any, config: FunnelConfig
) -> pd.DataFrame:
    """One row per customer at ``cutoff``, from events strictly before it (validated, canonical frames).

    Rows cover every customer with an event before the cutoff, plus every customer in ``customers``
    (those without events get zero counts and missing recencies). Columns: ``customer_id``,
    ``cutoff``, the behaviour features of :func:`feature_spec`, then static attributes.
    """
    spec = feature_spec(config)
    t = cutoff_ns(cutoff)
    visible_ids = events["customer_id"].to_numpy(dtype=object)[_ns(events["timestamp"]) < t]
    universe = np.unique(visible_ids) if customers is None else np.union1d(np.unique(visible_ids), customers["customer_id"].to_numpy(dtype=object))
    arrays = EventArrays.from_frame(events, config, customer_ids=universe)
    return features_frame(arrays, t, spec, customers)


def features_frame(arrays: EventArrays, t: int, spec: FeatureSpec, customers: pd.DataFrame | None) -> pd.DataFrame:
    matrix = compute_features(arrays, t, spec)
    frame = pd.DataFrame(matrix, columns=list(spec.columns))
    frame.insert(0, "cutoff", pd.Timestamp(t, tz="UTC"))
    frame.insert(0, "customer_id", pd.array(arrays.customer_ids, dtype="string"))
    attrs = attribute_features(customers, arrays.customer_ids, t)
    clash = set(attrs.columns) & set(frame.columns)
    if clash:
        raise ValueError(f"customer attribute columns {sorted(clash)} clash with behaviour feature names; rename them")
    return pd.concat([frame, attrs], axis=1) if len(attrs.columns) else frame

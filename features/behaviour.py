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

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from funnelcast.features.errors import ConfigError
from funnelcast.features.events import EventArrays
from funnelcast.features.funnel import FunnelConfig
from funnelcast.features.timestamps import DAY_NS
_NEVER_LATE = np.iinfo(np.int64).min
_NEVER_EARLY = np.iinfo(np.int64).max
CHUNK_CUSTOMERS = 4_096  # (bucket, customer, type) counts of a chunk stay cache-sized


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
    columns: tuple[str, ...]
    layout: dict[str, slice]
    # Age buckets: every window edge plus the trend edges; window_rows picks the nested windows.
    edges: np.ndarray  # (E,) int64 days, ascending
    window_rows: np.ndarray  # (W+1,) rows of the cumulated buckets that are the windows, then all time
    trend_rows: tuple[int, int]  # rows holding "age < trend" and "age < 2 * trend"
    # First/last timestamps per group are reductions over per-type columns (column K: never seen).
    last_columns: np.ndarray
    last_offsets: np.ndarray  # stages, then markers
    first_columns: np.ndarray
    first_offsets: np.ndarray  # stages
    direction_matrix: np.ndarray  # (Ch+1, 2): 1 where a channel is inbound / outbound; last row = missing channel

    @property
    def n_types(self) -> int:
        """Event types in the config (K)."""
        return len(self.type_stage)

    @property
    def n_stages(self) -> int:
        """Stages in the funnel."""
        return len(self.config.stages)

    @property
    def n_channels(self) -> int:
        """Channels, plus one slot for a missing channel."""
        return self.direction_matrix.shape[0]  # including the "missing" slot


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
        raise ConfigError(f"the funnel config yields clashing feature names {clash}; rename the groups or event types")
    trend_edges = {config.features.trend_days, 2 * config.features.trend_days}
    edges = np.array(sorted(set(windows.tolist()) | trend_edges), dtype=np.int64)
    window_rows = np.array([int(np.searchsorted(edges, w)) for w in windows] + [len(edges)])
    trend_rows = (int(np.searchsorted(edges, trend)), int(np.searchsorted(edges, 2 * trend)))

    def gather(groups: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        cols: list[int] = []
        offsets = []
        for member in groups:
            offsets.append(len(cols))
            cols += np.flatnonzero(member).tolist() or [k]
        return np.array(cols, dtype=np.intp), np.array(offsets, dtype=np.intp)

    by_stage = [type_stage == i for i in range(len(stages))]
    last_columns, last_offsets = gather(by_stage + list(marker_masks))
    first_columns, first_offsets = gather(by_stage)
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
        columns=tuple(columns),
        layout=layout,
        edges=edges,
        window_rows=window_rows,
        trend_rows=trend_rows,
        last_columns=last_columns,
        last_offsets=last_offsets,
        first_columns=first_columns,
        first_offsets=first_offsets,
        direction_matrix=np.stack([inbound, outbound], axis=1).astype(np.float64),
    )


def compute_features(
    arrays: EventArrays, cutoff: int, spec: FeatureSpec, chunk: int = CHUNK_CUSTOMERS, threads: int | None = None
) -> np.ndarray:
    """The (customers × features) float64 matrix at ``cutoff`` (int ns), columns ``spec.columns``.

    Customers are processed in chunks of ``chunk`` (cache-sized); a chunk's rows depend only on its
    own customers' events, so chunking never changes a value, and chunks run on ``threads`` threads
    (default: every core; numpy releases the GIL in the heavy loops). Results are identical for any
    ``chunk`` and ``threads``.
    """
    c = arrays.n_customers
    out = np.empty((c, len(spec.columns)), dtype=np.float64)
    if c <= chunk:  # one chunk (a single customer's request): no pool, no slicing
        _fill(arrays, cutoff, spec, out)
        return out
    firsts = range(0, c, chunk)

    def run(c0: int) -> None:
        c1 = min(c, c0 + chunk)
        _fill(arrays.customers_slice(c0, c1), cutoff, spec, out[c0:c1])

    workers = min(len(firsts), threads if threads is not None else (os.cpu_count() or 1))
    if workers <= 1:
        for c0 in firsts:
            run(c0)
    else:
        from threadpoolctl import threadpool_limits

        # Our threads already fill the cores: BLAS threads on top (OpenBLAS spins) only oversubscribe.
        with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, firsts))
    return out


def _fill(a: EventArrays, t: int, spec: FeatureSpec, out: np.ndarray) -> None:
    """Fill ``out`` (C × F) for the customers of ``a`` at cutoff ``t``.

    Keys are ``(customer * (B + 1) + bucket) * K + type``, so one ``bincount`` gives every
    (customer, age bucket, type) count in the output's own row order, and nesting the windows is a
    few whole-slab additions over the bucket axis.
    """
    lay = spec.layout
    c, k = a.n_customers, spec.n_types
    n_buckets = len(spec.edges) + 1  # age buckets plus "older than every edge"; one more for the future
    rows = spec.window_rows
    b = len(rows)
    cust, ts, et = a.customer, a.ts, a.event_type
    n = len(ts)

    valid = ts < t
    age_days = (t - 1 - ts) // DAY_NS  # whole days before the cutoff; window w holds age_days < w
    bucket = np.searchsorted(spec.edges, age_days, side="right")
    bucket[~valid] = n_buckets  # at or after the cutoff: a bucket of its own that no window includes
    slots = n_buckets + 1
    cust_bucket = cust * slots + bucket

    # Counts per (customer, bucket, type); after the running sum, bucket i counts age_days < edges[i].
    counts = _nest(np.bincount(cust_bucket * k + et, minlength=c * slots * k).reshape(c, slots, k), n_buckets)
    out[:, lay["type_counts"]] = counts[:, rows].reshape(c, b * k)
    n_groups = spec.group_matrix.shape[1]
    groups = (counts.reshape(c * slots, k) @ spec.group_matrix).reshape(c, slots, n_groups)
    out[:, lay["group_counts"]] = groups[:, rows].reshape(c, b * n_groups)

    new_day = np.empty(n, dtype=bool)
    if n:
        new_day[0] = True
        np.not_equal(cust[1:], cust[:-1], out=new_day[1:])
        new_day[1:] |= age_days[1:] != age_days[:-1]
    days = _nest(np.bincount(cust_bucket[new_day], minlength=c * slots).reshape(c, slots), n_buckets)
    out[:, lay["active_days"]] = days[:, rows]

    n_ch = spec.n_channels
    channels = _nest(np.bincount(cust_bucket * n_ch + a.channel, minlength=c * slots * n_ch).reshape(c, slots, n_ch), n_buckets)
    out[:, lay["channel_counts"]] = channels[:, n_buckets - 1, :-1]
    direction = (channels[:, rows].reshape(c * b, n_ch) @ spec.direction_matrix).reshape(c, b, 2)
    out[:, lay["direction_counts"]].reshape(c, 2, b)[...] = direction.transpose(0, 2, 1)
    inbound, directed = direction[:, -1, 0], direction[:, -1, 0] + direction[:, -1, 1]
    out[:, lay["inbound_share"]] = np.divide(inbound, directed, out=np.full(c, np.nan), where=directed > 0)[:, None]

    # Spend: purchase events only, nested over the configured windows.
    purchase = np.flatnonzero(spec.type_purchase[et] & valid)
    amount = a.amount[purchase]
    window = np.searchsorted(spec.windows, age_days[purchase], side="right")
    spend = np.bincount(cust[purchase] * b + window, weights=np.where(np.isnan(amount), 0.0, amount), minlength=c * b)
    out[:, lay["spend"]] = _nest(spend.reshape(c, b), b)

    # First and last visible timestamp per (customer, type); stages and groups reduce over their types.
    key = (cust * (k + 1) + et)[valid]
    visible_ts = ts[valid]
    last = np.full(c * (k + 1), _NEVER_LATE, dtype=np.int64)
    np.maximum.at(last, key, visible_ts)
    first = np.full(c * (k + 1), _NEVER_EARLY, dtype=np.int64)
    np.minimum.at(first, key, visible_ts)
    group_last = np.maximum.reduceat(last.reshape(c, k + 1)[:, spec.last_columns], spec.last_offsets, axis=1)
    stage_first = np.minimum.reduceat(first.reshape(c, k + 1)[:, spec.first_columns], spec.first_offsets, axis=1)

    # A stage is reached when it or any later stage is first evidenced.
    reached = np.minimum.accumulate(stage_first[:, ::-1], axis=1)[:, ::-1]
    current = (reached < _NEVER_EARLY).sum(axis=1) - 1
    n_visible = counts[:, n_buckets - 1].sum(axis=1)
    has = n_visible > 0
    safe_ts = ts if n else np.zeros(1, dtype=np.int64)
    first_idx = a.starts[:-1]
    s = spec.n_stages
    stamps = np.empty((c, 3 + group_last.shape[1]), dtype=np.int64)
    stamps[:, 0] = np.where(has, safe_ts[np.where(has, first_idx + n_visible - 1, 0)], _NEVER_LATE)
    stamps[:, 1] = first_ts = np.where(has, safe_ts[np.where(has, first_idx, 0)], _NEVER_EARLY)
    stamps[:, 2] = np.where(current >= 0, reached[np.arange(c), np.maximum(current, 0)], _NEVER_EARLY)
    stamps[:, 3:] = group_last
    since = _days_since(t, stamps)
    out[:, lay["recency"]] = since[:, :2]
    out[:, lay["stage_recency"]] = since[:, 3 : 3 + s]
    out[:, lay["marker_recency"]] = since[:, 3 + s :]
    stage_cols = out[:, lay["stage"]]
    stage_cols[:, 0] = np.where(current >= 0, current, np.nan)
    stage_cols[:, 1] = since[:, 2]
    later = reached[:, 1:]
    out[:, lay["time_to_stage"]] = np.where(later < _NEVER_EARLY, (later - first_ts[:, None]) / DAY_NS, np.nan)

    activity = spec.group_names.index("activity")
    recent = groups[:, spec.trend_rows[0], activity]
    previous = groups[:, spec.trend_rows[1], activity] - recent
    total = recent + previous
    trend_cols = out[:, lay["trend"]]
    trend_cols[:, 0] = recent
    trend_cols[:, 1] = previous
    trend_cols[:, 2] = np.divide(recent - previous, total, out=np.zeros(c), where=total > 0)

    out[:, lay["purchases"]] = _purchase_stats(cust[purchase], ts[purchase], amount, c, t)


def _nest(counts: np.ndarray, n: int) -> np.ndarray:
    """Running sum in place over axis 1's first ``n`` age buckets: bucket i then holds every event
    younger than edge i, so nested windows are rows of it (later slots, e.g. the future, stay apart)."""
    for i in range(1, n):
        counts[:, i] += counts[:, i - 1]
    return counts


def _days_since(t: int, ts: np.ndarray) -> np.ndarray:
    """(t - ts) in days; NaN where ``ts`` is a never-seen sentinel."""
    seen = (ts != _NEVER_LATE) & (ts != _NEVER_EARLY)
    return np.where(seen, (t - ts) / DAY_NS, np.nan)


def _purchase_stats(pc: np.ndarray, pt: np.ndarray, pa: np.ndarray, c: int, t: int) -> np.ndarray:
    """First-purchase recency, order value and inter-purchase gap statistics, per customer.

    ``pc``/``pt``/``pa``: customer codes, timestamps and amounts of the visible purchases, in
    (customer, time) order. Called once per request in serving, so it avoids costly helpers.
    """
    res = np.full((c, 6), np.nan)
    m = len(pc)
    if m == 0:
        return res
    boundary = np.empty(m, dtype=bool)  # first purchase of each customer
    boundary[0] = True
    np.not_equal(pc[1:], pc[:-1], out=boundary[1:])
    firsts = np.flatnonzero(boundary)
    res[pc[firsts], 0] = (t - pt[firsts]) / DAY_NS
    has_amount = ~np.isnan(pa)
    n_amount = np.bincount(pc, weights=has_amount, minlength=c)
    total = np.bincount(pc, weights=np.where(has_amount, pa, 0.0), minlength=c)
    np.divide(total, n_amount, out=res[:, 1], where=n_amount > 0)
    biggest = np.full(c, -np.inf)
    np.maximum.at(biggest, pc[has_amount], pa[has_amount])
    res[:, 2] = np.where(biggest > -np.inf, biggest, np.nan)

    same = ~boundary[1:]
    gaps = ((pt[1:] - pt[:-1]) / DAY_NS)[same]
    if len(gaps):
        gc = pc[1:][same]
        n = np.bincount(gc, minlength=c)
        has_gap = n > 0
        mean = np.divide(np.bincount(gc, weights=gaps, minlength=c), n, out=res[:, 3], where=has_gap)
        # Two passes (deviations from each customer's mean): exact where a sum of squares cancels.
        spread = np.bincount(gc, weights=(gaps - mean[gc]) ** 2, minlength=c)
        np.sqrt(np.divide(spread, n, out=res[:, 4], where=has_gap), out=res[:, 4], where=has_gap)
        last = np.empty(len(gc), dtype=bool)  # last gap of each customer
        last[-1] = True
        np.not_equal(gc[1:], gc[:-1], out=last[:-1])
        res[gc[last], 5] = gaps[last]
    return res

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

Optional families (``features.families`` in the funnel config; each adds its own block of columns
after the core ones, and leaving it out removes exactly that block):

* ``type_recency``: days since the last and the first visible event of each event type;
* ``rates``: activity and purchases per day of tenure (tenure = days since the first event, at least
  one day) and per active day (``active_days_all_time``); NaN without events;
* ``decay``: per counted group and half-life ``h`` days, the sum over visible events of
  ``0.5 ** (age / h)``, ``age = (cutoff - ts) / 1 day`` (float);
* ``gaps``: per stage and marker group, over its *distinct active days* (the day numbers
  ``floor((cutoff - 1 ns - ts) / 1 day)`` that ``active_days_*`` counts, so a burst of events on one
  day is one visit, not many zero gaps): the mean and the last gap in whole days between
  consecutive active days, and ``overdue = days_since_last_<group> / mean gap`` (NaN with fewer than
  two active days);
* ``trends``: per stage and event group, ``(last - prev) / (last + prev)`` over the counts in
  ``[cutoff - T, cutoff)`` and ``[cutoff - 2T, cutoff - T)`` (``T = trend_days``; 0 when both are 0),
  as ``activity_trend``; and the same for spend;
* ``pairs``: per ``paired_event_types`` entry, the open balance ``max(opens - closes, 0)`` and the
  days since the oldest open one, matched first in, first out: the k-th close resolves the k-th open,
  so the oldest open one is the (closes + 1)-th open (NaN when nothing is open);
* ``diversity``: distinct event types seen in the longest window and ever;
* ``calendar``: where the cutoff falls in the year, as a point on a circle (so late December sits
  next to early January): ``sin`` and ``cos`` of ``2π · (d mod Y) / Y`` with ``d`` the cutoff's days
  since 1970-01-01 UTC and ``Y = 365.2425``. The same for every customer at a cutoff: with a year or
  more of cutoffs it lets a model learn a season (a holiday rush, a summer lull) that moves every
  customer's odds at once; with less, the values only order the cutoffs in time, which the trees treat
  like any other edge and the logistic model clips to the range it saw.
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
    trend_edges: np.ndarray  # (2,) int64 days: trend, 2 * trend
    # First/last timestamps per group are reductions over per-type columns (column K: never seen).
    last_columns: np.ndarray
    last_offsets: np.ndarray  # stages, then markers
    first_columns: np.ndarray
    first_offsets: np.ndarray  # stages
    direction_matrix: np.ndarray  # (Ch+1, 2): 1 where a channel is inbound / outbound; last row = missing channel
    # Optional families (only the ones in config.features.families have a block in ``layout``).
    half_lives: np.ndarray  # (H,) float days
    sum_columns: np.ndarray  # per counted group, its type columns (column K: a zero column) ...
    sum_offsets: np.ndarray  # ... reduced with np.add.reduceat (deterministic at any batch size)
    # Gap groups (stages, then markers: the order of ``last_offsets``) as bits of unsigned words:
    gap_bits: np.ndarray  # (W, K): per type, the words of its groups' bits
    gap_word: np.ndarray  # (J,) the word of group j
    gap_bit: np.ndarray  # (J,) its bit, in the words' type
    n_trend_groups: int  # stages and event groups: the first groups of ``group_names``
    pair_opens: np.ndarray  # (P,) type codes
    pair_closes: np.ndarray  # (P,) type codes
    pair_open_members: np.ndarray  # (P, K) bool

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
    families = set(config.features.families)
    half_lives = config.features.decay_half_lives_days
    gap_groups = [f"stage_{s}" for s in stages] + list(marker_names)
    trend_groups = group_names[: len(stages) + len(config.event_groups)]
    pairs = config.features.paired_event_types
    optional: list[tuple[str, list[str]]] = [
        ("type_recency", [f"days_since_last_type_{t}" for t in types] + [f"days_since_first_type_{t}" for t in types]),
        (
            "rates",
            [f"rate_{g}_per_{d}" for g in ("activity", "purchases") for d in ("tenure_day", "active_day")],
        ),
        ("decay", [f"decayed_{g}_half_life_{h}d" for h in half_lives for g in group_names]),
        (
            "gaps",
            [f"{what}_{g}" for what in ("mean_gap_days", "last_gap_days", "overdue") for g in gap_groups],
        ),
        ("trends", [f"{g}_trend" for g in trend_groups] + ["spend_trend"]),
        ("pairs", [f"open_{p.name}" for p in pairs] + [f"days_since_oldest_open_{p.name}" for p in pairs]),
        ("diversity", [f"distinct_event_types_{wl[-2]}", "distinct_event_types_all_time"]),
        ("calendar", ["cutoff_year_sin", "cutoff_year_cos"]),
    ]
    blocks += [(key, names) for key, names in optional if key in families]
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
    sum_columns, sum_offsets = gather([group_matrix[:, i] > 0 for i in range(len(group_names))])
    pair_opens = np.array([code[p.opens] for p in pairs], dtype=np.intp)
    gap_bits = _bits(by_stage + list(marker_masks), k)
    n_gap_groups = len(by_stage) + len(marker_masks)
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
        trend_edges=np.array([trend, 2 * trend], dtype=np.int64),
        last_columns=last_columns,
        last_offsets=last_offsets,
        first_columns=first_columns,
        first_offsets=first_offsets,
        direction_matrix=np.stack([inbound, outbound], axis=1).astype(np.float64),
        half_lives=np.asarray(half_lives, dtype=np.float64),
        sum_columns=sum_columns,
        sum_offsets=sum_offsets,
        gap_bits=gap_bits,
        gap_word=np.arange(n_gap_groups) // (8 * gap_bits.itemsize),
        gap_bit=(1 << (np.arange(n_gap_groups) % (8 * gap_bits.itemsize))).astype(gap_bits.dtype),
        n_trend_groups=len(trend_groups),
        pair_opens=pair_opens,
        pair_closes=np.array([code[p.closes] for p in pairs], dtype=np.intp),
        pair_open_members=np.arange(k)[None, :] == pair_opens[:, None],
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
    paid = np.where(np.isnan(amount), 0.0, amount)
    pc = cust[purchase]
    pdays = age_days[purchase]
    window = np.searchsorted(spec.windows, pdays, side="right")
    spend = np.bincount(pc * b + window, weights=paid, minlength=c * b)
    out[:, lay["spend"]] = _nest(spend.reshape(c, b), b)

    # First and last visible timestamp per (customer, type); stages and groups reduce over their types.
    key = (cust * (k + 1) + et)[valid]
    visible_ts = ts[valid]
    last = np.full(c * (k + 1), _NEVER_LATE, dtype=np.int64)
    np.maximum.at(last, key, visible_ts)
    first = np.full(c * (k + 1), _NEVER_EARLY, dtype=np.int64)
    np.minimum.at(first, key, visible_ts)
    last, first = last.reshape(c, k + 1), first.reshape(c, k + 1)
    group_last = np.maximum.reduceat(last[:, spec.last_columns], spec.last_offsets, axis=1)
    stage_first = np.minimum.reduceat(first[:, spec.first_columns], spec.first_offsets, axis=1)

    # A stage is reached when it or any later stage is first evidenced.
    reached = np.minimum.accumulate(stage_first[:, ::-1], axis=1)[:, ::-1]
    current = (reached < _NEVER_EARLY).sum(axis=1) - 1
    all_time = counts[:, n_buckets - 1]  # (C, K) visible events per type
    n_visible = all_time.sum(axis=1)
    has = n_visible > 0
    safe_ts = ts if n else np.zeros(1, dtype=np.int64)
    first_idx = a.starts[:-1]
    s = spec.n_stages
    n_marked = group_last.shape[1]  # stages, then markers
    type_recency = "type_recency" in lay
    stamps = np.empty((c, 3 + n_marked + (2 * k if type_recency else 0)), dtype=np.int64)
    stamps[:, 0] = np.where(has, safe_ts[np.where(has, first_idx + n_visible - 1, 0)], _NEVER_LATE)
    stamps[:, 1] = first_ts = np.where(has, safe_ts[np.where(has, first_idx, 0)], _NEVER_EARLY)
    stamps[:, 2] = np.where(current >= 0, reached[np.arange(c), np.maximum(current, 0)], _NEVER_EARLY)
    stamps[:, 3 : 3 + n_marked] = group_last
    if type_recency:  # one pass of _days_since for every recency
        stamps[:, 3 + n_marked : 3 + n_marked + k] = last[:, :k]
        stamps[:, 3 + n_marked + k :] = first[:, :k]
    since = _days_since(t, stamps)
    out[:, lay["recency"]] = since[:, :2]
    out[:, lay["stage_recency"]] = since[:, 3 : 3 + s]
    out[:, lay["marker_recency"]] = since[:, 3 + s : 3 + n_marked]
    stage_cols = out[:, lay["stage"]]
    stage_cols[:, 0] = np.where(current >= 0, current, np.nan)
    stage_cols[:, 1] = since[:, 2]
    later = reached[:, 1:]
    out[:, lay["time_to_stage"]] = np.where(later < _NEVER_EARLY, (later - first_ts[:, None]) / DAY_NS, np.nan)

    # Trends of every counted group at once (activity's is the core block; stages and event groups optional).
    r0, r1 = spec.trend_rows
    recent = groups[:, r0]
    previous = groups[:, r1] - recent
    total = recent + previous
    trend = np.divide(recent - previous, total, out=np.zeros((c, n_groups)), where=total > 0)
    activity = spec.group_names.index("activity")
    trend_cols = out[:, lay["trend"]]
    trend_cols[:, 0] = recent[:, activity]
    trend_cols[:, 1] = previous[:, activity]
    trend_cols[:, 2] = trend[:, activity]

    out[:, lay["purchases"]] = _purchase_stats(pc, ts[purchase], amount, c, t)

    # ---- optional families ------------------------------------------------------------------
    if type_recency:
        out[:, lay["type_recency"]] = since[:, 3 + n_marked :]
    if "rates" in lay:
        # Per (activity, purchases) and per (tenure day, active day). Tenure under a day counts as one;
        # without a visible event tenure is NaN and there are no active days: NaN rates.
        per = np.empty((c, 2))
        per[:, 0] = np.maximum(since[:, 1], 1.0)
        per[:, 1] = np.where(has, days[:, n_buckets - 1], np.nan)
        done = np.empty((c, 2, 1))
        done[:, 0, 0] = groups[:, n_buckets - 1, activity]
        done[:, 1, 0] = np.bincount(pc, minlength=c)
        out[:, lay["rates"]].reshape(c, 2, 2)[...] = done / per[:, None, :]
    if "decay" in lay:
        h = len(spec.half_lives)
        neg_age = (visible_ts - t) / DAY_NS
        per_type = np.empty((h, c * (k + 1)))  # (half-life, customer, type); type K is never seen: 0
        for i, half_life in enumerate(spec.half_lives):  # 0.5 ** (age / half-life)
            per_type[i] = np.bincount(key, weights=np.exp2(neg_age / half_life), minlength=c * (k + 1))
        # Groups add their types' sums in a fixed order (not BLAS): the same at any batch size.
        decayed = np.add.reduceat(per_type.reshape(h * c, k + 1)[:, spec.sum_columns], spec.sum_offsets, axis=1)
        out[:, lay["decay"]].reshape(c, h, n_groups)[...] = decayed.reshape(h, c, n_groups).transpose(1, 0, 2)
    if "gaps" in lay:
        day_starts = np.flatnonzero(new_day)
        out[:, lay["gaps"]] = _day_gaps(spec, a, day_starts, valid[day_starts], age_days, since[:, 3 : 3 + n_marked])
    if "trends" in lay:
        trends = out[:, lay["trends"]]
        trends[:, :-1] = trend[:, : spec.n_trend_groups]
        # Spend in [t - T, t), [t - 2T, t - T) and before, like the activity counts of the trend.
        period = np.searchsorted(spec.trend_edges, pdays, side="right")
        by_period = np.bincount(pc * 3 + period, weights=paid, minlength=c * 3).reshape(c, 3)
        spent = by_period[:, 0] + by_period[:, 1]
        trends[:, -1] = np.divide(by_period[:, 0] - by_period[:, 1], spent, out=np.zeros(c), where=spent > 0)
    if "pairs" in lay and len(spec.pair_opens):
        out[:, lay["pairs"]] = _open_pairs(spec, cust[valid], et[valid], visible_ts, all_time, c, t)
    if "diversity" in lay:
        out[:, lay["diversity"]] = (counts[:, rows[-2:]] > 0).sum(axis=2)
    if "calendar" in lay:
        out[:, lay["calendar"]] = year_position(t)


YEAR_DAYS = 365.2425


def year_position(t: int) -> tuple[float, float]:
    """(sin, cos) of the cutoff ``t`` (int ns) around the year (module docstring, ``calendar``)."""
    angle = 2 * np.pi * ((t / DAY_NS) % YEAR_DAYS) / YEAR_DAYS
    return float(np.sin(angle)), float(np.cos(angle))


def _day_gaps(
    spec: FeatureSpec, a: EventArrays, days: np.ndarray, visible: np.ndarray, age_days: np.ndarray, since: np.ndarray
) -> np.ndarray:
    """Per (customer, group): mean and last gap between the group's active days, and how overdue it is.

    ``days`` (R,): the first event of each (customer, day number) of ``a``, ``visible`` (R,) where it
    is before the cutoff; ``since`` (C, J): days since each group's last event. Returns (C, 3J): mean
    gaps, last gaps, then ``since / mean gap`` (NaN below two active days).
    """
    c, j = since.shape
    res = np.full((3, j, c), np.nan)
    if len(days):
        # The groups active on each day: an OR over its events of their groups' bits.
        words = np.empty((len(spec.gap_bits), len(days)), dtype=spec.gap_bits.dtype)
        for w, bits in enumerate(spec.gap_bits):
            np.bitwise_or.reduceat(bits[a.event_type], days, out=words[w])
        words[:, ~visible] = 0
        word, bit = spec.gap_word, spec.gap_bit
        if len(days) < 4096:  # a request: every (group, day) pair at once, group-major (no sort)
            group, r = np.nonzero(words[word] & bit[:, None])
            first = days[r]
            _run_gaps(group * c + a.customer[first], age_days[first], j * c, res[0].reshape(-1), res[1].reshape(-1))
        else:  # a batch's chunk: one group at a time keeps the temporaries short (page faults cost)
            for g in range(j):
                first = days[np.flatnonzero(words[word[g]] & bit[g])]
                _run_gaps(a.customer[first], age_days[first], c, res[0, g], res[1, g])
    np.divide(since.T, res[0], out=res[2])
    return res.transpose(2, 0, 1).reshape(c, 3 * j)


def _run_gaps(key: np.ndarray, day: np.ndarray, n_keys: int, mean_out: np.ndarray, last_out: np.ndarray) -> None:
    """Mean and last gap (whole days) between the distinct day numbers ``day`` (descending, in time
    order) of each run of equal ``key``; the same arithmetic per key whatever the key numbering."""
    if len(key):
        starts = np.empty(len(key), dtype=bool)  # first active day of each key
        starts[0] = True
        np.not_equal(key[1:], key[:-1], out=starts[1:])
        _gap_stats(key, day[:-1] - day[1:], starts, n_keys, mean_out, last_out)


def _bits(members: list[np.ndarray], k: int) -> np.ndarray:
    """(W, K) words of the narrowest unsigned type that holds the groups (W = 1 up to 64 groups): bit
    ``j % width`` of word ``j // width`` is set for the types in ``members[j]``."""
    fits = [d for d in (np.uint8, np.uint16, np.uint32) if len(members) <= 8 * np.dtype(d).itemsize]
    dtype = np.dtype(fits[0] if fits else np.uint64)
    width = 8 * dtype.itemsize
    words = np.zeros((max(1, -(-len(members) // width)), k), dtype=dtype)
    for j, member in enumerate(members):
        words[j // width, member] |= dtype.type(1 << (j % width))
    return words


def _member_pairs(members: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.nonzero(members[:, codes])``: (group, position) of every event in each group, group-major,
    then in event order (so in customer, then time order: no sort). On long inputs one flatnonzero per
    group is several times faster than 2-D nonzero's index arithmetic; the pairs are the same."""
    if len(codes) < 4096:
        return np.nonzero(members[:, codes])
    idx = [np.flatnonzero(m[codes]) for m in members]
    return np.repeat(np.arange(len(members)), [len(i) for i in idx]), np.concatenate(idx)


def _open_pairs(
    spec: FeatureSpec, vc: np.ndarray, ve: np.ndarray, vts: np.ndarray, all_time: np.ndarray, c: int, t: int
) -> np.ndarray:
    """Per (customer, pair): open balance and days since the oldest open one (first in, first out).

    The k-th close resolves the k-th open, so while opens > closes the oldest open one is the
    (closes + 1)-th open. Returns (C, 2P): balances, then ages (NaN where nothing is open).
    """
    p = len(spec.pair_opens)
    opens, closes = all_time[:, spec.pair_opens], all_time[:, spec.pair_closes]
    age = np.full(p * c, np.nan)
    pair, idx = _member_pairs(spec.pair_open_members, ve)  # pair, then customer, then time order
    if len(idx):
        key = pair * c + vc[idx]
        n_opens = np.bincount(key, minlength=p * c)
        rank = np.arange(len(key)) - (np.cumsum(n_opens) - n_opens)[key]  # 0 for each key's first open
        oldest = rank == closes.T.reshape(-1)[key]
        age[key[oldest]] = (t - vts[idx[oldest]]) / DAY_NS
    return np.concatenate([np.maximum(opens - closes, 0), age.reshape(p, c).T], axis=1)


def _nest(counts: np.ndarray, n: int) -> np.ndarray:
    """Running sum in place over axis 1's first ``n`` age buckets: bucket i then holds every event
    younger than edge i, so nested windows are rows of it (later slots, e.g. the future, stay apart)."""
    for i in range(1, n):
        counts[:, i] += counts[:, i - 1]
    return counts


def _days_since(t: int, ts: np.ndarray) -> np.ndarray:
    """(t - ts) in days; NaN where ``ts`` is a never-seen sentinel.

    Every stamp is a visible event's (``ts < t``: ``t - ts >= 1``) or a sentinel, for which the int64
    difference is negative (it wraps for ``_NEVER_LATE``): one comparison tells them apart."""
    diff = t - ts
    return np.where(diff > 0, diff / DAY_NS, np.nan)


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

    _gap_stats(pc, (pt[1:] - pt[:-1]) / DAY_NS, boundary, c, res[:, 3], res[:, 5], std_out=res[:, 4])
    return res


def _gap_stats(
    keys: np.ndarray, steps: np.ndarray, boundary: np.ndarray, n_keys: int,
    mean_out: np.ndarray, last_out: np.ndarray, std_out: np.ndarray | None = None,
) -> None:
    """Gaps between consecutive entries of the same key: their mean, last one and (population) std.

    ``keys`` (M,) come in runs (``boundary`` marks each run's first entry), entries in time order
    inside a run; ``steps`` (M-1,) is the time from each entry to the next. Writes per key into
    ``mean_out``/``last_out``/``std_out`` (length ``n_keys``), leaving keys with fewer than two
    entries untouched. Few temporaries of length M (they dominate the cost on a batch): the step into
    a run's first entry is summed into its key as 0.0, which changes no sum.
    """
    m = len(keys)
    if m < 2:
        return
    gap = ~boundary[1:]  # step i joins entries i and i + 1 of one key
    n = np.bincount(keys, minlength=n_keys) - 1  # gaps per key
    has_gap = n > 0
    into = keys[1:]  # the key of each step's later entry
    sums = np.bincount(into, weights=np.where(gap, steps, 0.0), minlength=n_keys)
    mean = np.divide(sums, n, out=mean_out, where=has_gap)
    if std_out is not None:
        # Two passes (deviations from each key's mean): exact where a sum of squares cancels.
        spread = np.bincount(into, weights=np.where(gap, (steps - mean[into]) ** 2, 0.0), minlength=n_keys)
        np.sqrt(np.divide(spread, n, out=std_out, where=has_gap), out=std_out, where=has_gap)
    last = np.empty(m - 1, dtype=bool)  # a key's last gap: the next step starts another key, or none follows
    last[-1] = True
    last[:-1] = boundary[2:]
    last &= gap
    last_out[into[last]] = steps[last]
"""Benchmark funnelcast's array feature engine against its aims, with DuckDB SQL as a same-run reference.

Run from the repository root::

    .venv/bin/python bench/bench_features.py            # 10M events / 500k customers, best of 3
    .venv/bin/python bench/bench_features.py --quick    # 200k events / 10k customers smoke run

What it measures (all on the default funnel, ``features.funnel.load_config()``):

1. Batch: ``compute_features(arrays, cutoff, spec)`` over synthetic events built directly as arrays,
   at a cutoff one day before the data ends; best of ``--repeat``. Throughput counts *all* N events
   (the engine reads every event, the few at or after the cutoff included). The run happens in a
   fresh subprocess that loads the arrays from ``.npy`` files, so its peak RSS
   (``getrusage(RUSAGE_SELF).ru_maxrss``) is the engine's and not the data generator's.
2. Reference: one DuckDB SQL query (generated from the config) computing the same 195 columns in
   the same order, over the same events in a native DuckDB table, materialised with
   ``.fetchnumpy()``; single thread and default threads. Its output is checked against funnelcast's.
3. One customer with 50 events: ``compute_features`` on an ``EventArrays`` of one customer, and the
   path from 50 Python dicts (a CRM payload) through ``EventArrays.from_frame(pd.DataFrame(...))``.

Figures go to stdout and to ``bench/results/features.json`` (``features-quick.json`` for ``--quick``,
so a smoke run never overwrites the full-size figures). The machine's load average is printed too:
on a shared 2-core machine other processes move every timing here.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from features.behaviour import DAY_NS, EventArrays, compute_features, feature_spec  # noqa: E402
from features.funnel import FunnelConfig, load_config  # noqa: E402

GIB = 1024**3
DATA_END = pd.Timestamp("2026-11-01", tz="UTC").value  # events span the two years before this
DATA_START = DATA_END - 730 * DAY_NS
CUTOFF = DATA_END - DAY_NS  # "near the end": one day before the last possible event
ARRAY_FIELDS = ("customer", "ts", "event_type", "channel", "amount")

AIM_EVENTS_PER_S = 4e6
AIM_VS_DUCKDB = 3.0
AIM_PEAK_BYTES = 4 * GIB
AIM_SINGLE_MS = 0.2


# ---- synthetic data, built as arrays ------------------------------------------------------------

def type_probabilities(config: FunnelConfig) -> np.ndarray:
    """A skewed event-type mix derived from the config alone.

    Deeper stages are rarer (x0.35 per stage), the first-listed type of a stage or of the other types
    is the most common (Zipf within the list), outbound touches are twice as common, churn events are
    rare, and purchase types together take ~4% of events.
    """
    types = config.event_types
    stage_of = config.stage_of_event_type
    rank: dict[int, int] = {}
    w = np.empty(len(types))
    for i, t in enumerate(types):
        s = stage_of.get(t, -1)
        r = rank.get(s, 0)
        rank[s] = r + 1
        w[i] = (0.35**s if s >= 0 else 0.5) / (r + 1)
        if t in config.outbound_event_types:
            w[i] *= 2.0
        if t in config.churn.churn_event_types:
            w[i] *= 0.05
    p = w / w.sum()
    purchase = np.isin(np.array(types), config.purchase_event_types)
    if purchase.any() and not purchase.all():
        share = 0.04
        p[purchase] *= share / p[purchase].sum()
        p[~purchase] *= (1 - share) / p[~purchase].sum()
    return p / p.sum()


def channel_probabilities(config: FunnelConfig, missing: float = 0.10) -> np.ndarray:
    """Zipf over the configured channels, plus ``missing`` share for the missing-channel code (last)."""
    n = len(config.channel_names)
    w = 1.0 / np.arange(1, n + 1)
    return np.r_[(1 - missing) * w / w.sum(), missing]


def generate(
    n_events: int, n_customers: int, config: FunnelConfig, seed: int = 20261101, alive_share: float = 0.35
) -> EventArrays:
    """Seeded synthetic events sorted by customer then time, as ``EventArrays`` (no pandas).

    Every customer has at least one event; the rest are spread by lognormal weights (heavy tail, a few
    customers with >1000 events). Each customer lives from a uniform start in the two years for a
    lognormal lifetime (median 120 days), or to the end for ``alive_share`` of them. Within a
    lifetime, ~45% of events follow the previous one within minutes (sessions), the rest are spread out.
    """
    if n_customers < 1 or n_events < n_customers:
        raise ValueError("need at least one event per customer")
    rng = np.random.default_rng(seed)
    c, n = n_customers, n_events
    weights = rng.lognormal(0.0, 1.0, c)
    counts = 1 + rng.multinomial(n - c, weights / weights.sum()).astype(np.int64)
    starts = np.zeros(c + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    customer = np.repeat(np.arange(c, dtype=np.int64), counts)

    span = DATA_END - DATA_START
    life_start = DATA_START + (rng.random(c) * 0.97 * span).astype(np.int64)
    lifetime = (rng.lognormal(np.log(120.0), 1.0, c) * DAY_NS).astype(np.int64)
    alive = rng.random(c) < alive_share
    life_end = np.where(alive, DATA_END - 1, np.minimum(DATA_END - 1, life_start + lifetime))
    life_len = (life_end - life_start).astype(np.float64)

    # Sorted positions in [0, 1) per customer from cumulative gaps: no sort needed.
    gaps = rng.exponential(1.0, n)
    session = rng.random(n) < 0.45
    gaps[session] *= 0.0005
    gaps[starts[:-1]] = rng.exponential(1.0, c)  # a customer's first event opens a new session
    cs = np.cumsum(gaps)
    base = cs[starts[:-1]] - gaps[starts[:-1]]
    rel = cs - np.repeat(base, counts)
    total = rel[starts[1:] - 1] + rng.exponential(1.0, c)  # one more gap up to the end of life
    frac = rel / np.repeat(total, counts)
    ts = np.repeat(life_start, counts) + (frac * np.repeat(life_len, counts)).astype(np.int64)
    del gaps, session, cs, rel, frac

    p_type = type_probabilities(config)
    event_type = rng.choice(len(p_type), size=n, p=p_type).astype(np.int64)
    p_ch = channel_probabilities(config)
    channel = rng.choice(len(p_ch), size=n, p=p_ch).astype(np.int64)

    purchase_codes = [config.event_types.index(t) for t in config.purchase_event_types]
    is_purchase = np.isin(event_type, purchase_codes)
    amount = np.full(n, np.nan)
    k = int(is_purchase.sum())
    values = np.round(rng.lognormal(np.log(60.0), 0.9, k), 2)
    values[rng.random(k) < 0.02] = np.nan  # a few purchases arrive without an amount
    amount[is_purchase] = values

    arrays = EventArrays(
        customer_ids=np.array([f"c{i:07d}" for i in range(c)], dtype=object),
        starts=starts,
        customer=customer,
        ts=ts,
        event_type=event_type,
        channel=channel,
        amount=amount,
    )
    _check_sorted(arrays)
    return arrays


def _check_sorted(a: EventArrays) -> None:
    same = a.customer[1:] == a.customer[:-1]
    assert np.all(np.diff(a.customer) >= 0), "customers not sorted"
    assert np.all(a.ts[1:][same] >= a.ts[:-1][same]), "timestamps not sorted within a customer"
    assert np.array_equal(a.starts, np.searchsorted(a.customer, np.arange(a.n_customers + 1))), "bad starts"
    assert a.ts.min() >= DATA_START and a.ts.max() < DATA_END


# ---- the funnelcast measurement, in a fresh process --------------------------------------------

def _rss_now() -> int:
    """Current resident set size in bytes (Linux /proc; falls back to the peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return _peak_rss()


def _peak_rss() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB, macOS bytes


def child_main(data_dir: str, cutoff: int, repeat: int) -> None:
    """Load the arrays, run compute_features ``repeat`` times, report times and peak RSS as JSON."""
    config = load_config()
    spec = feature_spec(config)
    loaded = {f: np.load(Path(data_dir) / f"{f}.npy") for f in ARRAY_FIELDS + ("starts",)}
    c = len(loaded["starts"]) - 1
    arrays = EventArrays(customer_ids=np.arange(c), **loaded)
    rss_before = _rss_now()
    peak_before = _peak_rss()
    times = []
    peak_after_first = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = compute_features(arrays, cutoff, spec)
        times.append(time.perf_counter() - t0)
        if peak_after_first is None:
            peak_after_first = _peak_rss()
        shape = out.shape
        del out
    print(
        json.dumps(
            {
                "times_s": times,
                "shape": list(shape),
                "rss_before_compute": rss_before,
                "peak_rss_before_compute": peak_before,
                "peak_rss": peak_after_first,
                "peak_rss_all_repeats": _peak_rss(),
            }
        )
    )


def run_funnelcast_child(arrays: EventArrays, cutoff: int, repeat: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="funnelcast-bench-") as tmp:
        for f in ARRAY_FIELDS + ("starts",):
            np.save(Path(tmp) / f"{f}.npy", getattr(arrays, f))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", tmp, "--_cutoff", str(cutoff), "--repeat", str(repeat)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"the funnelcast child process failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- the DuckDB reference -----------------------------------------------------------------------

def duckdb_sql(config: FunnelConfig, cutoff: int) -> tuple[str, list[str]]:
    """One query yielding funnelcast's columns in funnelcast's order, plus a leading ``customer`` column.

    Conditional aggregates (``count(*) FILTER``) give every type x window count; group counts are sums
    of those in the projection; active days are ``count(DISTINCT day)``; inter-purchase gaps come from
    ``lag()`` over each customer's purchases.
    """
    spec = feature_spec(config)
    types = config.event_types
    code = {t: i for i, t in enumerate(types)}
    windows = [int(w) for w in spec.windows]
    wins: list[tuple[str, str]] = [(f"w{w}", f"age < {w}") for w in windows] + [("all", "")]

    def cond(*parts: str) -> str:
        parts = tuple(p for p in parts if p)
        return f" FILTER (WHERE {' AND '.join(parts)})" if parts else ""

    def in_types(names) -> str:
        codes = sorted(code[t] for t in names if t in code)
        if not codes:
            return "FALSE"
        return f"event_type = {codes[0]}" if len(codes) == 1 else f"event_type IN ({', '.join(map(str, codes))})"

    def days(expr: str) -> str:
        return f"({cutoff} - {expr}) / {DAY_NS}"

    stages = config.stage_names
    n_stage = len(stages)
    stage_types = [[types[j] for j in np.flatnonzero(spec.type_stage == i)] for i in range(n_stage)]
    purchase = in_types(config.purchase_event_types)
    activity = in_types(config.qualifying_event_types)
    inbound = [i for i, c in enumerate(config.channel_names) if config.channels.get(c) == "inbound"]
    outbound = [i for i, c in enumerate(config.channel_names) if config.channels.get(c) == "outbound"]

    def in_channels(codes: list[int]) -> str:
        return f"channel IN ({', '.join(map(str, codes))})" if codes else "FALSE"

    trend = config.features.trend_days
    agg: list[str] = []
    for i, _ in enumerate(types):
        for wk, wc in wins:
            agg.append(f"count(*){cond(f'event_type = {i}', wc)} AS t{i}_{wk}")
    for wk, wc in wins:
        agg.append(f"count(DISTINCT age){cond(wc)} AS ad_{wk}")
    for j, _ in enumerate(config.channel_names):
        agg.append(f"count(*){cond(f'channel = {j}')} AS ch{j}")
    for name, codes in (("inb", inbound), ("outb", outbound)):
        for wk, wc in wins:
            agg.append(f"count(*){cond(in_channels(codes), wc)} AS {name}_{wk}")
    for wk, wc in wins:
        agg.append(f"sum(amount){cond(purchase, wc)} AS sp_{wk}")
    agg += ["max(ts) AS last_ts", "min(ts) AS first_ts"]
    for i in range(n_stage):
        agg.append(f"max(ts){cond(in_types(stage_types[i]))} AS sl{i}")
        agg.append(f"min(ts){cond(in_types(stage_types[i]))} AS sf{i}")
    for j, member in enumerate(spec.marker_masks):
        agg.append(f"max(ts){cond(in_types([types[i] for i in np.flatnonzero(member)]))} AS mk{j}")
    agg.append(f"count(*){cond(activity, f'age < {trend}')} AS act_r")
    agg.append(f"count(*){cond(activity, f'age >= {trend}', f'age < {2 * trend}')} AS act_p")
    agg += [f"min(ts){cond(purchase)} AS fp", f"avg(amount){cond(purchase)} AS aov", f"max(amount){cond(purchase)} AS mov"]

    # The projection, keyed by funnelcast's column names and emitted in spec.columns order, so the
    # query follows the engine's layout whatever it is.
    wl = spec.window_labels
    expr: dict[str, str] = {}
    for i, t in enumerate(types):
        for (wk, _), w in zip(wins, wl):
            expr[f"count_{t}_{w}"] = f"t{i}_{wk}"
    for g, name in enumerate(spec.group_names):
        idx = np.flatnonzero(spec.group_matrix[:, g])
        for (wk, _), w in zip(wins, wl):
            expr[f"count_{name}_{w}"] = " + ".join(f"t{i}_{wk}" for i in idx) if len(idx) else "0"
    for (wk, _), w in zip(wins, wl):
        expr[f"active_days_{w}"] = f"ad_{wk}"
        expr[f"count_inbound_{w}"] = f"inb_{wk}"
        expr[f"count_outbound_{w}"] = f"outb_{wk}"
        expr[f"spend_{w}"] = f"COALESCE(sp_{wk}, 0)"
    for j, ch in enumerate(config.channel_names):
        expr[f"count_channel_{ch}_all_time"] = f"ch{j}"
    expr["inbound_share_all_time"] = "inb_all / NULLIF(inb_all + outb_all, 0)"
    expr["days_since_last_event"] = days("last_ts")
    expr["tenure_days"] = days("first_ts")
    for i, st in enumerate(stages):
        expr[f"days_since_last_stage_{st}"] = days(f"sl{i}")
    for j, m in enumerate(spec.marker_names):
        expr[f"days_since_last_{m}"] = days(f"mk{j}")
    expr["current_stage"] = "CASE " + " ".join(f"WHEN sf{i} IS NOT NULL THEN {i}" for i in reversed(range(n_stage))) + " END"
    expr["days_in_current_stage"] = days("COALESCE(" + ", ".join(f"sf{i}" for i in reversed(range(n_stage))) + ")")
    for i in range(1, n_stage):
        reached = f"LEAST({', '.join(f'sf{j}' for j in range(i, n_stage))})" if i < n_stage - 1 else f"sf{i}"
        expr[f"days_to_reach_stage_{stages[i]}"] = f"({reached} - first_ts) / {DAY_NS}"
    expr[f"activity_last_{trend}d"] = "act_r"
    expr[f"activity_prev_{trend}d"] = "act_p"
    expr["activity_trend"] = "CASE WHEN act_r + act_p > 0 THEN (act_r - act_p) / (act_r + act_p) ELSE 0 END"
    expr.update(days_since_first_purchase=days("fp"), avg_order_value="aov", max_order_value="mov",
                mean_days_between_purchases="gap_mean", std_days_between_purchases="gap_std",
                last_days_between_purchases="gap_last")
    unknown = [c for c in spec.columns if c not in expr]
    if unknown:
        raise AssertionError(f"the SQL reference does not know funnelcast features {unknown}; extend duckdb_sql")
    sel = [expr[c] for c in spec.columns]
    names = ["customer"] + [f"f{j}" for j in range(len(sel))]
    agg_sql = ",\n        ".join(agg)
    sel_sql = ",\n    ".join(f"{e} AS f{j}" for j, e in enumerate(sel))

    sql = f"""
WITH ev AS (
    SELECT customer, ts, event_type, channel, amount, ({cutoff - 1} - ts) // {DAY_NS} AS age
    FROM events WHERE ts < {cutoff}
),
agg AS (
    SELECT customer,
        {agg_sql}
    FROM ev GROUP BY customer
),
gaps AS (
    SELECT customer, avg(gap) AS gap_mean, stddev_pop(gap) AS gap_std, arg_max(gap, ts) AS gap_last
    FROM (
        SELECT customer, ts, (ts - lag(ts) OVER (PARTITION BY customer ORDER BY ts)) / {DAY_NS} AS gap
        FROM ev WHERE {purchase}
    ) WHERE gap IS NOT NULL
    GROUP BY customer
)
SELECT customer,
    {sel_sql}
FROM agg LEFT JOIN gaps USING (customer)
ORDER BY customer
"""
    return sql, names


def duckdb_connection(arrays: EventArrays):
    import duckdb
    import pyarrow as pa

    table = pa.table(
        {
            "customer": arrays.customer,
            "ts": arrays.ts,
            "event_type": arrays.event_type,
            "channel": arrays.channel,
            "amount": pa.array(arrays.amount, from_pandas=True),  # NaN -> NULL, as SQL expects
        }
    )
    con = duckdb.connect()
    con.register("events_arrow", table)
    con.execute("CREATE TABLE events AS SELECT * FROM events_arrow")
    con.unregister("events_arrow")
    return con


def time_duckdb(con, sql: str, repeat: int, threads: int | None) -> tuple[list[float], dict]:
    if threads is None:
        con.execute("RESET threads")
    else:
        con.execute(f"SET threads TO {threads}")
    times = []
    result = None
    for _ in range(repeat):
        result = None
        t0 = time.perf_counter()
        result = con.execute(sql).fetchnumpy()
        times.append(time.perf_counter() - t0)
    return times, result


def compare(ours: np.ndarray, theirs: dict, columns: tuple[str, ...]) -> dict:
    """Match DuckDB's rows (customers with visible events) to funnelcast's rows and compare every column."""
    cust = np.asarray(theirs["customer"])
    mismatched = []
    worst = 0.0
    for j, name in enumerate(columns):
        col = theirs[f"f{j}"]
        ref = np.ma.filled(np.ma.asarray(col).astype(np.float64), np.nan)
        mine = ours[cust, j]
        ok = np.isclose(mine, ref, rtol=1e-9, atol=1e-9, equal_nan=True)
        if not ok.all():
            diff = np.abs(mine - ref)
            worst_col = float(np.nanmax(np.where(ok, 0.0, diff))) if np.isfinite(diff[~ok]).any() else float("inf")
            mismatched.append({"column": name, "rows": int((~ok).sum()), "max_abs_diff": worst_col})
        worst = max(worst, float(np.nanmax(np.abs(mine - ref), initial=0.0)))
    absent = np.setdiff1d(np.arange(ours.shape[0]), cust)
    events_col = columns.index("count_events_all_time")
    return {
        "rows_compared": int(len(cust)),
        "columns_compared": len(columns),
        "columns_mismatched": mismatched,
        "max_abs_diff": worst,
        "rows_only_in_funnelcast": int(len(absent)),
        "those_rows_have_no_visible_events": bool(np.all(ours[absent, events_col] == 0)),
    }


# ---- one customer ---------------------------------------------------------------------------------

def time_calls(fn, n: int, warmup: int = 200) -> np.ndarray:
    for _ in range(warmup):
        fn()
    out = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter_ns()
        fn()
        out[i] = time.perf_counter_ns() - t0
    return out / 1e6  # ms


def single_customer(config: FunnelConfig, calls: int) -> dict:
    from features.events import validate_events

    spec = feature_spec(config)
    one = generate(50, 1, config, seed=50, alive_share=1.0)
    ms = 10**6  # a CRM sends millisecond timestamps: keep the arrays and the payload identical
    one = EventArrays(customer_ids=np.array(["crm-000042"], dtype=object), starts=one.starts, customer=one.customer,
                      ts=one.ts // ms * ms, event_type=one.event_type, channel=one.channel, amount=one.amount)
    t = int(one.ts[-1]) + 3_600 * 10**9  # scored an hour after the customer's last event
    arrays_ms = time_calls(lambda: compute_features(one, t, spec), calls)

    types, channels = config.event_types, config.channel_names
    payload = [
        {
            "customer_id": "crm-000042",
            "timestamp": pd.Timestamp(int(one.ts[i]), tz="UTC").isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "event_type": types[one.event_type[i]],
            "channel": channels[one.channel[i]] if one.channel[i] < len(channels) else None,
            "amount": None if np.isnan(one.amount[i]) else float(one.amount[i]),
        }
        for i in range(len(one.ts))
    ]

    def from_dicts() -> np.ndarray:
        frame = pd.DataFrame(payload)
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
        return compute_features(EventArrays.from_frame(frame, config), t, spec)

    def from_dicts_validated() -> np.ndarray:
        frame, _ = validate_events(pd.DataFrame(payload), config, source="request")
        return compute_features(EventArrays.from_frame(frame, config), t, spec)

    reference = compute_features(one, t, spec)
    same = np.allclose(from_dicts(), reference, equal_nan=True, rtol=0, atol=1e-12)
    same_validated = np.allclose(from_dicts_validated(), reference, equal_nan=True, rtol=0, atol=1e-12)
    dict_calls = max(50, calls // 4)
    dicts_ms = time_calls(from_dicts, dict_calls, warmup=20)
    validated_ms = time_calls(from_dicts_validated, max(20, calls // 20), warmup=5)

    # Where the dict path's time goes (medians of each step on its own).
    frame = pd.DataFrame(payload)
    raw_ts = frame["timestamp"].copy()
    frame["timestamp"] = pd.to_datetime(raw_ts, utc=True, format="ISO8601")
    steps = {
        "pd.DataFrame(dicts)": time_calls(lambda: pd.DataFrame(payload), dict_calls, 20),
        "pd.to_datetime(timestamp)": time_calls(lambda: pd.to_datetime(raw_ts, utc=True, format="ISO8601"), dict_calls, 20),
        "EventArrays.from_frame": time_calls(lambda: EventArrays.from_frame(frame, config), dict_calls, 20),
        "compute_features": arrays_ms,
    }

    def stats(ms: np.ndarray) -> dict:
        return {"median_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()), "calls": len(ms)}

    return {
        "events": len(one.ts),
        "arrays": stats(arrays_ms),
        "dicts": stats(dicts_ms),
        "dicts_validated": stats(validated_ms),
        "dict_path_steps_median_ms": {k: float(np.median(v)) for k, v in steps.items()},
        "dict_path_matches_arrays": bool(same),
        "validated_path_matches_arrays": bool(same_validated),
    }


# ---- main ------------------------------------------------------------------------------------------

def fmt_rate(x: float) -> str:
    return f"{x / 1e6:.2f}M events/s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--customers", type=int, default=500_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="tiny smoke run: 200k events, 10k customers")
    ap.add_argument("--single-calls", type=int, default=2000, help="calls timed for the one-customer figures")
    ap.add_argument("--seed", type=int, default=20261101)
    ap.add_argument("--out", help="JSON path (default bench/results/features.json; features-quick.json with --quick)")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    ap.add_argument("--_cutoff", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        child_main(args._child, args._cutoff, args.repeat)
        return
    if args.quick:
        args.events, args.customers = 200_000, 10_000
    if args.out is None:  # a smoke run never overwrites the full-size figures
        args.out = str(ROOT / "bench" / "results" / ("features-quick.json" if args.quick else "features.json"))
    load_start = os.getloadavg()
    repeat = max(1, args.repeat)

    config = load_config()
    spec = feature_spec(config)
    n_features = len(spec.columns)
    cutoff = CUTOFF
    print(f"funnelcast feature benchmark: {args.events:,} events, {args.customers:,} customers, "
          f"{n_features} features, best of {repeat}; python {platform.python_version()}, numpy {np.__version__}, "
          f"{os.cpu_count()} CPUs; load average {load_start[0]:.2f} at start (other processes skew timings)")

    t0 = time.perf_counter()
    arrays = generate(args.events, args.customers, config, seed=args.seed)
    gen_s = time.perf_counter() - t0
    n = len(arrays.ts)
    visible = int((arrays.ts < cutoff).sum())
    counts = np.diff(arrays.starts)
    print(f"data: generated in {gen_s:.1f} s; events per customer median {np.median(counts):.0f}, "
          f"p99 {np.percentile(counts, 99):.0f}, max {counts.max()}; cutoff {pd.Timestamp(cutoff, tz='UTC').isoformat()} "
          f"({visible:,} events = {visible / n:.2%} before it); channel missing {np.mean(arrays.channel == len(config.channel_names)):.1%}; "
          f"{np.mean(~np.isnan(arrays.amount)):.1%} of events carry an amount")

    # 1-3. funnelcast, timed and measured in a fresh process.
    print("funnelcast: compute_features in a fresh subprocess ...", flush=True)
    child = run_funnelcast_child(arrays, cutoff, repeat)
    fc_best = min(child["times_s"])
    fc_rate = n / fc_best
    peak = child["peak_rss"]
    increment = peak - child["rss_before_compute"]
    print(f"  times {', '.join(f'{x:.2f}' for x in child['times_s'])} s -> best {fc_best:.3f} s = {fmt_rate(fc_rate)} "
          f"(all {n:,} events counted; {fmt_rate(visible / fc_best)} counting only the {visible:,} before the cutoff)")
    print(f"  output {child['shape'][0]:,} x {child['shape'][1]} float64 = {child['shape'][0] * child['shape'][1] * 8 / GIB:.2f} GiB; "
          f"peak RSS {peak / GIB:.2f} GiB total, {increment / GIB:.2f} GiB above the {child['rss_before_compute'] / GIB:.2f} GiB "
          f"resident just before compute (interpreter + libraries + input arrays)")

    # 4. DuckDB reference over the same events, same columns.
    import duckdb

    sql, _ = duckdb_sql(config, cutoff)
    t0 = time.perf_counter()
    con = duckdb_connection(arrays)
    load_s = time.perf_counter() - t0
    print(f"duckdb {duckdb.__version__}: events loaded into a native table in {load_s:.1f} s; "
          f"query has {sql.count(' AS t')} type-count aggregates, {len(spec.columns)} output features", flush=True)
    db: dict[str, dict] = {}
    result = None
    for label, threads in (("1 thread", 1), ("default threads", None)):
        times, result = time_duckdb(con, sql, repeat, threads)
        used = con.execute("SELECT current_setting('threads')").fetchone()[0]
        best = min(times)
        db[label] = {"threads": int(used), "times_s": times, "best_s": best, "events_per_s": n / best}
        print(f"  {label} ({used}): times {', '.join(f'{x:.2f}' for x in times)} s -> best {best:.3f} s = {fmt_rate(n / best)}; "
              f"funnelcast is {fc_rate / (n / best):.2f}x", flush=True)
    con.close()

    # Same columns, same values? funnelcast once more in this process, for the comparison only.
    ours = compute_features(arrays, cutoff, spec)
    check = compare(ours, result, spec.columns)
    del ours, result
    bad = check["columns_mismatched"]
    print(f"  check: {check['rows_compared']:,} customers x {check['columns_compared']} columns compared with funnelcast, "
          f"{len(bad)} columns differ beyond rtol=atol=1e-9 (max abs diff {check['max_abs_diff']:.2e})"
          + (f": {', '.join(b['column'] + ' (' + str(b['rows']) + ' rows, ' + format(b['max_abs_diff'], '.2e') + ')' for b in bad[:6])}" if bad else "")
          + f"; {check['rows_only_in_funnelcast']:,} customers without visible events are rows only funnelcast emits")

    # 5. One customer.
    print(f"one customer, 50 events: {args.single_calls} calls ...", flush=True)
    single = single_customer(config, args.single_calls)
    a, d, v = single["arrays"], single["dicts"], single["dicts_validated"]
    print(f"  EventArrays -> compute_features: median {a['median_ms']:.3f} ms, p99 {a['p99_ms']:.3f} ms, max {a['max_ms']:.3f} ms")
    print(f"  50 dicts -> DataFrame -> to_datetime -> from_frame -> compute_features: median {d['median_ms']:.3f} ms, "
          f"p99 {d['p99_ms']:.3f} ms (same values: {single['dict_path_matches_arrays']})")
    print(f"  50 dicts -> validate_events -> from_frame -> compute_features: median {v['median_ms']:.3f} ms, p99 {v['p99_ms']:.3f} ms")
    print("  dict path steps (median ms): " + ", ".join(f"{k} {x:.3f}" for k, x in single["dict_path_steps_median_ms"].items()))

    # 6. Summary.
    one_thread = db["1 thread"]
    default = db["default threads"]
    rows = [
        ("batch throughput (all N events)", fmt_rate(fc_rate), f">= {AIM_EVENTS_PER_S / 1e6:.0f}M events/s", fc_rate >= AIM_EVENTS_PER_S),
        ("vs DuckDB, 1 thread", f"{fc_rate / one_thread['events_per_s']:.2f}x ({fmt_rate(one_thread['events_per_s'])})", f">= {AIM_VS_DUCKDB:.0f}x", fc_rate / one_thread["events_per_s"] >= AIM_VS_DUCKDB),
        (f"vs DuckDB, {default['threads']} threads", f"{fc_rate / default['events_per_s']:.2f}x ({fmt_rate(default['events_per_s'])})", f">= {AIM_VS_DUCKDB:.0f}x", fc_rate / default["events_per_s"] >= AIM_VS_DUCKDB),
        ("peak RSS of the batch step", f"{peak / GIB:.2f} GiB (+{increment / GIB:.2f} GiB)", f"< {AIM_PEAK_BYTES / GIB:.0f} GiB", peak < AIM_PEAK_BYTES),
        ("one customer, median", f"{a['median_ms']:.3f} ms", f"<= {AIM_SINGLE_MS} ms", a["median_ms"] <= AIM_SINGLE_MS),
        ("one customer, p99", f"{a['p99_ms']:.3f} ms", f"<= {AIM_SINGLE_MS} ms", a["p99_ms"] <= AIM_SINGLE_MS),
        ("one customer from 50 dicts, median", f"{d['median_ms']:.3f} ms", "(report)", None),
    ]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    w2 = max(len(r[2]) for r in rows)
    print()
    print(f"SUMMARY ({args.events:,} events, {args.customers:,} customers, {n_features} features)")
    print(f"{'figure':<{w0}}  {'measured':<{w1}}  {'aim':<{w2}}  result")
    for name, value, aim, ok in rows:
        print(f"{name:<{w0}}  {value:<{w1}}  {aim:<{w2}}  {'-' if ok is None else ('PASS' if ok else 'MISS')}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "args": {"events": args.events, "customers": args.customers, "repeat": repeat, "quick": args.quick, "seed": args.seed},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
                    "pandas": pd.__version__, "duckdb": duckdb.__version__, "platform": platform.platform()},
        "data": {"events": n, "customers": arrays.n_customers, "features": n_features, "cutoff": pd.Timestamp(cutoff, tz="UTC").isoformat(),
                 "events_before_cutoff": visible, "generate_s": gen_s},
        "funnelcast": {"times_s": child["times_s"], "best_s": fc_best, "events_per_s": fc_rate,
                       "events_per_s_counts": "all N events (including those at/after the cutoff)",
                       "visible_events_per_s": visible / fc_best, "peak_rss_bytes": peak,
                       "rss_before_compute_bytes": child["rss_before_compute"], "peak_increment_bytes": increment},
        "duckdb": {"load_s": load_s, **db, "check": check},
        "single_customer": single,
        "aims": {
            "events_per_s": {"aim": AIM_EVENTS_PER_S, "value": fc_rate, "pass": fc_rate >= AIM_EVENTS_PER_S},
            "vs_duckdb_1_thread": {"aim": AIM_VS_DUCKDB, "value": fc_rate / one_thread["events_per_s"], "pass": fc_rate / one_thread["events_per_s"] >= AIM_VS_DUCKDB},
            "vs_duckdb_default_threads": {"aim": AIM_VS_DUCKDB, "value": fc_rate / default["events_per_s"], "pass": fc_rate / default["events_per_s"] >= AIM_VS_DUCKDB},
            "peak_rss_bytes": {"aim": AIM_PEAK_BYTES, "value": peak, "pass": peak < AIM_PEAK_BYTES},
            "single_customer_median_ms": {"aim": AIM_SINGLE_MS, "value": a["median_ms"], "pass": a["median_ms"] <= AIM_SINGLE_MS},
            "single_customer_p99_ms": {"aim": AIM_SINGLE_MS, "value": a["p99_ms"], "pass": a["p99_ms"] <= AIM_SINGLE_MS},
        },
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nload average {load_start[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end; figures written to {out}")


if __name__ == "__main__":
    main()

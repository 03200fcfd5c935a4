"""Measurement helpers shared by the benchmarks.

Stdlib only at import (bench_serving's load client imports this module; numpy is imported only by
the helpers that need it). Peak memory on Linux: ``reset_peak()`` clears the process's high-water
mark (VmHWM, which ``ru_maxrss`` reads too), so ``peak_since_reset()`` is one step's peak;
``process_peak()`` still knows the whole process's. Elsewhere the resets do nothing and the peaks
are the process's.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

GIB = 1024**3
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
_PEAK_BEFORE_RESETS = [0]


def say(msg: str) -> None:
    print(msg, flush=True)


# ---- memory and machine ------------------------------------------------------------------------------

def ru_maxrss() -> int:
    """Peak RSS of this process in bytes (since the last :func:`reset_peak` on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB, macOS bytes


def rss_now() -> int:
    """Current resident set size in bytes (Linux /proc; the peak so far elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return ru_maxrss()


def reset_peak() -> bool:
    """Reset Linux's peak-RSS counter (VmHWM) of this process; False where that is not possible."""
    _PEAK_BEFORE_RESETS[0] = max(_PEAK_BEFORE_RESETS[0], ru_maxrss())
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def process_peak() -> int:
    """Peak RSS of this process over its whole life, across the per-step resets."""
    return max(_PEAK_BEFORE_RESETS[0], ru_maxrss())


def peak_since_reset() -> int | None:
    """VmHWM in bytes: the peak RSS since the last :func:`reset_peak`; None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def machine_cpu_s() -> tuple[float, float] | None:
    """(busy, steal) CPU-seconds of the whole machine since boot, all CPUs; None off Linux."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = v
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def machine(**versions: str) -> dict[str, Any]:
    """The machine and library versions a report's figures come from."""
    import numpy as np
    import pandas as pd

    return {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "pandas": pd.__version__, **versions, "platform": platform.platform()}


# ---- timing ----------------------------------------------------------------------------------------------

def time_interleaved(named: dict[str, tuple[Callable, list]], calls: int, max_s: float = float("inf"),
                     warmup: int = 50) -> dict[str, dict]:
    """Median, p99, mean and max ms of ``calls`` calls of each ``name: (fn, args)`` (``fn(*args[i % len(args)])``),
    one call of each in turn, so that a change in the machine's load moves all of them alike; after
    ``warmup`` calls of each (cycling over its args). Fewer calls (at least 200) if they would take
    more than ``max_s`` seconds."""
    import numpy as np

    for fn, args in named.values():
        for i in range(warmup):
            fn(*args[i % len(args)])
    ns = {name: np.empty(calls, dtype=np.int64) for name in named}
    clock = time.perf_counter_ns
    deadline = clock() + int(max_s * 1e9) if max_s != float("inf") else None
    n = calls
    for i in range(calls):
        for name, (fn, args) in named.items():
            a = args[i % len(args)]
            t0 = clock()
            fn(*a)
            ns[name][i] = clock() - t0
        if deadline is not None and clock() > deadline and i + 1 >= 200:
            n = i + 1
            break
    out = {}
    for name in named:
        ms = ns[name][:n] / 1e6
        out[name] = {"calls": n, "median_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)),
                     "mean_ms": float(ms.mean()), "max_ms": float(ms.max())}
    return out


def time_calls(fn: Callable, args: list, calls: int, max_s: float = float("inf"), warmup: int = 50) -> dict:
    """:func:`time_interleaved` of one function."""
    return time_interleaved({"": (fn, args)}, calls, max_s, warmup)[""]


# ---- processes and reports ------------------------------------------------------------------------------

def run_self(script: str, args: list[str], what: str) -> None:
    """Run ``script`` again in a fresh interpreter with (hidden) ``args``; stop the run if it fails."""
    proc = subprocess.run([sys.executable, str(Path(script).resolve()), *args], cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed with exit code {proc.returncode}")


def loadavg_text(load: tuple[float, float, float]) -> str:
    return f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}"


def write_report(out: str | Path, report: dict[str, Any], load_start: tuple[float, float, float]) -> None:
    """Write ``report`` (with the load average at start and now) as JSON; say where, and the load."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    load_end = os.getloadavg()
    report = {"when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **report,
              "load_average": {"start": load_start, "end": load_end}}
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    say(f"\nload average {load_start[0]:.2f} at start, {load_end[0]:.2f} at end; figures written to {out}")


def gib(x: int | None) -> str:
    return "-" if x is None else f"{x / GIB:.2f} GiB"


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "MISS")

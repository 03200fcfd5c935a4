"""Measurement helpers shared by the benchmarks (stdlib only: bench_serving's load client imports them).

Peak memory on Linux: ``reset_peak()`` clears the process's high-water mark (VmHWM, which
``ru_maxrss`` reads too), so ``peak_since_reset()`` is one step's peak; ``process_peak()`` still
knows the whole process's. Elsewhere the resets do nothing and the peaks are the process's.
"""

from __future__ import annotations

import os
import resource
import sys

GIB = 1024**3
_PEAK_BEFORE_RESETS = [0]


def say(msg: str) -> None:
    print(msg, flush=True)


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


def gib(x: int | None) -> str:
    return "-" if x is None else f"{x / GIB:.2f} GiB"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"

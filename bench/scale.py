"""How ``train`` and ``score`` grow with customers (issue 20, "one machine, to its limit": the measurement).

    python bench/scale.py [--customers 20000,100000] [--threads 0] [--json]

Per size, in a fresh process (its peak memory its own): the simulator's default funnel over two years
(``features/simulate.py``; not a product stage, timed apart) written as Parquet, then the product's
stages as a user runs them through :class:`funnelcast.Project`, each with its wall time, the process's
CPU time and its **peak RSS** (Linux's high-water mark, reset at every stage):

- ``read`` (Parquet → pandas), ``validate`` (``Project.load``: the event contract),
- ``training set`` (every labelled (customer, cutoff) row),
- per target, from ``Project.train``'s progress: ``backtest`` (the folds), ``refit`` (the selected
  learner on every row, calibration, the horizon map), ``btyd`` (value: the in-run BTYD baselines),
  ``register + report`` (MLflow logging, registration, plots, the HTML report),
- ``score`` (``Project.score``: every customer at the data's end, with reasons).

Figures go to the terminal and ``bench/results/scale.json``. The default config is used as shipped
(BTYD with Pareto/NBD included), so what grows worst is visible.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, gib, machine, peak_since_reset, process_peak, reset_peak, rss_now, run_self, say  # noqa: E402

DEFAULT_SIZES = (20_000, 100_000)


class Stages:
    """Consecutive stages of one process: each ``start(name)`` closes the running stage (wall, CPU,
    peak RSS since it began) and resets the peak for the next."""

    def __init__(self) -> None:
        self.done: list[dict[str, Any]] = []
        self._open: tuple[str, float, float, int] | None = None

    def start(self, name: str) -> None:
        if self._open is not None and self._open[0] == name:
            return
        self.close()
        reset_peak()
        self._open = (name, time.perf_counter(), time.process_time(), rss_now())

    def close(self) -> None:
        if self._open is None:
            return
        name, wall0, cpu0, rss0 = self._open
        self.done.append({"stage": name, "wall_s": time.perf_counter() - wall0, "cpu_s": time.process_time() - cpu0,
                          "rss_before_bytes": rss0, "peak_rss_bytes": peak_since_reset()})
        self._open = None


def _train_stage(message: str) -> str:
    """The stage a ``Project.train`` progress message belongs to (module docstring)."""
    target, _, rest = message.partition(":")
    if "refitting" in rest:
        return f"{target}: refit"
    if "logging to MLflow" in rest:
        return f"{target}: register + report"
    if "BTYD" in rest:
        return f"{target}: btyd"
    return f"{target}: backtest"


def one(customers: int, threads: int, out: str) -> None:
    """Measure one size (run in its own process by :func:`main`)."""
    import pandas as pd

    import funnelcast as fc
    from funnelcast.features.funnel import load_config
    from funnelcast.features.simulate import simulate

    warnings.simplefilter("ignore")
    config = load_config()
    stages = Stages()
    with tempfile.TemporaryDirectory(prefix="funnelcast-scale-") as tmp:
        stages.start("simulate (not a product stage)")
        sim = simulate(customers, config, seed=0, truth=False)
        events_path, customers_path = Path(tmp) / "events.parquet", Path(tmp) / "customers.parquet"
        sim.events.to_parquet(events_path)
        sim.customers.to_parquet(customers_path)
        n_events, end = len(sim.events), sim.end
        del sim
        stages.start("read")
        events, table = pd.read_parquet(events_path), pd.read_parquet(customers_path)
        project = fc.Project(config, mlflow_dir=Path(tmp) / "mlruns", threads=threads)
        stages.start("validate")
        data = project.load(events, table)
        del events, table
        stages.start("training set")
        training_set = project.training_set(data, data_end=end)
        rows = len(training_set)
        stages.start("train: set-up (MLflow, run)")
        project.train(data, training_set=training_set, force=True, report_dir=Path(tmp) / "reports",
                      progress=lambda msg: stages.start(_train_stage(msg)))
        stages.start("score")
        scores = project.score(data, as_of=end)
        stages.close()
    Path(out).write_text(json.dumps({
        "customers": customers, "events": n_events, "training_rows": rows, "scored": len(scores),
        "stages": stages.done, "peak_rss_bytes": process_peak(), "threads": project.resolved_threads,
    }))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/scale.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", default=",".join(str(n) for n in DEFAULT_SIZES),
                        help="simulated customers per size, comma-separated (default %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="LightGBM threads (0: every core)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one is not None:
        one(args.one, args.threads, args.out)
        return 0
    sizes = [int(x) for x in args.customers.split(",") if x.strip()]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            say(f"{n:,} customers: simulating, then read → validate → training set → train → score")
            out = Path(tmp) / f"{n}.json"
            started = time.perf_counter()
            run_self(__file__, ["--one", str(n), "--threads", str(args.threads), "--out", str(out)], f"{n:,} customers")
            result = json.loads(out.read_text())
            result["total_wall_s"] = time.perf_counter() - started
            results.append(result)
            _print(result)
    report = {"machine": machine(), "sizes": results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scale.json").write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
    say(f"figures written to {RESULTS / 'scale.json'}")
    return 0


def _print(result: dict[str, Any]) -> None:
    say(f"\n{result['customers']:,} customers, {result['events']:,} events, {result['training_rows']:,} training rows, "
        f"{result['scored']:,} scored; whole process peak RSS {gib(result['peak_rss_bytes'])}")
    say(f"  {'stage':<34} {'wall s':>8} {'CPU s':>8} {'peak RSS':>10}")
    for s in result["stages"]:
        say(f"  {s['stage']:<34} {s['wall_s']:8.1f} {s['cpu_s']:8.1f} {gib(s['peak_rss_bytes']):>10}")


if __name__ == "__main__":
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    raise SystemExit(main())

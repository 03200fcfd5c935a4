"""Benchmark funnelcast's training of the conversion model on 1M (customer, cutoff) rows x 100 features,
with plain ``lightgbm.train`` as a same-run reference.

Run from the repository root::

    .venv/bin/python bench/bench_training.py            # 1,000,000 rows x 100 features
    .venv/bin/python bench/bench_training.py --quick    # 100,000 rows x 100 features smoke run
    .venv/bin/python bench/bench_training.py --repeat 3 --threads 1   # best of 3 interleaved pairs, 1 thread

What it measures (default funnel, ``features.funnel.load_config()``, target ``convert``):

1. Data (not timed as part of any figure, its time is printed): simulated journeys
   (``features.simulate.simulate(..., truth=False)``, 2024-01-01..2026-01-01) in chunks of customers,
   one seed per chunk, until the chunks hold enough rows with a known ``convert_label``; their
   ``build_training_set`` rows are stacked and a seeded uniform subsample keeps exactly ``--rows``.
   100 feature columns are kept: the categorical attributes (``country``, ``segment``,
   ``acquisition_channel``), ``current_stage`` (the feature the one-model-for-every-transition design
   rests on), then the numeric features with the largest variance over those rows (ties in column
   order; constant and all-missing columns are never picked). Rows are split by cutoff the way
   ``training.splits`` does: the last ``training.validation_cutoffs`` (2) cutoffs validate, every
   cutoff whose label window closes by the first of them trains (for the 30-day conversion horizon
   on the 30-day snapshot grid, every earlier cutoff).
2. funnelcast: ``training.model.fit_target_model("convert", train, valid, features, vocab,
   params=config.training.lightgbm, ...)`` end to end: ``to_matrix`` for both folds, LightGBM with
   early stopping on the validation cutoffs, isotonic calibration. Wall time, CPU time
   (``time.process_time``, all threads), peak RSS, trees, rows/s. After early stopping the booster
   keeps only ``best_iteration_`` trees, so the rounds built (and paid for) are counted by a callback
   added around the wrapper's call to ``lightgbm.train`` (:func:`counting_rounds`). Its ``to_matrix``
   and calibration steps are also timed on their own, after the fit, to explain it.
3. Reference: ``lightgbm.train`` with the same parameters (``DEFAULT_PARAMS`` merged with
   ``config.training.lightgbm``, objective binary, same seed, deterministic, col-wise, same threads),
   for exactly as many rounds as funnelcast built, no validation set and no early stopping, on a
   ``lightgbm.Dataset`` from the same float64 matrix (``Dataset`` construction, i.e. binning, is timed;
   building the matrix is not). Its trees are checked against funnelcast's (same raw scores).
   ``--repeat N`` runs N fit/reference pairs interleaved and reports the best of each, all times stored.
4. Batch prediction on all rows: ``TargetModel.predict_proba`` from the frame and from the matrix
   (calibrated probabilities at ``best_iteration_``), against ``booster.predict(X, raw_score=True)``
   on the same matrix and iteration.

Data generation and the timed steps run in two fresh subprocesses, so the training process's peak
RSS is its own: a child's ``ru_maxrss`` starts at its parent's resident size at spawn (Linux carries
it over ``exec``). Each step's peak is Linux's ``VmHWM``, reset (``/proc/self/clear_refs``) just
before the step; the training process's whole-life peak is reported too (``ru_maxrss``, which the
reset clears as well, is read before every reset and at the end).

Figures go to stdout and to ``bench/results/training-<UTC timestamp>.json``
(``training-quick-<timestamp>.json`` for ``--quick``). The load average is printed and stored, with
the CPU time other processes took from the machine during each step (``/proc/stat``): on a shared
2-core machine they move every timing here. LightGBM's OpenMP threads (libgomp) spin while they wait
for each other, so when other jobs hold the cores a 2-thread fit can take several times longer than
a 1-thread one; ``--threads`` and the OpenMP environment (``OMP_WAIT_POLICY``, printed) show that.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from common import gib, machine_cpu_s, peak_since_reset, process_peak, reset_peak, rss_now, ru_maxrss, say  # noqa: E402  (bench/)
from funnelcast.features.funnel import FunnelConfig, load_config  # noqa: E402

TARGET = "convert"
FULL_ROWS = 1_000_000
QUICK_ROWS = 100_000
N_FEATURES = 100
AIM_TRAIN_S = 120.0
AIM_ROWS = FULL_ROWS  # the aim is stated for 1M rows; other sizes are reported, not judged
ROWS_PER_CUSTOMER_GUESS = 6.0  # labelled convert rows per simulated customer over two years, measured ~6.3
ALWAYS_KEEP = ("current_stage",)
OPENMP_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_DYNAMIC")


# ---- measuring a step ---------------------------------------------------------------------------

class Step:
    """Times one step: wall, process CPU (all threads), peak RSS during it, load average around it,
    and the CPU the rest of the machine used meanwhile."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.result: dict[str, Any] = {}

    def __enter__(self) -> Step:
        self.rss_before = rss_now()
        self.hwm = reset_peak()
        self.load_before = os.getloadavg()
        self.machine = machine_cpu_s()
        self.cpu0 = time.process_time()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self.t0
        cpu = time.process_time() - self.cpu0
        machine = machine_cpu_s()
        peak = peak_since_reset() if self.hwm else None
        r: dict[str, Any] = {
            "wall_s": wall, "cpu_s": cpu, "cpu_per_wall": cpu / wall if wall > 0 else None,
            "rss_before_bytes": self.rss_before, "peak_rss_bytes": peak,
            "peak_rss_above_before_bytes": None if peak is None else peak - self.rss_before,
            "load_average_before": self.load_before, "load_average_after": os.getloadavg(),
        }
        if self.machine and machine:
            busy = machine[0] - self.machine[0]
            r["machine_busy_cpu_s"] = busy
            r["other_processes_cpu_s"] = max(busy - cpu, 0.0)
            r["steal_cpu_s"] = machine[1] - self.machine[1]
            r["cpu_capacity_s"] = (os.cpu_count() or 1) * wall
        self.result = r


# ---- data: simulated journeys -> training rows ------------------------------------------------------

def select_features(rows: pd.DataFrame, n_features: int) -> tuple[list[str], dict[str, list[str]], dict[str, str]]:
    """Categorical attributes and ``current_stage`` first, then numeric features by decreasing
    variance; returned in training-set column order, with the vocabularies and why each was kept."""
    from funnelcast.training.model import categorical_vocabularies, feature_columns

    every = feature_columns(rows)
    vocab_all = categorical_vocabularies(rows, every)
    why = {c: "categorical" for c in every if c in vocab_all}
    why.update({c: "always" for c in ALWAYS_KEEP if c in every and c not in why})
    numeric = [c for c in every if c not in vocab_all and c not in why]
    var = rows[numeric].var(skipna=True)
    ranked = sorted((c for c in numeric if np.isfinite(var[c]) and var[c] > 0),
                    key=lambda c: (-var[c], every.index(c)))
    for c in ranked[: max(n_features - len(why), 0)]:
        why[c] = "variance"
    features = [c for c in every if c in why]  # never fewer than the categorical and always-kept columns
    vocab = categorical_vocabularies(rows, features)
    return features, vocab, {c: why[c] for c in features}


def split_by_cutoff(cutoffs, horizon_days: int, validation_cutoffs: int) -> tuple[list, list]:
    """Validation: the last ``validation_cutoffs`` cutoffs; training: every cutoff whose label window
    closes by the first of them (``training.splits``' gap rule)."""
    cuts = sorted(pd.Timestamp(c) for c in set(cutoffs))
    valid = cuts[-validation_cutoffs:]
    train = [c for c in cuts if c + pd.Timedelta(days=horizon_days) <= valid[0]]
    return train, valid


def generate_main(data_dir: str, n_rows: int, n_features: int, seed: int, chunk_customers: int) -> None:
    """Simulate, build the training rows, keep ``n_rows`` and ``n_features``, split, and write them
    (pickles + ``meta.json``) to ``data_dir`` for the training process."""
    from funnelcast.features.simulate import simulate
    from funnelcast.features.snapshots import build_training_set
    from funnelcast.training.model import LABEL_COLUMNS

    config = load_config(None)
    label = LABEL_COLUMNS[TARGET]
    parts: list[pd.DataFrame] = []
    chunks: list[dict] = []
    total = customers = 0
    sim_s = build_s = 0.0
    t_all = time.perf_counter()
    while total < n_rows:
        rate = total / customers if customers else ROWS_PER_CUSTOMER_GUESS
        n = min(chunk_customers, max(1000, math.ceil((n_rows - total) / rate * 1.04)))
        chunk_seed = seed + len(chunks)
        t0 = time.perf_counter()
        sim = simulate(n, config, truth=False, seed=chunk_seed)
        t1 = time.perf_counter()
        table = build_training_set(sim.events, sim.customers, config, data_end=sim.end)
        t2 = time.perf_counter()
        sim_s += t1 - t0
        build_s += t2 - t1
        keep = table[label].notna()
        # customer_id is not a model input, and ids repeat across chunks (each chunk numbers from c0000000).
        part = table.loc[keep].drop(columns=["customer_id", "stage", *(v for v in LABEL_COLUMNS.values() if v != label)])
        parts.append(part.reset_index(drop=True))
        total += len(part)
        customers += n
        chunks.append({"seed": chunk_seed, "customers": n, "events": len(sim.events), "rows_all_targets": len(table),
                       "rows_convert": len(part), "simulate_s": t1 - t0, "build_training_set_s": t2 - t1})
        say(f"  chunk {len(chunks)}: seed {chunk_seed}, {n:,} customers, {len(sim.events):,} events -> "
             f"{len(part):,} labelled convert rows (simulate {t1 - t0:.1f} s, build_training_set {t2 - t1:.1f} s); "
             f"{total:,} of {n_rows:,}")
        del sim, table, part
    rows = pd.concat(parts, ignore_index=True)
    del parts
    available = len(rows)
    keep_idx = np.sort(np.random.default_rng(seed).choice(available, size=n_rows, replace=False))
    rows = rows.iloc[keep_idx].reset_index(drop=True)

    features, vocab, why = select_features(rows, n_features)
    train_cuts, valid_cuts = split_by_cutoff(rows["cutoff"].unique(), config.conversion.horizon_days,
                                             config.training.validation_cutoffs)
    gap = sorted(set(pd.Timestamp(c) for c in rows["cutoff"].unique()) - set(train_cuts) - set(valid_cuts))
    cols = ["cutoff", label, *features]
    train = rows.loc[rows["cutoff"].isin(train_cuts), cols].reset_index(drop=True)
    valid = rows.loc[rows["cutoff"].isin(valid_cuts), cols].reset_index(drop=True)
    y = rows[label].to_numpy(dtype=float)
    out = Path(data_dir)
    train.to_pickle(out / "train.pkl")
    valid.to_pickle(out / "valid.pkl")
    meta = {
        "features": features, "vocab": vocab, "why": why,
        "feature_columns_available": len([c for c in rows.columns if c not in ("cutoff", label)]),
        "customers": customers, "chunks": chunks, "rows_available": available, "rows": len(rows),
        "rows_per_customer": available / customers, "positive_share": float(y.mean()),
        "train_rows": len(train), "valid_rows": len(valid),
        "train_positive_share": float(train[label].to_numpy(dtype=float).mean()),
        "valid_positive_share": float(valid[label].to_numpy(dtype=float).mean()),
        "train_cutoffs": [c.isoformat() for c in train_cuts], "valid_cutoffs": [c.isoformat() for c in valid_cuts],
        "gap_cutoffs_dropped": [c.isoformat() for c in gap],
        "simulate_s": sim_s, "build_training_set_s": build_s, "total_s": time.perf_counter() - t_all,
        "peak_rss_bytes": ru_maxrss(),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


# ---- the timed steps, in a fresh process ---------------------------------------------------------

def reference_params(merged: dict[str, Any], seed: int, num_threads: int) -> dict[str, Any]:
    """``lightgbm.train`` parameters equal to what ``fit_target_model``'s ``LGBMClassifier`` passes:
    the scikit-learn names are LightGBM aliases (``subsample`` = ``bagging_fraction``, ...), the
    round count is an argument of ``train``, and the wrapper's own defaults (``min_child_weight``
    1e-3, ``subsample_for_bin`` 200000, ...) equal LightGBM's."""
    params = {k: v for k, v in merged.items() if k != "n_estimators"}
    return {"objective": "binary", **params, "seed": seed, "deterministic": True, "force_col_wise": True,
            "num_threads": num_threads, "verbose": -1}


@contextmanager
def counting_rounds():
    """Count the boosting rounds LightGBM runs inside ``fit_target_model``.

    After early stopping LightGBM keeps only the trees up to the best iteration in the booster it
    returns (it reloads the model saved at ``best_iteration``), so the rounds actually built, and
    paid for, are not visible afterwards. A callback added around the scikit-learn wrapper's call
    to ``lightgbm.train`` counts them; it does nothing else and costs one Python call per round.
    """
    import lightgbm.sklearn as lgb_sklearn

    original = lgb_sklearn.train
    seen = {"rounds": 0}

    def count(env) -> None:
        seen["rounds"] = env.iteration - env.begin_iteration + 1

    count.order = 0  # before early stopping (order 30), which ends training by raising

    def train(*args, callbacks=None, **kwargs):
        return original(*args, callbacks=[*(callbacks or []), count], **kwargs)

    lgb_sklearn.train = train
    try:
        yield seen
    finally:
        lgb_sklearn.train = original


def train_main(data_dir: str, threads: int, repeat: int) -> None:
    """Load the rows; time funnelcast's fit and the lightgbm.train reference (``repeat`` times,
    interleaved), the fit's parts and batch prediction; write ``result.json`` to ``data_dir``."""
    import lightgbm as lgb
    from sklearn.metrics import roc_auc_score

    from funnelcast.training.model import DEFAULT_PARAMS, LABEL_COLUMNS, Calibrator, fit_target_model, to_matrix

    start_ru_maxrss = ru_maxrss()
    config = load_config(None)
    settings = config.training
    label = LABEL_COLUMNS[TARGET]
    meta = json.loads((Path(data_dir) / "meta.json").read_text())
    features, vocab = meta["features"], meta["vocab"]
    train = pd.read_pickle(Path(data_dir) / "train.pkl")
    valid = pd.read_pickle(Path(data_dir) / "valid.pkl")
    n_rows = len(train) + len(valid)
    y_train = train[label].to_numpy(dtype=float)
    y_valid = valid[label].to_numpy(dtype=float)
    merged = {**DEFAULT_PARAMS, **settings.lightgbm}
    categorical = [j for j, c in enumerate(features) if c in vocab]
    steps: dict[str, dict] = {}
    fits: list[dict] = []
    refs: list[dict] = []
    model = X_train = X_valid = None
    diff = None

    say(f"funnelcast fit_target_model: {len(train):,} training + {len(valid):,} validation rows x {len(features)} features "
         f"(params {settings.lightgbm} over DEFAULT_PARAMS, early stopping {settings.early_stopping_rounds} rounds, "
         f"{settings.calibration} calibration, threads={threads}) and the lightgbm.train reference, "
         f"{repeat} time(s) each, interleaved ...")
    for r in range(repeat):
        with counting_rounds() as rounds, Step("fit") as s:
            fitted = fit_target_model(
                TARGET, train, valid, features, vocab, params=settings.lightgbm, seed=settings.seed,
                calibration=settings.calibration, early_stopping_rounds=settings.early_stopping_rounds, threads=threads,
            )
        fits.append({**s.result, "best_iteration": fitted.best_iteration_, "trees_built": rounds["rounds"]})
        say(f"  funnelcast fit {r + 1}: {s.result['wall_s']:.1f} s wall, {s.result['cpu_s']:.1f} s CPU; best iteration "
             f"{fitted.best_iteration_}, {rounds['rounds']} rounds built; load {os.getloadavg()[0]:.2f}")
        if model is None:
            model = fitted
            booster = model.booster_
            best, built = model.best_iteration_, rounds["rounds"]
            lgb_threads = int(booster.params.get("num_threads", 0))
            ref_params = reference_params(merged, settings.seed, lgb_threads)
            # The fit's parts, on their own, to explain where its time goes (not part of any figure).
            with Step("to_matrix") as s:
                X_train = to_matrix(train, features, vocab)
                X_valid = to_matrix(valid, features, vocab)
            steps["to_matrix_train_and_valid"] = s.result
            with Step("calibration") as s:
                raw_valid = booster.predict(X_valid, raw_score=True, num_iteration=best, num_threads=threads)
                Calibrator(settings.calibration).fit(raw_valid, y_valid)
            steps["calibration"] = s.result
            say(f"  parts of the fit, timed alone: to_matrix {steps['to_matrix_train_and_valid']['wall_s']:.1f} s, "
                 f"predict validation + {settings.calibration} fit {steps['calibration']['wall_s']:.1f} s")
        elif (fitted.best_iteration_, rounds["rounds"]) != (best, built):
            say(f"  warning: fit {r + 1} stopped differently ({fitted.best_iteration_}/{rounds['rounds']} against {best}/{built})")
        del fitted
        with Step("reference") as s:
            ds = lgb.Dataset(X_train, label=y_train, feature_name=features, categorical_feature=categorical or "auto")
            reference = lgb.train(ref_params, ds, num_boost_round=built)
        refs.append(s.result)
        if diff is None:
            diff = float(np.max(np.abs(reference.predict(X_valid, raw_score=True, num_iteration=best)
                                       - booster.predict(X_valid, raw_score=True, num_iteration=best))))
        say(f"  reference lightgbm.train {r + 1}: {built} rounds, {s.result['wall_s']:.1f} s wall, {s.result['cpu_s']:.1f} s CPU; "
             f"load {os.getloadavg()[0]:.2f}")
        del ds, reference
    same_trees = diff <= 1e-9
    say(f"  reference trees equal funnelcast's (raw scores at iteration {best} on the validation rows): {same_trees} "
         f"(max abs diff {diff:.2e})")
    steps["funnelcast_fit"] = min(fits, key=lambda x: x["wall_s"])
    steps["reference_lightgbm_train"] = min(refs, key=lambda x: x["wall_s"])

    p_valid = model.predict_proba(X_valid, num_threads=threads)
    auc = float(roc_auc_score(y_valid, p_valid))
    X_all = np.vstack([X_train, X_valid])
    del X_train, X_valid
    frame_all = pd.concat([train, valid], ignore_index=True)
    del train, valid
    say(f"batch prediction on all {n_rows:,} rows ...")
    with Step("predict_frame") as s:
        p_frame = model.predict_proba(frame_all, num_threads=threads)
    steps["predict_proba_frame"] = s.result
    with Step("predict_matrix") as s:
        p_matrix = model.predict_proba(X_all, num_threads=threads)
    steps["predict_proba_matrix"] = s.result
    with Step("predict_raw") as s:
        raw_all = booster.predict(X_all, raw_score=True, num_iteration=best, num_threads=threads)
    steps["booster_predict_raw"] = s.result
    same_predictions = bool(np.array_equal(p_frame, p_matrix) and np.array_equal(p_matrix, model.calibrator_.predict(raw_all)))
    say("  " + ", ".join(f"{k} {steps[k]['wall_s']:.1f} s" for k in ("predict_proba_frame", "predict_proba_matrix",
                                                                       "booster_predict_raw"))
         + f"; frame, matrix and raw + calibrator agree: {same_predictions}")

    result = {
        "rows": n_rows, "train_rows": int(len(y_train)), "valid_rows": int(len(y_valid)), "features": len(features),
        "categorical_features": [features[j] for j in categorical],
        "best_iteration": int(best), "trees_built": int(built), "trees_in_booster": int(booster.num_trees()),
        "threads_arg": threads, "num_threads": lgb_threads, "repeat": repeat,
        "params_merged": merged, "reference_params": ref_params,
        "funnelcast_booster_params": {k: v for k, v in booster.params.items() if not callable(v)},
        "reference_same_raw_scores": same_trees, "reference_max_abs_raw_diff": diff,
        "predictions_agree": same_predictions, "valid_roc_auc": auc,
        "fits": fits, "references": refs,
        "steps": steps, "ru_maxrss_at_start_bytes": start_ru_maxrss, "peak_rss_bytes": process_peak(),
        "lightgbm": lgb.__version__,
    }
    (Path(data_dir) / "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")


def _run_child(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"the child process {args[0]} failed with exit code {proc.returncode}")


# ---- report ------------------------------------------------------------------------------------------

def _rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds / 1e3:,.0f}k rows/s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_ROWS:,} rows")
    ap.add_argument("--rows", type=int, default=None, help=f"labelled (customer, cutoff) rows (default {FULL_ROWS:,})")
    ap.add_argument("--features", type=int, default=N_FEATURES, help=f"feature columns kept (default {N_FEATURES})")
    ap.add_argument("--threads", type=int, default=0,
                    help="threads for fit_target_model, the reference and prediction (default 0: funnelcast's default)")
    ap.add_argument("--repeat", type=int, default=1, help="fit + reference pairs, interleaved; figures are the best")
    ap.add_argument("--chunk-customers", type=int, default=50_000, help="customers simulated per seed (bounds memory)")
    ap.add_argument("--seed", type=int, default=20261101, help="first simulation seed (one more per chunk) and subsample seed")
    ap.add_argument("--out", help="JSON path (default bench/results/training-<UTC timestamp>.json; training-quick-... with --quick)")
    ap.add_argument("--_generate", help=argparse.SUPPRESS)
    ap.add_argument("--_train", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rows is None:
        args.rows = QUICK_ROWS if args.quick else FULL_ROWS
    if args._generate:
        generate_main(args._generate, args.rows, args.features, args.seed, args.chunk_customers)
        return
    if args._train:
        train_main(args._train, args.threads, max(1, args.repeat))
        return

    when = dt.datetime.now(dt.timezone.utc)
    if args.out is None:
        name = f"training-{'quick-' if args.quick else ''}{when:%Y%m%dT%H%M%SZ}.json"
        args.out = str(ROOT / "bench" / "results" / name)
    load_start = os.getloadavg()
    import lightgbm

    config: FunnelConfig = load_config(None)
    omp = {k: os.environ[k] for k in OPENMP_ENV if k in os.environ}
    print(f"funnelcast training benchmark: {args.rows:,} rows x {args.features} features, target {TARGET}, "
          f"threads={args.threads}, repeat {max(1, args.repeat)}; lightgbm {lightgbm.__version__}, python "
          f"{platform.python_version()}, {os.cpu_count()} CPUs, OpenMP environment {omp or 'unset'}; load average "
          f"{load_start[0]:.2f} / {load_start[1]:.2f} / {load_start[2]:.2f} at start (other processes skew timings)", flush=True)

    with tempfile.TemporaryDirectory(prefix="funnelcast-bench-training-") as tmp:
        say("data (not timed as part of training): simulate(truth=False) + build_training_set, in a fresh process ...")
        _run_child(["--_generate", tmp, "--rows", str(args.rows), "--features", str(args.features),
                    "--seed", str(args.seed), "--chunk-customers", str(args.chunk_customers)])
        meta = json.loads((Path(tmp) / "meta.json").read_text())
        cats = [c for c, w in meta["why"].items() if w == "categorical"]
        say(f"  {meta['customers']:,} customers in {len(meta['chunks'])} seed(s) -> {meta['rows_available']:,} labelled rows "
             f"({meta['rows_per_customer']:.2f} per customer), subsampled to {meta['rows']:,}; "
             f"simulate {meta['simulate_s']:.1f} s + build_training_set {meta['build_training_set_s']:.1f} s "
             f"({meta['total_s']:.1f} s in all); {meta['positive_share']:.1%} positive")
        say(f"  {len(meta['features'])} of {meta['feature_columns_available']} feature columns: categorical {cats}, "
             f"always {[c for c, w in meta['why'].items() if w == 'always']}, the rest by variance")
        say(f"  train {meta['train_rows']:,} rows on {len(meta['train_cutoffs'])} cutoffs "
             f"({meta['train_cutoffs'][0][:10]}..{meta['train_cutoffs'][-1][:10]}), validation {meta['valid_rows']:,} rows on "
             f"{', '.join(c[:10] for c in meta['valid_cutoffs'])}"
             + (f"; {len(meta['gap_cutoffs_dropped'])} cutoff(s) left out by the horizon gap" if meta["gap_cutoffs_dropped"] else ""))
        say("timed steps, in a fresh process ...")
        _run_child(["--_train", tmp, "--threads", str(args.threads), "--repeat", str(max(1, args.repeat))])
        res = json.loads((Path(tmp) / "result.json").read_text())

    st = res["steps"]
    fit, ref = st["funnelcast_fit"], st["reference_lightgbm_train"]
    n = res["rows"]
    ratio = fit["wall_s"] / ref["wall_s"]
    pred_ratio = st["predict_proba_frame"]["wall_s"] / st["booster_predict_raw"]["wall_s"]
    table = [
        ("funnelcast fit_target_model, end to end", fit, _rate(n, fit["wall_s"])),
        ("  part: to_matrix (train + validation)", st["to_matrix_train_and_valid"], ""),
        ("  part: predict validation + calibrate", st["calibration"], ""),
        (f"reference lightgbm.train, {res['trees_built']} rounds", ref, _rate(res["train_rows"], ref["wall_s"])),
        (f"predict_proba from the frame, {n:,} rows", st["predict_proba_frame"], _rate(n, st["predict_proba_frame"]["wall_s"])),
        ("predict_proba from the matrix", st["predict_proba_matrix"], _rate(n, st["predict_proba_matrix"]["wall_s"])),
        ("reference booster.predict raw, same matrix", st["booster_predict_raw"], _rate(n, st["booster_predict_raw"]["wall_s"])),
    ]
    w0 = max(len(r[0]) for r in table)
    print()
    print(f"SUMMARY ({n:,} rows x {res['features']} features: train {res['train_rows']:,} / validation {res['valid_rows']:,}; "
          f"{res['num_threads']} LightGBM threads; {len(meta['chunks'])} simulation seed(s))")
    print(f"{'step':<{w0}}  {'wall s':>7}  {'CPU s':>7}  {'CPU/wall':>8}  {'peak RSS':>9}  {'others CPU s':>12}  {'load 1m':>7}  rate")
    for name, r, rate in table:
        others = r.get("other_processes_cpu_s")
        print(f"{name:<{w0}}  {r['wall_s']:7.1f}  {r['cpu_s']:7.1f}  {r['cpu_per_wall']:8.2f}  {gib(r['peak_rss_bytes']):>9}  "
              f"{'-' if others is None else f'{others:.1f}':>12}  {r['load_average_after'][0]:7.2f}  {rate}")
    if res["repeat"] > 1:
        fit_times = ", ".join(f"{x['wall_s']:.1f}" for x in res["fits"])
        ref_times = ", ".join(f"{x['wall_s']:.1f}" for x in res["references"])
        print(f"best of {res['repeat']}: funnelcast fits {fit_times} s; references {ref_times} s")
    print("rate: rows per wall second; funnelcast's counts training + validation rows (it reads both), the reference's "
          "training rows; 'others CPU s' is the CPU time the rest of the machine used during the step")
    print(f"funnelcast / reference training wall time: {ratio:.2f}x (reference has the same trees: {res['reference_same_raw_scores']}, "
          f"max raw diff {res['reference_max_abs_raw_diff']:.1e}); predict_proba(frame) / booster.predict raw: {pred_ratio:.2f}x")
    print(f"trees: best_iteration_ {res['best_iteration']}, built {res['trees_built']} (early stopping "
          f"{config.training.early_stopping_rounds} rounds, n_estimators cap {res['params_merged']['n_estimators']}); "
          f"validation ROC-AUC {res['valid_roc_auc']:.3f} (on the rows that also stopped and calibrated it)")
    print(f"peak RSS of the whole training process {gib(res['peak_rss_bytes'])} (ru_maxrss {gib(res['ru_maxrss_at_start_bytes'])} "
          f"at its start); data generation process {gib(meta['peak_rss_bytes'])}")

    label = f"training {f'{n / 1e6:g}M' if n % 1_000_000 == 0 else f'{n:,}'} rows x {res['features']} features"
    judged = n == AIM_ROWS
    met = fit["wall_s"] < AIM_TRAIN_S
    verdict = f"{label}: {fit['wall_s']:.1f} s (aim < {AIM_TRAIN_S:.0f} s): " + (
        ("met" if met else "not met") if judged else f"not judged (the aim is for {AIM_ROWS:,} rows)")
    print(verdict)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "when": when.isoformat(timespec="seconds"),
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "args": {"rows": args.rows, "features": args.features, "quick": args.quick, "seed": args.seed,
                 "chunk_customers": args.chunk_customers, "threads": args.threads, "repeat": max(1, args.repeat)},
        "openmp_environment": omp,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
                    "pandas": pd.__version__, "lightgbm": res["lightgbm"], "platform": platform.platform()},
        "data": meta,
        "training": res,
        "aims": {"train_wall_s": {"aim": AIM_TRAIN_S, "rows": AIM_ROWS, "value": fit["wall_s"], "judged": judged,
                                  "pass": met if judged else None}},
        "verdict": verdict,
    }
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nload average {load_start[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end; figures written to {out}")


if __name__ == "__main__":
    main()

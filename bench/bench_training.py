"""Benchmark funnelcast's training of the conversion model on 1M (customer, cutoff) rows x 100 features,
with plain ``lightgbm.train`` as a same-run reference.

Run from the repository root::

    .venv/bin/python bench/bench_training.py            # 1,000,000 rows x 100 features
    .venv/bin/python bench/bench_training.py --quick    # 100,000 rows x 100 features smoke run
    .venv/bin/python bench/bench_training.py --repeat 3 --threads 1   # best of 3 interleaved pairs, 1 thread

Data, in a fresh process and not timed, through the public API: ``fc.simulate`` in chunks (one seed
each) -> ``Project.load`` -> ``Project.training_set`` -> ``TrainingSet.rows("convert")``, subsampled to
``--rows``, 100 of the input contract's columns kept (a restricted ``ModelInput``) and split by cutoff
as ``training.splits`` does. Timed, in another fresh process (its peak RSS its own): ``fit_target_model``
end to end (the figure), ``lightgbm.train`` with the same parameters, matrix and rounds (the
reference, checked to give the same raw scores), and batch prediction of every row. How each figure
is made and how to read it on a shared machine: bench/README.md. Figures go to stdout and
``bench/results/training-[quick-]<UTC timestamp>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import funnelcast as fc
from common import RESULTS, gib, loadavg_text, machine, machine_cpu_s, peak_since_reset, process_peak, reset_peak, rss_now, \
    ru_maxrss, run_self, say, write_report
from funnelcast.features.model_input import ModelInput
from funnelcast.features.snapshots import FRAME_EXTRAS

TARGET = "convert"
LABEL = fc.TARGETS[TARGET].label
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


# ---- data: simulated journeys -> training rows, through the public API ------------------------------

def select_features(rows: pd.DataFrame, model_input: ModelInput, n_features: int) -> tuple[ModelInput, dict[str, str]]:
    """Categorical attributes and ``current_stage`` first, then numeric columns by decreasing variance:
    ``model_input`` restricted to them (its column order), and why each was kept."""
    every = list(model_input.columns)
    why = {c: "categorical" for c in every if c in model_input.categories}
    why.update({c: "always" for c in ALWAYS_KEEP if c in every and c not in why})
    numeric = [c for c in every if c not in why]
    var = rows[numeric].var(skipna=True)
    ranked = sorted((c for c in numeric if np.isfinite(var[c]) and var[c] > 0), key=lambda c: (-var[c], every.index(c)))
    why.update(dict.fromkeys(ranked[: max(n_features - len(why), 0)], "variance"))
    kept = ModelInput([c for c in model_input.behaviour if c in why], [a for a in model_input.attributes if a.feature in why],
                      model_input.timezone, model_input.config_hash, model_input.reserved)
    return kept, {c: why[c] for c in kept.columns}


def split_by_cutoff(cutoffs, horizon_days: int, validation_cutoffs: int) -> tuple[list, list]:
    """Validation: the last ``validation_cutoffs`` cutoffs; training: every cutoff whose label window
    closes by the first of them (``training.splits``' gap rule)."""
    cuts = sorted(pd.Timestamp(c) for c in set(cutoffs))
    valid = cuts[-validation_cutoffs:]
    train = [c for c in cuts if c + pd.Timedelta(days=horizon_days) <= valid[0]]
    return train, valid


def simulate_rows(project: fc.Project, n_rows: int, seed: int, chunk_customers: int) -> tuple[pd.DataFrame, ModelInput, list[dict]]:
    """Labelled conversion rows from simulated chunks (one seed each) until there are ``n_rows``:
    the stacked rows (``cutoff``, the label, the model columns), their input contract, the chunks."""
    parts: list[pd.DataFrame] = []
    chunks: list[dict] = []
    model_input = None
    total = customers = 0
    while total < n_rows:
        rate = total / customers if customers else ROWS_PER_CUSTOMER_GUESS
        n = min(chunk_customers, max(1000, math.ceil((n_rows - total) / rate * 1.04)))
        chunk_seed = seed + len(chunks)
        t0 = time.perf_counter()
        sim = fc.simulate(n, project.config, truth=False, seed=chunk_seed)
        t1 = time.perf_counter()
        table = project.training_set(project.load(sim.events, sim.customers), data_end=sim.end)
        t2 = time.perf_counter()
        if model_input is not None and table.model_input != model_input:
            raise SystemExit(f"seed {chunk_seed}'s training set has another input contract ({table.model_input}) "
                             f"than the first chunk's ({model_input}): use larger --chunk-customers")
        model_input = table.model_input
        # Only the label and the model columns: customer_id is not a model input, and ids repeat across
        # chunks (each chunk numbers from c0000000).
        part = table.rows(TARGET).drop(columns=[c for c in FRAME_EXTRAS if c in table.frame.columns and c not in ("cutoff", LABEL)])
        parts.append(part.reset_index(drop=True))
        total += len(part)
        customers += n
        chunks.append({"seed": chunk_seed, "customers": n, "events": len(sim.events), "rows_all_targets": len(table),
                       "rows_convert": len(part), "simulate_s": t1 - t0, "load_and_training_set_s": t2 - t1})
        say(f"  chunk {len(chunks)}: seed {chunk_seed}, {n:,} customers, {len(sim.events):,} events -> "
            f"{len(part):,} labelled convert rows (simulate {t1 - t0:.1f} s, load + training_set {t2 - t1:.1f} s); "
            f"{total:,} of {n_rows:,}")
        del sim, table, part
    return pd.concat(parts, ignore_index=True), model_input, chunks


def generate_main(data_dir: str, n_rows: int, n_features: int, seed: int, chunk_customers: int) -> None:
    """Simulate, build the training rows, keep ``n_rows`` and ``n_features``, split, and write them
    (pickles + ``meta.json``) to ``data_dir`` for the training process."""
    project = fc.Project()
    config = project.config
    t_all = time.perf_counter()
    rows, full_input, chunks = simulate_rows(project, n_rows, seed, chunk_customers)
    available = len(rows)
    keep_idx = np.sort(np.random.default_rng(seed).choice(available, size=n_rows, replace=False))
    rows = rows.iloc[keep_idx].reset_index(drop=True)

    model_input, why = select_features(rows, full_input, n_features)
    cutoffs = rows["cutoff"].unique()
    train_cuts, valid_cuts = split_by_cutoff(cutoffs, config.conversion.horizon_days, config.training.validation_cutoffs)
    gap = sorted(set(pd.Timestamp(c) for c in cutoffs) - set(train_cuts) - set(valid_cuts))
    cols = ["cutoff", LABEL, *model_input.columns]
    train = rows.loc[rows["cutoff"].isin(train_cuts), cols].reset_index(drop=True)
    valid = rows.loc[rows["cutoff"].isin(valid_cuts), cols].reset_index(drop=True)
    out = Path(data_dir)
    train.to_pickle(out / "train.pkl")
    valid.to_pickle(out / "valid.pkl")
    customers = sum(c["customers"] for c in chunks)
    meta = {
        "features": list(model_input.columns), "why": why, "model_input": model_input.to_dict(),
        "feature_columns_available": len(full_input.columns),
        "customers": customers, "chunks": chunks, "rows_available": available, "rows": len(rows),
        "rows_per_customer": available / customers, "positive_share": float(rows[LABEL].to_numpy(dtype=float).mean()),
        "train_rows": len(train), "valid_rows": len(valid),
        "train_positive_share": float(train[LABEL].to_numpy(dtype=float).mean()),
        "valid_positive_share": float(valid[LABEL].to_numpy(dtype=float).mean()),
        "train_cutoffs": [c.isoformat() for c in train_cuts], "valid_cutoffs": [c.isoformat() for c in valid_cuts],
        "gap_cutoffs_dropped": [c.isoformat() for c in gap],
        "simulate_s": sum(c["simulate_s"] for c in chunks),
        "load_and_training_set_s": sum(c["load_and_training_set_s"] for c in chunks),
        "total_s": time.perf_counter() - t_all, "peak_rss_bytes": ru_maxrss(),
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


class Fits:
    """funnelcast's fit and the ``lightgbm.train`` reference, interleaved; the first fit's model, its
    matrices, and the fit's parts timed alone."""

    def __init__(self, train: pd.DataFrame, valid: pd.DataFrame, model_input: ModelInput, threads: int) -> None:
        from funnelcast.training.model import DEFAULT_PARAMS

        self.train, self.valid, self.model_input, self.threads = train, valid, model_input, threads
        self.settings = fc.load_config().training
        self.merged = {**DEFAULT_PARAMS, **self.settings.lightgbm}
        self.y_train = train[LABEL].to_numpy(dtype=float)
        self.y_valid = valid[LABEL].to_numpy(dtype=float)
        self.fits: list[dict] = []
        self.refs: list[dict] = []
        self.steps: dict[str, dict] = {}
        self.model = None
        self.diff: float | None = None

    def fit(self, r: int) -> None:
        from funnelcast.training.model import fit_target_model

        s = self.settings
        with Step("fit") as step:
            fitted = fit_target_model(TARGET, self.train, self.valid, self.model_input, params=s.lightgbm, seed=s.seed,
                                      calibration=s.calibration, early_stopping_rounds=s.early_stopping_rounds,
                                      threads=self.threads)
        # The booster keeps only best_iteration_ trees; early stopping built (and paid for) the rounds up
        # to early_stopping_rounds past the best one, or up to the n_estimators cap.
        built = min(fitted.best_iteration_ + s.early_stopping_rounds, self.merged["n_estimators"])
        self.fits.append({**step.result, "best_iteration": fitted.best_iteration_, "trees_built": built})
        say(f"  funnelcast fit {r + 1}: {step.result['wall_s']:.1f} s wall, {step.result['cpu_s']:.1f} s CPU; best iteration "
            f"{fitted.best_iteration_}, {built} rounds built; load {os.getloadavg()[0]:.2f}")
        if self.model is None:
            self.model, self.best, self.built = fitted, fitted.best_iteration_, built
            self.lgb_threads = int(fitted.booster_.params.get("num_threads", 0))
            self.ref_params = reference_params(self.merged, s.seed, self.lgb_threads)
            self.time_parts()
        elif fitted.best_iteration_ != self.best:
            say(f"  warning: fit {r + 1} stopped at {fitted.best_iteration_}, the first at {self.best}")

    def time_parts(self) -> None:
        """The fit's parts, on their own, to explain where its time goes (not part of any figure)."""
        from funnelcast.training.model import Calibrator

        with Step("matrix") as s:
            self.X_train = self.model_input.matrix_from_frame(self.train)
            self.X_valid = self.model_input.matrix_from_frame(self.valid)
        self.steps["matrix_train_and_valid"] = s.result
        with Step("calibration") as s:
            raw_valid = self.model.booster_.predict(self.X_valid, raw_score=True, num_iteration=self.best,
                                                    num_threads=self.threads)
            Calibrator(self.settings.calibration).fit(raw_valid, self.y_valid)
        self.steps["calibration"] = s.result
        say(f"  parts of the fit, timed alone: matrix_from_frame {self.steps['matrix_train_and_valid']['wall_s']:.1f} s, "
            f"predict validation + {self.settings.calibration} fit {self.steps['calibration']['wall_s']:.1f} s")

    def reference(self, r: int) -> None:
        import lightgbm as lgb

        features = list(self.model_input.columns)
        categorical = [j for j, c in enumerate(features) if c in self.model_input.categories]
        with Step("reference") as s:
            ds = lgb.Dataset(self.X_train, label=self.y_train, feature_name=features, categorical_feature=categorical or "auto")
            reference = lgb.train(self.ref_params, ds, num_boost_round=self.built)
        self.refs.append(s.result)
        if self.diff is None:
            ours = self.model.booster_.predict(self.X_valid, raw_score=True, num_iteration=self.best)
            self.diff = float(np.max(np.abs(reference.predict(self.X_valid, raw_score=True, num_iteration=self.best) - ours)))
        say(f"  reference lightgbm.train {r + 1}: {self.built} rounds, {s.result['wall_s']:.1f} s wall, "
            f"{s.result['cpu_s']:.1f} s CPU; load {os.getloadavg()[0]:.2f}")

    def predictions(self) -> bool:
        """Batch prediction of every row: from the frame, from the matrix, and raw ``booster.predict``."""
        model, threads = self.model, self.threads
        X_all = np.vstack([self.X_train, self.X_valid])
        self.X_train = self.X_valid = None
        frame_all = pd.concat([self.train, self.valid], ignore_index=True)
        self.train = self.valid = None
        say(f"batch prediction on all {len(X_all):,} rows ...")
        with Step("predict_frame") as s:
            p_frame = model.predict_proba(frame_all, num_threads=threads)
        self.steps["predict_proba_frame"] = s.result
        with Step("predict_matrix") as s:
            p_matrix = model.predict_proba(X_all, num_threads=threads)
        self.steps["predict_proba_matrix"] = s.result
        with Step("predict_raw") as s:
            raw_all = model.booster_.predict(X_all, raw_score=True, num_iteration=self.best, num_threads=threads)
        self.steps["booster_predict_raw"] = s.result
        same = bool(np.array_equal(p_frame, p_matrix) and np.array_equal(p_matrix, model.calibrator_.predict(raw_all)))
        say("  " + ", ".join(f"{k} {self.steps[k]['wall_s']:.1f} s" for k in ("predict_proba_frame", "predict_proba_matrix",
                                                                             "booster_predict_raw"))
            + f"; frame, matrix and raw + calibrator agree: {same}")
        return same


def train_main(data_dir: str, threads: int, repeat: int) -> None:
    """Load the rows; time funnelcast's fit and the lightgbm.train reference (``repeat`` times,
    interleaved), the fit's parts and batch prediction; write ``result.json`` to ``data_dir``."""
    import lightgbm as lgb
    from sklearn.metrics import roc_auc_score

    start_ru_maxrss = ru_maxrss()
    meta = json.loads((Path(data_dir) / "meta.json").read_text())
    model_input = ModelInput.from_dict(meta["model_input"])
    train, valid = (pd.read_pickle(Path(data_dir) / f"{name}.pkl") for name in ("train", "valid"))
    f = Fits(train, valid, model_input, threads)
    del train, valid
    st = f.settings
    say(f"funnelcast fit_target_model: {len(f.train):,} training + {len(f.valid):,} validation rows x "
        f"{len(model_input.columns)} features (params {st.lightgbm} over DEFAULT_PARAMS, early stopping "
        f"{st.early_stopping_rounds} rounds, {st.calibration} calibration, threads={threads}) and the lightgbm.train "
        f"reference, {repeat} time(s) each, interleaved ...")
    for r in range(repeat):
        f.fit(r)
        f.reference(r)
    same_trees = f.diff <= 1e-9
    say(f"  reference trees equal funnelcast's (raw scores at iteration {f.best} on the validation rows): {same_trees} "
        f"(max abs diff {f.diff:.2e})")
    f.steps["funnelcast_fit"] = min(f.fits, key=lambda x: x["wall_s"])
    f.steps["reference_lightgbm_train"] = min(f.refs, key=lambda x: x["wall_s"])
    auc = float(roc_auc_score(f.y_valid, f.model.predict_proba(f.X_valid, num_threads=threads)))
    same_predictions = f.predictions()
    booster = f.model.booster_
    result = {
        "rows": len(f.y_train) + len(f.y_valid), "train_rows": len(f.y_train), "valid_rows": len(f.y_valid),
        "features": len(model_input.columns), "categorical_features": list(model_input.categories),
        "best_iteration": int(f.best), "trees_built": int(f.built), "trees_in_booster": int(booster.num_trees()),
        "threads_arg": threads, "num_threads": f.lgb_threads, "repeat": repeat,
        "params_merged": f.merged, "reference_params": f.ref_params,
        "funnelcast_booster_params": {k: v for k, v in booster.params.items() if not callable(v)},
        "reference_same_raw_scores": same_trees, "reference_max_abs_raw_diff": f.diff,
        "predictions_agree": same_predictions, "valid_roc_auc": auc,
        "fits": f.fits, "references": f.refs,
        "steps": f.steps, "ru_maxrss_at_start_bytes": start_ru_maxrss, "peak_rss_bytes": process_peak(),
        "lightgbm": lgb.__version__,
    }
    (Path(data_dir) / "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")


# ---- main ------------------------------------------------------------------------------------------

def _rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds / 1e3:,.0f}k rows/s"


def parse_args() -> argparse.Namespace:
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
    args.rows = args.rows or (QUICK_ROWS if args.quick else FULL_ROWS)
    args.repeat = max(1, args.repeat)
    return args


def describe_data(meta: dict) -> None:
    cats = [c for c, w in meta["why"].items() if w == "categorical"]
    say(f"  {meta['customers']:,} customers in {len(meta['chunks'])} seed(s) -> {meta['rows_available']:,} labelled rows "
        f"({meta['rows_per_customer']:.2f} per customer), subsampled to {meta['rows']:,}; simulate {meta['simulate_s']:.1f} s "
        f"+ load and training_set {meta['load_and_training_set_s']:.1f} s ({meta['total_s']:.1f} s in all); "
        f"{meta['positive_share']:.1%} positive")
    say(f"  {len(meta['features'])} of {meta['feature_columns_available']} feature columns: categorical {cats}, "
        f"always {[c for c, w in meta['why'].items() if w == 'always']}, the rest by variance")
    say(f"  train {meta['train_rows']:,} rows on {len(meta['train_cutoffs'])} cutoffs "
        f"({meta['train_cutoffs'][0][:10]}..{meta['train_cutoffs'][-1][:10]}), validation {meta['valid_rows']:,} rows on "
        f"{', '.join(c[:10] for c in meta['valid_cutoffs'])}"
        + (f"; {len(meta['gap_cutoffs_dropped'])} cutoff(s) left out by the horizon gap" if meta["gap_cutoffs_dropped"] else ""))


def summarize(res: dict, meta: dict, early_stopping_rounds: int) -> dict:
    """Print the summary table; return the aim."""
    st = res["steps"]
    fit, ref = st["funnelcast_fit"], st["reference_lightgbm_train"]
    n = res["rows"]
    table = [
        ("funnelcast fit_target_model, end to end", fit, _rate(n, fit["wall_s"])),
        ("  part: matrix_from_frame (train + validation)", st["matrix_train_and_valid"], ""),
        ("  part: predict validation + calibrate", st["calibration"], ""),
        (f"reference lightgbm.train, {res['trees_built']} rounds", ref, _rate(res["train_rows"], ref["wall_s"])),
        (f"predict_proba from the frame, {n:,} rows", st["predict_proba_frame"], _rate(n, st["predict_proba_frame"]["wall_s"])),
        ("predict_proba from the matrix", st["predict_proba_matrix"], _rate(n, st["predict_proba_matrix"]["wall_s"])),
        ("reference booster.predict raw, same matrix", st["booster_predict_raw"], _rate(n, st["booster_predict_raw"]["wall_s"])),
    ]
    w0 = max(len(r[0]) for r in table)
    say(f"\nSUMMARY ({n:,} rows x {res['features']} features: train {res['train_rows']:,} / validation {res['valid_rows']:,}; "
        f"{res['num_threads']} LightGBM threads; {len(meta['chunks'])} simulation seed(s))")
    say(f"{'step':<{w0}}  {'wall s':>7}  {'CPU s':>7}  {'CPU/wall':>8}  {'peak RSS':>9}  {'others CPU s':>12}  {'load 1m':>7}  rate")
    for name, r, rate in table:
        others = r.get("other_processes_cpu_s")
        say(f"{name:<{w0}}  {r['wall_s']:7.1f}  {r['cpu_s']:7.1f}  {r['cpu_per_wall']:8.2f}  {gib(r['peak_rss_bytes']):>9}  "
            f"{'-' if others is None else f'{others:.1f}':>12}  {r['load_average_after'][0]:7.2f}  {rate}")
    if res["repeat"] > 1:
        fits, refs = (", ".join(f"{x['wall_s']:.1f}" for x in res[k]) for k in ("fits", "references"))
        say(f"best of {res['repeat']}: funnelcast fits {fits} s; references {refs} s")
    say("rate: rows per wall second; funnelcast's counts training + validation rows (it reads both), the reference's "
        "training rows; 'others CPU s' is the CPU time the rest of the machine used during the step")
    say(f"funnelcast / reference training wall time: {fit['wall_s'] / ref['wall_s']:.2f}x (reference has the same trees: "
        f"{res['reference_same_raw_scores']}, max raw diff {res['reference_max_abs_raw_diff']:.1e}); predict_proba(frame) / "
        f"booster.predict raw: {st['predict_proba_frame']['wall_s'] / st['booster_predict_raw']['wall_s']:.2f}x")
    say(f"trees: best_iteration_ {res['best_iteration']}, built {res['trees_built']} (early stopping {early_stopping_rounds} "
        f"rounds, n_estimators cap {res['params_merged']['n_estimators']}); validation ROC-AUC {res['valid_roc_auc']:.3f} "
        "(on the rows that also stopped and calibrated it)")
    say(f"peak RSS of the whole training process {gib(res['peak_rss_bytes'])} (ru_maxrss {gib(res['ru_maxrss_at_start_bytes'])} "
        f"at its start); data generation process {gib(meta['peak_rss_bytes'])}")
    judged, met = n == AIM_ROWS, fit["wall_s"] < AIM_TRAIN_S
    label = f"training {f'{n / 1e6:g}M' if n % 1_000_000 == 0 else f'{n:,}'} rows x {res['features']} features"
    text = f"{label}: {fit['wall_s']:.1f} s (aim < {AIM_TRAIN_S:.0f} s): " + (
        ("met" if met else "not met") if judged else f"not judged (the aim is for {AIM_ROWS:,} rows)")
    say(text)
    return {"train_wall_s": {"aim": AIM_TRAIN_S, "rows": AIM_ROWS, "value": fit["wall_s"], "judged": judged,
                             "pass": met if judged else None}, "verdict": text}


def main() -> None:
    args = parse_args()
    if args._generate:
        generate_main(args._generate, args.rows, args.features, args.seed, args.chunk_customers)
        return
    if args._train:
        train_main(args._train, args.threads, args.repeat)
        return
    import lightgbm

    when = dt.datetime.now(dt.timezone.utc)
    out = args.out or str(RESULTS / f"training-{'quick-' if args.quick else ''}{when:%Y%m%dT%H%M%SZ}.json")
    load_start = os.getloadavg()
    omp = {k: os.environ[k] for k in OPENMP_ENV if k in os.environ}
    say(f"funnelcast training benchmark: {args.rows:,} rows x {args.features} features, target {TARGET}, "
        f"threads={args.threads}, repeat {args.repeat}; lightgbm {lightgbm.__version__}, python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, OpenMP environment {omp or 'unset'}; "
        f"{loadavg_text(load_start)} at start (other processes skew timings)")
    with tempfile.TemporaryDirectory(prefix="funnelcast-bench-training-") as tmp:
        say("data (not timed as part of training): fc.simulate(truth=False) + Project.load + Project.training_set, "
            "in a fresh process ...")
        run_self(__file__, ["--_generate", tmp, "--rows", str(args.rows), "--features", str(args.features),
                            "--seed", str(args.seed), "--chunk-customers", str(args.chunk_customers)], "data generation")
        meta = json.loads((Path(tmp) / "meta.json").read_text())
        describe_data(meta)
        say("timed steps, in a fresh process ...")
        run_self(__file__, ["--_train", tmp, "--threads", str(args.threads), "--repeat", str(args.repeat)], "training")
        res = json.loads((Path(tmp) / "result.json").read_text())
    aims = summarize(res, meta, fc.load_config().training.early_stopping_rounds)
    write_report(out, {
        "when": when.isoformat(timespec="seconds"),
        "args": {"rows": args.rows, "features": args.features, "quick": args.quick, "seed": args.seed,
                 "chunk_customers": args.chunk_customers, "threads": args.threads, "repeat": args.repeat},
        "openmp_environment": omp, "machine": machine(lightgbm=res["lightgbm"]), "data": meta, "training": res,
        "aims": {"train_wall_s": aims["train_wall_s"]}, "verdict": aims["verdict"],
    }, load_start)


if __name__ == "__main__":
    main()

"""The quality suite's runner: the product beside independent baselines (and the truth, where known)
on held-out later cutoffs of every data set.

    python -m quality.run [--datasets a,b] [--quick] [--out quality-results] [--test-cutoffs 3]
                          [--set key=value ...] [--json]

Per data set and target the protocol is the one a user would follow, shifted back by one horizon so
that a later cutoff stays unseen:

1. ``project.load`` the data set's events (and customers) under its funnel config.
2. Every labelled row: ``project.training_set(data, data_end=ds.data_end)``; the target's test
   cutoffs are its latest ``--test-cutoffs`` cutoffs with complete labels (default 3).
3. Per test cutoff, training data: ``project.training_set(data, data_end=test_cutoff)``, so no
   training label window reaches past it; ``project.train(train_set, force=True)`` trains the
   product (a funnelcast error there is recorded as "cannot train: ..." and the suite goes on).
4. The registered model scores the test cutoff's rows.
5. The baselines (:mod:`quality.baselines`: own features, logistic regression and plain LightGBM)
   are fitted on the same (customer, cutoff) rows the product trained on and score the same test rows.
6. The truth, where the data set's generator knows it, scores them too.
7. Each model's metrics are averaged over the test cutoffs (:func:`combine_cutoffs`); the margin
   over the better baseline is the mean of the per-cutoff margins. One cutoff's AUC on a few hundred
   positives moves by 0.02-0.03; three cutoffs a cadence apart share some customers and label days,
   so the mean is steadier, not independent.

A table and the aims check go to the terminal; everything, per stage and per cutoff too, to
``<out>/quality.json``.
``--set key=value`` overrides the funnel config of every data set (dotted path, YAML value), for ablations.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import re
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

ECE_AIM = 0.02
ECE_AIM_FEW_POSITIVES = 0.03
FEW_POSITIVES = 500
MARGIN_AIM = 0.02
TEST_CUTOFFS = 3
"""Test cutoffs per target: one cutoff's AUC on a few hundred positives moves by 0.02-0.03."""
METRICS = ("roc_auc", "pr_auc", "ece", "log_loss", "brier", "top_decile_lift", "rows", "positives", "positive_rate",
           "mean_probability")
"""The metrics kept per model (from :func:`funnelcast.training.metrics.binary_metrics`)."""
STAGE_METRICS = ("roc_auc", "ece", "rows", "positives")


class SetError(ValueError):
    """A ``--set`` argument that is not ``key=value`` or names no setting."""


# ---- --set -------------------------------------------------------------------------------------

def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """``["a.b=90", "c=[1, 2]"]`` → ``{"a.b": 90, "c": [1, 2]}``: dotted keys, values parsed as YAML."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise SetError(f"--set {item!r}: expected key=value with a dotted key, e.g. churn.horizon_days=30")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise SetError(f"--set {item!r}: the value is not valid YAML: {exc}") from None
    return out


def apply_sets(config, sets: dict[str, Any]):
    """``config`` with every ``--set`` applied: its JSON dump updated at each dotted path, then
    validated again (:func:`~funnelcast.features.funnel.config_from_dict`, which names a bad field).

    Every part of a path but the last must exist (a list takes an index); the last may be a new key
    only of a mapping (e.g. ``training.lightgbm.min_child_samples``).
    """
    from funnelcast.features.funnel import config_from_dict

    if not sets:
        return config
    raw = config.model_dump(mode="json")
    for key, value in sets.items():
        parts = key.split(".")
        node: Any = raw
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                try:
                    index = int(part)
                    node[index]  # noqa: B018 - range check
                except (ValueError, IndexError):
                    raise SetError(f"--set {key}: {where!r} needs a list index below {len(node)}") from None
                if last:
                    node[index] = value
                else:
                    node = node[index]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                elif part not in node or not isinstance(node[part], (dict, list)):
                    known = ", ".join(sorted(node))
                    raise SetError(f"--set {key}: the funnel config has no section {where!r} (here: {known})")
                else:
                    node = node[part]
            else:
                raise SetError(f"--set {key}: {'.'.join(parts[:depth])!r} is a value, not a section")
    return config_from_dict(raw, origin="the funnel config with --set " + ", ".join(sets))


# ---- metrics -----------------------------------------------------------------------------------

def _num(x: Any) -> Any:
    """JSON-ready number: NaN/inf → None, numpy scalars → Python."""
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return None if not math.isfinite(x) else round(x, 6)
    return x


def _clean(obj: Any) -> Any:
    """``obj`` made JSON-safe: NaN/inf → None throughout (so quality.json is strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (float, np.floating, np.integer)):
        return _num(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def metrics_of(y: np.ndarray, p: np.ndarray, keys: tuple[str, ...] = METRICS) -> dict[str, Any]:
    """The kept metrics of probabilities ``p`` on labels ``y``."""
    from funnelcast.training.metrics import binary_metrics

    m = binary_metrics(np.asarray(y, dtype=int), np.asarray(p, dtype=float))
    out = {k: _num(m[k]) for k in keys}
    for k in ("rows", "positives"):
        if out.get(k) is not None:
            out[k] = int(out[k])
    return out


def truth_column(truth: pd.DataFrame | None, target: str) -> str | None:
    """The truth column for ``target``: ``<truth>_given_history`` where present, else ``<truth>``, else None."""
    from funnelcast.features.targets import TARGETS

    if truth is None:
        return None
    for name in (TARGETS[target].truth + "_given_history", TARGETS[target].truth):
        if name in truth.columns:
            return name
    return None


def truth_for(rows: pd.DataFrame, truth: pd.DataFrame, column: str) -> np.ndarray:
    """The truth probability of every (customer_id, cutoff) row of ``rows`` (NaN where truth has none)."""
    keys = pd.DataFrame({
        "customer_id": truth["customer_id"].astype(str).to_numpy(dtype=object),
        "cutoff": pd.to_datetime(truth["cutoff"], utc=True).dt.as_unit("ns").array,
        "p": pd.to_numeric(truth[column], errors="coerce").to_numpy(dtype=float),
    }).drop_duplicates(["customer_id", "cutoff"])
    left = pd.DataFrame({
        "customer_id": rows["customer_id"].astype(str).to_numpy(dtype=object),
        "cutoff": pd.to_datetime(rows["cutoff"], utc=True).dt.as_unit("ns").array,
    })
    return left.merge(keys, on=["customer_id", "cutoff"], how="left")["p"].to_numpy(dtype=float)


# ---- one data set ------------------------------------------------------------------------------

def _cutoff_text(c: Any) -> str:
    return pd.Timestamp(c).isoformat()


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _warning_summary(caught: list[warnings.WarningMessage], limit: int = 20) -> list[dict[str, Any]]:
    """Python warnings raised while the product trained: distinct (category, message, where), counted."""
    counts = Counter(
        f"{w.category.__name__}: {_ANSI.sub('', (str(w.message).splitlines() or [''])[0])[:300]} "
        f"({Path(w.filename).name}:{w.lineno})" for w in caught)
    return [{"warning": text, "count": n} for text, n in counts.most_common(limit)]


def _product_model(target_result):
    """The registered model of a target (``TargetResult.model``; older results: the backtest's model)."""
    model = getattr(target_result, "model", None)
    return model if model is not None else target_result.backtest.model


def evaluate_dataset(ds, *, sets: dict[str, Any], threads: int, out: Path, test_cutoffs: int = 1,
                     say=lambda msg: None) -> dict[str, Any]:
    """Run the protocol (module docstring) on one data set; returns its JSON-ready record."""
    import funnelcast as fc
    from funnelcast.features.errors import FunnelcastError
    from funnelcast.features.targets import TARGETS

    from quality.value import combine_value_cutoffs, score_value_cutoff

    config = apply_sets(ds.config, sets)
    record: dict[str, Any] = {
        "description": ds.description, "notes": list(ds.notes), "data_end": _cutoff_text(ds.data_end),
        "events": int(len(ds.events)), "customers": int(ds.events["customer_id"].nunique()),
        "has_truth": ds.truth is not None, "config": config.model_dump(mode="json"), "targets": {},
    }
    with tempfile.TemporaryDirectory(prefix="funnelcast-quality-") as store:
        project = fc.Project(config, mlflow_dir=store, threads=threads)
        base_threads = project.resolved_threads
        say("validating events")
        try:
            data = project.load(ds.events, ds.customers)
        except FunnelcastError as exc:
            record["error"] = f"cannot load: {exc}"
            return record
        record["validation"] = data.summary.as_dict()
        say("building every labelled row")
        started = time.perf_counter()
        try:
            full = project.training_set(data, data_end=ds.data_end)
        except FunnelcastError as exc:
            record["error"] = f"no labelled rows: {exc}"
            return record
        record["full_training_set_seconds"] = round(time.perf_counter() - started, 2)

        # Every target is scored at its latest `test_cutoffs` labelled cutoffs; targets sharing a test
        # cutoff share its training set and one training run.
        plan: dict[str, list[pd.Timestamp]] = {}
        for target in ds.targets:
            rows = full.rows(target)
            if len(rows) == 0:
                record["targets"][target] = {"error": "no labelled rows for this target"}
            elif target == "value" and not (rows[TARGETS[target].label].astype(float) > 0).any():
                record["targets"][target] = {"kind": "value", "error": "no purchase amounts: nothing to predict"}
            else:
                plan[target] = test_cutoffs_of(rows["cutoff"], test_cutoffs)
        scored: dict[str, list[dict[str, Any]]] = {t: [] for t in plan}
        for cutoff in sorted({c for cs in plan.values() for c in cs}, reverse=True):
            group = [t for t in TARGETS if cutoff in plan.get(t, [])]
            say(f"{', '.join(group)}: training rows before {cutoff:%Y-%m-%d}")
            # The suite fits its own BG/NBD baseline (quality/value.py); the product's in-run BTYD is not scored.
            # With value, churn is trained too: the outreach rankings (value at risk) need both.
            trained = [t for t in TARGETS if t in group or ("value" in group and t == "churn" and "churn" in ds.targets)]
            group_config = apply_sets(config, {"training.targets": trained, "value.btyd_baselines": []})
            group_project = fc.Project(group_config, mlflow_dir=store, threads=threads)
            try:
                train_set = group_project.training_set(data, data_end=cutoff)
            except FunnelcastError as exc:
                for t in group:
                    scored[t].append({"test_cutoff": _cutoff_text(cutoff), "error": f"no training rows: {exc}"})
                continue
            product_error, result, caught = None, None, []
            started = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    result = group_project.train(
                        train_set, force=True, report_dir=out / "reports" / ds.name / f"{cutoff:%Y-%m-%d}",
                        progress=lambda msg: say(f"product: {msg}"))
                except FunnelcastError as exc:
                    product_error = f"cannot train: {exc}"
            train_seconds = time.perf_counter() - started
            for target in group:
                say(f"{target}: scoring the test cutoff {cutoff:%Y-%m-%d}")
                if target == "value":
                    scored[target].append(score_value_cutoff(
                        data.events, config, full, train_set, cutoff, result, product_error, train_seconds,
                        base_threads, say))
                    continue
                scored[target].append(_score_cutoff(
                    ds, data, config, full, train_set, target, cutoff, result, product_error, caught, train_seconds,
                    base_threads, say))
        for target, entries in scored.items():
            record["targets"][target] = (combine_value_cutoffs(entries) if target == "value" else
                                         combine_cutoffs(entries, by_transition=TARGETS[target].by_transition))
    record["targets"] = {t: record["targets"][t] for t in ds.targets if t in record["targets"]}
    return record


def test_cutoffs_of(cutoffs: pd.Series, n: int) -> list[pd.Timestamp]:
    """The latest ``n`` distinct labelled cutoffs, latest first (fewer where the data has fewer)."""
    distinct = sorted(pd.unique(pd.to_datetime(cutoffs, utc=True)), reverse=True)
    return [pd.Timestamp(c) for c in distinct[: max(int(n), 1)]]


def _score_cutoff(ds, data, config, full, train_set, target, cutoff, result, product_error, caught, train_seconds,
                  base_threads, say) -> dict[str, Any]:
    """One (target, test cutoff): the product trained on rows before the cutoff, the baselines on the
    same rows, and the truth, all scored on the cutoff's rows."""
    from funnelcast.features.targets import TARGETS
    from quality.baselines import BASELINES, fit_baselines, predict_baselines, simple_features

    label = TARGETS[target].label
    rows = full.rows(target)
    test = rows.loc[rows["cutoff"] == cutoff]
    y = test[label].to_numpy(dtype=int)
    train_rows = train_set.rows(target)
    entry: dict[str, Any] = {
        "test_cutoff": _cutoff_text(cutoff),
        "train_rows": int(len(train_rows)),
        "train_positives": int(train_rows[label].astype(int).sum()) if len(train_rows) else 0,
        "train_cutoffs": int(train_rows["cutoff"].nunique()),
        "first_train_cutoff": _cutoff_text(train_rows["cutoff"].min()) if len(train_rows) else None,
        "last_train_cutoff": _cutoff_text(train_rows["cutoff"].max()) if len(train_rows) else None,
        "test_rows": int(len(y)), "test_positives": int(y.sum()),
        "training_seconds": round(train_seconds, 2),
        "python_warnings": _warning_summary(caught),
    }
    probabilities: dict[str, np.ndarray] = {}
    # The product.
    if product_error is not None:
        entry["product"] = {"error": product_error}
    elif target in result.skipped:
        entry["product"] = {"error": f"cannot train: skipped {result.skipped[target]}"}
    else:
        model = _product_model(result.targets[target])
        probabilities["product"] = np.asarray(model.predict_proba(test), dtype=float)
        entry["product"] = metrics_of(y, probabilities["product"])
    if result is not None:
        entry["funnelcast_warnings"] = list(result.warnings)
        entry["entries"] = {k: v for k, v in result.entries.items() if k == target or k.startswith(f"{target}:")}
    # The baselines, on the same training rows.
    say(f"{target}: baselines at {cutoff:%Y-%m-%d}")
    started = time.perf_counter()
    try:
        train_X = simple_features(data.events, train_rows, config)
        test_X = simple_features(data.events, test, config)
        models = fit_baselines(train_X, train_rows[label].to_numpy(dtype=int), seed=config.training.seed,
                               threads=base_threads)
        for name, p in predict_baselines(models, test_X).items():
            probabilities[name] = p
            entry[name] = metrics_of(y, p)
    except ValueError as exc:
        for name in BASELINES:
            entry[name] = {"error": str(exc)}
    entry["baseline_seconds"] = round(time.perf_counter() - started, 2)
    # The truth.
    column = truth_column(ds.truth, target)
    entry["truth_column"] = column
    if column is not None:
        p_truth = truth_for(test, ds.truth, column)
        known = ~np.isnan(p_truth)
        entry["truth_rows_missing"] = int((~known).sum())
        if known.any():
            entry["truth"] = metrics_of(y[known], p_truth[known])
            probabilities["truth"] = np.where(known, p_truth, np.nan)
            for name in ("product", "logistic", "lightgbm"):
                if name in probabilities and isinstance(entry.get(name), dict):
                    entry[name]["ece_vs_truth"] = ece_vs_truth(probabilities[name], p_truth)
    _comparisons(entry)
    if TARGETS[target].by_transition:
        entry["per_stage"] = _per_stage(test, y, probabilities)
    return entry


MODELS = ("product", "logistic", "lightgbm", "truth")
_SUMMED = ("rows", "positives")


def _mean(values: list[Any]) -> Any:
    values = [v for v in values if v is not None]
    return _num(float(np.mean(values))) if values else None


def combine_cutoffs(entries: list[dict[str, Any]], *, by_transition: bool = False) -> dict[str, Any]:
    """One target's record over its test cutoffs (``entries``, latest first): each model's metrics
    averaged over the cutoffs where the product and that model both scored (rows and positives
    summed), the margin as the mean of the per-cutoff margins over that cutoff's better baseline, the
    aims judged on those means, and every cutoff's own entry under ``per_cutoff``.

    A cutoff where the product could not train while a baseline could is counted in
    ``product_failed_cutoffs``, and the AUC aim then fails: a product that trains less often than a
    plain baseline does not match it."""
    both = [e for e in entries if e.get("product", {}).get("roc_auc") is not None]
    failed = [e for e in entries if e.get("product", {}).get("roc_auc") is None
              and any(e.get(b, {}).get("roc_auc") is not None for b in ("logistic", "lightgbm"))]
    out: dict[str, Any] = {
        "test_cutoffs": [e["test_cutoff"] for e in entries],
        "scored_cutoffs": [e["test_cutoff"] for e in both],
        "product_failed_cutoffs": [e["test_cutoff"] for e in failed],
        "test_rows": sum(e.get("test_rows", 0) for e in both),
        "test_positives": sum(e.get("test_positives", 0) for e in both),
        "per_cutoff": entries,
    }
    if not both:
        errors = [e.get("product", {}).get("error") or e.get("error") for e in entries]
        out["product"] = {"error": next((x for x in errors if x), "no test cutoff could be scored")}
        out["error"] = out["product"]["error"]
        for name in ("logistic", "lightgbm"):
            scored = [e[name] for e in entries if e.get(name, {}).get("roc_auc") is not None]
            if scored:
                out[name] = _mean_metrics(scored)
        _comparisons(out)
        return out
    for name in MODELS:
        scored = [e[name] for e in both if e.get(name, {}).get("roc_auc") is not None]
        if scored:
            out[name] = _mean_metrics(scored)
    _comparisons(out)
    out["margin_over_best_baseline"] = _mean([e.get("margin_over_best_baseline") for e in both])
    out["margins_per_cutoff"] = [e.get("margin_over_best_baseline") for e in both]
    out["gap_to_truth"] = _mean([e.get("gap_to_truth") for e in both]) if "truth" in out else None
    # Per-cutoff positives decide the ECE limit (a cutoff's own sample is what the ECE is noisy over).
    mean_positives = out["test_positives"] / len(both)
    limit = ECE_AIM_FEW_POSITIVES if mean_positives < FEW_POSITIVES else ECE_AIM
    margin, ece = out["margin_over_best_baseline"], out["product"].get("ece")
    out["aims"] = {
        "auc_at_least_best_baseline": None if margin is None else bool(margin >= 0 and not failed),
        "ece_limit": limit,
        "ece_within_limit": None if ece is None else bool(ece <= limit),
    }
    if by_transition:
        out["per_stage"] = _combine_stages([e["per_stage"] for e in both if "per_stage" in e])
    return out


def _mean_metrics(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k in metrics[0] if k != "error"]
    return {k: (sum(m.get(k) or 0 for m in metrics) if k in _SUMMED else _mean([m.get(k) for m in metrics]))
            for k in keys}


def _combine_stages(per_cutoff: list[dict[str, Any]]) -> dict[str, Any]:
    """Per stage: rows and positives summed over the cutoffs, each model's metrics averaged."""
    out: dict[str, Any] = {}
    for stages in per_cutoff:
        for stage, part in stages.items():
            slot = out.setdefault(stage, {"rows": 0, "positives": 0, "cutoffs": 0, "_models": {}})
            slot["rows"] += part["rows"]
            slot["positives"] += part["positives"]
            slot["cutoffs"] += 1
            for model, m in part.items():
                if isinstance(m, dict):
                    slot["_models"].setdefault(model, []).append(m)
    for slot in out.values():
        for model, ms in slot.pop("_models").items():
            slot[model] = {k: _mean([m.get(k) for m in ms]) for k in ms[0]}
            slot[model]["worst_ece_vs_truth"] = max(
                (m["ece_vs_truth"] for m in ms if m.get("ece_vs_truth") is not None), default=None)
    return out


def _comparisons(entry: dict[str, Any]) -> None:
    """Margin over the better baseline, gap to the truth, and the aims, from the entry's metrics."""
    product = entry.get("product", {}).get("roc_auc")
    baseline_aucs = [entry.get(b, {}).get("roc_auc") for b in ("logistic", "lightgbm")]
    baseline_aucs = [a for a in baseline_aucs if a is not None]
    best = max(baseline_aucs) if baseline_aucs else None
    entry["best_baseline_roc_auc"] = best
    entry["margin_over_best_baseline"] = _num(product - best) if product is not None and best is not None else None
    truth = entry.get("truth", {}).get("roc_auc")
    entry["gap_to_truth"] = _num(truth - product) if truth is not None and product is not None else None
    ece = entry.get("product", {}).get("ece")
    limit = ECE_AIM_FEW_POSITIVES if entry.get("test_positives", 0) < FEW_POSITIVES else ECE_AIM
    entry["aims"] = {
        "auc_at_least_best_baseline": None if entry["margin_over_best_baseline"] is None
        else bool(entry["margin_over_best_baseline"] >= 0),
        "ece_limit": limit,
        "ece_within_limit": None if ece is None else bool(ece <= limit),
    }


def ece_vs_truth(p: np.ndarray, p_truth: np.ndarray) -> float | None:
    """ECE with the true probabilities in place of the outcomes: the same bins of ``p``, but each bin's
    mean true probability instead of its observed rate. Label noise is gone, so this is the
    calibration a model has, not the sampling noise of a few hundred outcomes (on a stage's slice the
    usual ECE of the truth itself is often 0.03-0.04); a model equal to the truth scores 0."""
    from funnelcast.training.metrics import expected_calibration_error

    keep = ~np.isnan(p_truth) & ~np.isnan(p)
    return _num(expected_calibration_error(p_truth[keep], p[keep])) if keep.any() else None


def _per_stage(test: pd.DataFrame, y: np.ndarray, probabilities: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per stage at the cutoff: rows, positives, and each model's ROC-AUC and ECE on that stage's rows
    (with a truth: the ECE against it too, :func:`ece_vs_truth`)."""
    stage = test["stage"].astype(str).to_numpy()
    truth = probabilities.get("truth")
    out: dict[str, Any] = {}
    for name in pd.unique(stage):
        mask = stage == name
        part: dict[str, Any] = {"rows": int(mask.sum()), "positives": int(y[mask].sum())}
        for model, p in probabilities.items():
            keep = mask & ~np.isnan(p)
            if keep.any():
                m = metrics_of(y[keep], p[keep], STAGE_METRICS)
                part[model] = {"roc_auc": m["roc_auc"], "ece": m["ece"]}
                if truth is not None and model != "truth":
                    part[model]["ece_vs_truth"] = ece_vs_truth(p[keep], truth[keep])
        out[str(name)] = part
    return out


# ---- the report --------------------------------------------------------------------------------

def _fmt(x: Any, digits: int = 3, signed: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def table_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (data set, target): what the table shows and the aims check reads."""
    rows = []
    for name, record in results.items():
        if "error" in record:
            rows.append({"dataset": name, "target": "–", "error": record["error"]})
            continue
        for target, e in record["targets"].items():
            if e.get("kind") == "value":  # its own table (quality/value.py)
                continue
            product = e.get("product", {})
            rows.append({
                "dataset": name, "target": target, "error": e.get("error") or product.get("error"),
                "cutoffs": _cutoff_count(e), "failed_cutoffs": e.get("product_failed_cutoffs") or [],
                "rows": e.get("test_rows"), "positives": e.get("test_positives"),
                "auc": product.get("roc_auc"), "pr_auc": product.get("pr_auc"), "ece": product.get("ece"),
                "log_loss": product.get("log_loss"),
                "lr_auc": e.get("logistic", {}).get("roc_auc"), "lgbm_auc": e.get("lightgbm", {}).get("roc_auc"),
                "margin": e.get("margin_over_best_baseline"), "truth_auc": e.get("truth", {}).get("roc_auc"),
                "gap": e.get("gap_to_truth"), "aims": e.get("aims", {}),
            })
    return rows


def _cutoff_count(e: dict[str, Any]) -> str | None:
    """"scored/asked" test cutoffs of a target's record, e.g. "3/3"; None for an old single-cutoff record."""
    if "test_cutoffs" not in e or not isinstance(e["test_cutoffs"], list):
        return None
    return f"{len(e.get('scored_cutoffs', []))}/{len(e['test_cutoffs'])}"


def aims_summary(results: dict[str, Any]) -> dict[str, Any]:
    """Per row whether the aims hold, and the suite's average margin over the better baseline."""
    rows = [r for r in table_rows(results) if r.get("margin") is not None]
    margins = [r["margin"] for r in rows]
    mean = float(np.mean(margins)) if margins else None
    return {
        "rows": [{"dataset": r["dataset"], "target": r["target"], **r["aims"]} for r in rows],
        "auc_at_least_best_baseline": sum(bool(r["aims"].get("auc_at_least_best_baseline")) for r in rows),
        "ece_within_limit": sum(bool(r["aims"].get("ece_within_limit")) for r in rows),
        "compared_rows": len(rows),
        "mean_margin_over_best_baseline": _num(mean) if mean is not None else None,
        "mean_margin_aim": MARGIN_AIM,
        "mean_margin_met": None if mean is None else bool(mean >= MARGIN_AIM),
    }


def render(results: dict[str, Any], console) -> None:
    """The results table and the aims check, with rich."""
    from rich.table import Table

    table = Table(title="funnelcast quality suite: product vs independent baselines, mean over held-out later cutoffs")
    for col, justify in (("data set", "left"), ("target", "left"), ("cutoffs", "right"), ("rows / pos", "right"), ("AUC", "right"),
                         ("PR-AUC", "right"), ("ECE", "right"), ("log loss", "right"), ("LR AUC", "right"),
                         ("LGBM AUC", "right"), ("margin", "right"), ("truth AUC", "right"), ("gap", "right")):
        table.add_column(col, justify=justify)
    notes = []
    for r in table_rows(results):
        pos = "–" if r.get("rows") is None else f"{r['rows']:,} / {r['positives']:,}"
        if r.get("error") and r.get("auc") is None:
            notes.append(f"{r['dataset']} {r['target']}: {r['error']}")
        if r.get("failed_cutoffs") and r.get("auc") is not None:
            notes.append(f"{r['dataset']} {r['target']}: the product could not train at "
                         f"{', '.join(c[:10] for c in r['failed_cutoffs'])} where a baseline could")
        if r["target"] == "–":
            table.add_row(r["dataset"], "–", "–", "–", *(["[red]error[/red]"] + ["–"] * 8))
            continue
        margin = r.get("margin")
        margin_text = _fmt(margin, signed=True)
        if margin is not None:
            margin_text = f"[{'green' if margin >= 0 else 'red'}]{margin_text}[/]"
        auc = "[red]no model[/red]" if r.get("auc") is None and r.get("error") else _fmt(r.get("auc"))
        table.add_row(r["dataset"], r["target"], r.get("cutoffs") or "–", pos, auc, _fmt(r.get("pr_auc")), _fmt(r.get("ece"), 4),
                      _fmt(r.get("log_loss")), _fmt(r.get("lr_auc")), _fmt(r.get("lgbm_auc")), margin_text,
                      _fmt(r.get("truth_auc")), _fmt(r.get("gap"), signed=True))
    console.print(table)
    for note in notes:
        console.print(f"[yellow]•[/yellow] {note}", soft_wrap=True)
    aims = aims_summary(results)
    console.print("\n[bold]Aims[/bold]")
    for r in aims["rows"]:
        auc_ok, ece_ok = r.get("auc_at_least_best_baseline"), r.get("ece_within_limit")
        console.print(f"  {r['dataset']:<14} {r['target']:<8} AUC ≥ better baseline: {_mark(auc_ok)}   "
                      f"ECE ≤ {r['ece_limit']:.2f}: {_mark(ece_ok)}")
    mean = aims["mean_margin_over_best_baseline"]
    console.print(f"  average margin over the better baseline: {_fmt(mean, signed=True)} "
                  f"(aim ≥ {MARGIN_AIM:+.2f}): {_mark(aims['mean_margin_met'])}")
    _render_value(results, console)


def _render_value(results: dict[str, Any], console) -> None:
    """The value target's table (quality/value.py): Gini and signed total error of every model."""
    from rich.table import Table

    from quality.value import TOTAL_AIM, VALUE_MODELS, value_table_rows

    rows = value_table_rows(results)
    if not rows:
        return
    table = Table(title="value: expected spend in the label window, mean over held-out later cutoffs "
                        "(normalised Gini / signed error of the total)")
    for col in ("data set", "cutoffs", "rows", *VALUE_MODELS, "Gini margin", f"total within ±{TOTAL_AIM:.0%}"):
        table.add_column(col, justify="left" if col == "data set" else "right")
    for r in rows:
        if r.get("error"):
            table.add_row(r["dataset"], r["cutoffs"], "–", f"[yellow]{r['error'][:60]}[/yellow]", *["–"] * (len(VALUE_MODELS) + 1))
            continue
        cells = [f"{_fmt(r[f'{m}_gini'])} / {_fmt(r[f'{m}_total_error'], 2, signed=True)}" for m in VALUE_MODELS]
        margin = r.get("margin")
        margin_text = _fmt(margin, signed=True)
        if margin is not None:
            margin_text = f"[{'green' if margin >= 0 else 'red'}]{margin_text}[/]"
        table.add_row(r["dataset"], r["cutoffs"], f"{r['rows']:,}", *cells, margin_text,
                      _mark(r["aims"].get("total_within_aim")))
    console.print(table)
    outreach = [(r["dataset"], r["outreach"]) for r in rows if r.get("outreach")]
    if outreach:
        from quality.value import OUTREACH_SHARES, RANKINGS

        table = Table(title="outreach: share of the lost spend (max(0, spend before − after), label window) held by "
                            "the top of each ranking of the churn-scored buyers")
        table.add_column("data set")
        table.add_column("buyers", justify="right")
        for name in RANKINGS:
            table.add_column(f"{name} top {'/'.join(str(k) for k in OUTREACH_SHARES)} %", justify="right")
        for dataset, o in outreach:
            table.add_row(dataset, f"{o['rows']:,}", *[" / ".join(_fmt(o.get(f"{name}_top_{k}pct_lost_share"))
                                                               for k in OUTREACH_SHARES) for name in RANKINGS])
        console.print(table)


def _mark(ok: bool | None) -> str:
    return "–" if ok is None else ("[green]yes[/green]" if ok else "[red]no[/red]")


# ---- main --------------------------------------------------------------------------------------

def _default_threads() -> int:
    try:
        return int(os.environ.get("FUNNELCAST_THREADS", "0") or 0)
    except ValueError:
        return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from quality.suite import DATASETS

    parser = argparse.ArgumentParser(prog="python -m quality.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=",".join(DATASETS),
                        help=f"comma-separated data sets (default: all of {', '.join(DATASETS)})")
    parser.add_argument("--quick", action="store_true", help="smaller generated data sets (a smoke run)")
    parser.add_argument("--out", default="quality-results", help="folder for quality.json and the product's reports")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a funnel config setting of every data set (dotted key, YAML value); repeatable")
    parser.add_argument("--threads", type=int, default=_default_threads(),
                        help="threads for the product and the LightGBM baseline (default $FUNNELCAST_THREADS, else all)")
    parser.add_argument("--test-cutoffs", type=int, default=TEST_CUTOFFS, metavar="N",
                        help=f"score every target at its latest N labelled cutoffs, each with a model trained on the "
                             f"rows before it, and average (default {TEST_CUTOFFS})")
    parser.add_argument("--json", action="store_true", help="print quality.json to stdout (the table goes to stderr)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = [n for n in names if n not in DATASETS]
    if unknown or not names:
        parser.error(f"unknown data set(s) {unknown}; data sets are {', '.join(DATASETS)}")
    args.datasets = names
    if args.test_cutoffs < 1:
        parser.error("--test-cutoffs must be at least 1")
    try:
        args.parsed_sets = parse_sets(args.sets)
    except SetError as exc:
        parser.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from funnelcast.features.errors import FunnelcastError
    from quality.suite import DATASETS

    args = parse_args(argv)
    console = Console(stderr=args.json)
    if not console.is_terminal:  # a log file or CI: wide enough for every column, not 80 characters
        console = Console(stderr=args.json, width=200)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # MLflow's chatter (INFO logs, artifact progress bars) would bury the suite's own progress.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    started_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    results: dict[str, Any] = {}
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.fields[dataset]}[/bold]"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(), TextColumn("{task.description}"),
                  console=console, transient=False) as progress:
        overall = progress.add_task("", total=len(args.datasets), dataset="quality suite")
        for name in args.datasets:
            progress.update(overall, description=name)
            task = progress.add_task("generating / loading", total=None, dataset=name)

            def say(msg: str, task=task) -> None:
                progress.update(task, description=msg[:100])

            t0 = time.perf_counter()
            try:
                ds = DATASETS[name](args.quick)
                loaded = time.perf_counter() - t0
                record = evaluate_dataset(ds, sets=args.parsed_sets, threads=args.threads, out=out,
                                          test_cutoffs=args.test_cutoffs, say=say)
                record["load_seconds"] = round(loaded, 2)
            except (FunnelcastError, SetError) as exc:
                record = {"error": f"{type(exc).__name__}: {exc}"}
            except Exception as exc:  # noqa: BLE001 - one broken data set must not hide the others
                record = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            record["wall_seconds"] = round(time.perf_counter() - t0, 2)
            results[name] = record
            progress.update(task, total=1, completed=1,
                            description=("[red]failed[/red]: " + record["error"][:80]) if "error" in record
                            else f"done in {record['wall_seconds']:.0f} s")
            progress.advance(overall)
    doc = {
        "started_at": started_at,
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick, "threads": args.threads, "test_cutoffs": args.test_cutoffs, "sets": args.sets, "datasets": results,
        "aims": aims_summary(results),
    }
    doc = _clean(doc)
    path = out / "quality.json"
    path.write_text(json.dumps(doc, indent=2, default=str, allow_nan=False))
    render(results, console)
    console.print(f"\nwrote {path}")
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=2, default=str, allow_nan=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The training job: backtest every target, log everything to MLflow, register the models and
decide champion or challenger. ``funnelcast train`` and ``make demo`` are thin shells over :func:`train`.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from funnelcast.features.errors import DestinationError, TrainingDataError
from funnelcast.features.events import frames_hash
from funnelcast.features.funnel import FunnelConfig
from funnelcast.features.model_input import SchemaError
from funnelcast.features.snapshots import TrainingSet
from funnelcast.features.targets import TARGETS
from funnelcast.training.backtest import MODELS, SELECTED, TargetBacktest, latest_test_rows, readiness_problem, run_backtest
from funnelcast.training.errors import TrackingError
from funnelcast.training.metrics import LOWER_IS_BETTER, binary_metrics, value_metrics
from funnelcast.training.splits import plan_backtest
from funnelcast.training.value import CHAMPION_METRIC as VALUE_CHAMPION_METRIC

HEADLINE = ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "top_decile_lift")


@dataclass
class Decision:
    """Champion or challenger, and why, with the scores compared."""
    alias: str
    reason: str
    new_score: float | None = None
    champion_version: str | None = None
    champion_score: float | None = None


@dataclass
class TargetResult:
    """What training one target produced: its backtest, MLflow run, registered version, decision and report."""
    backtest: TargetBacktest
    run_id: str
    model_name: str
    version: str
    decision: Decision
    report: Path
    tuned: dict[str, Any] | None = None
    btyd: dict[str, Any] | None = None
    """The value target: the BTYD baselines at its latest test cutoff (:func:`.value.btyd_comparison`)."""

    @property
    def model(self):
        """The registered model: the selected learner refitted on every labelled cutoff."""
        return self.backtest.model


@dataclass
class TrainingResult:
    """What :func:`train` produced for every target, and the targets it skipped (with why)."""
    targets: dict[str, TargetResult]
    skipped: dict[str, str]
    warnings: list[str]
    tracking_uri: str
    parent_run_id: str
    data: dict[str, Any]
    report_dir: Path

    @cached_property
    def entries(self) -> dict[str, dict[str, Any]]:
        """One entry per target and per conversion transition (what ``funnelcast train --json`` prints)."""
        return _entries(self)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """The entries, JSON-ready: what ``funnelcast train --json`` prints."""
        return self.entries


def data_summary(table: pd.DataFrame, events: pd.DataFrame | None = None, customers: pd.DataFrame | None = None) -> dict[str, Any]:
    """Rows, customers, cutoffs, events, label rates and an input hash of a training run's data (logged to MLflow)."""
    out: dict[str, Any] = {
        "training_rows": int(len(table)),
        "customers": int(table["customer_id"].nunique()),
        "cutoffs": int(table["cutoff"].nunique()),
        "first_cutoff": str(table["cutoff"].min()),
        "last_cutoff": str(table["cutoff"].max()),
        "input_hash": frames_hash(events, customers) if events is not None else frames_hash(table),
    }
    if events is not None:
        out.update(events=int(len(events)), first_event=str(events["timestamp"].min()), last_event=str(events["timestamp"].max()))
    for target, spec in TARGETS.items():
        y = table[spec.label].dropna().astype(float) > 0  # value: the share of rows with spend
        out[f"{target}_labelled_rows"] = int(len(y))
        out[f"{target}_positive_rate"] = float(y.mean()) if len(y) else float("nan")
    return out


def decide(new_score: float, champion_score: float | None, metric: str, tolerance: float, force: bool,
           champion_version: str | None = None, problem: str | None = None, how: str = "on the same latest fold") -> Decision:
    """Champion unless worse than the current champion by more than ``tolerance``, compared as ``how`` says."""
    if force:
        return Decision("champion", "promoted with --force", new_score, champion_version, champion_score)
    if champion_version is None:
        return Decision("champion", "no champion yet", new_score)
    if problem is not None:
        return Decision("challenger", f"the champion (version {champion_version}) could not be compared: {problem}; "
                        "use --force to promote", new_score, champion_version)
    worse_by = (new_score - champion_score) if metric in LOWER_IS_BETTER else (champion_score - new_score)
    verdict = (f"test {metric} {new_score:.4f} vs champion version {champion_version}'s {champion_score:.4f} {how} "
               f"(tolerance {tolerance})")
    if worse_by > tolerance:
        return Decision("challenger", f"worse than the champion beyond the tolerance: {verdict}", new_score,
                        champion_version, champion_score)
    return Decision("champion", f"not worse than the champion beyond the tolerance: {verdict}", new_score,
                    champion_version, champion_score)


def train(
    training_set: TrainingSet,
    config: FunnelConfig,
    *,
    truth: pd.DataFrame | None = None,
    events: pd.DataFrame | None = None,
    customers: pd.DataFrame | None = None,
    tracking_uri: str | None = None,
    home: str | Path | None = None,
    report_dir: str | Path | None = None,
    force: bool = False,
    tune_trials: int = 0,
    threads: int = 0,
    progress: Callable[[str], None] | None = None,
) -> TrainingResult:
    """Train, evaluate, log and register every configured target of ``training_set``
    (:func:`funnelcast.features.snapshots.build_training_set`).

    ``truth`` (the simulator's) adds the oracle; ``events`` and ``customers`` are hashed into the run's
    data summary; ``tracking_uri``/``home`` choose the MLflow store (:func:`tracking.connect`);
    ``threads`` sets LightGBM's threads (0: ``$FUNNELCAST_THREADS``, else every core).
    """
    from funnelcast.training import report, tracking

    say = progress or (lambda message: None)
    table = training_set.frame
    if len(table) == 0:
        raise TrainingDataError("the training set is empty: no (customer, cutoff) row has a known label")
    wanted = [t for t in TARGETS if t in config.training.targets]
    skipped = {t: p for t in wanted if (p := readiness_problem(training_set, t, config)) is not None}
    targets = [t for t in wanted if t not in skipped]
    if not targets:
        raise TrainingDataError("no target has enough labelled data to train: " + "; ".join(skipped.values()))
    warnings = [f"skipped {p}" for p in skipped.values()]
    summary = data_summary(table, events, customers)
    uri = tracking.connect(tracking_uri, home)
    out_dir = Path(report_dir) if report_dir is not None else Path(tempfile.mkdtemp(prefix="funnelcast-report-"))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DestinationError(f"{out_dir}: the report folder cannot be made: {exc}") from None
    settings = config.training
    results: dict[str, TargetResult] = {}
    trained_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    with tracking.run("train", tags={"funnelcast.job": "train", "funnel": config.name}) as parent_id:
        tracking.log_dict(config.model_dump(mode="json"), "funnel_config.json")
        tracking.log_dict(summary, "data_summary.json")
        tracking.log_params({"funnel": config.name, "targets": ",".join(targets), "folds": settings.folds,
                             "seed": settings.seed, "input_hash": summary["input_hash"], "training_rows": len(table)})
        for target in targets:
            if not TARGETS[target].is_probability:
                with tracking.run(target, nested=True, tags={"funnelcast.target": target}) as run_id:
                    results[target] = _train_value(training_set, config, run_id, summary, trained_at, out_dir, events,
                                                   force, threads, say, warnings)
                continue
            with tracking.run(target, nested=True, tags={"funnelcast.target": target}) as run_id:
                params = dict(settings.lightgbm)
                tuned = None
                if tune_trials > 0:
                    params, tuned = _tune(training_set, target, config, params, tune_trials, threads, say)
                backtest = run_backtest(training_set, target, config, truth=truth, params=params, progress=say,
                                        threads=threads)
                warnings.extend(backtest.warnings)
                name = f"{settings.model_name_prefix}-{target}"
                decision = _compare_with_champion(training_set, target, backtest, name, config, force)
                say(f"{target}: logging to MLflow and registering {name}")
                # The model goes first: MLflow links every metric already in the run to a newly logged
                # model, one query per metric, which costs seconds with a backtest's thousand metrics.
                version = tracking.log_model(backtest.model, training_set.rows(target), name, tags={
                    "target": target, "trained_at": trained_at, "test_cutoff": str(backtest.latest.fold.test),
                    "input_hash": summary["input_hash"], "run_id": run_id, "config_hash": backtest.model.config_hash_,
                    "learner": backtest.learner, "estimate": backtest.kind,
                    "last_training_cutoff": backtest.refit["last_training_cutoff"],
                    **{f"test_{m}": f"{backtest.latest.metrics[SELECTED][m]:.6f}" for m in HEADLINE},
                })
                tracking.set_alias(name, decision.alias, version.version)
                _log_backtest(backtest, config, target, params, summary)
                images = _plots(backtest, training_set, target, out_dir)
                tracking.set_tags({"registered_model": name, "version": version.version, "alias": decision.alias,
                                   "decision": decision.reason})
                report_path = report.write_report(
                    backtest, out_dir / f"report_{target}.html",
                    title=f"funnelcast {target} model — {name} version {version.version} ({decision.alias})",
                    images=images, data_summary=summary,
                    decision={"alias": decision.alias, "version": version.version, "reason": decision.reason},
                    transitions=backtest.latest.transitions or None,
                )
                tracking.log_artifact(report_path, "report")
                for path in images.values():
                    tracking.log_artifact(path, "report")
                results[target] = TargetResult(backtest, run_id, name, version.version, decision, report_path, tuned)
    return TrainingResult(results, skipped, warnings, uri, parent_id, summary, out_dir)


def _train_value(training_set, config, run_id, summary, trained_at, out_dir, events, force, threads, say,
                 warnings) -> TargetResult:
    """The value target (:mod:`.value`): backtest, BTYD baselines at the latest test cutoff (with the
    events), registration with its own champion gate (normalised Gini), report."""
    from funnelcast.training import report, tracking
    from funnelcast.training.value import CHAMPION_METRIC, VALUE_COLUMNS, btyd_comparison, run_value_backtest

    settings = config.training
    backtest = run_value_backtest(training_set, config, progress=say, threads=threads)
    warnings.extend(backtest.warnings)
    btyd = None
    if events is not None:
        say("value: fitting the BTYD baselines (BG/NBD, MBG/NBD, Pareto/NBD, Gamma-Gamma)")
        btyd = btyd_comparison(events, config, backtest.latest.scores, backtest.latest.fold.test)
    name = f"{settings.model_name_prefix}-value"
    decision = _compare_with_champion(training_set, "value", backtest, name, config, force)
    say(f"value: logging to MLflow and registering {name}")
    latest = backtest.latest.metrics[SELECTED]
    version = tracking.log_model(backtest.model, training_set.rows("value"), name, tags={
        "target": "value", "trained_at": trained_at, "test_cutoff": str(backtest.latest.fold.test),
        "input_hash": summary["input_hash"], "run_id": run_id, "config_hash": backtest.model.config_hash_,
        "learner": backtest.learner, "estimate": backtest.kind,
        "last_training_cutoff": backtest.refit["last_training_cutoff"],
        **{f"test_{m}": f"{latest[m]:.6f}" for m in VALUE_COLUMNS},
    })
    tracking.set_alias(name, decision.alias, version.version)
    tracking.log_params({
        "target": "value", "label_days": config.value.label_days, "horizon_days": config.value.horizon_days,
        "learner": backtest.learner, "estimate": backtest.kind, "folds": len(backtest.folds),
        "features": len(backtest.model.feature_names_), "refit_rounds": backtest.refit["rounds"],
        "refit_rows": backtest.refit["rows"], "champion_metric": CHAMPION_METRIC,
        **{f"decay_{k}": round(v, 6) for k, v in backtest.refit["decay"].items()},
        **{f"lgbm_{k}": v for k, v in backtest.model.params_.items()},
    })
    metrics: dict[str, float] = {**{f"test_{m}": latest[m] for m in VALUE_COLUMNS}, **_backtest_metrics(backtest)}
    if btyd is not None:
        for model_name, values in btyd["metrics"].items():
            if model_name != SELECTED:
                metrics.update({tracking.metric_key("btyd", model_name, m): v for m, v in values.items()})
        tracking.log_dict(btyd, "value_btyd.json")
    tracking.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
    tracking.log_dict({"estimate": backtest.kind, "notes": backtest.notes, "refit": backtest.refit,
                       "folds": [fr.fold.describe() for fr in backtest.folds], "label_rows": backtest.rows,
                       "rows_with_spend": backtest.positives, **summary}, "value_data_summary.json")
    images = {"value ranking (Lorenz)": report.plot_lorenz(backtest.latest.scores, out_dir / "value_lorenz.png"),
              "feature importance": report.plot_feature_importance(backtest.model, out_dir / "value_feature_importance.png")}
    tracking.set_tags({"registered_model": name, "version": version.version, "alias": decision.alias,
                       "decision": decision.reason})
    report_path = report.write_value_report(
        backtest, out_dir / "report_value.html",
        title=f"funnelcast value model — {name} version {version.version} ({decision.alias})", images=images,
        data_summary=summary, decision={"alias": decision.alias, "version": version.version, "reason": decision.reason},
        btyd=btyd)
    tracking.log_artifact(report_path, "report")
    for path in images.values():
        tracking.log_artifact(path, "report")
    return TargetResult(backtest, run_id, name, version.version, decision, report_path, btyd=btyd)


def _tune(training_set, target, config, params, trials, threads, say):
    from funnelcast.training import tracking
    from funnelcast.training.tuning import tune

    settings = config.training
    rows = training_set.rows(target)
    fold = plan_backtest(rows["cutoff"].unique(), TARGETS[target].horizon_days(config), settings.folds,
                         settings.validation_cutoffs).folds[-1]
    train_rows, valid_rows, _ = fold.select(rows)

    def on_trial(number, trial_params, value):
        say(f"{target}: tuning trial {number + 1}/{trials}, validation log loss {value:.4f}")
        with tracking.run(f"{target}-trial-{number}", nested=True, tags={"funnelcast.trial": str(number)}):
            tracking.log_params(trial_params)
            tracking.log_metrics({"valid_log_loss": value})

    best, value = tune(target, train_rows, valid_rows, training_set.model_input, params, trials, seed=settings.seed,
                       early_stopping_rounds=settings.early_stopping_rounds, threads=threads, on_trial=on_trial)
    tracking.log_params({f"tuned_{k}": v for k, v in best.items()})
    tracking.log_metrics({"tuning/best_valid_log_loss": value})
    return best, {"trials": trials, "best_valid_log_loss": value, "params": best}


def _compare_with_champion(training_set, target, backtest, name, config, force) -> Decision:
    """Compare like with like, and decide the new version's alias.

    The new version is a refit on every labelled cutoff, so no cutoff is unseen by it; what can be
    compared fairly is the *procedure*. Where the backtest tested cutoffs later than the champion's
    last training cutoff, the champion is scored on those rows beside the backtest's out-of-fold
    scores there: both are predictions of cutoffs neither model trained on. Otherwise (the champion
    trained on the same or later data) the two runs' backtests are compared on the same latest test
    cutoff, from the champion's recorded test score.
    """
    from funnelcast.training import tracking

    settings = config.training
    value = not TARGETS[target].is_probability
    metric = VALUE_CHAMPION_METRIC if value else settings.champion_metric
    measure = value_metrics if value else binary_metrics
    new_score = backtest.latest.metrics[SELECTED][metric]
    champion_version = tracking.alias_version(name, tracking.CHAMPION)
    if champion_version is None or force:
        return decide(new_score, None, metric, settings.champion_tolerance, force, champion_version)
    try:
        version, champion = tracking.load_model(name, tracking.CHAMPION)
    except (SchemaError, TrackingError) as exc:
        return decide(new_score, None, metric, settings.champion_tolerance, False, champion_version, problem=str(exc))
    seen_until = champion.metadata_.get("refit", {}).get("last_training_cutoff")
    folds = [f for f in backtest.folds if not f.fold.in_time]
    if seen_until is not None:
        unseen = [f for f in folds if f.fold.test > pd.Timestamp(seen_until)]
    else:  # a model from before refits: it was trained on cutoffs before its own backtest's latest test cutoff
        unseen = folds[-1:]
    if unseen:
        rows = training_set.rows(target)
        test = rows[rows["cutoff"].isin([f.fold.test for f in unseen])]
        try:
            p = champion.predict_label(test) if value else champion.predict_proba(test, label_window=True)
        except SchemaError as exc:
            return decide(new_score, None, metric, settings.champion_tolerance, False, champion_version, problem=str(exc))
        scores = pd.concat([f.scores for f in unseen], ignore_index=True)
        new_score = measure(scores["label"].to_numpy(), scores[f"p_{SELECTED}"].to_numpy())[metric]
        champion_score = measure(test[TARGETS[target].label].to_numpy(dtype=float), p)[metric]
        how = (f"on the {len(test):,} rows of {len(unseen)} test cutoff{'s' if len(unseen) > 1 else ''} "
               f"({', '.join(f'{f.fold.test:%Y-%m-%d}' for f in unseen)}) that neither the champion nor this backtest's "
               "fold models trained on")
        return decide(new_score, champion_score, metric, settings.champion_tolerance, False, champion_version, how=how)
    tags = tracking.version_info(name, version)
    recorded = tags.get(f"test_{metric}")
    if recorded is None or tags.get("test_cutoff") != str(backtest.latest.fold.test):
        return decide(new_score, None, metric, settings.champion_tolerance, False, champion_version,
                      problem=f"it trained on cutoffs up to {seen_until}, as late as this data's latest test cutoff, and its "
                              "backtest tested another cutoff, so nothing compares like with like")
    how = (f"both runs' backtests on the same latest test cutoff {backtest.latest.fold.test:%Y-%m-%d} (the champion "
           "trained on the same or later data, so no cutoff is unseen by it)")
    return decide(new_score, float(recorded), metric, settings.champion_tolerance, False, champion_version, how=how)


def _log_backtest(backtest: TargetBacktest, config: FunnelConfig, target: str, params: dict, summary: dict) -> None:
    from funnelcast.training import tracking

    model = backtest.model
    tracking.log_params({
        "target": target, "horizon_days": TARGETS[target].answer_days(config),
        "label_days": TARGETS[target].horizon_days(config), "calibration": config.training.calibration,
        "class_weight": config.training.class_weight or "none", "seed": config.training.seed,
        "folds": len(backtest.folds), "validation_cutoffs": config.training.validation_cutoffs,
        "features": len(model.feature_names_), "learner": backtest.learner, "estimate": backtest.kind,
        "selection_metric": backtest.selection_metric, "refit_rounds": backtest.refit["rounds"],
        "refit_rows": backtest.refit["rows"], "refit_cutoffs": backtest.refit["cutoffs"],
        "calibration_rows": backtest.refit["calibration_rows"],
        "seasonal_shift": config.training.seasonal_shift, "seasonal_cells": backtest.refit.get("seasonal_cells"),
        **{f"lgbm_{k}": v for k, v in params.items()},
    })
    if backtest.notes:
        tracking.set_tags({"funnelcast.estimate_notes": " | ".join(backtest.notes)[:5000]})
    metrics: dict[str, float] = {f"test_{m}": backtest.latest.metrics[SELECTED][m] for m in HEADLINE}
    metrics.update(_backtest_metrics(backtest))
    for learner, value in backtest.selection.items():
        metrics[tracking.metric_key("selection", learner, backtest.selection_metric)] = value
    if model.horizon_map_ is not None:
        horizon_map = model.horizon_map_
        metrics["horizon_map/kappa"] = horizon_map.kappa
        metrics["horizon_map/rows"] = horizon_map.rows
        metrics.update({tracking.metric_key("horizon_map", k): v for k, v in horizon_map.fit.items()})
    tracking.log_metrics(metrics)
    tracking.log_dict({"estimate": backtest.kind, "notes": backtest.notes, "learner": backtest.learner,
                       "selection": backtest.selection, "refit": backtest.refit,
                       "folds": [fr.fold.describe() for fr in backtest.folds],
                       "label_rows": backtest.rows, "label_positives": backtest.positives, **summary},
                      f"{target}_data_summary.json")


def _backtest_metrics(backtest) -> dict[str, float]:
    """Every model's metrics of a backtest (either kind) as MLflow keys: ``test/<model>/<metric>`` (the
    latest fold), ``fold_<i>/<model>/<metric>``, per stage transition ``fold_<i>|test/<transition>/...``,
    and ``backtest/<model>/<metric>_mean|_std``."""
    from funnelcast.training import tracking

    parts = [("test", backtest.latest), *((f"fold_{fr.fold.index}", fr) for fr in backtest.folds)]
    metrics: dict[str, float] = {}
    for prefix, fr in parts:
        for name, values in fr.metrics.items():
            metrics.update({tracking.metric_key(prefix, name, m): v for m, v in values.items()})
        for transition, per_model in getattr(fr, "transitions", {}).items():
            for name, values in per_model.items():
                metrics.update({tracking.metric_key(prefix, transition, name, m): v for m, v in values.items()})
    for name, values in backtest.summary().items():
        metrics.update({tracking.metric_key("backtest", name, m): v for m, v in values.items()})
    return metrics


def _plots(backtest: TargetBacktest, training_set: TrainingSet, target: str, out_dir: Path) -> dict[str, Path]:
    from funnelcast.training import report

    scores = backtest.latest.scores
    test = latest_test_rows(training_set, backtest)
    return {
        "calibration": report.plot_calibration(scores, out_dir / f"{target}_calibration.png"),
        "gains": report.plot_gains(scores, out_dir / f"{target}_gains.png"),
        "feature_importance": report.plot_feature_importance(backtest.model, out_dir / f"{target}_feature_importance.png"),
        "shap_summary": report.plot_shap_summary(backtest.model, test, out_dir / f"{target}_shap_summary.png", max_rows=500),
    }


def _entries(result: TrainingResult) -> dict[str, dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {}
    for target, tr in result.targets.items():
        if not TARGETS[target].is_probability:
            entries[target] = _value_entry(tr)
            continue
        latest = tr.backtest.latest
        common = {
            "mlflow_run_id": tr.run_id, "registered_model": tr.model_name, "model_version": tr.version,
            "alias": tr.decision.alias, "decision": tr.decision.reason, "report": str(tr.report),
            "test_cutoff": str(latest.fold.test), "learner": tr.backtest.learner, "estimate": tr.backtest.kind,
            "estimate_notes": tr.backtest.notes, "refit": tr.backtest.refit,
            "selection": {f"{k}_{tr.backtest.selection_metric}": _num(v) for k, v in tr.backtest.selection.items()},
        }
        entries[target] = {**_metric_entry(latest.metrics), **_backtest_entry(tr.backtest), **common}
        for transition, per_model in latest.transitions.items():
            entries[transition] = {**_metric_entry(per_model), **common}
    for target, problem in result.skipped.items():
        entries[target] = {"skipped": problem}
    return entries


def _value_entry(tr: TargetResult) -> dict[str, Any]:
    from funnelcast.training.value import BASELINES, VALUE_COLUMNS

    backtest = tr.backtest
    latest = backtest.latest.metrics
    out: dict[str, Any] = {f"test_{m}": _num(latest[SELECTED][m]) for m in VALUE_COLUMNS}
    out["test_rows"] = int(latest[SELECTED]["rows"])
    out["test_spenders"] = int(latest[SELECTED]["spenders"])
    for name in BASELINES:
        for m in ("mae", "gini", "top_20pct_share"):
            out[f"{name}_test_{m}"] = _num(latest[name][m])
    for name, values in (tr.btyd or {}).get("metrics", {}).items():
        if name != SELECTED:
            for m in ("mae", "gini", "total_error"):
                out[f"{name}_test_{m}"] = _num(values[m])
    summary = backtest.summary()[SELECTED]
    out["backtest_folds"] = len(backtest.folds)
    for m in ("mae", "gini", "total_error"):
        out[f"backtest_{m}_mean"] = _num(summary[f"{m}_mean"])
    out.update({
        "mlflow_run_id": tr.run_id, "registered_model": tr.model_name, "model_version": tr.version,
        "alias": tr.decision.alias, "decision": tr.decision.reason, "report": str(tr.report),
        "test_cutoff": str(backtest.latest.fold.test), "learner": backtest.learner, "estimate": backtest.kind,
        "estimate_notes": backtest.notes, "refit": backtest.refit,
        "label_days": backtest.refit["label_days"], "horizon_days": backtest.refit["horizon_days"],
    })
    return out


def _metric_entry(per_model: dict[str, dict[str, float]]) -> dict[str, Any]:
    lgbm = per_model[SELECTED]
    out: dict[str, Any] = {f"test_{m}": _num(lgbm[m]) for m in HEADLINE}
    out["test_rows"] = int(lgbm["rows"])
    out["test_positives"] = int(lgbm["positives"])
    for k in (1, 5, 10):
        out[f"test_precision_at_{k}pct"] = _num(lgbm[f"precision_at_{k}pct"])
        out[f"test_recall_at_{k}pct"] = _num(lgbm[f"recall_at_{k}pct"])
    for name in MODELS[1:]:
        if name in per_model:
            out[f"{name}_test_roc_auc"] = _num(per_model[name]["roc_auc"])
            out[f"{name}_test_log_loss"] = _num(per_model[name]["log_loss"])
            out[f"margin_over_{name}_roc_auc"] = _num(lgbm["roc_auc"] - per_model[name]["roc_auc"])
    if "oracle" in per_model:
        for m in HEADLINE:
            out[f"oracle_{m}"] = _num(per_model["oracle"][m])
        out["gap_to_oracle_roc_auc"] = _num(per_model["oracle"]["roc_auc"] - lgbm["roc_auc"])
    if "hidden_state" in per_model:
        out["hidden_state_oracle_roc_auc"] = _num(per_model["hidden_state"]["roc_auc"])
        out["hidden_state_oracle_ece"] = _num(per_model["hidden_state"]["ece"])
    return out


def _backtest_entry(backtest: TargetBacktest) -> dict[str, Any]:
    summary = backtest.summary()[SELECTED]
    out = {"backtest_folds": len(backtest.folds)}
    for m in HEADLINE:
        out[f"backtest_{m}_mean"] = _num(summary[f"{m}_mean"])
        out[f"backtest_{m}_std"] = _num(summary[f"{m}_std"])
    return out


def _num(x: float) -> float | None:
    x = float(x)
    return None if np.isnan(x) else round(x, 6)

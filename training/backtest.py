"""The backtest of one target, and the model it registers.

**The backtest measures the procedure.** On every fold (:func:`~.splits.plan_backtest`: as many
out-of-time folds as the history allows, else an in-time estimate, and always said which), three
learners are fitted on identical rows: LightGBM (early-stopped on the validation cutoffs), the
regularised logistic model on the same inputs, and their blend. Each is calibrated per stage on the
validation cutoffs and scored on the test rows, beside the recency/frequency heuristic and, on
simulated data, the oracle. The learner with the best mean test score over the folds
(``training.champion_metric``) is *selected*; its numbers are reported as ``funnelcast``, and the
report shows all three.

**The registered model is a refit.** A fold's model never saw the last horizons of data (its labels
were still open), and on a short history that is most of it. So the selected learner is fitted again
on every labelled cutoff, with the median of the folds' early-stopped boosting rounds. Its
calibration comes from out-of-fold predictions on the most recent cutoffs: the fold models' scores
on their own test cutoffs (time-ordered; the customer-grouped folds' scores at the latest cutoffs for
an in-time estimate), so a base rate that drifts between early and late data is the late one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from funnelcast.features.errors import ConfigError, TrainingDataError
from funnelcast.features.funnel import FunnelConfig
from funnelcast.features.readiness import target_verdict
from funnelcast.features.snapshots import TrainingSet
from funnelcast.features.targets import TARGETS
from funnelcast.training.baselines import RecencyFrequency
from funnelcast.training.horizons import HorizonMap, fit_horizon_map
from funnelcast.training.linear import LinearModel
from funnelcast.training.metrics import LOWER_IS_BETTER, binary_metrics
from funnelcast.training.model import (LEARNERS, Calibrator, SeasonalShift, TargetModel, category_sizes, cutoff_ns,
                                       fit_booster)
from funnelcast.training.splits import BacktestPlan, Fold, in_time_plan, plan_backtest

__all__ = ["MODELS", "SELECTED", "FoldResult", "TargetBacktest", "TrainingDataError", "latest_test_rows",
           "readiness_problem", "run_backtest"]

SELECTED = "funnelcast"
"""The name under which the selected learner's scores and metrics are reported."""
MODELS = (SELECTED, *LEARNERS, "recency_frequency")
ORACLE_SUFFIX = "_given_history"
"""The simulator's probabilities given the event history (a Bayes filter over the hidden state): the
best achievable score, used as ``oracle``; a target's ``truth`` column without it is the probability
from the hidden state, a ceiling no model of the log can reach. Truth tables without the history
columns fall back to the hidden-state ones."""


@dataclass
class FoldResult:
    """One fold of a backtest: its cutoffs, every model's metrics, the test scores and the fitted models."""
    fold: Fold
    metrics: dict[str, dict[str, float]]
    """Model name (``funnelcast`` — the selected learner —, ``lightgbm``, ``logistic``, ``blend``,
    ``recency_frequency``; on simulated data ``oracle``, the best achievable given the event
    history, and ``hidden_state``, the ceiling) -> metrics."""
    transitions: dict[str, dict[str, dict[str, float]]]
    """For conversion: ``convert:a->b`` -> model name -> metrics on that stage's test rows."""
    scores: pd.DataFrame
    """Test rows: ``customer_id``, ``cutoff``, ``stage``, ``label``, and ``p_<model>`` per model."""
    models: dict[str, TargetModel]
    """Learner -> this fold's calibrated model."""
    raw: dict[str, np.ndarray]
    """Learner -> its uncalibrated log-odds on the test rows (out-of-fold scores for the refit's calibration)."""
    segment: np.ndarray | None = None
    """The test rows' calibration segments (stage codes)."""
    model: TargetModel | None = None
    """The selected learner's model of this fold."""


class Folds:
    """What every backtest has over its ``folds`` (oldest first, each with ``metrics`` per model) and
    its ``plan``: the latest fold, how quality was estimated, and the mean and spread per metric.
    Shared by :class:`TargetBacktest` and :class:`funnelcast.training.value.ValueBacktest`."""

    folds: list
    plan: BacktestPlan

    @property
    def latest(self) -> FoldResult:
        """The latest fold."""
        return self.folds[-1]

    @property
    def kind(self) -> str:
        """``out-of-time`` or ``in-time``: how the quality figures were estimated."""
        return self.plan.kind

    @property
    def notes(self) -> list[str]:
        """What the history forced (fewer folds, an in-time estimate), in sentences."""
        return list(self.plan.notes)

    def summary(self) -> dict[str, dict[str, float]]:
        """Per model: each metric's mean and standard deviation across folds (``<metric>_mean``, ``<metric>_std``)."""
        out: dict[str, dict[str, float]] = {}
        for name in self.latest.metrics:
            frame = pd.DataFrame([f.metrics[name] for f in self.folds if name in f.metrics])
            out[name] = {**{f"{k}_mean": float(v) for k, v in frame.mean().items()},
                         **{f"{k}_std": float(v) for k, v in frame.std(ddof=0).items()}}
        return out


@dataclass
class TargetBacktest(Folds):
    """Every fold of one target's backtest, oldest first, the learner it selected and the refitted model."""
    target: str
    folds: list[FoldResult]
    rows: int
    positives: int
    plan: BacktestPlan
    learner: str
    selection: dict[str, float]
    """Learner -> its mean test score over the folds (the selection metric)."""
    selection_metric: str
    model: TargetModel
    """The registered model: the selected learner refitted on every labelled cutoff."""
    refit: dict[str, Any]
    warnings: list[str] = field(default_factory=list)



def latest_test_rows(training_set: TrainingSet, backtest: TargetBacktest) -> pd.DataFrame:
    """The labelled rows of the backtest's latest test cutoff."""
    rows = training_set.rows(backtest.target)
    return rows[rows["cutoff"] == backtest.latest.fold.test]


def readiness_problem(training_set: TrainingSet, target: str, config: FunnelConfig) -> str | None:
    """Why ``target`` should be skipped (too few labelled rows, positives or negatives), or None."""
    verdict = target_verdict(target, training_set.rows(target)[TARGETS[target].label], config)
    if verdict.ready:
        return None
    return (f"{target}: {verdict.rows:,} labelled rows with {verdict.positives:,} positives; "
            f"{'; '.join(verdict.reasons)} (readiness.min_eligible, readiness.min_positives)")


def run_backtest(
    training_set: TrainingSet,
    target: str,
    config: FunnelConfig,
    truth: pd.DataFrame | None = None,
    params: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
    threads: int = 0,
) -> TargetBacktest:
    """Fit and score every fold of ``target``, select the learner and refit it on every labelled
    cutoff. ``truth`` (the simulator's ``truth.parquet``) adds the oracle.

    ``threads``: LightGBM threads (0: ``$FUNNELCAST_THREADS``, else every core).
    """
    settings = config.training
    spec = TARGETS[target]
    model_input = training_set.model_input
    if model_input.config_hash != config.data_hash():
        raise ConfigError("the training set was built with a different funnel config (its data hash differs): "
                          "build it again with this config")
    rows = training_set.rows(target)
    label = spec.label
    plan = _usable(plan_backtest(rows["cutoff"].unique(), spec.horizon_days(config), settings.folds,
                                 settings.validation_cutoffs), rows, label, settings.folds)
    mapped = spec.mapped(config)
    # The simulator's truth answers the horizon; a mapped target's labels are the shorter window.
    oracle, hidden = _oracle_columns(rows, None if mapped else truth, target)
    transitions = spec.transitions(config)
    params = params or settings.lightgbm
    sizes = category_sizes(model_input)
    results = []
    for fold in plan.folds:
        if progress:
            progress(f"{target}: {fold.describe()}")
        train, valid, test = fold.select(rows)
        X_train, X_valid, X_test = (model_input.matrix_from_frame(f) for f in (train, valid, test))
        y_train, y_valid = train[label].to_numpy(dtype=float), valid[label].to_numpy(dtype=float)
        booster, best, merged = fit_booster(
            X_train, y_train, model_input, params, valid=(X_valid, y_valid), seed=settings.seed,
            class_weight=settings.class_weight, early_stopping_rounds=settings.early_stopping_rounds, threads=threads)
        linear = LinearModel.fit(X_train, y_train, sizes, seed=settings.seed)
        tree_valid = booster.predict(X_valid, raw_score=True, num_iteration=best)
        tree_test = booster.predict(X_test, raw_score=True, num_iteration=best)
        tree_train = booster.predict(X_train, raw_score=True, num_iteration=best) if settings.seasonal_shift else None
        at_test = cutoff_ns(test["cutoff"])
        models, raw, p_test = {}, {}, {}
        for learner, weight in LEARNERS.items():
            model = TargetModel(
                target=target, input_=model_input, booster_=booster, calibrator_=Calibrator(settings.calibration),
                params_=_params(merged, settings), best_iteration_=best, linear_=linear if weight < 1 else None,
                weight_=weight, metadata_={"funnel_config": config.model_dump(mode="json")})
            model.calibrator_.fit(model.combine(tree_valid, X_valid), y_valid, model.segment(X_valid))
            if settings.seasonal_shift:
                _fit_seasonal(model, model.combine(tree_train, X_train), X_train, y_train, train["cutoff"],
                              valid["cutoff"])
            raw[learner] = model.combine(tree_test, X_test)
            p_test[learner] = model.probability(raw[learner], X_test, at=at_test)
            models[learner] = model
        heuristic = RecencyFrequency(config, target).fit(valid)
        scores = pd.DataFrame({
            "customer_id": test["customer_id"].astype(str).to_numpy(),
            "cutoff": test["cutoff"].array,
            "stage": test["stage"].astype(str).to_numpy(),
            "label": test[label].to_numpy(dtype=int),
            **{f"p_{learner}": p for learner, p in p_test.items()},
            "p_recency_frequency": heuristic.predict_proba(test),
        })
        if mapped:  # what the horizon map is fitted on
            scores["later"] = test[spec.later].to_numpy(dtype=float, na_value=np.nan)
            scores["later_days"] = test[spec.later_days].to_numpy(dtype=float, na_value=np.nan)
        if oracle is not None:
            scores["p_oracle"] = oracle.loc[test.index].to_numpy()
        if hidden is not None:
            scores["p_hidden_state"] = hidden.loc[test.index].to_numpy()
        results.append(FoldResult(fold=fold, metrics={}, transitions={}, scores=scores, models=models, raw=raw,
                                  segment=models["lightgbm"].segment(X_test)))
    metric = settings.champion_metric
    selection = {learner: _mean([_metric(f.scores, learner, metric) for f in results]) for learner in settings.learners}
    pick = min if metric in LOWER_IS_BETTER else max
    learner = pick(selection, key=lambda name: (selection[name] if not np.isnan(selection[name]) else
                                                (np.inf if metric in LOWER_IS_BETTER else -np.inf)))
    for fr in results:
        fr.scores.insert(4, f"p_{SELECTED}", fr.scores[f"p_{learner}"].to_numpy())
        fr.model = fr.models[learner]
        fr.metrics = _score_all(fr.scores)
        if transitions:
            for stage, name in transitions.items():
                part = fr.scores[fr.scores["stage"] == stage]
                if len(part):
                    fr.transitions[name] = _score_all(part)
    if progress:
        progress(f"{target}: {learner} selected ({metric} {selection[learner]:.4f} over {len(results)} folds); "
                 "refitting it on every labelled cutoff")
    model, refit = _refit(rows, results, learner, plan, model_input, params, config, target, threads)
    warnings = [f"{target}: {note}" for note in plan.notes]
    if mapped:
        model.horizon_map_ = _fit_horizon_map(results, config, spec)
        refit["horizon_map"] = model.horizon_map_.to_dict()
        model.metadata_["refit"] = refit
        if not model.horizon_map_.rows:
            warnings.append(model.horizon_map_.describe(target))
        if truth is not None:
            warnings.append(f"{target}: no oracle metrics: the simulator's truth answers {spec.answer_days(config)} "
                            f"days, the labels {spec.horizon_days(config)} (label_days)")
    if oracle is not None and oracle.isna().any():
        warnings.append(f"{target}: {int(oracle.isna().sum()):,} labelled rows have no truth row; oracle metrics use the rest")
    y = rows[label].to_numpy(dtype=int)
    return TargetBacktest(target=target, folds=results, rows=len(rows), positives=int(y.sum()), plan=plan,
                          learner=learner, selection=selection, selection_metric=metric, model=model, refit=refit,
                          warnings=warnings)


def _fit_horizon_map(folds: list[FoldResult], config: FunnelConfig, spec) -> HorizonMap:
    """The map from the label window to the horizon, fitted on every fold's out-of-time test rows: the
    selected learner's calibrated label-window probability against the outcome over each row's longest
    labelled window (training/horizons.py)."""
    scores = pd.concat([f.scores for f in folds], ignore_index=True)
    return fit_horizon_map(scores[f"p_{SELECTED}"].to_numpy(), scores["later"].to_numpy(), scores["later_days"].to_numpy(),
                           spec.horizon_days(config), spec.answer_days(config), spec.positive_is_silence(config))


def _one_class(fold: Fold, rows: pd.DataFrame, label: str) -> str | None:
    """Which part of ``fold`` lacks a class (a model cannot be fitted, early-stopped or scored on it), or None."""
    for part, frame in zip(("training", "validation", "test"), fold.select(rows)):
        y = frame[label].to_numpy(dtype=int)
        if len(y) == 0 or y.min() == y.max():
            return f"its {part} rows are {len(y):,} with {int(y.sum()):,} positives"
    return None


def usable_plan(plan: BacktestPlan, rows: pd.DataFrame, n_folds: int, problem: Callable[[Fold], str | None],
                needs: str, refusal: Callable[[list[str]], str]) -> BacktestPlan:
    """``plan`` without the folds ``problem`` names a reason against (said in a note); an in-time plan
    when no out-of-time fold is left (``needs``: what every part of a fold must hold, in words). Raises
    :class:`TrainingDataError` with ``refusal(notes)`` when not even that works. Every target's
    backtest plans through here (the value target's: :mod:`.value`)."""
    kept, notes = [], list(plan.notes)
    for fold in plan.folds:
        why = problem(fold)
        if why is None:
            kept.append(fold)
        else:
            notes.append(f"{fold.describe()} left out: {why}")
    if kept:
        return BacktestPlan([dataclasses.replace(f, index=i) for i, f in enumerate(kept)], notes)
    if not plan.in_time:
        return usable_plan(in_time_plan(rows["cutoff"].unique(), n_folds, f"no out-of-time fold has {needs} in its "
                                        "training, validation and test rows"), rows, n_folds, problem, needs, refusal)
    raise TrainingDataError(refusal(notes[len(plan.notes):]))


def _usable(plan: BacktestPlan, rows: pd.DataFrame, label: str, n_folds: int) -> BacktestPlan:
    """``plan`` without the folds a part of which holds one class (:func:`usable_plan`)."""
    y = rows[label].to_numpy(dtype=int)
    return usable_plan(plan, rows, n_folds, lambda fold: _one_class(fold, rows, label), "both classes",
                       lambda notes: f"{len(y):,} labelled rows with {int(y.sum()):,} positives cannot be split into "
                                     "folds that each hold both classes: " + "; ".join(notes))


def _refit(rows: pd.DataFrame, folds: list[FoldResult], learner: str, plan: BacktestPlan, model_input, params,
           config: FunnelConfig, target: str, threads: int) -> tuple[TargetModel, dict[str, Any]]:
    """The selected learner on every labelled row, with the folds' median boosting rounds, calibrated
    on the out-of-fold scores of the most recent cutoffs."""
    settings = config.training
    label = TARGETS[target].label
    rounds = max(1, int(np.median([f.models[learner].best_iteration_ for f in folds])))
    X = model_input.matrix_from_frame(rows)
    y = rows[label].to_numpy(dtype=float)
    # A logistic-only model keeps a booster too (it has no weight in the score; the report's
    # importance plots still show what the trees found).
    booster, _, merged = fit_booster(X, y, model_input, params, rounds=rounds, seed=settings.seed,
                                     class_weight=settings.class_weight, threads=threads)
    weight = LEARNERS[learner]
    linear = LinearModel.fit(X, y, category_sizes(model_input), seed=settings.seed) if weight < 1 else None
    raw = np.concatenate([f.raw[learner] for f in folds])
    labels = np.concatenate([f.scores["label"].to_numpy(dtype=float) for f in folds])
    cutoffs = pd.concat([f.scores["cutoff"] for f in folds], ignore_index=True)
    segment = None if folds[0].segment is None else np.concatenate([f.segment for f in folds])
    if plan.in_time:  # every cutoff was tested: calibrate on the latest ones, as an out-of-time refit would
        latest = sorted(cutoffs.unique())[-max(settings.validation_cutoffs, len(folds)):]
        keep = cutoffs.isin(latest).to_numpy()
        raw, labels, cutoffs = raw[keep], labels[keep], cutoffs[keep]
        segment = None if segment is None else segment[keep]
    calibrator = Calibrator(settings.calibration).fit(raw, labels, segment)
    last = rows["cutoff"].max()
    model = TargetModel(target=target, input_=model_input, booster_=booster, calibrator_=calibrator,
                        params_=_params(merged, settings), best_iteration_=rounds, linear_=linear, weight_=weight,
                        metadata_={"funnel_config": config.model_dump(mode="json")})
    seasonal = None
    if settings.seasonal_shift:
        seasonal = _fit_seasonal(model, model.raw_score(X, num_threads=threads), X, y, rows["cutoff"], cutoffs)
    refit = {"learner": learner, "rounds": rounds, "rows": int(len(rows)), "cutoffs": int(rows["cutoff"].nunique()),
             "last_training_cutoff": str(pd.Timestamp(last)), "calibration_rows": int(len(raw)),
             "calibration_cutoffs": [str(pd.Timestamp(c)) for c in sorted(cutoffs.unique())],
             "calibration_segments": sorted(calibrator.segments_), "estimate": plan.kind,
             "seasonal_cells": None if seasonal is None else sum(len(c) for c in seasonal.residuals.values())}
    model.metadata_["refit"] = refit
    return model, refit


def _fit_seasonal(model: TargetModel, raw: np.ndarray, X: np.ndarray, y: np.ndarray, cutoffs: pd.Series,
                  reference: pd.Series) -> SeasonalShift:
    """Fit ``model``'s :class:`~.model.SeasonalShift` from its calibrated probabilities of its own
    labelled rows (log-odds ``raw``, matrix ``X``) at their cutoffs, against the cutoffs its
    calibration came from (``reference``)."""
    p = model.probability(raw, X)  # no season yet: the gaps it measures are the calibrated model's
    shift = SeasonalShift.fit(p, y, model.segment(X), cutoff_ns(cutoffs), cutoff_ns(reference.drop_duplicates()))
    model.calibrator_.seasonal_ = shift
    return shift


def _params(merged: dict[str, Any], settings) -> dict[str, Any]:
    return {**merged, "seed": settings.seed, "calibration": settings.calibration,
            "class_weight": settings.class_weight or "none"}


def _metric(scores: pd.DataFrame, learner: str, metric: str) -> float:
    return binary_metrics(scores["label"].to_numpy(), scores[f"p_{learner}"].to_numpy())[metric]


def _mean(values: list[float]) -> float:
    known = [v for v in values if not np.isnan(v)]
    return float(np.mean(known)) if known else float("nan")


def _score_all(scores: pd.DataFrame) -> dict[str, dict[str, float]]:
    y = scores["label"].to_numpy()
    out = {name: binary_metrics(y, scores[f"p_{name}"].to_numpy()) for name in MODELS}
    for name in ("oracle", "hidden_state"):
        if f"p_{name}" in scores:
            known = scores[f"p_{name}"].notna().to_numpy()
            if known.any():
                out[name] = binary_metrics(y[known], scores[f"p_{name}"].to_numpy()[known])
    return out


def _oracle_columns(rows: pd.DataFrame, truth: pd.DataFrame | None, target: str) -> tuple[pd.Series | None, pd.Series | None]:
    """The simulator's best-achievable probability (given history) and hidden-state probability for
    each labelled row (NaN where truth has no row); (None, None) without truth."""
    if truth is None:
        return None, None
    hidden_col = TARGETS[target].truth
    history_col = hidden_col + ORACLE_SUFFIX
    if hidden_col not in truth.columns and history_col not in truth.columns:
        raise TrainingDataError(f"the truth table has neither {history_col!r} nor {hidden_col!r}; it needs customer_id, cutoff and one of them")
    missing = {"customer_id", "cutoff"} - set(truth.columns)
    if missing:
        raise TrainingDataError(f"the truth table lacks column(s) {sorted(missing)}")
    columns = [c for c in (history_col, hidden_col) if c in truth.columns]
    keys = truth[["customer_id", "cutoff", *columns]].copy()
    keys["customer_id"] = keys["customer_id"].astype(str)
    keys["cutoff"] = pd.to_datetime(keys["cutoff"], utc=True).astype("datetime64[ns, UTC]")
    left = pd.DataFrame({"customer_id": rows["customer_id"].astype(str).array,
                         "cutoff": pd.to_datetime(rows["cutoff"], utc=True).astype("datetime64[ns, UTC]").array})
    merged = left.merge(keys.drop_duplicates(["customer_id", "cutoff"]), on=["customer_id", "cutoff"], how="left")

    def column(name: str) -> pd.Series | None:
        return pd.Series(merged[name].to_numpy(dtype=float), index=rows.index) if name in merged else None

    if history_col in merged:
        return column(history_col), column(hidden_col)
    return column(hidden_col), None

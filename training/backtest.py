"""Rolling-origin backtest of one target: LightGBM, the baselines and (on simulated data) the oracle,
scored on identical time-ordered folds.

The model of the latest fold is the one that is registered: its test metrics are exactly what the
report and ``funnelcast train --json`` show, and the champion/challenger decision compares it on
that same fold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from funnelcast.features.errors import ConfigError, TrainingDataError
from funnelcast.features.funnel import FunnelConfig
from funnelcast.features.readiness import target_verdict
from funnelcast.features.snapshots import TrainingSet
from funnelcast.features.targets import TARGETS
from funnelcast.training.baselines import RecencyFrequency, fit_logistic, predict_logistic
from funnelcast.training.metrics import binary_metrics
from funnelcast.training.model import TargetModel, fit_target_model
from funnelcast.training.splits import Fold, backtest_folds

__all__ = ["MODELS", "FoldResult", "TargetBacktest", "TrainingDataError", "latest_test_rows", "readiness_problem",
           "run_backtest"]

MODELS = ("lightgbm", "logistic", "recency_frequency")
ORACLE_SUFFIX = "_given_history"
"""The simulator's probabilities given the event history (a Bayes filter over the hidden state): the
best achievable score, used as ``oracle``; a target's ``truth`` column without it is the probability
from the hidden state, a ceiling no model of the log can reach. Truth tables without the history
columns fall back to the hidden-state ones."""


@dataclass
class FoldResult:
    """One fold of a backtest: its cutoffs, every model's metrics, the test scores and the fitted model."""
    fold: Fold
    metrics: dict[str, dict[str, float]]
    """Model name (``lightgbm``, ``logistic``, ``recency_frequency``; on simulated data ``oracle``, the
    best achievable given the event history, and ``hidden_state``, the ceiling) -> metrics."""
    transitions: dict[str, dict[str, dict[str, float]]]
    """For conversion: ``convert:a->b`` -> model name -> metrics on that stage's test rows."""
    scores: pd.DataFrame
    """Test rows: ``customer_id``, ``cutoff``, ``stage``, ``label``, and ``p_<model>`` per model."""
    model: TargetModel


@dataclass
class TargetBacktest:
    """Every fold of one target's backtest, oldest first, and the labelled rows it used."""
    target: str
    folds: list[FoldResult]
    rows: int
    positives: int
    warnings: list[str] = field(default_factory=list)

    @property
    def latest(self) -> FoldResult:
        """The latest fold (the one whose model is registered)."""
        return self.folds[-1]

    @property
    def model(self) -> TargetModel:
        """The latest fold's model."""
        return self.latest.model

    def summary(self) -> dict[str, dict[str, float]]:
        """Per model: each metric's mean and standard deviation across folds (``<metric>_mean``, ``<metric>_std``)."""
        out: dict[str, dict[str, float]] = {}
        for name in self.latest.metrics:
            frame = pd.DataFrame([f.metrics[name] for f in self.folds if name in f.metrics])
            out[name] = {**{f"{k}_mean": float(v) for k, v in frame.mean().items()},
                         **{f"{k}_std": float(v) for k, v in frame.std(ddof=0).items()}}
        return out


def latest_test_rows(training_set: TrainingSet, backtest: TargetBacktest) -> pd.DataFrame:
    """The labelled rows of the backtest's latest test cutoff (what the registered model was tested on)."""
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
    """Fit and score every fold of ``target``. ``truth`` (the simulator's ``truth.parquet``) adds the oracle.

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
    folds = backtest_folds(rows["cutoff"].unique(), spec.horizon_days(config), settings.folds,
                           settings.validation_cutoffs)
    oracle, hidden = _oracle_columns(rows, truth, target)
    transitions = spec.transitions(config)
    warnings: list[str] = []
    results = []
    for fold in folds:
        if progress:
            progress(f"{target}: {fold.describe()}")
        train = rows[rows["cutoff"].isin(fold.train)]
        valid = rows[rows["cutoff"].isin(fold.valid)]
        test = rows[rows["cutoff"] == fold.test]
        for part, frame in (("training", train), ("validation", valid), ("test", test)):
            y = frame[label].to_numpy(dtype=int)
            if len(y) == 0 or y.min() == y.max():
                raise TrainingDataError(
                    f"{target}, fold {fold.index}: the {part} cutoffs hold {len(y):,} rows with "
                    f"{int(y.sum()):,} positives; every fold needs both classes ({fold.describe()})")
        model = fit_target_model(
            target, train, valid, model_input, params or settings.lightgbm, seed=settings.seed,
            calibration=settings.calibration, class_weight=settings.class_weight,
            early_stopping_rounds=settings.early_stopping_rounds, threads=threads,
        )
        # The model carries its funnel, so a scorer rebuilds exactly the features it was trained on.
        model.metadata_["funnel_config"] = config.model_dump(mode="json")
        logistic = fit_logistic(train, model_input, target, seed=settings.seed)
        heuristic = RecencyFrequency(config, target).fit(valid)
        scores = pd.DataFrame({
            "customer_id": test["customer_id"].astype(str).to_numpy(),
            "cutoff": test["cutoff"].array,
            "stage": test["stage"].astype(str).to_numpy(),
            "label": test[label].to_numpy(dtype=int),
            "p_lightgbm": model.predict_proba(test),
            "p_logistic": predict_logistic(logistic, test),
            "p_recency_frequency": heuristic.predict_proba(test),
        })
        if oracle is not None:
            scores["p_oracle"] = oracle.loc[test.index].to_numpy()
        if hidden is not None:
            scores["p_hidden_state"] = hidden.loc[test.index].to_numpy()
        metrics = _score_all(scores)
        per_transition = {}
        if transitions:
            for stage, name in transitions.items():
                part = scores[scores["stage"] == stage]
                if len(part):
                    per_transition[name] = _score_all(part)
        results.append(FoldResult(fold=fold, metrics=metrics, transitions=per_transition, scores=scores, model=model))
    if oracle is not None and oracle.isna().any():
        warnings.append(f"{target}: {int(oracle.isna().sum()):,} labelled rows have no truth row; oracle metrics use the rest")
    y = rows[label].to_numpy(dtype=int)
    return TargetBacktest(target=target, folds=results, rows=len(rows), positives=int(y.sum()), warnings=warnings)


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

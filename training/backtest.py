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

from funnelcast.features.funnel import FunnelConfig
from funnelcast.features.readiness import target_verdict
from funnelcast.training.baselines import RecencyFrequency, fit_logistic, predict_logistic
from funnelcast.training.metrics import binary_metrics
from funnelcast.training.model import LABEL_COLUMNS, TargetModel, categorical_vocabularies, feature_columns, fit_target_model
from funnelcast.training.splits import Fold, backtest_folds

MODELS = ("lightgbm", "logistic", "recency_frequency")
TRUTH_COLUMNS = {"convert": "p_next_stage", "churn": "p_churn"}
"""The simulator's probabilities from the customer's hidden state: a ceiling no model of the log can reach."""
ORACLE_SUFFIX = "_given_history"
"""The simulator's probabilities given the event history (a Bayes filter over the hidden state): the
best achievable score, used as ``oracle``. Truth tables without these columns fall back to the hidden-state ones."""


class TrainingDataError(ValueError):
    """Training data that cannot train a target (empty, one class, a fold without both classes)."""


@dataclass
class FoldResult:
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
    target: str
    folds: list[FoldResult]
    rows: int
    positives: int
    warnings: list[str] = field(default_factory=list)

    @property
    def latest(self) -> FoldResult:
        return self.folds[-1]

    @property
    def model(self) -> TargetModel:
        return self.latest.model

    def summary(self) -> dict[str, dict[str, float]]:
        """Per model: each metric's mean and standard deviation across folds (``<metric>_mean``, ``<metric>_std``)."""
        out: dict[str, dict[str, float]] = {}
        for name in self.latest.metrics:
            frame = pd.DataFrame([f.metrics[name] for f in self.folds if name in f.metrics])
            out[name] = {**{f"{k}_mean": float(v) for k, v in frame.mean().items()},
                         **{f"{k}_std": float(v) for k, v in frame.std(ddof=0).items()}}
        return out


def config_hash(config: FunnelConfig) -> str:
    """The funnel config's data hash: scoring checks it built features with the config the model saw."""
    return config.data_hash()


def target_rows(table: pd.DataFrame, target: str) -> pd.DataFrame:
    """The training-set rows whose label for ``target`` is known."""
    label = LABEL_COLUMNS[target]
    return table.loc[table[label].notna()]


def latest_test_rows(table: pd.DataFrame, backtest: TargetBacktest) -> pd.DataFrame:
    """The labelled rows of the backtest's latest test cutoff (what the registered model was tested on)."""
    rows = target_rows(table, backtest.target)
    return rows[rows["cutoff"] == backtest.latest.fold.test]


def horizon_days(config: FunnelConfig, target: str) -> int:
    return config.conversion.horizon_days if target == "convert" else config.churn.horizon_days


def readiness_problem(table: pd.DataFrame, target: str, config: FunnelConfig) -> str | None:
    """Why ``target`` should be skipped (too few labelled rows, positives or negatives), or None."""
    verdict = target_verdict(target, target_rows(table, target)[LABEL_COLUMNS[target]], config)
    if verdict.ready:
        return None
    return (f"{target}: {verdict.rows:,} labelled rows with {verdict.positives:,} positives; "
            f"{'; '.join(verdict.reasons)} (readiness.min_eligible, readiness.min_positives)")


def _transition_names(config: FunnelConfig) -> dict[str, str]:
    return {a: f"convert:{a}->{b}" for a, b in config.conversion_targets()}


def run_backtest(
    table: pd.DataFrame,
    target: str,
    config: FunnelConfig,
    truth: pd.DataFrame | None = None,
    params: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> TargetBacktest:
    """Fit and score every fold of ``target``. ``truth`` (the simulator's ``truth.parquet``) adds the oracle."""
    settings = config.training
    rows = target_rows(table, target)
    label = LABEL_COLUMNS[target]
    features = feature_columns(rows)
    vocab = categorical_vocabularies(rows, features)
    folds = backtest_folds(rows["cutoff"].unique(), horizon_days(config, target), settings.folds,
                           settings.validation_cutoffs)
    oracle, hidden = _oracle_columns(rows, truth, target)
    transitions = _transition_names(config)
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
            target, train, valid, features, vocab, params or settings.lightgbm, seed=settings.seed,
            calibration=settings.calibration, class_weight=settings.class_weight,
            early_stopping_rounds=settings.early_stopping_rounds,
        )
        model.config_hash_ = config_hash(config)
        # The model carries its funnel, so a scorer rebuilds exactly the features it was trained on.
        model.metadata_["funnel_config"] = config.model_dump(mode="json")
        logistic = fit_logistic(train, features, vocab, target, seed=settings.seed)
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
        if target == "convert":
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
    hidden_col = TRUTH_COLUMNS[target]
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

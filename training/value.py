"""The value target: each buyer's expected spend in the next ``value.horizon_days``.

**The model: LightGBM with a Tweedie objective on spend.** A buyer's spend in a window is zero for
most and heavy-tailed for the rest: a point mass at zero plus a skewed positive part, which is the
compound Poisson–gamma (Tweedie, variance power between 1 and 2) family. A log-link Tweedie
booster fits that mixture in one model on the same input matrix the probability models use
(so the same features, training rows and serving path), its predictions are expected spend
(never negative), and its total on the training rows matches the realised total. The alternative,
P(buys) × expected order count × expected order value, is three models whose errors multiply and
whose parts need their own calibration; BG/NBD + Gamma-Gamma (:mod:`.btyd`) is that factorisation
with two parameters per population, kept as the baseline it is.

**Learn a short window, serve a long one.** Spend in a year after a cutoff can only be labelled at
cutoffs a year before the data ends; with two years of history that leaves no out-of-time fold. The
model learns the spend of the next ``value.label_days`` (default 90) and carries it to
``value.horizon_days`` (default 365) with a measured decay: per stage, ρ is the realised spend of
the *following* ``label_days`` over the spend of the first, on the latest cutoffs where both are
known. With window k's spend expected at ρᵏ times the first's (a constant per-window retention of
spend, the discrete form of the constant-hazard dropout behind BG/NBD and Pareto/NBD), the horizon's
expected spend is the label window's times ``1 + ρ + … + ρ^(n-1) = (1 - ρⁿ) / (1 - ρ)`` with
``n = horizon_days / label_days`` (fractional n interpolates). ρ is capped at 1: a stage's spend is
not extrapolated to grow. Stages with too few rows use the pooled ρ.

**Level.** A fold's model never trained on its validation cutoffs, which sit between its training and
test cutoffs; like a probability model's calibration, its predictions are put at the level those
cutoffs show (their realised total over the predicted, clipped to [0.5, 2]). The registered refit
trains on the latest labelled cutoffs themselves, and a log-link Tweedie fit matches its training
rows' total, so it keeps level 1. (Carrying the folds' test-cutoff level over to the refit was tried:
on the simulator, whose spend grows, it over-corrected by +60%: a fold model is two label windows
older at its test cutoff than the refit is at scoring time.)

**Backtest.** The same rolling-origin folds as the other targets (:mod:`.splits`, with the label
window as the gap), each scored on its test cutoff beside two plain baselines: the spend of the
trailing window scaled to the label window (``trailing_spend``), and the customer's lifetime spend
rate (``lifetime_rate``). Metrics (:func:`~.metrics.value_metrics`): MAE, RMSE, the signed error of
the total, rank correlation, normalised Gini and the share of realised spend the top 10 / 20 % went
on to spend.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import lightgbm as lgb
import numpy as np
import pandas as pd

from funnelcast.features.errors import ConfigError
from funnelcast.features.funnel import FunnelConfig
from funnelcast.features.model_input import ModelInput
from funnelcast.features.snapshots import TrainingSet
from funnelcast.features.targets import VALUE
from funnelcast.training.backtest import Folds, usable_plan
from funnelcast.training.metrics import value_metrics
from funnelcast.training.model import MODEL_FORMAT, STAGE_COLUMN, InputBooster, _plain, fit_booster
from funnelcast.training.splits import BacktestPlan, Fold, plan_backtest

SELECTED = "funnelcast"
BASELINES = ("trailing_spend", "lifetime_rate")
VALUE_MODELS = (SELECTED, *BASELINES)
CHAMPION_METRIC = "gini"
"""How a new value model is compared with the champion (higher is better)."""
VALUE_COLUMNS = ("mae", "rmse", "total_error", "spearman", "gini", "top_10pct_share", "top_20pct_share")
"""The value metrics reports, ``--json`` and registered-version tags show."""
DECAY_MIN_ROWS = 200
"""A stage gets its own spend decay with at least this many rows (and some spend); else the pooled one."""
MAX_DECAY = 1.0
LEVEL_RANGE = (0.5, 2.0)
"""A level correction outside this range is clipped: beyond it the validation total is noise or drift
that no single factor should carry."""
POOLED = -1


def horizon_factor(rho: np.ndarray | float, n: float) -> np.ndarray:
    """``1 + ρ + … + ρ^(n-1) = (1 - ρⁿ) / (1 - ρ)`` (``n`` at ρ = 1): the horizon's expected spend over
    the label window's when each window keeps ρ of the previous one's."""
    rho = np.clip(np.asarray(rho, dtype=float), 0.0, MAX_DECAY)
    near_one = np.abs(1 - rho) < 1e-9
    safe = np.where(near_one, 0.5, rho)
    return np.where(near_one, n, (1 - safe ** n) / (1 - safe))


@dataclass
class ValueModel(InputBooster):
    """Expected spend: a Tweedie LightGBM on the label window, its level, and per-stage spend decay."""

    input_: ModelInput
    booster_: lgb.Booster
    best_iteration_: int
    params_: dict[str, Any]
    label_days_: int
    horizon_days_: int
    level_: float = 1.0
    decay_: dict[int, float] = field(default_factory=dict)
    """Stage code (``-1``: pooled) -> ρ, the next label window's spend over the label window's."""
    metadata_: dict[str, Any] = field(default_factory=dict)
    target: str = VALUE.name

    BOOSTER_FILE = "booster.txt"
    MODEL_FILE = "model.json"

    def label_spend(self, X: np.ndarray, raw: np.ndarray | None = None, num_threads: int = 0) -> np.ndarray:
        """Expected spend in the label window (``raw``: the rows' :meth:`booster_raw`, if computed)."""
        raw = self.booster_raw(X, num_threads) if raw is None else raw
        return self.level_ * np.exp(raw)

    def factor(self, X: np.ndarray) -> np.ndarray:
        """Per row, the horizon's expected spend over the label window's (its stage's decay)."""
        n = self.horizon_days_ / self.label_days_
        pooled = self.decay_.get(POOLED, 1.0)
        if STAGE_COLUMN not in self.input_.columns or len(self.decay_) <= 1:
            return np.broadcast_to(horizon_factor(pooled, n), (len(X),)).astype(float)
        stage = X[:, self.input_.columns.index(STAGE_COLUMN)]
        rho = np.full(len(X), pooled)
        for code, value in self.decay_.items():
            if code != POOLED:
                rho[stage == code] = value
        return horizon_factor(rho, n)

    def predict(self, frame: pd.DataFrame | np.ndarray, num_threads: int = 0, raw: np.ndarray | None = None) -> np.ndarray:
        """Expected spend in the next ``horizon_days`` per row (of a feature frame or the model's matrix)."""
        X = frame if isinstance(frame, np.ndarray) else self.matrix(frame)
        return self.label_spend(X, raw, num_threads) * self.factor(X)

    def predict_label(self, frame: pd.DataFrame | np.ndarray, num_threads: int = 0) -> np.ndarray:
        """Expected spend in the label window (what the backtest and the champion gate compare)."""
        X = frame if isinstance(frame, np.ndarray) else self.matrix(frame)
        return self.label_spend(X, num_threads=num_threads)

    def save(self, folder: str | Path) -> dict[str, Path]:
        """LightGBM's text model and one JSON file (``kind: value``); nothing that executes on load."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {"booster": folder / self.BOOSTER_FILE, "model": folder / self.MODEL_FILE}
        self.booster_.save_model(str(paths["booster"]), num_iteration=-1)
        paths["model"].write_text(json.dumps({
            "format": MODEL_FORMAT, "kind": "value", "target": self.target, "input": self.input_.to_dict(),
            "params": self.params_, "best_iteration": self.best_iteration_, "label_days": self.label_days_,
            "horizon_days": self.horizon_days_, "level": self.level_,
            "decay": {str(k): v for k, v in self.decay_.items()}, "metadata": self.metadata_,
        }, default=_plain))
        return paths

    @classmethod
    def from_files(cls, booster: lgb.Booster, data: dict[str, Any]) -> ValueModel:
        """The model :meth:`save` wrote, from its read JSON and loaded booster."""
        return cls(input_=ModelInput.from_dict(data["input"]), booster_=booster, best_iteration_=int(data["best_iteration"]),
                   params_=data["params"], label_days_=int(data["label_days"]), horizon_days_=int(data["horizon_days"]),
                   level_=float(data["level"]), decay_={int(k): float(v) for k, v in data["decay"].items()},
                   metadata_=data["metadata"], target=data["target"])


def _level(actual: np.ndarray, predicted: np.ndarray) -> float:
    total = float(np.sum(predicted))
    return float(np.clip(np.sum(actual) / total, *LEVEL_RANGE)) if total > 0 else 1.0


def fit_decay(rows: pd.DataFrame, model_input: ModelInput, horizon_days: int) -> tuple[dict[int, float], dict[str, Any]]:
    """Per stage code (and pooled, ``-1``), ρ = the realised spend of the window after the label's over
    the label window's, on the latest cutoffs (spanning up to ``horizon_days``) where both are known.
    Returns the decay and a summary (cutoffs, rows) for the run's record."""
    known = rows[rows[VALUE.later].notna()]
    if known.empty:
        return {POOLED: MAX_DECAY}, {"cutoffs": [], "rows": 0, "note": "no cutoff has the window after the label known: "
                                     "spend carried to the horizon without decay"}
    last = known["cutoff"].max()
    recent = known[known["cutoff"] > last - pd.Timedelta(days=horizon_days)]
    label = recent[VALUE.label].to_numpy(dtype=float)
    later = recent[VALUE.later].to_numpy(dtype=float)

    def ratio(mask: np.ndarray) -> float:
        spent = label[mask].sum()
        return float(min(later[mask].sum() / spent, MAX_DECAY)) if spent > 0 else MAX_DECAY

    decay = {POOLED: ratio(np.ones(len(recent), dtype=bool))}
    if STAGE_COLUMN in model_input.columns:
        stage = model_input.matrix_from_frame(recent)[:, model_input.columns.index(STAGE_COLUMN)]
        for code in np.unique(stage[~np.isnan(stage)]):
            mask = stage == code
            if mask.sum() >= DECAY_MIN_ROWS and label[mask].sum() > 0:
                decay[int(code)] = ratio(mask)
    return decay, {"cutoffs": [str(c) for c in sorted(recent["cutoff"].unique())], "rows": int(len(recent))}


def baseline_predictions(rows: pd.DataFrame, config: FunnelConfig) -> dict[str, np.ndarray]:
    """The plain baselines' expected label-window spend: the longest trailing spend window scaled to the
    label window, and lifetime spend per day of purchase tenure times the label window."""
    days = config.value.label_days
    window = max(config.features.windows_days)
    trailing = rows[f"spend_{window}d"].to_numpy(dtype=float) * days / window
    tenure = np.maximum(rows["days_since_first_purchase"].to_numpy(dtype=float), window)
    lifetime = rows["spend_all_time"].to_numpy(dtype=float) / tenure * days
    return {"trailing_spend": np.nan_to_num(trailing), "lifetime_rate": np.nan_to_num(lifetime)}


@dataclass
class ValueFold:
    """One fold of the value backtest: its cutoffs, metrics per model, test scores and fitted model."""
    fold: Fold
    metrics: dict[str, dict[str, float]]
    scores: pd.DataFrame
    """Test rows: ``customer_id``, ``cutoff``, ``stage``, ``label`` (realised spend), ``p_<model>`` (predicted)."""
    model: ValueModel
    raw: np.ndarray
    """The fold model's log predictions on its test rows before the level (for the refit's level)."""
    transitions: dict = field(default_factory=dict)


@dataclass
class ValueBacktest(Folds):
    """The value target's folds, oldest first, and the refitted model registered."""
    target: str
    folds: list[ValueFold]
    rows: int
    positives: int
    plan: BacktestPlan
    model: ValueModel
    refit: dict[str, Any]
    learner: str = "lightgbm-tweedie"
    selection_metric: str = CHAMPION_METRIC
    selection: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _no_spend(fold: Fold, rows: pd.DataFrame) -> str | None:
    """Which parts of ``fold`` have no spend (a Tweedie model cannot be fitted or judged on them), or None."""
    empty = [name for name, part in zip(("training", "validation", "test"), fold.select(rows))
             if len(part) == 0 or not (part[VALUE.label].to_numpy(dtype=float) > 0).any()]
    return f"its {', '.join(empty)} rows have no spend" if empty else None


def _usable(plan: BacktestPlan, rows: pd.DataFrame, n_folds: int) -> BacktestPlan:
    """``plan`` without folds a part of which has no spend (:func:`~.backtest.usable_plan`)."""
    return usable_plan(plan, rows, n_folds, lambda fold: _no_spend(fold, rows), "spend",
                       lambda notes: f"{len(rows):,} labelled value rows cannot be split into folds that each hold some spend")


def run_value_backtest(training_set: TrainingSet, config: FunnelConfig, params: dict[str, Any] | None = None,
                       progress: Callable[[str], None] | None = None, threads: int = 0) -> ValueBacktest:
    """Fit and score every fold of the value target, then refit on every labelled cutoff (module docstring)."""
    settings = config.training
    model_input = training_set.model_input
    if model_input.config_hash != config.data_hash():
        raise ConfigError("the training set was built with a different funnel config (its data hash differs): "
                          "build it again with this config")
    rows = training_set.rows(VALUE.name)
    label_days, horizon_days = config.value.label_days, config.value.horizon_days
    plan = _usable(plan_backtest(rows["cutoff"].unique(), label_days, settings.folds, settings.validation_cutoffs),
                   rows, settings.folds)
    params = params or settings.lightgbm
    decay, decay_record = fit_decay(rows, model_input, horizon_days)
    folds = []
    for fold in plan.folds:
        if progress:
            progress(f"value: {fold.describe()}")
        train, valid, test = fold.select(rows)
        X_train, X_valid, X_test = (model_input.matrix_from_frame(f) for f in (train, valid, test))
        y_train, y_valid = (f[VALUE.label].to_numpy(dtype=float) for f in (train, valid))
        booster, best, merged = fit_booster(X_train, y_train, model_input, params, valid=(X_valid, y_valid),
                                            seed=settings.seed, early_stopping_rounds=settings.early_stopping_rounds,
                                            threads=threads, objective="tweedie")
        model = ValueModel(input_=model_input, booster_=booster, best_iteration_=best, params_=merged,
                           label_days_=label_days, horizon_days_=horizon_days, decay_=decay)
        model.level_ = _level(y_valid, model.label_spend(X_valid))
        raw = model.booster_raw(X_test)
        y_test = test[VALUE.label].to_numpy(dtype=float)
        scores = pd.DataFrame({
            "customer_id": test["customer_id"].astype(str).to_numpy(), "cutoff": test["cutoff"].array,
            "stage": test["stage"].astype(str).to_numpy(), "label": y_test,
            f"p_{SELECTED}": model.label_spend(X_test, raw),
            **{f"p_{name}": p for name, p in baseline_predictions(test, config).items()},
        })
        metrics = {name: value_metrics(y_test, scores[f"p_{name}"].to_numpy()) for name in VALUE_MODELS}
        folds.append(ValueFold(fold, metrics, scores, model, raw))
    if progress:
        progress("value: refitting on every labelled cutoff")
    rounds = max(1, int(np.median([f.model.best_iteration_ for f in folds])))
    X = model_input.matrix_from_frame(rows)
    booster, _, merged = fit_booster(X, rows[VALUE.label].to_numpy(dtype=float), model_input, params, rounds=rounds,
                                     seed=settings.seed, threads=threads, objective="tweedie")
    level = 1.0  # the refit trained on the latest labelled cutoffs too: its log link matches their total
    model = ValueModel(input_=model_input, booster_=booster, best_iteration_=rounds, params_=merged,
                       label_days_=label_days, horizon_days_=horizon_days, level_=level, decay_=decay,
                       metadata_={"funnel_config": config.model_dump(mode="json")})
    refit = {"learner": "lightgbm-tweedie", "rounds": rounds, "rows": int(len(rows)), "cutoffs": int(rows["cutoff"].nunique()),
             "last_training_cutoff": str(pd.Timestamp(rows["cutoff"].max())), "level": level,
             "label_days": label_days, "horizon_days": horizon_days,
             "decay": {str(k): v for k, v in decay.items()}, "decay_fit": decay_record, "estimate": plan.kind}
    model.metadata_["refit"] = refit
    y = rows[VALUE.label].to_numpy(dtype=float)
    return ValueBacktest(target=VALUE.name, folds=folds, rows=len(rows), positives=int((y > 0).sum()), plan=plan,
                         model=model, refit=refit, selection={SELECTED: float(np.nanmean([f.metrics[SELECTED][CHAMPION_METRIC]
                                                                                         for f in folds]))},
                         warnings=[f"value: {note}" for note in plan.notes])


def btyd_comparison(events: pd.DataFrame, config: FunnelConfig, test: pd.DataFrame, cutoff: pd.Timestamp) -> dict[str, Any]:
    """BG/NBD, MBG/NBD and Pareto/NBD with Gamma-Gamma (:mod:`.btyd`, the ``lifetimes`` fitters) fitted on
    every purchase before ``cutoff``, predicting each test row's spend in the label window, scored like the
    value model on the same rows (``test``: the latest fold's scores). Returns ``metrics`` by model,
    ``params``, ``errors`` (models that did not fit) and a ``description``."""
    from funnelcast.training.btyd import fit_btyd, predict_btyd, rfm_summary

    days = config.value.label_days
    summary = rfm_summary(events, cutoff, purchase_types=config.purchase_event_types)
    y = test["label"].to_numpy(dtype=float)
    ids = test["customer_id"].astype(str)
    out: dict[str, Any] = {"metrics": {SELECTED: value_metrics(y, test[f"p_{SELECTED}"].to_numpy(dtype=float))},
                           "params": {}, "errors": {},
                           "description": f"fitted on the {len(summary):,} buyers' purchase days before "
                                          f"{pd.Timestamp(cutoff):%Y-%m-%d}, predicting the spend of the {len(test):,} "
                                          f"test rows in the next {days} days (expected purchases × Gamma-Gamma's spend "
                                          "per purchase); funnelcast's row is the value model's latest fold"}
    if len(summary) < 2:
        out["errors"]["all"] = "fewer than two buyers before the cutoff"
        return out
    fit = fit_btyd(summary, config.value.btyd_baselines)
    out["params"], out["errors"], out["notes"] = fit.params(), dict(fit.errors), dict(fit.notes)
    if fit.gamma_gamma is None:
        out["errors"]["gamma_gamma"] = fit.gamma_gamma_error or "did not fit"
        return out
    for name, predicted in predict_btyd(fit, summary, days).items():
        spend = predicted["expected_spend"].reindex(ids.to_numpy()).fillna(0.0).to_numpy(dtype=float)
        out["metrics"][name] = value_metrics(y, spend)
    return out

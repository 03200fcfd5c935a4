"""The fitted model of one target: a LightGBM booster, its calibrator, and everything it saw at fit time.

Conversion is **one model for every stage transition**, with the customer's current stage as a
feature (``current_stage``), not one model per transition. Later transitions have far fewer rows
(the funnel narrows), behaviour such as recency and support contacts means much the same at every
stage, and one model lets trees share that evidence while still splitting on stage where it
matters. It is also one model to register, serve and monitor. Metrics are still reported per
transition, by slicing test rows on the stage at the cutoff; a transition the shared model serves
badly shows up there.

A :class:`TargetModel` carries the fitted :class:`~funnelcast.features.model_input.ModelInput` it was
trained on (feature names, each attribute's kind and vocabulary, time zone, the funnel config's
hash) and refuses a frame whose columns differ. The input contract turns rows into the float matrix
LightGBM saw, so batch scoring, the HTTP service and the MLflow model share one path with training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from funnelcast.features.model_input import ModelInput
from funnelcast.features.targets import TARGETS

PROBABILITY_FLOOR = 1e-4
"""Calibrated probabilities are kept in [floor, 1 - floor]: a validation block of all positives
(or all negatives) must not make the model certain."""


class Calibrator:
    """Maps a booster's raw score (log-odds) to a calibrated probability: isotonic regression or a
    sigmoid (Platt) fit, both from scikit-learn, fitted on a held-out fold."""

    def __init__(self, method: str = "isotonic") -> None:
        if method not in ("isotonic", "sigmoid"):
            raise ValueError(f"calibration method {method!r}: use 'isotonic' or 'sigmoid'")
        self.method = method

    def fit(self, raw: np.ndarray, y: np.ndarray) -> Calibrator:
        """Fit the map from raw scores (log-odds) to probabilities on held-out labels ``y``."""
        raw = np.asarray(raw, dtype=float)
        y = np.asarray(y, dtype=float)
        if self.method == "isotonic":
            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw, y)
            # Centred isotonic regression: interpolate between the centres of isotonic's constant
            # blocks, so the map stays monotone and calibrated but is strictly increasing inside the
            # range. Plain isotonic is a step function: it ties customers the booster had ranked,
            # which costs ROC-AUC and leaves the top-k lists ordered by row position.
            order = np.argsort(raw, kind="stable")
            fitted = iso.predict(raw[order])
            block = np.concatenate([[0], np.cumsum(np.diff(fitted) != 0)])
            count = np.bincount(block)
            self.x_ = np.bincount(block, weights=raw[order]) / count
            self.y_ = np.bincount(block, weights=fitted) / count
        else:
            self.model_ = LogisticRegression(C=1e6).fit(raw.reshape(-1, 1), y)
        return self

    def predict(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of raw scores, kept inside [floor, 1 - floor]."""
        raw = np.asarray(raw, dtype=float)
        if self.method == "isotonic":
            p = np.interp(raw, self.x_, self.y_)
        else:
            p = self.model_.predict_proba(raw.reshape(-1, 1))[:, 1]
        return np.clip(p, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)


@dataclass
class TargetModel:
    """A calibrated LightGBM model for one target, and the input contract it was fitted on."""

    target: str
    input_: ModelInput
    booster_: lgb.Booster
    calibrator_: Calibrator
    params_: dict[str, Any]
    best_iteration_: int
    metadata_: dict[str, Any] = field(default_factory=dict)

    @property
    def feature_names_(self) -> list[str]:
        """The model's input columns, in matrix order."""
        return list(self.input_.columns)

    @property
    def categories_(self) -> dict[str, list[str]]:
        """Feature column to vocabulary, for category attributes."""
        return self.input_.categories

    @property
    def config_hash_(self) -> str:
        """The funnel config data hash the behaviour features were built under."""
        return self.input_.config_hash

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """The model's input matrix from a frame of features (:meth:`ModelInput.matrix_from_frame`)."""
        return self.input_.matrix_from_frame(frame)

    def raw_score(self, X: np.ndarray, num_threads: int = 0) -> np.ndarray:
        """Log-odds from the booster at its best iteration."""
        return self.booster_.predict(X, raw_score=True, num_iteration=self.best_iteration_, num_threads=num_threads)

    def predict_proba(self, frame: pd.DataFrame | np.ndarray, num_threads: int = 0) -> np.ndarray:
        """Calibrated probability of the target for each row (of a feature frame or the model's matrix)."""
        X = frame if isinstance(frame, np.ndarray) else self.matrix(frame)
        return self.probability(self.raw_score(X, num_threads=num_threads))

    def probability(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated probability of raw scores (log-odds) from :meth:`raw_score`."""
        return self.calibrator_.predict(raw)


DEFAULT_PARAMS: dict[str, Any] = {
    "n_estimators": 2000,
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_child_samples": 100,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.5,
    "reg_lambda": 1.0,
    "max_bin": 255,
}


def training_threads(threads: int = 0) -> int | None:
    """LightGBM threads: ``threads`` if positive, else ``$FUNNELCAST_THREADS``, else LightGBM's default
    (all cores). Set it when processes share the cores (a parallel test run, a busy host): OpenMP
    threads that outnumber free cores spin and can make boosting tens of times slower."""
    if threads > 0:
        return threads
    env = os.environ.get("FUNNELCAST_THREADS", "").strip()
    return int(env) if env.isdigit() and int(env) > 0 else None


def fit_target_model(
    target: str,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    model_input: ModelInput,
    params: dict[str, Any] | None = None,
    *,
    seed: int = 0,
    calibration: str = "isotonic",
    class_weight: str | None = None,
    early_stopping_rounds: int = 50,
    threads: int = 0,
) -> TargetModel:
    """Fit LightGBM on ``train`` with early stopping on ``valid``, then calibrate on ``valid``.

    Both are training-set frames; ``model_input`` turns them into matrices (and is kept with the
    model). ``class_weight='balanced'`` up-weights positives by the negative/positive ratio
    (LightGBM's ``scale_pos_weight``); calibration on the unweighted validation fold then restores
    probabilities. A fixed ``seed`` (with LightGBM's deterministic mode) makes the fit reproducible;
    ``threads`` (0: ``$FUNNELCAST_THREADS``, else every core) sets LightGBM's threads.
    """
    label = TARGETS[target].label
    y_train = train[label].to_numpy(dtype=float)
    y_valid = valid[label].to_numpy(dtype=float)
    X_train = model_input.matrix_from_frame(train)
    X_valid = model_input.matrix_from_frame(valid)
    merged = {**DEFAULT_PARAMS, **(params or {})}
    if class_weight == "balanced":
        pos = max(y_train.sum(), 1.0)
        merged["scale_pos_weight"] = float((len(y_train) - pos) / pos)
    clf = lgb.LGBMClassifier(
        objective="binary", random_state=seed, deterministic=True, force_col_wise=True,
        n_jobs=training_threads(threads), verbose=-1, **merged,
    )
    features = list(model_input.columns)
    categorical = [j for j, c in enumerate(features) if c in model_input.categories]
    clf.fit(
        X_train, y_train, eval_X=(X_valid,), eval_y=(y_valid,), eval_metric="binary_logloss",
        feature_name=features, categorical_feature=categorical or "auto",
        callbacks=[lgb.early_stopping(early_stopping_rounds, first_metric_only=True, verbose=False)],
    )
    booster = clf.booster_
    best = int(clf.best_iteration_ or booster.current_iteration())
    raw_valid = booster.predict(X_valid, raw_score=True, num_iteration=best)
    calibrator = Calibrator(calibration).fit(raw_valid, y_valid)
    return TargetModel(
        target=target, input_=model_input, booster_=booster,
        calibrator_=calibrator, params_={**merged, "seed": seed, "calibration": calibration,
                                          "class_weight": class_weight or "none"},
        best_iteration_=best,
    )

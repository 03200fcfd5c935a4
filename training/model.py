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

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from funnelcast.features.model_input import ModelInput
from funnelcast.features.targets import TARGETS

MODEL_FORMAT = 1
"""Version of the files :meth:`TargetModel.save` writes."""

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
            fitted = LogisticRegression(C=1e6).fit(raw.reshape(-1, 1), y)
            # Platt's map is expit(a * raw + b): kept as its two numbers (what scikit-learn's
            # predict_proba computes from them, to the bit), so it saves as JSON.
            self.coef_, self.intercept_ = float(fitted.coef_[0, 0]), float(fitted.intercept_[0])
        return self

    def predict(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of raw scores, kept inside [floor, 1 - floor]."""
        raw = np.asarray(raw, dtype=float)
        if self.method == "isotonic":
            p = np.interp(raw, self.x_, self.y_)
        else:
            p = expit(raw * self.coef_ + self.intercept_)
        return np.clip(p, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)

    def to_dict(self) -> dict[str, Any]:
        """The fitted map as plain JSON (floats round-trip exactly)."""
        if self.method == "isotonic":
            return {"method": "isotonic", "x": self.x_.tolist(), "y": self.y_.tolist()}
        return {"method": "sigmoid", "coef": self.coef_, "intercept": self.intercept_}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        """The calibrator :meth:`to_dict` described."""
        calibrator = cls(data["method"])
        if calibrator.method == "isotonic":
            calibrator.x_ = np.asarray(data["x"], dtype=float)
            calibrator.y_ = np.asarray(data["y"], dtype=float)
        else:
            calibrator.coef_, calibrator.intercept_ = float(data["coef"]), float(data["intercept"])
        return calibrator


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

    # ---- files: nothing that executes on load ------------------------------------------------------
    BOOSTER_FILE = "booster.txt"
    MODEL_FILE = "model.json"

    def save(self, folder: str | Path) -> dict[str, Path]:
        """Write the model as LightGBM's own text model and one JSON file (input contract, calibrator,
        parameters, metadata); returns the paths by role (``booster``, ``model``)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {"booster": folder / self.BOOSTER_FILE, "model": folder / self.MODEL_FILE}
        self.booster_.save_model(str(paths["booster"]), num_iteration=-1)
        paths["model"].write_text(json.dumps({
            "format": MODEL_FORMAT, "target": self.target, "input": self.input_.to_dict(),
            "calibrator": self.calibrator_.to_dict(), "params": self.params_, "best_iteration": self.best_iteration_,
            "metadata": self.metadata_,
        }, default=_plain))  # key order kept: the funnel config's dict order is its feature columns' order
        return paths

    @classmethod
    def load(cls, booster: str | Path, model: str | Path) -> TargetModel:
        """The model :meth:`save` wrote. Raises ``ValueError`` (a format or content problem) or
        ``OSError``; nothing in the files is executed."""
        data = json.loads(Path(model).read_text())
        if data.get("format") != MODEL_FORMAT:
            raise ValueError(f"{Path(model).name} is not a funnelcast model of format {MODEL_FORMAT} "
                             f"(format {data.get('format')!r})")
        try:
            booster_ = lgb.Booster(model_file=str(booster))
        except lgb.basic.LightGBMError as exc:
            raise ValueError(f"{Path(booster).name} is not a LightGBM model: {exc}") from None
        return cls(target=data["target"], input_=ModelInput.from_dict(data["input"]), booster_=booster_,
                   calibrator_=Calibrator.from_dict(data["calibrator"]), params_=data["params"],
                   best_iteration_=int(data["best_iteration"]), metadata_=data["metadata"])


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


def _plain(value: Any) -> Any:
    """numpy scalars (LightGBM parameters, metadata) as plain JSON numbers."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot save {type(value).__name__} in a model file")


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

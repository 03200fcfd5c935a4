"""The fitted model of one target: a LightGBM booster, its calibrator, and everything it saw at fit time.

Conversion is **one model for every stage transition**, with the customer's current stage as a
feature (``current_stage``), not one model per transition. Later transitions have far fewer rows
(the funnel narrows), behaviour such as recency and support contacts means much the same at every
stage, and one model lets trees share that evidence while still splitting on stage where it
matters. It is also one model to register, serve and monitor. Metrics are still reported per
transition, by slicing test rows on the stage at the cutoff; a transition the shared model serves
badly shows up there.

A :class:`TargetModel` remembers its feature names, the category vocabularies of categorical
features and the funnel config's hash, and refuses a frame whose columns differ. It turns a frame
into the float matrix LightGBM saw (categories as codes in the fit-time vocabulary, unseen values
missing), so batch scoring and the HTTP service share one path with training.
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

ID_COLUMNS = ("customer_id", "cutoff")
LABEL_COLUMNS = {"convert": "convert_label", "churn": "churn_label"}
NON_FEATURES = (*ID_COLUMNS, "stage", *LABEL_COLUMNS.values())
"""Training-set columns that are not model inputs. ``stage`` (the name) duplicates the ordinal
``current_stage`` feature and is kept only to slice metrics by transition."""


PROBABILITY_FLOOR = 1e-4
"""Calibrated probabilities are kept in [floor, 1 - floor]: a validation block of all positives
(or all negatives) must not make the model certain."""


class SchemaError(ValueError):
    """A frame to score does not have the columns the model was fitted on."""


def feature_columns(table: pd.DataFrame) -> list[str]:
    """Model inputs of a training-set frame: every column but ids, the stage name and labels."""
    return [c for c in table.columns if c not in NON_FEATURES]


def categorical_vocabularies(table: pd.DataFrame, columns: list[str]) -> dict[str, list[str]]:
    """Categories of the non-numeric feature columns, in a stable (sorted) order."""
    vocab = {}
    for c in columns:
        s = table[c]
        if isinstance(s.dtype, pd.CategoricalDtype):
            vocab[c] = sorted(str(v) for v in s.cat.categories)
        elif not pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            vocab[c] = sorted(str(v) for v in pd.unique(s.dropna()))
    return vocab


def to_matrix(frame: pd.DataFrame, columns: list[str], vocab: dict[str, list[str]]) -> np.ndarray:
    """Float64 matrix in ``columns`` order; categorical columns become codes in ``vocab`` (unseen or
    missing values become NaN, which LightGBM treats as missing)."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        extra = [c for c in frame.columns if c not in columns and c not in NON_FEATURES]
        raise SchemaError(
            f"the frame lacks {len(missing)} feature column(s) the model was fitted on: {missing[:10]}"
            + (f"; it has {len(extra)} the model does not know: {extra[:10]}" if extra else "")
            + ". Build features with the funnel config the model was trained with"
        )
    out = np.empty((len(frame), len(columns)), dtype=np.float64)
    for j, c in enumerate(columns):
        s = frame[c]
        if c in vocab:
            codes = pd.Index(vocab[c]).get_indexer(s.astype("string").astype(object))  # -1: unseen or missing
            out[:, j] = np.where(codes < 0, np.nan, codes)
        else:
            try:
                out[:, j] = pd.to_numeric(s, errors="raise").astype("float64").to_numpy(na_value=np.nan)
            except (ValueError, TypeError):
                bad = s[pd.to_numeric(s, errors="coerce").isna() & s.notna()]
                raise SchemaError(
                    f"feature column {c!r} must be numeric; row {bad.index[0]!r} holds {bad.iloc[0]!r}") from None
    return out


class Calibrator:
    """Maps a booster's raw score (log-odds) to a calibrated probability: isotonic regression or a
    sigmoid (Platt) fit, both from scikit-learn, fitted on a held-out fold."""

    def __init__(self, method: str = "isotonic") -> None:
        if method not in ("isotonic", "sigmoid"):
            raise ValueError(f"calibration method {method!r}: use 'isotonic' or 'sigmoid'")
        self.method = method

    def fit(self, raw: np.ndarray, y: np.ndarray) -> Calibrator:
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
        raw = np.asarray(raw, dtype=float)
        if self.method == "isotonic":
            p = np.interp(raw, self.x_, self.y_)
        else:
            p = self.model_.predict_proba(raw.reshape(-1, 1))[:, 1]
        return np.clip(p, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)


@dataclass
class TargetModel:
    """A calibrated LightGBM model for one target (``convert`` or ``churn``)."""

    target: str
    feature_names_: list[str]
    categories_: dict[str, list[str]]
    booster_: lgb.Booster
    calibrator_: Calibrator
    params_: dict[str, Any]
    best_iteration_: int
    config_hash_: str = ""
    metadata_: dict[str, Any] = field(default_factory=dict)

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        return to_matrix(frame, self.feature_names_, self.categories_)

    def raw_score(self, X: np.ndarray, num_threads: int = 0) -> np.ndarray:
        """Log-odds from the booster at its best iteration."""
        return self.booster_.predict(X, raw_score=True, num_iteration=self.best_iteration_, num_threads=num_threads)

    def predict_proba(self, frame: pd.DataFrame | np.ndarray, num_threads: int = 0) -> np.ndarray:
        """Calibrated probability of the target for each row."""
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
    features: list[str],
    vocab: dict[str, list[str]],
    params: dict[str, Any] | None = None,
    *,
    seed: int = 0,
    calibration: str = "isotonic",
    class_weight: str | None = None,
    early_stopping_rounds: int = 50,
    threads: int = 0,
) -> TargetModel:
    """Fit LightGBM on ``train`` with early stopping on ``valid``, then calibrate on ``valid``.

    ``class_weight='balanced'`` up-weights positives by the negative/positive ratio (LightGBM's
    ``scale_pos_weight``); calibration on the unweighted validation fold then restores probabilities.
    A fixed ``seed`` (with LightGBM's deterministic mode) makes the fit reproducible.
    """
    label = LABEL_COLUMNS[target]
    y_train = train[label].to_numpy(dtype=float)
    y_valid = valid[label].to_numpy(dtype=float)
    X_train = to_matrix(train, features, vocab)
    X_valid = to_matrix(valid, features, vocab)
    merged = {**DEFAULT_PARAMS, **(params or {})}
    if class_weight == "balanced":
        pos = max(y_train.sum(), 1.0)
        merged["scale_pos_weight"] = float((len(y_train) - pos) / pos)
    clf = lgb.LGBMClassifier(
        objective="binary", random_state=seed, deterministic=True, force_col_wise=True,
        n_jobs=training_threads(threads), verbose=-1, **merged,
    )
    categorical = [j for j, c in enumerate(features) if c in vocab]
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
        target=target, feature_names_=list(features), categories_=vocab, booster_=booster,
        calibrator_=calibrator, params_={**merged, "seed": seed, "calibration": calibration,
                                          "class_weight": class_weight or "none"},
        best_iteration_=best,
    )

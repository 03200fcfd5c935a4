"""Baselines fitted on exactly the rows and splits LightGBM gets, so its margin means something.

* **logistic regression** — a scikit-learn pipeline: median imputation with missing-value
  indicators, a signed log transform (counts and days are heavy-tailed), standardisation, one-hot
  categories, L2 logistic regression. A strong linear baseline, not a strawman.
* **recency/frequency heuristic** — what a retention team does without a model: rank customers by
  how recently and how often they were active (score = log1p(frequency) - log1p(recency); for churn
  the sign flips), turned into probabilities by isotonic calibration on the validation fold.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from funnelcast.features.funnel import FunnelConfig
from funnelcast.features.model_input import ModelInput
from funnelcast.features.targets import TARGETS


def _signed_log(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def fit_logistic(train: pd.DataFrame, model_input: ModelInput, target: str, seed: int = 0) -> Pipeline:
    """The logistic-regression baseline on a training-set frame's model-input columns."""
    vocab = model_input.categories
    numeric = [c for c in model_input.columns if c not in vocab]
    categorical = [c for c in model_input.columns if c in vocab]
    pre = ColumnTransformer([
        ("numeric", make_pipeline(SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
                                  FunctionTransformer(_signed_log), StandardScaler()), numeric),
        ("categorical", OneHotEncoder(categories=[vocab[c] for c in categorical], handle_unknown="ignore"), categorical),
    ])
    model = Pipeline([("prepare", pre), ("logistic", LogisticRegression(C=0.1, max_iter=300, random_state=seed))])
    X = _frame(train, numeric, categorical)
    model.fit(X, train[TARGETS[target].label].to_numpy(dtype=int))
    return model


def predict_logistic(model: Pipeline, frame: pd.DataFrame) -> np.ndarray:
    """The logistic baseline's probabilities for a training-set frame."""
    pre = model.named_steps["prepare"]
    numeric, categorical = pre.transformers[0][2], pre.transformers[1][2]
    return model.predict_proba(_frame(frame, numeric, categorical))[:, 1]


def _frame(frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    out = frame[numeric].astype("float64")
    for c in categorical:
        out[c] = frame[c].astype("string").astype(object).where(frame[c].notna(), "(missing)")
    return out


class RecencyFrequency:
    """The recency/frequency heuristic, with isotonic calibration fitted on the validation fold."""

    def __init__(self, config: FunnelConfig, target: str) -> None:
        longest = max(config.features.windows_days)
        self.recency = "days_since_last_activity"
        self.frequency = f"count_activity_{longest}d"
        self.sign = TARGETS[target].recency_sign
        self.target = target

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        """The heuristic's raw score: higher means likelier (log1p frequency minus log1p days since last activity, signed by target)."""
        recency = frame[self.recency].to_numpy(dtype=float, na_value=np.nan)
        recency = np.where(np.isnan(recency), 10_000.0, recency)  # never active: as stale as it gets
        frequency = np.nan_to_num(frame[self.frequency].to_numpy(dtype=float, na_value=np.nan))
        return self.sign * (np.log1p(frequency) - np.log1p(recency))

    def fit(self, valid: pd.DataFrame) -> RecencyFrequency:
        """Fit the isotonic calibration on the validation rows."""
        self.calibrator_ = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(
            self.score(valid), valid[TARGETS[self.target].label].to_numpy(dtype=float))
        return self

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Calibrated probabilities of the heuristic."""
        return np.clip(self.calibrator_.predict(self.score(frame)), 1e-6, 1 - 1e-6)

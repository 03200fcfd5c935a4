"""The baseline fitted on exactly the rows and splits the learners get, so their margin means something.

(The logistic model on the same inputs is no longer only a baseline: it is one of the learners the
backtest chooses from, :mod:`funnelcast.training.linear`. Baselines written apart from funnelcast's
feature code live in the quality suite, ``quality/baselines.py``.)

* **recency/frequency heuristic** — what a retention team does without a model: rank customers by
  how recently and how often they were active (score = log1p(frequency) - log1p(recency); for churn
  the sign flips), turned into probabilities by isotonic calibration on the validation fold.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression

from funnelcast.features.funnel import FunnelConfig
from funnelcast.features.targets import TARGETS


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

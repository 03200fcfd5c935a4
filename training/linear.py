"""The regularised logistic learner: the same input matrix LightGBM sees, a linear model on it.

Trees find interactions and thresholds; a linear model extrapolates smoothly and is hard to overfit
on a short or small history (a subscription product's five months, a B2B book of a few thousand
accounts). The backtest fits both and their blend and picks per target (:mod:`.backtest`).

Fitting uses scikit-learn (median imputation with missing-value indicators, standardisation,
one-hot categories, L2 logistic regression). The fitted numbers are then kept as plain arrays, so
the model saves as JSON (no pickle), scores one customer in microseconds with numpy, and splits its
log-odds exactly into per-column credits for reasons. A test checks the arrays against the
scikit-learn pipeline they came from.

Numbers are signed-log transformed before scaling (``sign(x) * log1p(|x|)``): counts, days and spend
are heavy-tailed, and a linear model on raw counts is dominated by a few extreme customers.

Scored values are clipped to the range training saw (per column, after scaling), as a tree treats
everything past its last split alike. Without it the model extrapolates: on CDNOW, where every
customer joined in one quarter, training cutoffs see three months of tenure and the test cutoff six,
and the unclipped logistic model's mean probability of a repeat order fell to 0.013 against an
observed 0.090 (clipped: see the quality suite in the README).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

C = 0.1
"""Inverse L2 strength on standardised inputs: a firm prior that keeps hundreds of correlated
windowed counts from trading huge opposite weights."""


def signed_log(x: np.ndarray) -> np.ndarray:
    """``sign(x) * log1p(|x|)``, NaN kept."""
    return np.sign(x) * np.log1p(np.abs(x))


@dataclass
class LinearModel:
    """A fitted logistic model over a model matrix; every array is indexed by the matrix's columns."""

    numeric: np.ndarray  # column indices of numbers
    median: np.ndarray  # per numeric column: the training median (0 where never seen)
    mean: np.ndarray  # per numeric column: mean of the signed log after imputation
    scale: np.ndarray  # per numeric column: its standard deviation (1 where constant)
    coef: np.ndarray  # per numeric column
    indicator: np.ndarray  # numeric columns (indices into ``numeric``) with a missing-value indicator
    indicator_coef: np.ndarray
    indicator_mean: np.ndarray  # share missing in training
    categorical: np.ndarray  # column indices of category codes
    levels: list[np.ndarray]  # per category column: its one-hot coefficients, one per vocabulary entry
    level_mean: list[np.ndarray]  # per category column: each level's share in training
    intercept: float
    low: np.ndarray | None = None  # per numeric column: the smallest scaled value in training (None: no clip)
    high: np.ndarray | None = None  # ... and the largest

    @classmethod
    def fit(cls, X: np.ndarray, y: np.ndarray, categories: dict[int, int], seed: int = 0) -> LinearModel:
        """Fit on model matrix ``X`` (category codes as floats, NaN missing) and labels ``y``;
        ``categories`` maps a category column's index to its vocabulary size."""
        cat = np.array(sorted(categories), dtype=np.intp)
        num = np.array([j for j in range(X.shape[1]) if j not in categories], dtype=np.intp)
        imputer = SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)
        filled = imputer.fit_transform(X[:, num])
        scaler = StandardScaler()
        z = scaler.fit_transform(signed_log(filled[:, : len(num)]))
        low, high = (z.min(axis=0), z.max(axis=0)) if len(z) else (np.zeros(len(num)), np.zeros(len(num)))
        flags = filled[:, len(num):]
        onehots = [_one_hot(X[:, j], categories[int(j)]) for j in cat]
        design = np.hstack([z, flags, *onehots]) if len(num) + len(cat) else np.zeros((len(X), 1))
        lr = LogisticRegression(C=C, max_iter=500, random_state=seed).fit(design, np.asarray(y, dtype=int))
        w = lr.coef_[0]
        n_num, n_flag = len(num), flags.shape[1]
        levels, level_mean, at = [], [], n_num + n_flag
        for j, block in zip(cat, onehots):
            size = categories[int(j)]
            levels.append(w[at : at + size].copy())
            level_mean.append(block.mean(axis=0))
            at += size
        indicator = imputer.indicator_.features_ if imputer.indicator_ is not None else np.zeros(0, dtype=np.intp)
        return cls(
            numeric=num, median=np.nan_to_num(imputer.statistics_.astype(float)), mean=scaler.mean_.astype(float),
            scale=scaler.scale_.astype(float), coef=w[:n_num].copy(), indicator=np.asarray(indicator, dtype=np.intp),
            indicator_coef=w[n_num : n_num + n_flag].copy(), indicator_mean=flags.mean(axis=0) if len(flags) else np.zeros(0),
            categorical=cat, levels=levels, level_mean=level_mean, intercept=float(lr.intercept_[0]),
            low=low.astype(float), high=high.astype(float),
        )

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Per row and matrix column, its part of the log-odds relative to the average training
        customer: ``raw_score(X) == baseline + contributions(X).sum(axis=1)``."""
        X = np.atleast_2d(X)
        out = np.zeros(X.shape, dtype=float)
        values = X[:, self.numeric]
        missing = np.isnan(values)
        z = (signed_log(np.where(missing, self.median, values)) - self.mean) / self.scale
        if self.low is not None:
            np.clip(z, self.low, self.high, out=z)
        out[:, self.numeric] = z * self.coef
        if len(self.indicator):
            flags = missing[:, self.indicator]
            out[:, self.numeric[self.indicator]] += (flags - self.indicator_mean) * self.indicator_coef
        for j, w, share in zip(self.categorical, self.levels, self.level_mean):
            codes = X[:, j]
            known = ~np.isnan(codes) & (codes >= 0) & (codes < len(w))
            picked = np.where(known, w[np.where(known, codes, 0).astype(np.intp)], 0.0)
            out[:, j] = picked - share @ w
        return out

    @property
    def baseline(self) -> float:
        """The log-odds of the average training customer (intercept plus the mean indicator and level terms)."""
        return float(self.intercept + self.indicator_mean @ self.indicator_coef
                     + sum(share @ w for w, share in zip(self.levels, self.level_mean)))

    def raw_score(self, X: np.ndarray) -> np.ndarray:
        """Log-odds per row, summed column by column in order (a running sum: ``sum`` would pair the
        terms differently for one row and for a batch), so one customer scores bit for bit as in a batch
        (``tests/test_scoring.py``)."""
        return self.total(self.contributions(X))

    def total(self, contributions: np.ndarray) -> np.ndarray:
        """The log-odds of rows whose :meth:`contributions` are given (a caller that needs both computes
        the contributions once)."""
        if contributions.shape[1] == 0:
            return np.full(len(contributions), self.baseline)
        return self.baseline + np.cumsum(contributions, axis=1)[:, -1]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (floats round-trip exactly)."""
        return {"numeric": self.numeric.tolist(), "median": self.median.tolist(), "mean": self.mean.tolist(),
                "scale": self.scale.tolist(), "coef": self.coef.tolist(), "indicator": self.indicator.tolist(),
                "indicator_coef": self.indicator_coef.tolist(), "indicator_mean": self.indicator_mean.tolist(),
                "categorical": self.categorical.tolist(), "levels": [w.tolist() for w in self.levels],
                "level_mean": [m.tolist() for m in self.level_mean], "intercept": self.intercept,
                **({} if self.low is None else {"low": self.low.tolist(), "high": self.high.tolist()})}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LinearModel:
        """The model :meth:`to_dict` described."""
        def ints(key: str) -> np.ndarray:
            return np.asarray(data[key], dtype=np.intp)

        def floats(key: str) -> np.ndarray:
            return np.asarray(data[key], dtype=float)

        return cls(numeric=ints("numeric"), median=floats("median"), mean=floats("mean"), scale=floats("scale"),
                   coef=floats("coef"), indicator=ints("indicator"), indicator_coef=floats("indicator_coef"),
                   indicator_mean=floats("indicator_mean"), categorical=ints("categorical"),
                   levels=[np.asarray(w, dtype=float) for w in data["levels"]],
                   level_mean=[np.asarray(m, dtype=float) for m in data["level_mean"]], intercept=float(data["intercept"]),
                   low=floats("low") if "low" in data else None, high=floats("high") if "high" in data else None)


def _one_hot(codes: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros((len(codes), size))
    known = ~np.isnan(codes) & (codes >= 0) & (codes < size)
    out[np.flatnonzero(known), codes[known].astype(np.intp)] = 1.0
    return out

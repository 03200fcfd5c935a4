"""The fitted model of one target: a LightGBM booster, a logistic model, their blend weight, a
stage-aware calibrator, and everything it saw at fit time.

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

**The learner is chosen by evidence.** A model's log-odds are ``w * booster + (1 - w) * linear``:
``w = 1`` is LightGBM alone, ``w = 0`` the regularised logistic model (:mod:`.linear`) alone, and
``w = 0.5`` their blend. The backtest fits all three on every fold and keeps the one with the best
mean test score (:mod:`.backtest`); log-odds add, so reasons (per-column credits) add the same way.

**Calibrated per stage.** One conversion model serves every transition, and one churn model every
stage a customer can churn from; a single calibration map fitted on all rows is right on average and
wrong inside the stages whose base rates differ most (on the simulator, 0.05 ECE on consideration →
purchase). The :class:`Calibrator` therefore maps log-odds to a probability in two steps: a global
monotone map (isotonic or sigmoid) on all held-out rows, then, for each stage with enough held-out
rows of both classes, a Platt correction of that probability's logit (two numbers per stage). A stage
with too few rows keeps the global map: two numbers fitted on a handful of rows would be noise.
Ranking inside a stage is unchanged (the correction is monotone), so ROC-AUC within a transition is
the model's, and calibration within it is the stage's own.

**Seasons, from the same weeks a year earlier.** Calibration is fitted on the latest cutoffs, so its
level is theirs; where a stage's base rate moves with the time of year (a holiday rush, a summer
lull) a model scored in another season is off by that move. Trees rarely learn it: the move is a
level shift of one stage at a few cutoffs. With more than a year of labelled history the
:class:`SeasonalShift` measures it instead: per stage and training cutoff, the log-odds gap between
the observed rate and the model's mean probability; at scoring time t, the gap at the cutoff nearest
t − 1 year minus the mean gap at the calibration cutoffs' counterparts a year earlier is how much
further t's season sat from the calibration season last year. It is shrunk toward zero by its
standard error (a non-negative garrote, ``Δ · max(0, 1 − (1.5 se / Δ)²)``: no change within 1.5
standard errors, nearly all of a shift many standard errors wide; a stage's monthly cell of 1,000 rows
has a standard error near 0.1 on the log-odds). Without a cutoff a year before
t (under a year of history) nothing changes.
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
from funnelcast.features.timestamps import column_ns
from funnelcast.training.horizons import HorizonMap
from funnelcast.training.linear import LinearModel

MODEL_FORMAT = 2
"""Version of the files :meth:`TargetModel.save` writes (format 1, LightGBM alone with one global
calibration map, still loads)."""
READABLE_FORMATS = (1, 2)

SEGMENT_MIN_ROWS = 200
SEGMENT_MIN_CLASS = 15
"""A stage gets its own calibration correction with at least this many held-out rows, and this many of
its rarer class; otherwise it keeps the global map."""

PROBABILITY_FLOOR = 1e-4
"""Calibrated probabilities are kept in [floor, 1 - floor]: a validation block of all positives
(or all negatives) must not make the model certain."""


SEASONAL_NOISE_SE = 1.5
"""A seasonal shift within this many standard errors is taken as noise (:class:`SeasonalShift`)."""
YEAR_NS = int(365.25 * 86_400 * 10**9)
YEARS_BACK = (1, 2, 3)
"""How many years back a seasonal shift looks for its counterparts, nearest first."""
DAY_NS = 86_400 * 10**9


@dataclass
class SeasonalShift:
    """The year-ago seasonal correction of a calibrated model (module docstring): per segment (stage
    code, -1 for rows without one) and training cutoff (int ns), the log-odds gap between the observed
    rate and the model's mean probability, with its standard error; the calibration cutoffs; and how
    far from ``t - 1 year`` a cutoff may sit to stand for it (half the cutoffs' usual spacing)."""

    residuals: dict[int, dict[int, tuple[float, float]]]
    reference: list[int]
    tolerance: int

    @classmethod
    def fit(cls, p: np.ndarray, y: np.ndarray, segment: np.ndarray | None, cutoffs: np.ndarray,
            reference: np.ndarray) -> SeasonalShift:
        """From a model's calibrated probabilities ``p`` of labelled rows (``y``, each row's ``segment``
        and ``cutoffs`` as int ns) and the cutoffs its calibration was fitted on. A (segment, cutoff)
        cell counts with as many rows and rarer-class rows as a stage's calibration correction needs
        (so its shift is finite and not noise)."""
        codes = _segment_codes(segment, len(p))
        y = np.asarray(y, dtype=float)
        keys, cell = np.unique(np.stack([codes, np.asarray(cutoffs, dtype=np.int64)]), axis=1, return_inverse=True)
        cell = cell.ravel()
        n = np.bincount(cell, minlength=keys.shape[1])
        positives = np.bincount(cell, weights=y, minlength=keys.shape[1])
        enough = (n >= SEGMENT_MIN_ROWS) & (np.minimum(positives, n - positives) >= SEGMENT_MIN_CLASS)
        rows = enough[cell]  # only cells with both classes have a finite shift
        keys, positives = keys[:, enough], positives[enough]
        cell = np.cumsum(enough)[cell[rows]] - 1  # renumbered over the kept cells
        # Per cell, the maximum-likelihood shift of the log-odds (a logistic intercept with the model's
        # log-odds as offset), by Newton steps over every cell at once: the logit of the mean rate
        # minus the logit of the mean probability would understate it when the probabilities spread.
        base = _logit(np.clip(np.asarray(p, dtype=float)[rows], PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR))
        shift = np.zeros(keys.shape[1])
        information = np.ones(keys.shape[1])
        for _ in range(25):
            q = expit(base + shift[cell])
            information = np.bincount(cell, weights=q * (1 - q), minlength=keys.shape[1])
            step = (positives - np.bincount(cell, weights=q, minlength=keys.shape[1])) / information
            shift += step
            if not len(step) or np.max(np.abs(step)) < 1e-10:
                break
        se = 1.0 / np.sqrt(information)
        residuals: dict[int, dict[int, tuple[float, float]]] = {}
        for i in range(keys.shape[1]):  # one per (stage, cutoff) cell, not per row
            residuals.setdefault(int(keys[0, i]), {})[int(keys[1, i])] = (float(shift[i]), float(se[i]))
        distinct = np.unique(np.asarray(cutoffs, dtype=np.int64))
        spacing = int(np.median(np.diff(distinct))) if len(distinct) > 1 else DAY_NS
        return cls(residuals, sorted(int(c) for c in np.unique(np.asarray(reference, dtype=np.int64))),
                   max(spacing // 2, DAY_NS))

    def __post_init__(self) -> None:
        # Per segment, what offset() needs that does not depend on the scoring time: the cutoffs as a
        # sorted array with their gaps and errors, and per number of years back the calibration
        # cutoffs' mean year-ago gap and its error (None where one has no counterpart).
        self._cells: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[float, float] | None]]] = {}
        for code, table in self.residuals.items():
            keys = np.array(sorted(table), dtype=np.int64)
            gaps = np.array([table[k][0] for k in keys])
            errors = np.array([table[k][1] for k in keys])
            then = []
            for years in YEARS_BACK:
                found = [self._nearest(keys, c - years * YEAR_NS) for c in self.reference]
                if not found or any(i is None for i in found):
                    then.append(None)
                else:
                    then.append((float(gaps[found].mean()), float(np.sqrt(np.sum(errors[found] ** 2))) / len(found)))
            self._cells[int(code)] = (keys, gaps, errors, then)

    def _nearest(self, keys: np.ndarray, t: int) -> int | None:
        """Index of the cutoff in ``keys`` nearest ``t``, if within the tolerance."""
        i = int(np.searchsorted(keys, t))
        best = min((j for j in (i - 1, i) if 0 <= j < len(keys)), key=lambda j: abs(int(keys[j]) - t), default=None)
        return best if best is not None and abs(int(keys[best]) - t) <= self.tolerance else None

    def offset(self, code: int, at: int) -> float:
        """The log-odds shift for segment ``code`` scored at ``at`` (int ns); 0 where a year-ago cutoff,
        or a calibration cutoff's counterpart, is missing, or the shift is within the noise."""
        cells = self._cells.get(int(code))
        if cells is None:
            return 0.0
        keys, gaps, errors, then = cells
        for years, reference in zip(YEARS_BACK, then):  # the latest year with every counterpart
            now = self._nearest(keys, int(at) - years * YEAR_NS)
            if now is None or reference is None:
                continue
            delta = float(gaps[now]) - reference[0]
            se = float(np.hypot(errors[now], reference[1]))
            # Shrunk toward zero (a non-negative garrote): none within SEASONAL_NOISE_SE standard
            # errors, nearly all of a shift many standard errors wide.
            return delta * max(0.0, 1.0 - (SEASONAL_NOISE_SE * se / delta) ** 2) if delta else 0.0
        return 0.0

    def apply(self, p: np.ndarray, segment: np.ndarray | None, at: np.ndarray | int) -> np.ndarray:
        """``p`` shifted on the log-odds scale per row's segment and scoring time ``at`` (int ns, one for
        every row or one per row): one offset per distinct (segment, time), looked up per row."""
        if not self._cells:
            return p
        codes = _segment_codes(segment, len(p))
        if len(p) == 1 and np.ndim(at) == 0:  # one customer (a request): no tables to build
            shift = self.offset(int(codes[0]), int(at))
            return expit(_logit(p) + shift) if shift else p
        at = np.asarray(at, dtype=np.int64)
        if at.ndim == 0:
            times, when = at.reshape(1), np.zeros(len(p), dtype=np.intp)
        else:
            times, when = np.unique(at, return_inverse=True)
        present, which = np.unique(codes, return_inverse=True)
        table = np.array([[self.offset(code, t) for code in present] for t in times])
        shift = table[when.ravel(), which.ravel()]
        moved = shift != 0
        if moved.any():
            p = p.copy()
            p[moved] = expit(_logit(p[moved]) + shift[moved])
        return p

    def to_dict(self) -> dict[str, Any]:
        return {"residuals": {str(code): {str(c): list(v) for c, v in cells.items()}
                              for code, cells in self.residuals.items()},
                "reference": self.reference, "tolerance": self.tolerance}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SeasonalShift:
        return cls({int(code): {int(c): (float(r), float(e)) for c, (r, e) in cells.items()}
                    for code, cells in data["residuals"].items()},
                   [int(c) for c in data["reference"]], int(data["tolerance"]))


def _segment_codes(segment: np.ndarray | None, n: int) -> np.ndarray:
    """Each row's segment as an int64 code, -1 for a row without one (or for every row, without segments)."""
    if segment is None:
        return np.full(n, -1, dtype=np.int64)
    return np.where(np.isnan(segment), -1, segment).astype(np.int64)


class Calibrator:
    """Maps a booster's raw score (log-odds) to a calibrated probability: isotonic regression or a
    sigmoid (Platt) fit, both from scikit-learn, fitted on a held-out fold."""

    def __init__(self, method: str = "isotonic") -> None:
        if method not in ("isotonic", "sigmoid"):
            raise ValueError(f"calibration method {method!r}: use 'isotonic' or 'sigmoid'")
        self.method = method
        self.segments_: dict[int, tuple[float, float]] = {}
        self.seasonal_: SeasonalShift | None = None

    def fit(self, raw: np.ndarray, y: np.ndarray, segment: np.ndarray | None = None) -> Calibrator:
        """Fit the map from raw scores (log-odds) to probabilities on held-out labels ``y``; with
        ``segment`` (each row's stage code, NaN for none), then a Platt correction per segment that
        has enough rows of both classes."""
        raw = np.asarray(raw, dtype=float)
        y = np.asarray(y, dtype=float)
        self._fit_global(raw, y)
        self.segments_ = {}
        if segment is not None:
            logit = _logit(self._global(raw))
            segment = np.asarray(segment, dtype=float)
            for code in np.unique(segment[~np.isnan(segment)]):
                rows = segment == code
                positives = y[rows].sum()
                if rows.sum() < SEGMENT_MIN_ROWS or min(positives, rows.sum() - positives) < SEGMENT_MIN_CLASS:
                    continue
                platt = LogisticRegression(C=1e6).fit(logit[rows].reshape(-1, 1), y[rows])
                self.segments_[int(code)] = (float(platt.coef_[0, 0]), float(platt.intercept_[0]))
        return self

    def _fit_global(self, raw: np.ndarray, y: np.ndarray) -> None:
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

    def _global(self, raw: np.ndarray) -> np.ndarray:
        if self.method == "isotonic":
            p = np.interp(raw, self.x_, self.y_)
        else:
            p = expit(raw * self.coef_ + self.intercept_)
        return np.clip(p, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)

    def predict(self, raw: np.ndarray, segment: np.ndarray | None = None, at: np.ndarray | int | None = None) -> np.ndarray:
        """Calibrated probabilities of raw scores (with each row's segment, where the map has
        per-segment corrections, and the scoring time ``at`` in int ns, scalar or per row, where it has a
        :class:`SeasonalShift`), kept inside [floor, 1 - floor]."""
        p = self._global(np.asarray(raw, dtype=float))
        segment = None if segment is None else np.asarray(segment, dtype=float)
        if self.segments_ and segment is not None:
            logit = _logit(p)
            for code, (a, b) in self.segments_.items():
                rows = segment == code
                if rows.any():
                    p[rows] = expit(a * logit[rows] + b)
            p = np.clip(p, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
        if self.seasonal_ is not None and at is not None and len(p):
            p = np.clip(self.seasonal_.apply(p, segment, at), PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
        return p

    def to_dict(self) -> dict[str, Any]:
        """The fitted map as plain JSON (floats round-trip exactly)."""
        segments = {str(code): list(ab) for code, ab in self.segments_.items()}
        seasonal = None if self.seasonal_ is None else self.seasonal_.to_dict()
        if self.method == "isotonic":
            return {"method": "isotonic", "x": self.x_.tolist(), "y": self.y_.tolist(), "segments": segments,
                    "seasonal": seasonal}
        return {"method": "sigmoid", "coef": self.coef_, "intercept": self.intercept_, "segments": segments,
                "seasonal": seasonal}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        """The calibrator :meth:`to_dict` described."""
        calibrator = cls(data["method"])
        if calibrator.method == "isotonic":
            calibrator.x_ = np.asarray(data["x"], dtype=float)
            calibrator.y_ = np.asarray(data["y"], dtype=float)
        else:
            calibrator.coef_, calibrator.intercept_ = float(data["coef"]), float(data["intercept"])
        calibrator.segments_ = {int(k): (float(a), float(b)) for k, (a, b) in data.get("segments", {}).items()}
        if data.get("seasonal"):
            calibrator.seasonal_ = SeasonalShift.from_dict(data["seasonal"])
        return calibrator


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def cutoff_ns(cutoffs: pd.Series | np.ndarray) -> np.ndarray:
    """Cutoffs (timestamps; naive ones taken as UTC) as int64 ns since the epoch."""
    return column_ns(pd.to_datetime(pd.Series(cutoffs), utc=True))


LEARNERS = {"lightgbm": 1.0, "logistic": 0.0, "blend": 0.5}
"""Each learner the backtest can choose, as the booster's weight in the model's log-odds."""
STAGE_COLUMN = "current_stage"


class InputBooster:
    """What every funnelcast model has over its input contract (``input_``) and LightGBM booster
    (``booster_``, ``best_iteration_``): its columns, vocabularies, config hash, matrix and raw score.
    Shared by :class:`TargetModel` and :class:`funnelcast.training.value.ValueModel`."""

    input_: ModelInput
    booster_: lgb.Booster
    best_iteration_: int

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

    def booster_raw(self, X: np.ndarray, num_threads: int = 0) -> np.ndarray:
        """The booster's raw score at its best iteration (log-odds; for the value model, log expected spend)."""
        return self.booster_.predict(X, raw_score=True, num_iteration=self.best_iteration_, num_threads=num_threads)


@dataclass
class TargetModel(InputBooster):
    """A calibrated model for one target (LightGBM, logistic or their blend), and the input contract
    it was fitted on."""

    target: str
    input_: ModelInput
    booster_: lgb.Booster
    calibrator_: Calibrator
    params_: dict[str, Any]
    best_iteration_: int
    metadata_: dict[str, Any] = field(default_factory=dict)
    linear_: LinearModel | None = None
    weight_: float = 1.0
    """The booster's weight in the log-odds; the logistic model has ``1 - weight_``."""
    horizon_map_: HorizonMap | None = None
    """Carries the calibrated label-window probability to the horizon the target answers (a target
    trained under ``label_days``; :mod:`.horizons`); None: the label window is the horizon."""

    @property
    def learner_(self) -> str:
        """``lightgbm``, ``logistic`` or ``blend``."""
        return next((name for name, w in LEARNERS.items() if w == self.weight_), f"blend {self.weight_:g}")

    @property
    def uses_booster(self) -> bool:
        """Whether the booster's log-odds count (a logistic-only model skips it when scoring)."""
        return self.weight_ > 0

    @property
    def uses_linear(self) -> bool:
        """Whether the logistic model's log-odds count (a LightGBM-only model skips it)."""
        return self.linear_ is not None and self.weight_ < 1

    def linear_contributions(self, X: np.ndarray) -> np.ndarray | None:
        """The logistic model's per-column log-odds of ``X`` (None where :attr:`uses_linear` is false), for
        :meth:`combine` and :meth:`credits` to share."""
        return self.linear_.contributions(X) if self.uses_linear else None

    def combine(self, booster_raw: np.ndarray | None, X: np.ndarray, linear: np.ndarray | None = None) -> np.ndarray:
        """The model's log-odds from the booster's (None when :attr:`uses_booster` is false) and the matrix
        (``linear``: its :meth:`linear_contributions`, when already computed)."""
        raw = 0.0 if booster_raw is None or not self.uses_booster else self.weight_ * np.asarray(booster_raw, dtype=float)
        if self.uses_linear:
            raw = raw + (1 - self.weight_) * self.linear_.total(self.linear_contributions(X) if linear is None else linear)
        return np.broadcast_to(raw, (len(X),)).astype(float)

    def raw_score(self, X: np.ndarray, num_threads: int = 0) -> np.ndarray:
        """The model's log-odds (before calibration)."""
        return self.combine(self.booster_raw(X, num_threads) if self.uses_booster else None, X)

    def segment(self, X: np.ndarray) -> np.ndarray | None:
        """Each row's calibration segment (its stage code), or None when the input has no stage."""
        names = self.input_.columns
        return X[:, names.index(STAGE_COLUMN)] if STAGE_COLUMN in names else None

    def predict_proba(self, frame: pd.DataFrame | np.ndarray, num_threads: int = 0,
                      at: np.ndarray | int | None = None, label_window: bool = False) -> np.ndarray:
        """Calibrated probability of the target for each row (of a feature frame or the model's matrix),
        over the horizon the target answers (``label_window``: over the window the model was trained
        on, what its labels say). The scoring time for the seasonal shift is ``at`` (int ns), else a
        frame's ``cutoff`` column."""
        X = frame if isinstance(frame, np.ndarray) else self.matrix(frame)
        if at is None and isinstance(frame, pd.DataFrame) and "cutoff" in frame.columns:
            at = cutoff_ns(frame["cutoff"])
        return self.probability(self.raw_score(X, num_threads=num_threads), X, at=at, label_window=label_window)

    def probability(self, raw: np.ndarray, X: np.ndarray | None = None, at: np.ndarray | int | None = None,
                    label_window: bool = False) -> np.ndarray:
        """Calibrated probability of log-odds from :meth:`raw_score`, carried to the target's horizon by
        :attr:`horizon_map_` unless ``label_window``; ``X`` (the same rows' matrix) gives each row's
        stage for the per-stage corrections, ``at`` (int ns: the cutoff, scalar or per row) the season
        for the :class:`SeasonalShift`."""
        p = self.calibrator_.predict(raw, None if X is None else self.segment(X), at=at)
        return p if label_window or self.horizon_map_ is None else self.horizon_map_.apply(p)

    def credits(self, booster_credit: np.ndarray | None, X: np.ndarray, linear: np.ndarray | None = None) -> np.ndarray:
        """Per row and input column, its push on the log-odds: the booster's (from
        :mod:`funnelcast.serving.attribution`) and the logistic model's, each times its weight
        (``linear``: the rows' :meth:`linear_contributions`, when already computed)."""
        out = np.zeros(X.shape) if booster_credit is None or not self.uses_booster else self.weight_ * booster_credit
        if self.uses_linear:
            out = out + (1 - self.weight_) * (self.linear_contributions(X) if linear is None else linear)
        return out

    # ---- files: nothing that executes on load ------------------------------------------------------
    BOOSTER_FILE = "booster.txt"
    MODEL_FILE = "model.json"

    def save(self, folder: str | Path) -> dict[str, Path]:
        """Write the model as LightGBM's own text model and one JSON file (input contract, calibrator,
        logistic model, blend weight, parameters, metadata); returns the paths by role (``booster``, ``model``)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {"booster": folder / self.BOOSTER_FILE, "model": folder / self.MODEL_FILE}
        self.booster_.save_model(str(paths["booster"]), num_iteration=-1)
        paths["model"].write_text(json.dumps({
            "format": MODEL_FORMAT, "target": self.target, "input": self.input_.to_dict(),
            "calibrator": self.calibrator_.to_dict(), "params": self.params_, "best_iteration": self.best_iteration_,
            "linear": None if self.linear_ is None else self.linear_.to_dict(), "weight": self.weight_,
            "horizon_map": None if self.horizon_map_ is None else self.horizon_map_.to_dict(), "metadata": self.metadata_,
        }, default=_plain))  # key order kept: the funnel config's dict order is its feature columns' order
        return paths

    @classmethod
    def load(cls, booster: str | Path, model: str | Path) -> TargetModel:
        """The model :meth:`save` wrote. Raises ``ValueError`` (a format or content problem) or
        ``OSError``; nothing in the files is executed."""
        data = json.loads(Path(model).read_text())
        if data.get("format") not in READABLE_FORMATS:
            raise ValueError(f"{Path(model).name} is not a funnelcast model of format {MODEL_FORMAT} "
                             f"(format {data.get('format')!r})")
        try:
            booster_ = lgb.Booster(model_file=str(booster))
        except lgb.basic.LightGBMError as exc:
            raise ValueError(f"{Path(booster).name} is not a LightGBM model: {exc}") from None
        if data.get("kind") == "value":  # the value target's model (training/value.py)
            from funnelcast.training.value import ValueModel

            return ValueModel.from_files(booster_, data)
        linear, horizon_map = data.get("linear"), data.get("horizon_map")
        return cls(target=data["target"], input_=ModelInput.from_dict(data["input"]), booster_=booster_,
                   calibrator_=Calibrator.from_dict(data["calibrator"]), params_=data["params"],
                   best_iteration_=int(data["best_iteration"]), metadata_=data["metadata"],
                   linear_=None if linear is None else LinearModel.from_dict(linear), weight_=float(data.get("weight", 1.0)),
                   horizon_map_=None if horizon_map is None else HorizonMap.from_dict(horizon_map))


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


def category_sizes(model_input: ModelInput) -> dict[int, int]:
    """Matrix column index -> vocabulary size, for the category attributes of an input contract."""
    names = list(model_input.columns)
    return {names.index(c): len(v) for c, v in model_input.categories.items()}


TWEEDIE_POWER = 1.5
"""The value target's Tweedie variance power: a compound Poisson-gamma, between Poisson (1) and gamma (2)."""
OBJECTIVES: dict[str, tuple[type, dict[str, Any], str]] = {
    "binary": (lgb.LGBMClassifier, {}, "binary_logloss"),
    "tweedie": (lgb.LGBMRegressor, {"tweedie_variance_power": TWEEDIE_POWER}, "tweedie"),
}
"""Objective -> the scikit-learn estimator, its fixed parameters and its early-stopping metric."""


def fit_booster(
    X_train: np.ndarray,
    y_train: np.ndarray,
    model_input: ModelInput,
    params: dict[str, Any] | None = None,
    *,
    valid: tuple[np.ndarray, np.ndarray] | None = None,
    rounds: int | None = None,
    seed: int = 0,
    class_weight: str | None = None,
    early_stopping_rounds: int = 50,
    threads: int = 0,
    objective: str = "binary",
) -> tuple[lgb.Booster, int, dict[str, Any]]:
    """LightGBM on a model matrix: early-stopped on ``valid`` (matrix, labels), or exactly ``rounds``
    trees without a validation set (a refit). Returns the booster, its best iteration and the
    parameters used. ``objective``: ``binary`` (a 0/1 outcome) or ``tweedie`` (an amount: the value
    target, variance power :data:`TWEEDIE_POWER`, the objective and power then among the parameters).

    ``class_weight='balanced'`` up-weights positives by the negative/positive ratio (LightGBM's
    ``scale_pos_weight``); calibration on unweighted held-out rows then restores probabilities. A
    fixed ``seed`` (with LightGBM's deterministic mode) makes the fit reproducible.
    """
    if (valid is None) == (rounds is None):
        raise ValueError("fit_booster needs either a validation set (early stopping) or a number of rounds")
    merged = {**DEFAULT_PARAMS, **(params or {})}
    if rounds is not None:
        merged["n_estimators"] = int(rounds)
    if class_weight == "balanced":
        pos = max(y_train.sum(), 1.0)
        merged["scale_pos_weight"] = float((len(y_train) - pos) / pos)
    estimator, fixed, metric = OBJECTIVES[objective]
    clf = estimator(objective=objective, random_state=seed, deterministic=True, force_col_wise=True,
                    n_jobs=training_threads(threads), verbose=-1, **fixed, **merged)
    features = list(model_input.columns)
    categorical = [j for j, c in enumerate(features) if c in model_input.categories]
    fit_args: dict[str, Any] = {"feature_name": features, "categorical_feature": categorical or "auto"}
    if valid is not None:
        fit_args |= {"eval_X": (valid[0],), "eval_y": (valid[1],), "eval_metric": metric,
                     "callbacks": [lgb.early_stopping(early_stopping_rounds, first_metric_only=True, verbose=False)]}
    clf.fit(X_train, y_train, **fit_args)
    booster = clf.booster_
    best = int(clf.best_iteration_ or booster.current_iteration()) if valid is not None else booster.current_iteration()
    return booster, best, merged if objective == "binary" else {**merged, "objective": objective, **fixed}


def fit_target_model(
    target: str,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    model_input: ModelInput,
    params: dict[str, Any] | None = None,
    *,
    learner: str = "lightgbm",
    seed: int = 0,
    calibration: str = "isotonic",
    class_weight: str | None = None,
    early_stopping_rounds: int = 50,
    threads: int = 0,
) -> TargetModel:
    """Fit ``learner`` (``lightgbm``, ``logistic`` or ``blend``) on ``train``, LightGBM with early
    stopping on ``valid``, then calibrate per stage on ``valid``.

    Both are training-set frames; ``model_input`` turns them into matrices (and is kept with the
    model). ``threads`` (0: ``$FUNNELCAST_THREADS``, else every core) sets LightGBM's threads.
    """
    label = TARGETS[target].label
    y_train = train[label].to_numpy(dtype=float)
    y_valid = valid[label].to_numpy(dtype=float)
    X_train = model_input.matrix_from_frame(train)
    X_valid = model_input.matrix_from_frame(valid)
    booster, best, merged = fit_booster(
        X_train, y_train, model_input, params, valid=(X_valid, y_valid), seed=seed, class_weight=class_weight,
        early_stopping_rounds=early_stopping_rounds, threads=threads)
    weight = LEARNERS[learner]
    linear = LinearModel.fit(X_train, y_train, category_sizes(model_input), seed=seed) if weight < 1 else None
    model = TargetModel(
        target=target, input_=model_input, booster_=booster, calibrator_=Calibrator(calibration), best_iteration_=best,
        params_={**merged, "seed": seed, "calibration": calibration, "class_weight": class_weight or "none"},
        linear_=linear, weight_=weight,
    )
    model.calibrator_.fit(model.raw_score(X_valid), y_valid, model.segment(X_valid))
    return model

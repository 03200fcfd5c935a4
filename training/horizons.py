"""From a horizon the history can label to a longer one: P(no purchase in H) from P(no purchase in h).

A 39-week question on 39 weeks of history has no labelled cutoff: every label window would end after
the data does. A model can still be trained at a shorter horizon ``h`` and its probability carried to
``H``. For one customer buying at a constant rate λ, ``P(none in t) = exp(-λ t)``, so
``P(none in H) = P(none in h)^(H/h)``. Real customers are not that steady: some stop for good, and the
longer the window the more of the silence is theirs, so ``-log P(none in t)`` grows slower than ``t``.
The map keeps one number for that, fitted on the data:

    P(none in H) = P(none in h) ^ ((H / h) ^ κ)

κ = 1 is the constant-rate customer; κ < 1 a silence that lasts. κ is fitted by maximum likelihood on
rows whose longer outcome is already known: a model's P(none in h) at earlier cutoffs, against whether
the customer bought in the ``h2 > h`` days after them (each ``h2`` ending inside the history). The map
is monotone, so it changes no ranking, only the probabilities' level.

In the product (:class:`HorizonMap`) a probability target with ``label_days`` shorter than its
``horizon_days`` is trained, backtested and calibrated on the label window; κ is fitted on the
backtest's out-of-time test rows (each row's calibrated label-window probability against its outcome
over the longest window the data has labelled after that cutoff, up to the horizon), and the refitted
model applies the map after calibration. Conversion and explicit churn are "something happens" targets:
P(none) is 1 − P. Inactivity churn is itself "nothing happens": P(none) is P.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

KAPPA_BOUNDS = (0.05, 2.0)


def map_none_probability(p_none: np.ndarray, ratio: float | np.ndarray, kappa: float) -> np.ndarray:
    """P(none in H) from P(none in h), with ``ratio = H / h`` (module docstring)."""
    p_none = np.clip(np.asarray(p_none, dtype=float), 0.0, 1.0)
    return p_none ** (np.asarray(ratio, dtype=float) ** kappa)


def fit_kappa(p_none: np.ndarray, none_later: np.ndarray, ratio: np.ndarray) -> float:
    """κ by maximum likelihood: rows with a model's P(none in h) (``p_none``), whether the customer then
    made no purchase in the longer window (``none_later``) and that window's length over h (``ratio``,
    each > 1). Raises ValueError without rows, or with no row whose longer window is longer."""
    p_none = np.clip(np.asarray(p_none, dtype=float), 1e-9, 1 - 1e-9)
    none_later = np.asarray(none_later, dtype=float)
    ratio = np.asarray(ratio, dtype=float)
    keep = ~np.isnan(p_none) & ~np.isnan(none_later) & (ratio > 1)
    if not keep.any():
        raise ValueError("no row with a known outcome over a window longer than the model's horizon")
    p_none, none_later, log_ratio = p_none[keep], none_later[keep], np.log(ratio[keep])
    log_p = np.log(p_none)

    def loss(kappa: float) -> float:
        q = np.clip(np.exp(log_p * np.exp(kappa * log_ratio)), 1e-12, 1 - 1e-12)
        return -float(np.mean(none_later * np.log(q) + (1 - none_later) * np.log1p(-q)))

    return float(minimize_scalar(loss, bounds=KAPPA_BOUNDS, method="bounded").x)


@dataclass(frozen=True)
class HorizonMap:
    """A probability target's map from its label window to the horizon it answers (module docstring),
    stored in the model and applied after calibration wherever it scores.

    ``silence``: the target's positive is that nothing happens (inactivity churn), so P(positive) is the
    mapped "none" probability itself; otherwise (conversion, explicit churn) it is 1 − P(positive)."""

    label_days: int
    horizon_days: int
    kappa: float
    silence: bool
    rows: int = 0
    """Rows κ was fitted on (0: none had a longer labelled window; κ is then 1, the constant-rate customer)."""
    fit: dict[str, float] = field(default_factory=dict)
    """On the fitting rows: the log-loss with the fitted κ and with κ = 1, and the mean mapped probability
    against the realised rate of the longer outcome (``p_mean``, ``rate``)."""

    @property
    def ratio(self) -> float:
        return self.horizon_days / self.label_days

    def apply(self, p: np.ndarray) -> np.ndarray:
        """P(positive in the horizon) from the calibrated P(positive in the label window)."""
        return self.carry(p, self.ratio)

    def carry(self, p: np.ndarray, ratio: float | np.ndarray) -> np.ndarray:
        """P(positive) over ``ratio`` label windows from P(positive in one)."""
        p = np.asarray(p, dtype=float)
        if self.silence:
            return map_none_probability(p, ratio, self.kappa)
        return 1.0 - map_none_probability(1.0 - p, ratio, self.kappa)

    def describe(self, target: str) -> str:
        """One sentence for a report or the CLI."""
        basis = (f"κ {self.kappa:.3f} fitted on {self.rows:,} earlier rows whose longer outcome is known"
                 if self.rows else "κ 1 (no earlier row had a longer labelled window: the constant-rate map)")
        return (f"{target}: probabilities answer {self.horizon_days} days, carried from a model of the first "
                f"{self.label_days} days by P(none in H) = P(none in h)^((H/h)^κ), {basis}")

    def to_dict(self) -> dict[str, Any]:
        return {"label_days": self.label_days, "horizon_days": self.horizon_days, "kappa": self.kappa,
                "silence": self.silence, "rows": self.rows, "fit": dict(self.fit)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HorizonMap:
        return cls(label_days=int(data["label_days"]), horizon_days=int(data["horizon_days"]),
                   kappa=float(data["kappa"]), silence=bool(data["silence"]), rows=int(data.get("rows", 0)),
                   fit={k: float(v) for k, v in data.get("fit", {}).items()})


def fit_horizon_map(p: np.ndarray, later: np.ndarray, later_days: np.ndarray, label_days: int, horizon_days: int,
                    silence: bool) -> HorizonMap:
    """A :class:`HorizonMap` from out-of-time rows: the model's calibrated P(positive in ``label_days``)
    (``p``), the positive over a longer window (``later``, NaN where unknown) and that window's days
    (``later_days``). Without a row whose longer window is longer, κ is 1 (said in :meth:`HorizonMap.describe`)."""
    p = np.asarray(p, dtype=float)
    later = np.asarray(later, dtype=float)
    ratio = np.asarray(later_days, dtype=float) / label_days
    keep = ~np.isnan(p) & ~np.isnan(later) & (ratio > 1)
    if not keep.any():
        return HorizonMap(label_days, horizon_days, 1.0, silence)
    p, later, ratio = p[keep], later[keep], ratio[keep]
    # In "none" terms: the none-probability of the label window, and whether nothing happened later.
    p_none, none_later = (p, later) if silence else (1.0 - p, 1.0 - later)
    kappa = fit_kappa(p_none, none_later, ratio)
    made = HorizonMap(label_days, horizon_days, kappa, silence, rows=int(keep.sum()))

    def log_loss(m: HorizonMap) -> float:
        q = np.clip(m.carry(p, ratio), 1e-12, 1 - 1e-12)
        return -float(np.mean(later * np.log(q) + (1 - later) * np.log1p(-q)))

    fit = {"log_loss": log_loss(made), "log_loss_kappa_1": log_loss(dataclasses.replace(made, kappa=1.0)),
           "p_mean": float(np.mean(made.carry(p, ratio))), "rate": float(np.mean(later))}
    return dataclasses.replace(made, fit=fit)

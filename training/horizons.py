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
"""

from __future__ import annotations

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

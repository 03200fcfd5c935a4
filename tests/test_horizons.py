"""Mapping a trainable horizon to a longer one (training/horizons.py)."""

from __future__ import annotations

import numpy as np
import pytest

from funnelcast.training.horizons import fit_kappa, map_none_probability


def _world(n: int, kappa: float, seed: int):
    """Customers whose P(no purchase in t days) is exp(-lam * t^kappa): the map's own family."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(0.8, 0.05, n)
    h, h2 = 90.0, rng.choice([150.0, 180.0, 210.0], n)
    p_h = np.exp(-lam * h ** kappa)
    none_later = (rng.random(n) < np.exp(-lam * h2 ** kappa)).astype(float)
    return p_h, none_later, h2 / h, lam


@pytest.mark.parametrize("kappa", [0.5, 1.0])
def test_kappa_comes_back_and_the_map_is_right_at_a_longer_horizon(kappa):
    p_h, none_later, ratio, lam = _world(60_000, kappa, seed=1)
    fitted = fit_kappa(p_h, none_later, ratio)
    assert fitted == pytest.approx(kappa, abs=0.05)
    H = 273.0
    mapped = map_none_probability(p_h, H / 90.0, fitted)
    np.testing.assert_allclose(mapped, np.exp(-lam * H ** kappa), atol=0.02)


def test_the_map_keeps_the_order_and_the_ends():
    p = np.array([0.0, 0.2, 0.5, 0.9, 1.0])
    mapped = map_none_probability(p, 3.0, 0.6)
    assert mapped[0] == 0.0 and mapped[-1] == 1.0 and np.all(np.diff(mapped) > 0) and np.all(mapped[1:-1] < p[1:-1])
    np.testing.assert_allclose(map_none_probability(p, 3.0, 1.0), p ** 3)  # the constant-rate customer


def test_no_usable_row_is_named():
    with pytest.raises(ValueError, match="no row with a known outcome over a window longer"):
        fit_kappa(np.array([0.5]), np.array([1.0]), np.array([1.0]))

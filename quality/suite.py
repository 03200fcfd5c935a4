"""The quality suite's data sets: name → a function of ``quick`` (smaller sizes) that returns a
:class:`~quality.dataset.QualityDataset`.

Generators are imported inside their entries, so one that is missing or broken fails only its own
data set (the runner records the error and goes on).
"""

from __future__ import annotations

from typing import Callable

from quality.dataset import QualityDataset

SIM_CUSTOMERS = (20_000, 3_000)  # (full, quick)
SUBSCRIPTION_CUSTOMERS = (8_000, 3_000)  # the generators' own default sizes, full
B2B_ACCOUNTS = (6_000, 1_500)


def _size(sizes: tuple[int, int], quick: bool) -> int:
    return sizes[1] if quick else sizes[0]


def _simulated(seed: int) -> Callable[[bool], QualityDataset]:
    """funnelcast's own journey simulator on the shipped five-stage funnel, with its exact truth."""

    def load(quick: bool) -> QualityDataset:
        from funnelcast.features.funnel import load_config
        from funnelcast.features.simulate import simulate

        config = load_config()
        n = _size(SIM_CUSTOMERS, quick)
        sim = simulate(n, config, seed=seed)
        return QualityDataset(
            name=f"sim-seed{seed}",
            description=f"funnelcast's simulator, default five-stage funnel, {n:,} customers, seed {seed}",
            events=sim.events, customers=sim.customers, truth=sim.truth, config=config, data_end=sim.end,
            notes=[f"simulated {sim.start:%Y-%m-%d} to {sim.end:%Y-%m-%d} (end exclusive)"],
        )

    return load


def _generated(module: str, sizes: tuple[int, int], seed: int = 0) -> Callable[[bool], QualityDataset]:
    """A generator of ``quality/generators/<module>.py``: ``generate(n, seed)`` returns a QualityDataset."""

    def load(quick: bool) -> QualityDataset:
        import importlib

        try:
            generator = importlib.import_module(f"quality.generators.{module}")
        except ModuleNotFoundError as exc:
            raise RuntimeError(f"quality/generators/{module}.py is not available: {exc}") from None
        ds = generator.generate(_size(sizes, quick), seed)
        if not isinstance(ds, QualityDataset):
            raise TypeError(f"quality.generators.{module}.generate returned {type(ds).__name__}, not a QualityDataset")
        return ds

    return load


def _cdnow(quick: bool) -> QualityDataset:  # noqa: ARG001 - a real log has one size
    from quality import cdnow

    return cdnow.load()


DATASETS: dict[str, Callable[[bool], QualityDataset]] = {
    "sim-seed0": _simulated(0),
    "sim-seed11": _simulated(11),
    "subscription": _generated("subscription", SUBSCRIPTION_CUSTOMERS),
    "b2b": _generated("b2b", B2B_ACCOUNTS),
    "cdnow": _cdnow,
}
"""Every data set of the suite, in the order the runner takes them."""

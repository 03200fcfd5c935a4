"""funnelcast: for every customer, the probability of reaching the next journey stage and of churning,
with reasons, from a raw event log.

The public API, for notebooks and scripts (the ``funnelcast`` command is a thin shell over it)::

    import funnelcast as fc

    project = fc.Project(mlflow_dir="mlruns")          # the default five-stage funnel
    sim = fc.simulate(5_000, project.config, seed=1)    # or your own events and customers
    data = project.load(sim.events, customers=sim.customers)
    result = project.train(data)
    scores = project.score(data, as_of=sim.end)

:class:`Project` runs the job step by step; :class:`Dataset` is validated data; :class:`TrainingSet`
holds training rows with their fitted :class:`ModelInput`; :class:`Scorer` serves the champion models;
:data:`TARGETS` defines what is predicted; every error funnelcast raises on purpose is a
:class:`FunnelcastError`. Names load on first use: importing funnelcast loads none of pandas,
LightGBM, MLflow or BentoML, and configures nothing.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any

try:
    __version__ = metadata.version("funnelcast")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree without installing
    __version__ = "0"

_EXPORTS = {
    "Project": "funnelcast.project",
    "Dataset": "funnelcast.project",
    "find_truth": "funnelcast.project",
    "FunnelConfig": "funnelcast.features.funnel",
    "load_config": "funnelcast.features.funnel",
    "simulate": "funnelcast.features.simulate",
    "TrainingSet": "funnelcast.features.snapshots",
    "build_features": "funnelcast.features.snapshots",
    "build_training_set": "funnelcast.features.snapshots",
    "ModelInput": "funnelcast.features.model_input",
    "TARGETS": "funnelcast.features.targets",
    "PROBABILITY_TARGETS": "funnelcast.features.targets",
    "Target": "funnelcast.features.targets",
    "FunnelcastError": "funnelcast.features.errors",
    "EventDataError": "funnelcast.features.errors",
    "ConfigError": "funnelcast.features.errors",
    "TrainingDataError": "funnelcast.features.errors",
    "Scorer": "funnelcast.serving.scoring",
    "CustomerBase": "funnelcast.serving.scoring",
    "write_table": "funnelcast.serving.sinks",
}
__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'funnelcast' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__

"""funnelcast as a library: a :class:`Project` runs the whole job from a notebook, a script or the CLI.

A project is a funnel config, an MLflow tracking store and a thread budget. Its methods are the
steps of the job, each taking validated data (a :class:`Dataset`) or anything that becomes one — a
raw events frame, a file, a folder of Parquet files or a SQL source::

    import funnelcast as fc

    project = fc.Project("funnel.yaml", mlflow_dir="mlruns")      # or fc.Project() for the default funnel
    data = project.load("events.parquet", customers="customers.parquet")
    project.check(data).as_dict()                                  # can each target be trained?
    project.features(data, cutoff="2025-06-01")                    # one row per customer
    result = project.train(data)                                   # backtest, calibrate, register
    scores = project.score(data, as_of="2025-12-01")               # every customer, with reasons
    calls = project.outreach(data, top=100)                        # whom to call first
    scorer = project.scorer()                                      # what `funnelcast serve` answers with

Time: every stated time (``as_of``, ``cutoff``, ``data_end``) that is naive is read in the funnel's
``source_timezone``, else UTC (:mod:`funnelcast.features.timestamps`). Features at a cutoff see
events strictly before it; labels look at ``[cutoff, cutoff + horizon)``.

The CLI, the demo, the benchmarks and the test fixtures call these methods; none of them spells
the pipeline out again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Union

import pandas as pd

from funnelcast.features.errors import EventDataError
from funnelcast.features.events import (SqlSource, ValidationSummary, frames_hash, read_customers, read_events,
                                        read_table, validate_customers, validate_source)
from funnelcast.features.funnel import FunnelConfig, load_config
from funnelcast.features.timestamps import stated_time

if TYPE_CHECKING:
    from funnelcast.features.readiness import ReadinessReport
    from funnelcast.features.snapshots import TrainingSet
    from funnelcast.serving.scoring import CustomerBase, Scorer
    from funnelcast.training.train import TrainingResult

Source = Union[str, Path, SqlSource, pd.DataFrame]
"""Events or customers: a raw frame, a CSV/Parquet file, a folder of Parquet files, or a SQL source
(``sqlite:///crm.db#events``, ``postgresql+psycopg://host/db#query=SELECT ...``)."""


@dataclass
class Dataset:
    """Validated events (and customers) ready for every step: canonical frames and what validation did.

    ``events`` is sorted by customer then time with UTC timestamps (the contract of
    :mod:`funnelcast.features.events`); ``truth`` is a simulator's truth table, where there is one.
    """

    events: pd.DataFrame
    customers: pd.DataFrame | None
    summary: ValidationSummary
    customers_summary: ValidationSummary | None = None
    truth: pd.DataFrame | None = None
    as_of: pd.Timestamp | None = None
    """The extraction time given at load (events at or after it were refused), or None."""

    def fingerprint(self) -> str:
        """SHA-256 of the validated events and customers: the same data, the same fingerprint."""
        return frames_hash(self.events, self.customers)

    def __repr__(self) -> str:
        customers = "no customers table" if self.customers is None else f"{len(self.customers):,} customers"
        return f"Dataset({len(self.events):,} events, {customers}{', with truth' if self.truth is not None else ''})"


def find_truth(events: Source) -> pd.DataFrame | None:
    """A simulator's truth table beside a local events file or folder (``truth.parquet``, else ``truth.csv``)."""
    if not isinstance(events, (str, Path)) or "://" in str(events):
        return None
    for ext in ("parquet", "csv"):
        candidate = Path(events).parent / f"truth.{ext}"
        if candidate.exists():
            return read_table(candidate)[0]
    return None


class Project:
    """A funnel config, an MLflow tracking store and a thread budget: the job, step by step.

    Parameters
    ----------
    config : FunnelConfig, path or None
        The funnel config, or a YAML file of one; None is the shipped five-stage journey.
    tracking_uri : str, optional
        An MLflow tracking URI (a server, or ``sqlite:///...``); default ``$MLFLOW_TRACKING_URI``,
        else the embedded store in ``mlflow_dir``.
    mlflow_dir : path, optional
        Folder of the embedded MLflow store (SQLite + artifacts); an explicit one wins over
        ``$MLFLOW_TRACKING_URI``; default ``mlruns/``.
    threads : int
        Threads for LightGBM and the feature engine (0: ``$FUNNELCAST_THREADS``, else every core).
        Set 1 where processes share the cores.
    """

    def __init__(self, config: FunnelConfig | str | Path | None = None, *, tracking_uri: str | None = None,
                 mlflow_dir: str | Path | None = None, threads: int = 0) -> None:
        self.config = config if isinstance(config, FunnelConfig) else load_config(config)
        self._config_given = config is not None
        self.tracking_uri = tracking_uri
        self.mlflow_dir = mlflow_dir
        self.threads = threads

    def __repr__(self) -> str:
        store = self.tracking_uri or (f"mlflow_dir={self.mlflow_dir}" if self.mlflow_dir else "default store")
        return f"Project(funnel {self.config.name!r}, {store}, threads={self.threads or 'auto'})"

    @property
    def resolved_threads(self) -> int:
        """The thread count the steps use: ``threads``, else ``$FUNNELCAST_THREADS``, else every core."""
        from funnelcast.training.model import training_threads

        return training_threads(self.threads) or os.cpu_count() or 1

    # ---- data ------------------------------------------------------------------------------------
    def load(self, events: Source, customers: Source | None = None, *, as_of: Any = None,
             truth: Source | str | None = None, config: FunnelConfig | None = None) -> Dataset:
        """Read and validate events (and a customers table) under the funnel's contract.

        ``as_of`` is the extraction time (a stated time; default: none): an event at or after it is an
        error. ``truth``: a simulator's truth table (frame or source), or ``"auto"`` for the one beside
        a local events file. Raises :class:`~funnelcast.features.errors.EventDataError` naming the
        source, column, rows and values of whatever breaks the contract. ``config`` validates under
        another funnel config than the project's (a scorer's, for the models it serves).
        """
        cfg = config or self.config
        if isinstance(events, pd.DataFrame):
            ev, summary = validate_source(events, cfg, as_of=as_of)
        else:
            ev, summary = read_events(events, cfg, as_of=as_of)
        cust, cust_summary = None, None
        if customers is not None:
            if isinstance(customers, pd.DataFrame):
                cust, cust_summary = validate_customers(customers, cfg)
            else:
                cust, cust_summary = read_customers(customers, cfg)
        if isinstance(truth, str) and truth == "auto":
            truth_frame = find_truth(events)
        elif truth is None or isinstance(truth, pd.DataFrame):
            truth_frame = truth
        else:
            if isinstance(truth, (str, Path)) and "://" not in str(truth) and not Path(truth).exists():
                raise EventDataError(f"truth table {str(truth)!r}: no such file")
            truth_frame = read_table(truth)[0]
        stated = None if as_of is None else stated_time(as_of, cfg.source_timezone, "as_of")
        return Dataset(ev, cust, summary, cust_summary, truth_frame, stated)

    def _data(self, data: Dataset | Source, customers: Source | None, config: FunnelConfig | None = None) -> Dataset:
        if isinstance(data, Dataset):
            if customers is not None:
                raise TypeError("pass customers to load(), not beside a Dataset that already has its own")
            return data
        return self.load(data, customers, config=config)

    # ---- steps -----------------------------------------------------------------------------------
    def check(self, data: Dataset | Source, customers: Source | None = None, *, data_end: Any = None) -> ReadinessReport:
        """Readiness per target before anyone trains: history, labelled rows and positives against the
        config's minimums, event types seen and unmapped, sparse customers (a plain verdict each)."""
        from funnelcast.features.readiness import assess

        d = self._data(data, customers)
        return assess(d.events, self.config, customers=d.customers, summary=d.summary, data_end=data_end)

    def features(self, data: Dataset | Source, cutoff: Any, customers: Source | None = None) -> pd.DataFrame:
        """One row per customer at ``cutoff`` from events strictly before it: ``customer_id``,
        ``cutoff``, behaviour features, customer attributes, ``stage`` and ``<target>_eligible`` —
        the frame a registered MLflow model predicts from as it is."""
        from funnelcast.features.snapshots import build_features

        d = self._data(data, customers)
        cut = stated_time(cutoff, self.config.source_timezone, "cutoff")
        if d.as_of is not None and cut > d.as_of:
            raise EventDataError(
                f"cutoff {cut.isoformat()} is after the data's "
                f"extraction time (as-of) {d.as_of.isoformat()}: features there would miss every event not yet "
                "extracted. Choose a cutoff at or before the as-of time")
        return build_features(d.events, d.customers, cut, self.config)

    def training_set(self, data: Dataset | Source, customers: Source | None = None, *, data_end: Any = None,
                     progress: Callable[[int, int], None] | None = None) -> TrainingSet:
        """(customer, cutoff) rows over the snapshot schedule with every target's label, and the fitted
        input contract; ``data_end`` (exclusive) defaults to just after the last event.
        ``progress(done, total)`` is called after each cutoff."""
        from funnelcast.features.snapshots import build_training_set

        d = self._data(data, customers)
        return build_training_set(d.events, d.customers, self.config, data_end=data_end, progress=progress)

    def train(self, data: Dataset | TrainingSet | Source, customers: Source | None = None, *,
              training_set: TrainingSet | None = None, truth: pd.DataFrame | None = None, data_end: Any = None,
              force: bool = False, tune: int = 0, report_dir: str | Path | None = None,
              progress: Callable[[str], None] | None = None) -> TrainingResult:
        """Backtest, calibrate, log and register a model per configured target; decide champion or
        challenger (``force``: champion regardless). ``tune`` Optuna trials per target (0: none).

        ``data`` is a dataset (or a source), whose training set is built here unless ``training_set``
        (built from it) is given, or a training set alone (the run then records no input hash of the
        events). ``truth`` (default: the dataset's) adds the simulator's oracle. Returns metrics,
        versions, decisions and report paths (``result.entries`` is what ``funnelcast train --json``
        prints).
        """
        from funnelcast.features.snapshots import TrainingSet
        from funnelcast.training.train import train

        if isinstance(data, TrainingSet):
            table, d = data, None
        else:
            d = self._data(data, customers)
            table = training_set if training_set is not None else self.training_set(d, data_end=data_end)
        return train(
            table, self.config, truth=truth if truth is not None else (d.truth if d else None),
            events=d.events if d else None, customers=d.customers if d else None,
            tracking_uri=self.tracking_uri, home=self.mlflow_dir, report_dir=report_dir, force=force,
            tune_trials=tune, threads=self.threads, progress=progress,
        )

    # ---- scores ----------------------------------------------------------------------------------
    def scorer(self, alias: str = "champion") -> Scorer:
        """The ``alias`` models of every configured target from the registry (what the service serves).

        Raises :class:`~funnelcast.training.tracking.RegistryError` naming the store and model when one
        is missing.
        """
        from funnelcast.serving.scoring import Scorer

        # Without a config of its own, a project serves the models with the funnel they were trained on.
        return Scorer.from_registry(self.config if self._config_given else None, tracking_uri=self.tracking_uri,
                                    home=self.mlflow_dir, alias=alias)

    def customer_base(self, data: Dataset | Source, customers: Source | None = None, *, as_of: Any = None,
                      reasons: bool = False, scorer: Scorer | None = None,
                      progress: Callable[[int, int], None] | None = None) -> CustomerBase:
        """Every customer of the data scored at ``as_of`` (default now; events at or after it stay
        out of view, counted in ``events_after_as_of``): the population the outreach list, the
        percentiles and the service use. ``reasons=True`` explains every row (a batch file)."""
        from funnelcast.serving.scoring import CustomerBase, source_arrays

        scorer = scorer or self.scorer()
        d = self._data(data, customers, config=scorer.config)
        t = scorer.as_of_ns(as_of)
        arrays = source_arrays(d.events, d.customers, scorer.config)
        return CustomerBase(scorer, arrays, d.customers, t, reasons=reasons, threads=self.resolved_threads,
                            progress=progress)

    def score(self, data: Dataset | Source, customers: Source | None = None, *, as_of: Any = None,
              reasons: bool = True, scorer: Scorer | None = None,
              progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
        """Scores of every customer at ``as_of`` with the champion models: one row each, a probability
        per target (null where it does not apply), percentile, risk tier, value at risk and reasons."""
        return self.customer_base(data, customers, as_of=as_of, reasons=reasons, scorer=scorer, progress=progress).table

    def outreach(self, data: Dataset | Source, customers: Source | None = None, *, top: int = 500,
                 stage: str | None = None, segment: str | None = None, as_of: Any = None,
                 scorer: Scorer | None = None) -> pd.DataFrame:
        """The ``top`` customers to contact first, by expected value at risk (churn probability ×
        customer value), optionally of one stage and/or segment, with reasons."""
        base = self.customer_base(data, customers, as_of=as_of, scorer=scorer)
        return base.outreach(top, stage, segment)[0]


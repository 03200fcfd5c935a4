"""Point-in-time frames: one customer's features at a cutoff (:func:`build_features`), and training
sets of (customer, cutoff) rows over a schedule of snapshot cutoffs with the labels of every target
(:func:`build_training_set`).

Both are made by the same code the scorer runs — :func:`~funnelcast.features.behaviour.compute_features`
over :class:`~funnelcast.features.events.EventArrays`, then the fitted
:class:`~funnelcast.features.model_input.ModelInput` — and both carry, beside the model's columns, the
customer's ``stage`` at the cutoff and a ``<target>_eligible`` column per target: what the MLflow model
needs to give a probability only where its target applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from funnelcast.features.behaviour import FeatureSpec, compute_features, feature_spec
from funnelcast.features.errors import TrainingDataError
from funnelcast.features.events import EventArrays
from funnelcast.features.funnel import FunnelConfig
from funnelcast.features.labels import Eligibility, eligibility
from funnelcast.features.model_input import ModelInput
from funnelcast.features.targets import (LATER_COLUMNS, PROBABILITY_TARGETS, TARGETS, compute_labels, compute_later,
                                         longer_window_days)
from funnelcast.features.timestamps import DAY_NS, column_ns, stated_ns


def snapshot_cutoffs(data_start: Any, data_end: Any, config: FunnelConfig) -> list[pd.Timestamp]:
    """Cutoffs on the config's grid (``anchor_date + k * every_days``, midnight UTC) with at least
    ``min_history_days`` of data before them and strictly before ``data_end``.

    The grid is global, so every dataset and the simulator's truth share the same cutoffs.
    """
    snap = config.snapshots
    start = pd.Timestamp(stated_ns(data_start, config.source_timezone, "data start"), tz="UTC")
    start += pd.Timedelta(days=snap.min_history_days)
    end = pd.Timestamp(stated_ns(data_end, config.source_timezone, "data end"), tz="UTC")
    anchor = pd.Timestamp(snap.anchor_date, tz="UTC")
    every_ns = snap.every_days * DAY_NS
    k0 = -(-(start - anchor).value // every_ns)  # ceiling division in integer nanoseconds
    out = []
    k = k0
    while (c := anchor + pd.Timedelta(days=k * snap.every_days)) < end:
        out.append(c)
        k += 1
    return out


FRAME_EXTRAS = ("customer_id", "cutoff", "stage", *(t.eligible_column for t in TARGETS.values()),
                *(t.label for t in TARGETS.values()), *LATER_COLUMNS)
"""Columns of feature frames and training sets that are not model inputs."""


@dataclass
class TrainingSet:
    """A training set: the rows (:attr:`frame`) and the fitted input contract they were built with.

    ``frame`` columns: ``customer_id``, ``cutoff``, the model input's columns, ``stage`` (name), a
    ``<target>_eligible`` and a ``<target>_label`` column per target (nullable Int8, Float64 for the
    amount target ``value``: <NA> where the customer is not eligible or the horizon runs past
    ``data_end``), and ``value_later``: spend in the label window after ``value_label``'s (<NA> where
    that window runs past ``data_end``). A probability target trained on a shorter window than its
    horizon (``label_days``) also has ``<target>_later`` (its outcome over the longest window the data
    has labelled, up to the horizon; Int8) and ``<target>_later_days`` (that window's days; both <NA>
    where it is no longer than the label window). Rows eligible for no known label are left out.
    """

    frame: pd.DataFrame
    model_input: ModelInput
    data_end: pd.Timestamp

    def __len__(self) -> int:
        return len(self.frame)

    def rows(self, target: str) -> pd.DataFrame:
        """The rows whose label for ``target`` is known."""
        label = TARGETS[target].label
        return self.frame.loc[self.frame[label].notna()]


def _decorate(frame: pd.DataFrame, spec: FeatureSpec, elig: Eligibility, rows: np.ndarray | slice) -> pd.DataFrame:
    """Add ``stage`` (name, missing before any stage) and every target's ``<target>_eligible`` column."""
    stage = elig.stage[rows]
    frame["stage"] = pd.Categorical.from_codes(np.where(np.isnan(stage), -1, stage).astype(np.int64),
                                               categories=list(spec.config.stage_names))
    for target in TARGETS.values():
        frame[target.eligible_column] = target.eligible(elig)[rows]
    return frame


def build_features(
    events: pd.DataFrame, customers: pd.DataFrame | None, cutoff: Any, config: FunnelConfig,
    model_input: ModelInput | None = None,
) -> pd.DataFrame:
    """One row per customer at ``cutoff``, from events strictly before it (validated, canonical frames).

    ``cutoff`` is a stated time (naive: the config's ``source_timezone``, else UTC). Rows cover every
    customer with an event before the cutoff, plus every customer in ``customers`` (those without
    events get zero counts and missing recencies). Columns: ``customer_id``, ``cutoff``, the model
    input's columns (behaviour features, then customer attributes), ``stage`` and a
    ``<target>_eligible`` column per target. ``model_input`` (a model's ``input_``) fixes the
    attributes' encoding; by default it is fitted on ``customers``. A registered MLflow model
    predicts from this frame as it is.
    """
    spec = feature_spec(config)
    t = stated_ns(cutoff, config.source_timezone, "cutoff")
    model_input = model_input or ModelInput.fit(config, customers)
    visible_ids = events["customer_id"].to_numpy(dtype=object)[column_ns(events["timestamp"]) < t]
    universe = np.unique(visible_ids)
    if customers is not None:
        universe = np.union1d(universe, customers["customer_id"].to_numpy(dtype=object))
    arrays = EventArrays.from_frame(events, config, customer_ids=universe)
    behaviour = compute_features(arrays, t, spec)
    attrs = model_input.encode_customers(customers, arrays.customer_ids)
    frame = model_input.frame(arrays.customer_ids, t, behaviour, attrs)
    return _decorate(frame, spec, eligibility(arrays, t, spec, behaviour), slice(None))


def build_training_set(
    events: pd.DataFrame,
    customers: pd.DataFrame | None,
    config: FunnelConfig,
    cutoffs: list[Any] | None = None,
    data_end: Any = None,
    progress: Callable[[int, int], None] | None = None,
    model_input: ModelInput | None = None,
) -> TrainingSet:
    """(customer, cutoff) rows with features and labels for every target whose label is known.

    ``data_end`` is the end of observation (exclusive; a stated time, naive: the config's
    ``source_timezone``, else UTC); by default just after the last event. ``cutoffs`` default to
    :func:`snapshot_cutoffs` between the first event and ``data_end``. The input contract is fitted
    on ``customers`` unless ``model_input`` is given. Raises :class:`TrainingDataError` when no row
    has a known label.
    """
    spec = feature_spec(config)
    if len(events) == 0:
        raise TrainingDataError("no events: a training set needs events")
    model_input = model_input or ModelInput.fit(config, customers)
    ts = events["timestamp"]
    end = stated_ns(data_end, config.source_timezone, "data end") if data_end is not None else int(ts.max().value) + 1
    if cutoffs is None:
        cutoffs = snapshot_cutoffs(ts.min(), pd.Timestamp(end, tz="UTC"), config)
    arrays = EventArrays.from_frame(events, config)
    attrs = model_input.encode_customers(customers, arrays.customer_ids)
    parts = []
    for i, cutoff in enumerate(cutoffs):
        t = stated_ns(cutoff, config.source_timezone, "cutoff")
        behaviour = compute_features(arrays, t, spec)
        elig, labels = compute_labels(arrays, t, spec, behaviour)
        known = {name: eligible & (t + TARGETS[name].horizon_days(config) * DAY_NS <= end)
                 for name, (eligible, _) in labels.items()}
        keep = np.flatnonzero(np.logical_or.reduce(list(known.values())))
        if progress is not None:
            progress(i + 1, len(cutoffs))
        if len(keep) == 0:
            continue
        frame = model_input.frame(arrays.customer_ids[keep], t, behaviour[keep], attrs.take(keep))
        frame = _decorate(frame, spec, elig, keep)
        for name, (_, outcome) in labels.items():
            label = pd.array(outcome[keep], dtype=TARGETS[name].label_dtype)
            label[~known[name][keep]] = pd.NA
            frame[TARGETS[name].label] = label
        for name, target in PROBABILITY_TARGETS.items():
            if target.mapped(config):  # the outcome over the longest labelled window: fits the horizon map
                days = longer_window_days(target, config, t, end)
                longer = days > target.horizon_days(config)
                later = pd.array(target.outcome(arrays, t, spec, elig, days)[keep] if longer else
                                 np.zeros(len(keep), dtype=np.int8), dtype="Int8")
                later[~(known[name][keep] & longer)] = pd.NA
                window = pd.array(np.full(len(keep), days), dtype="Int32")
                window[pd.isna(later)] = pd.NA
                frame[target.later], frame[target.later_days] = later, window
        for name, amount in compute_later(arrays, t, spec).items():
            target = TARGETS[name]
            later = pd.array(amount[keep], dtype="Float64")
            later[~(known[name][keep] & (t + 2 * target.horizon_days(config) * DAY_NS <= end))] = pd.NA
            frame[target.later] = later
        parts.append(frame)
    if not parts:
        raise TrainingDataError(
            f"no (customer, cutoff) row has a known label: {len(cutoffs)} cutoffs between the first event and "
            f"{pd.Timestamp(end, tz='UTC')}; the data may be shorter than min_history_days + the horizons"
        )
    return TrainingSet(pd.concat(parts, ignore_index=True), model_input, pd.Timestamp(end, tz="UTC"))

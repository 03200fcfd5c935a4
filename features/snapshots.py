"""Training sets: (customer, cutoff) rows over a schedule of snapshot cutoffs, with point-in-time
features and the labels of :mod:`features.labels`. The same feature code builds scoring rows."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd

from funnelcast.features.behaviour import DAY_NS, EventArrays, compute_features, cutoff_ns, feature_spec, attribute_features
from funnelcast.features.funnel import FunnelConfig
from funnelcast.features.labels import compute_labels


def snapshot_cutoffs(data_start: Any, data_end: Any, config: FunnelConfig) -> list[pd.Timestamp]:
    """Cutoffs on the config's grid (``anchor_date + k * every_days``, midnight UTC) with at least
    ``min_history_days`` of data before them and strictly before ``data_end``.

    The grid is global, so every dataset and the simulator's truth share the same cutoffs.
    """
    snap = config.snapshots
    start = pd.Timestamp(data_start)
    start = (start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")) + pd.Timedelta(days=snap.min_history_days)
    end = pd.Timestamp(data_end)
    end = end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")
    anchor = pd.Timestamp(snap.anchor_date, tz="UTC")
    every_ns = snap.every_days * DAY_NS
    k0 = -(-(start - anchor).value // every_ns)  # ceiling division in integer nanoseconds
    out = []
    k = k0
    while (c := anchor + pd.Timedelta(days=k * snap.every_days)) < end:
        out.append(c)
        k += 1
    return out


def build_training_set(
    events: pd.DataFrame,
    customers: pd.DataFrame | None,
    config: FunnelConfig,
    cutoffs: list[Any] | None = None,
    data_end: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """(customer, cutoff) rows with features and labels for every target whose label is known.

    ``data_end`` is the end of observation (exclusive); by default just after the last event.
    ``cutoffs`` default to :func:`snapshot_cutoffs` between the first event and ``data_end``.
    Columns: ``customer_id``, ``cutoff``, features, attributes, ``stage`` (name), then
    ``convert_label`` and ``churn_label`` (nullable Int8: <NA> where the customer is not
    eligible or the horizon runs past ``data_end``). Rows eligible for no known label are left out.
    """
    spec = feature_spec(config)
    if len(events) == 0:
        raise ValueError("no events: a training set needs events")
    ts = events["timestamp"]
    end = cutoff_ns(data_end) if data_end is not None else int(ts.max().value) + 1
    if cutoffs is None:
        cutoffs = snapshot_cutoffs(ts.min(), pd.Timestamp(end, tz="UTC"), config)
    arrays = EventArrays.from_frame(events, config)
    stages = np.asarray(config.stage_names, dtype=object)
    parts = []
    for i, cutoff in enumerate(cutoffs):
        t = cutoff_ns(cutoff)
        matrix = compute_features(arrays, t, spec)
        labels = compute_labels(arrays, t, spec, matrix)
        conv_known = labels.convert_eligible & (t + config.conversion.horizon_days * DAY_NS <= end)
        churn_known = labels.churn_eligible & (t + config.churn.horizon_days * DAY_NS <= end)
        keep = np.flatnonzero(conv_known | churn_known)
        if progress is not None:
            progress(i + 1, len(cutoffs))
        if len(keep) == 0:
            continue
        frame = pd.DataFrame(matrix[keep], columns=list(spec.columns))
        frame.insert(0, "cutoff", pd.Timestamp(t, tz="UTC"))
        frame.insert(0, "customer_id", pd.array(arrays.customer_ids[keep], dtype="string"))
        attrs = attribute_features(customers, arrays.customer_ids[keep], t)
        if len(attrs.columns):
            frame = pd.concat([frame, attrs], axis=1)
        frame["stage"] = pd.Categorical(stages[matrix[keep, spec.columns.index("current_stage")].astype(int)], categories=list(stages))
        frame["convert_label"] = pd.array(np.where(conv_known[keep], labels.convert[keep], 0), dtype="Int8")
        frame.loc[~conv_known[keep], "convert_label"] = pd.NA
        frame["churn_label"] = pd.array(np.where(churn_known[keep], labels.churn[keep], 0), dtype="Int8")
        frame.loc[~churn_known[keep], "churn_label"] = pd.NA
        parts.append(frame)
    if not parts:
        raise ValueError(
            f"no (customer, cutoff) row has a known label: {len(cutoffs)} cutoffs between the first event and "
            f"{pd.Timestamp(end, tz='UTC')}; the data may be shorter than min_history_days + the horizons"
        )
    return pd.concat(parts, ignore_index=True)

"""Targets at a cutoff: who is eligible, and what happened in ``[cutoff, cutoff + horizon)``.

* **next-stage conversion** — for customers at a stage that has a next one and active within
  ``conversion.active_within_days``: 1 if any event evidencing a *later* stage occurs in the window.
* **churn** — for customers at ``churn.applies_from_stage`` or later who have not churned already
  (inactivity: a qualifying event within the last horizon; explicit: no churn event yet):
  inactivity → 1 if no qualifying event occurs in the window; explicit → 1 if a churn event does.

A label whose window runs past ``data_end`` is unknown: the row is left out, never called negative.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.behaviour import DAY_NS, EventArrays, FeatureSpec


@dataclass(frozen=True)
class Labels:
    convert_eligible: np.ndarray  # (C,) bool
    convert: np.ndarray  # (C,) int8, meaningful where eligible
    churn_eligible: np.ndarray
    churn: np.ndarray


def _window_mask(a: EventArrays, start: int, days: int) -> np.ndarray:
    return (a.ts >= start) & (a.ts < start + days * DAY_NS)


def compute_labels(a: EventArrays, t: int, spec: FeatureSpec, features: np.ndarray) -> Labels:
    """Eligibility from the point-in-time ``features`` at ``t``; outcomes from events in each horizon."""
    cfg = spec.config
    col = {name: i for i, name in enumerate(spec.columns)}
    stage = features[:, col["current_stage"]]
    c = a.n_customers
    # Activity windows are compared in integer nanoseconds: float days cannot tell 180 d from 180 d + 1 ns.
    visible_activity = spec.type_activity[a.event_type] & (a.ts < t)
    last_activity = np.full(c, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(last_activity, a.customer[visible_activity], a.ts[visible_activity])

    def active_within(days: int) -> np.ndarray:
        return last_activity >= t - days * DAY_NS

    n_stages = spec.n_stages

    h_conv = cfg.conversion.horizon_days
    win = _window_mask(a, t, h_conv)
    furthest = np.full(c, -1, dtype=np.int64)
    np.maximum.at(furthest, a.customer[win], spec.type_stage[a.event_type[win]])
    with np.errstate(invalid="ignore"):
        convert_eligible = (stage >= 0) & (stage < n_stages - 1) & active_within(cfg.conversion.active_within_days)
    convert = (furthest > np.nan_to_num(stage, nan=n_stages)).astype(np.int8)

    h_churn = cfg.churn.horizon_days
    win = _window_mask(a, t, h_churn)
    with np.errstate(invalid="ignore"):
        at_churn_stage = stage >= cfg.churn_stage_index
    if cfg.churn.definition == "inactivity":
        with np.errstate(invalid="ignore"):
            churn_eligible = at_churn_stage & active_within(h_churn)
        active = spec.type_activity[a.event_type] & win
        churn = (np.bincount(a.customer[active], minlength=c) == 0).astype(np.int8)
    else:
        is_churn_event = np.isin(a.event_type, [cfg.event_types.index(e) for e in cfg.churn.churn_event_types])
        before = is_churn_event & (a.ts < t)
        churn_eligible = at_churn_stage & (np.bincount(a.customer[before], minlength=c) == 0)
        churn = (np.bincount(a.customer[is_churn_event & win], minlength=c) > 0).astype(np.int8)
    return Labels(convert_eligible, convert, churn_eligible, churn)

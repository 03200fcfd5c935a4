"""Targets at a cutoff: who is eligible, and what happened in ``[cutoff, cutoff + horizon)``.

* **next-stage conversion** — for customers at a stage that has a next one and active within
  ``conversion.active_within_days``: 1 if any event evidencing a *later* stage occurs in the window.
  The window is ``conversion.label_window_days`` (``label_days`` when set, else the horizon).
* **churn** — for customers at ``churn.applies_from_stage`` or later who have not churned already
  (inactivity: a qualifying event within the last horizon; explicit: no churn event yet):
  inactivity → 1 if no qualifying event occurs in the window; explicit → 1 if a churn event does.

Under ``churn.label_days`` the churn window is that many days; "churned already" still means no
qualifying event in the whole ``horizon_days``.

A label whose window runs past ``data_end`` is unknown: the row is left out, never called negative.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from funnelcast.features.behaviour import FeatureSpec
from funnelcast.features.events import EventArrays
from funnelcast.features.timestamps import DAY_NS


def _window_mask(a: EventArrays, start: int, days: int) -> np.ndarray:
    return (a.ts >= start) & (a.ts < start + days * DAY_NS)


@dataclass(frozen=True)
class Eligibility:
    """Who each target applies to at a cutoff, from events strictly before it (what scoring uses too)."""

    stage: np.ndarray  # (C,) float stage index, NaN before any stage
    convert: np.ndarray  # (C,) bool: at a stage with a next one and active recently enough
    churn: np.ndarray  # (C,) bool: at the churn stage or later and not churned already
    lapsed: np.ndarray  # (C,) bool: at a stage but inactive past conversion.active_within_days
    churned: np.ndarray  # (C,) bool: at the churn stage or later and churned already


def eligibility(a: EventArrays, t: int, spec: FeatureSpec, features: np.ndarray) -> Eligibility:
    """Eligibility at ``t`` from the point-in-time ``features`` (columns ``spec.columns``) and events before ``t``."""
    cfg = spec.config
    stage = features[:, spec.columns.index("current_stage")]
    c = a.n_customers
    # Activity windows are compared in integer nanoseconds: float days cannot tell 180 d from 180 d + 1 ns.
    visible_activity = spec.type_activity[a.event_type] & (a.ts < t)
    last_activity = np.full(c, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(last_activity, a.customer[visible_activity], a.ts[visible_activity])

    def active_within(days: int) -> np.ndarray:
        return last_activity >= t - days * DAY_NS

    with np.errstate(invalid="ignore"):
        has_stage = stage >= 0
        recent = active_within(cfg.conversion.active_within_days)
        convert = has_stage & (stage < spec.n_stages - 1) & recent
        at_churn_stage = stage >= cfg.churn_stage_index
    if cfg.churn.definition == "inactivity":
        churn = at_churn_stage & active_within(cfg.churn.horizon_days)
    else:
        before = np.isin(a.event_type, _churn_codes(cfg)) & (a.ts < t)
        churn = at_churn_stage & (np.bincount(a.customer[before], minlength=c) == 0)
    return Eligibility(stage, convert, churn, has_stage & ~at_churn_stage & ~recent, at_churn_stage & ~churn)


def _churn_codes(cfg) -> list[int]:
    return [cfg.event_types.index(e) for e in cfg.churn.churn_event_types]


def conversion_outcome(a: EventArrays, t: int, spec: FeatureSpec, elig: Eligibility, days: int | None = None
                       ) -> np.ndarray:
    """1 where an event evidencing a later stage than the customer's occurs in ``[t, t + days)`` (default:
    the conversion label window)."""
    win = _window_mask(a, t, spec.config.conversion.label_window_days if days is None else days)
    furthest = np.full(a.n_customers, -1, dtype=np.int64)
    np.maximum.at(furthest, a.customer[win], spec.type_stage[a.event_type[win]])
    return (furthest > np.nan_to_num(elig.stage, nan=spec.n_stages)).astype(np.int8)


def churn_outcome(a: EventArrays, t: int, spec: FeatureSpec, elig: Eligibility,  # noqa: ARG001
                  days: int | None = None) -> np.ndarray:
    """1 where the customer churns in ``[t, t + days)`` (default: the churn label window): no qualifying
    event (inactivity) or a churn event (explicit)."""
    cfg = spec.config
    c = a.n_customers
    win = _window_mask(a, t, cfg.churn.label_window_days if days is None else days)
    if cfg.churn.definition == "inactivity":
        active = spec.type_activity[a.event_type] & win
        return (np.bincount(a.customer[active], minlength=c) == 0).astype(np.int8)
    return (np.bincount(a.customer[np.isin(a.event_type, _churn_codes(cfg)) & win], minlength=c) > 0).astype(np.int8)


def spend_between(a: EventArrays, spec: FeatureSpec, start: int, days: int) -> np.ndarray:
    """Per customer, the purchase amounts in ``[start, start + days)`` (a purchase without an amount counts 0)."""
    m = spec.type_purchase[a.event_type] & _window_mask(a, start, days)
    amount = a.amount[m]
    return np.bincount(a.customer[m], weights=np.where(np.isnan(amount), 0.0, amount), minlength=a.n_customers)


def value_outcome(a: EventArrays, t: int, spec: FeatureSpec, elig: Eligibility,  # noqa: ARG001
                  days: int | None = None) -> np.ndarray:
    """Spend in ``[t, t + days)`` (default ``value.label_days``): what the value model learns."""
    return spend_between(a, spec, t, spec.config.value.label_days if days is None else days)


def value_later(a: EventArrays, t: int, spec: FeatureSpec) -> np.ndarray:
    """Spend in the ``value.label_days`` after the label window: its ratio to the label's measures the
    spend decay that carries a prediction to ``value.horizon_days``."""
    days = spec.config.value.label_days
    return spend_between(a, spec, t + days * DAY_NS, days)

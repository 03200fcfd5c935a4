"""Readiness: can this data support each target, before anyone trains?

Like a hosted tool greying out a prediction it cannot make, :func:`assess` gives each target a
plain verdict with the numbers behind it and the minimums that apply (``readiness`` in the config):
history length against the horizon, labelled rows and positives per target and stage, event
types seen and unmapped, and the share of customers with too few events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from funnelcast.features.errors import TrainingDataError
from funnelcast.features.events import ValidationSummary
from funnelcast.features.funnel import FunnelConfig
from funnelcast.features.snapshots import build_training_set
from funnelcast.features.targets import TARGETS


@dataclass
class TargetReadiness:
    """One target's verdict: labelled rows, positives and the reasons it is not ready."""
    target: str
    ready: bool
    rows: int
    positives: int
    reasons: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """``ready``, or ``not ready:`` and the reasons."""
        return "ready" if self.ready else "not ready: " + "; ".join(self.reasons)


@dataclass
class ReadinessReport:
    """What :func:`assess` found: the data's size and history, event types, verdicts per target and the minimums."""
    events: int
    customers: int
    first_event: pd.Timestamp | None
    last_event: pd.Timestamp | None
    history_days: float
    sparse_share: float
    event_type_counts: dict[str, int]
    never_seen: list[str]
    unmapped: dict[str, int]
    targets: list[TargetReadiness]
    warnings: list[str]
    minimums: dict[str, Any]
    matched: dict[str, Any] | None = None
    """With a customers table: how its ids and the events' ids overlap, both ways."""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (``funnelcast check --json``)."""
        return {
            "events": self.events,
            "customers": self.customers,
            "first_event": None if self.first_event is None else self.first_event.isoformat(),
            "last_event": None if self.last_event is None else self.last_event.isoformat(),
            "history_days": round(self.history_days, 2),
            "share_customers_with_too_few_events": round(self.sparse_share, 4),
            "event_type_counts": self.event_type_counts,
            "event_types_never_seen": self.never_seen,
            "unmapped": self.unmapped,
            "targets": {
                t.target: {"ready": t.ready, "verdict": t.verdict, "rows": t.rows, "positives": t.positives}
                for t in self.targets
            },
            "warnings": self.warnings,
            "minimums": self.minimums,
            "customers_matched": self.matched,
        }


def assess(
    events: pd.DataFrame,
    config: FunnelConfig,
    customers: pd.DataFrame | None = None,
    summary: ValidationSummary | None = None,
    data_end: Any = None,
) -> ReadinessReport:
    """Assess validated events (canonical frame) for every target of ``config``."""
    rd = config.readiness
    minimums = {
        **{f"history_days_{name}": config.snapshots.min_history_days + target.horizon_days(config)
           for name, target in TARGETS.items()},
        "min_eligible_rows": rd.min_eligible,
        "min_positives": rd.min_positives,
        "min_events_per_customer": rd.min_events_per_customer,
        "max_share_sparse_customers": rd.max_share_sparse_customers,
    }
    n_events = len(events)
    per_customer = events["customer_id"].value_counts()
    n_customers = len(per_customer)
    sparse_share = float((per_customer < rd.min_events_per_customer).mean()) if n_customers else 1.0
    counts = events["event_type"].astype("string").value_counts()
    type_counts = {t: int(counts.get(t, 0)) for t in config.event_types}
    never_seen = [t for t, n in type_counts.items() if n == 0]
    unmapped = {why: n for why, n in (summary.altered.items() if summary else []) if "mapped" in why}
    warnings = []
    matched = None if customers is None else _matched(events, customers, rd.min_share_matched, warnings)
    if sparse_share > rd.max_share_sparse_customers:
        warnings.append(
            f"{sparse_share:.0%} of customers have fewer than {rd.min_events_per_customer} events "
            f"(more than the {rd.max_share_sparse_customers:.0%} allowed): behaviour features will be thin"
        )
    if n_events == 0:
        targets = [TargetReadiness(name, False, 0, 0, ["no events"]) for name in _target_names(config)]
        return ReadinessReport(0, 0, None, None, 0.0, sparse_share, type_counts, never_seen, unmapped, targets, warnings, minimums,
                               matched)

    first, last = events["timestamp"].min(), events["timestamp"].max()
    history = (last - first) / pd.Timedelta(days=1)
    try:
        table = build_training_set(events, customers, config, data_end=data_end).frame
    except TrainingDataError:  # no labelled row at all: every target gets its zero counts below
        table = pd.DataFrame({"stage": pd.Series(dtype="object"), **{t.label: [] for t in TARGETS.values()}})

    targets: list[TargetReadiness] = []
    for name, target in TARGETS.items():
        labelled = table[target.label].notna()
        need = minimums[f"history_days_{name}"]
        transitions = target.transitions(config)
        for stage, slice_name in transitions.items():
            rows = table.loc[(table["stage"] == stage) & labelled, target.label]
            targets.append(target_verdict(slice_name, rows, config, history, need))
        if not transitions:
            targets.append(target_verdict(name, table.loc[labelled, target.label], config, history, need))
    if sparse_share > rd.max_share_sparse_customers:
        for t in targets:
            t.reasons.append("too many customers with too few events")
            t.ready = False
    return ReadinessReport(
        n_events, n_customers, first, last, float(history), sparse_share, type_counts, never_seen, unmapped, targets, warnings,
        minimums, matched,
    )


def _matched(events: pd.DataFrame, customers: pd.DataFrame, floor: float, warnings: list[str]) -> dict[str, Any]:
    """How the customers table's ids and the events' ids overlap, both ways; a warning below ``floor``."""
    in_events = pd.Index(events["customer_id"].astype(str).unique())
    in_table = pd.Index(customers["customer_id"].astype(str))
    both = len(in_table.intersection(in_events))
    out = {
        "customers_table_ids": len(in_table), "of_them_with_events": both,
        "share_of_table_with_events": round(both / len(in_table), 4) if len(in_table) else None,
        "event_customer_ids": len(in_events), "of_them_in_table": both,
        "share_of_event_customers_in_table": round(both / len(in_events), 4) if len(in_events) else None,
    }
    for share, what in ((out["share_of_table_with_events"], f"of the customers table's {len(in_table):,} ids have events"),
                        (out["share_of_event_customers_in_table"], f"of the {len(in_events):,} customers in the events are "
                                                                  "in the customers table")):
        if share is not None and share < floor:
            warnings.append(f"only {share:.0%} {what} (readiness.min_share_matched {floor:.0%}): are both keyed by the "
                            "same customer_id? Attributes of unmatched customers are missing")
    return out


def _target_names(config: FunnelConfig) -> list[str]:
    return [n for name, target in TARGETS.items() for n in (list(target.transitions(config).values()) or [name])]


def target_verdict(name: str, labels: pd.Series, config: FunnelConfig, history: float = float("inf"),
                   need_history: int = 0) -> TargetReadiness:
    """Whether ``labels`` (known labels only) have enough rows, positives and negatives under the
    config's readiness minimums, and ``history`` days of data cover ``need_history``."""
    rd = config.readiness
    y = labels.astype("float64").to_numpy() > 0  # an amount label (value): rows with spend are its positives
    positives = int(y.sum())
    negatives = int(len(y) - positives)
    reasons = []
    if history < need_history:
        reasons.append(f"{history:.0f} days of history, needs {need_history} (min_history_days + the label window; "
                       "for a horizon longer than the history can label, set conversion.label_days or "
                       "churn.label_days: the model learns the shorter window and is carried to the horizon)")
    if len(y) < rd.min_eligible:
        reasons.append(f"{len(y):,} labelled rows, needs {rd.min_eligible:,}")
    if positives < rd.min_positives:
        reasons.append(f"{positives:,} positives, needs {rd.min_positives:,}")
    if negatives < rd.min_positives:
        reasons.append(f"{negatives:,} negatives, needs {rd.min_positives:,}")
    return TargetReadiness(name, not reasons, len(y), positives, reasons)

"""What funnelcast predicts: one :class:`Target` definition per target, read by every module.

A target is a name and everything that belongs to it: its label and eligibility columns, its horizon
in the funnel config, who is eligible at a cutoff and what counts as the outcome in
``[cutoff, cutoff + horizon)`` (:mod:`funnelcast.features.labels`), the simulator's truth column, the
field that carries its probability in scores, the words a report uses for it, and the direction of
the recency/frequency baseline. Training sets, backtests, baselines, reports, the MLflow model and
the scorer all iterate over :data:`TARGETS`; a new target is one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from funnelcast.features.behaviour import FeatureSpec
from funnelcast.features.errors import ConfigError
from funnelcast.features.events import EventArrays
from funnelcast.features.funnel import FunnelConfig
from funnelcast.features.labels import (Eligibility, churn_outcome, conversion_outcome, eligibility, value_later,
                                        value_outcome)
from funnelcast.features.timestamps import DAY_NS


@dataclass(frozen=True)
class Target:
    """One thing funnelcast predicts, for the customers eligible for it at a cutoff.

    ``horizon`` reads the horizon (days) from the funnel config; ``eligible`` picks the target's
    customers from an :class:`~funnelcast.features.labels.Eligibility`; ``outcome`` says, per
    customer, whether the outcome happened in ``[t, t + horizon)`` (int8 0/1, meaningful where eligible).
    """

    name: str
    title: str  # "next-stage conversion": what the target is, in a heading
    outcome_words: str  # "moved to the next stage": what a positive did, in a report
    probability: str  # the field of a score that carries the calibrated probability
    truth: str  # the simulator's hidden-state probability column (with "_given_history": the oracle)
    horizon: Callable[[FunnelConfig], int]
    eligible: Callable[[Eligibility], np.ndarray]
    outcome: Callable[[EventArrays, int, FeatureSpec, Eligibility], np.ndarray]
    recency_sign: float  # +1: recent, frequent activity makes the outcome likelier (conversion); -1: less (churn)
    by_transition: bool = False  # metrics also per stage transition (the conversion model serves every stage)
    reason_priority: int = 0  # a customer eligible for several targets gets reasons for the lowest
    kind: str = "probability"  # "probability": a 0/1 outcome, calibrated; "amount": a non-negative amount (spend)
    answers: Callable[[FunnelConfig], int] | None = None
    """The horizon (days) a served prediction answers, where it can be longer than the label window
    ``horizon`` (the model is trained on the shorter window and carried to this one); None: ``horizon``."""
    positive_is_silence: Callable[[FunnelConfig], bool] = lambda cfg: False
    """Whether a positive is the absence of something in the window (inactivity churn): the horizon map
    then carries P(positive) itself as the probability that nothing happens, else 1 − P."""

    @property
    def is_probability(self) -> bool:
        """Whether the target is a 0/1 outcome with a calibrated probability (else an amount)."""
        return self.kind == "probability"

    @property
    def later(self) -> str:
        """Training-set column from which the model's horizon mapping is fitted. Amount targets: the
        amount in the label window after the label's (nullable Float64). Probability targets under
        ``label_days``: the outcome over each row's longest labelled window up to the horizon (nullable
        Int8; its days in :attr:`later_days`)."""
        return f"{self.name}_later"

    @property
    def later_days(self) -> str:
        """Probability targets trained on a shorter window than their horizon: training-set column of the
        days of :attr:`later`'s window (nullable Int32), each row's longest window that the data has
        labelled, up to the horizon."""
        return f"{self.name}_later_days"

    def answer_days(self, config: FunnelConfig) -> int:
        """The horizon (days) a served prediction answers under ``config``."""
        return int((self.answers or self.horizon)(config))

    def mapped(self, config: FunnelConfig) -> bool:
        """Whether the model learns a shorter window than the horizon it answers (a horizon map carries it)."""
        return self.answer_days(config) > self.horizon_days(config)

    @property
    def label_dtype(self) -> str:
        """The label column's nullable dtype."""
        return "Int8" if self.is_probability else "Float64"

    @property
    def label(self) -> str:
        """Training-set column: the outcome, nullable Int8 (<NA>: not eligible or not yet known)."""
        return f"{self.name}_label"

    @property
    def eligible_column(self) -> str:
        """Feature-frame column: whether the target applies to the row's customer at its cutoff."""
        return f"{self.name}_eligible"

    def transitions(self, config: FunnelConfig) -> dict[str, str]:
        """Stage → the name of its slice (``convert:interest->consideration``) for a target reported per
        stage transition; empty otherwise."""
        if not self.by_transition:
            return {}
        return {a: f"{self.name}:{a}->{b}" for a, b in config.conversion_targets()}

    def horizon_days(self, config: FunnelConfig) -> int:
        """The target's label window under ``config``, in whole days after the cutoff (the days its model
        learns; :meth:`answer_days` is what a served prediction answers)."""
        return int(self.horizon(config))


CONVERT = Target(
    name="convert", title="next-stage conversion", outcome_words="moved to the next stage",
    probability="next_stage_probability", truth="p_next_stage",
    horizon=lambda cfg: cfg.conversion.label_window_days, answers=lambda cfg: cfg.conversion.horizon_days,
    eligible=lambda e: e.convert, outcome=conversion_outcome, recency_sign=1.0, by_transition=True, reason_priority=1,
)
CHURN = Target(
    name="churn", title="churn", outcome_words="churned", probability="churn_probability", truth="p_churn",
    horizon=lambda cfg: cfg.churn.label_window_days, answers=lambda cfg: cfg.churn.horizon_days,
    positive_is_silence=lambda cfg: cfg.churn.definition == "inactivity",
    eligible=lambda e: e.churn, outcome=churn_outcome, recency_sign=-1.0, reason_priority=0,
)
VALUE = Target(
    name="value", title="customer value", outcome_words="spent", probability="customer_value", truth="",
    # The label window; the model's predictions are carried to value.horizon_days (training/value.py).
    horizon=lambda cfg: cfg.value.label_days, answers=lambda cfg: cfg.value.horizon_days,
    # Buyers, including the lapsed: a churned customer who comes back spends too.
    eligible=lambda e: e.churn | e.churned, outcome=value_outcome, recency_sign=1.0, reason_priority=2,
    kind="amount",
)
TARGETS: dict[str, Target] = {t.name: t for t in (CONVERT, CHURN, VALUE)}
"""Every target, in training order."""
PROBABILITY_TARGETS: dict[str, Target] = {n: t for n, t in TARGETS.items() if t.is_probability}
"""The targets scored as calibrated probabilities (fields of a score, reasons, the risk population)."""
LABEL_COLUMNS = tuple(t.label for t in TARGETS.values())
ELIGIBLE_COLUMNS = tuple(t.eligible_column for t in TARGETS.values())
LATER_COLUMNS = tuple(c for t in TARGETS.values() for c in ((t.later, t.later_days) if t.is_probability else (t.later,)))
"""The training-set columns of outcomes after or beyond the label window (the value target's always;
a probability target's only under its ``label_days``)."""


def get(name: str) -> Target:
    """The target called ``name``; :class:`ConfigError` naming the known ones otherwise."""
    try:
        return TARGETS[name]
    except KeyError:
        raise ConfigError(f"unknown target {name!r}; targets are {list(TARGETS)}") from None


def compute_labels(a: EventArrays, t: int, spec: FeatureSpec, features: np.ndarray
                   ) -> tuple[Eligibility, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Eligibility from the point-in-time ``features`` at ``t`` (events strictly before it), and per
    target ``(eligible, outcome)`` with the outcome from the events in ``[t, t + horizon)``."""
    elig = eligibility(a, t, spec, features)
    return elig, {name: (target.eligible(elig), target.outcome(a, t, spec, elig)) for name, target in TARGETS.items()}


def compute_later(a: EventArrays, t: int, spec: FeatureSpec) -> dict[str, np.ndarray]:
    """Per amount target, the amount in the label window after the label's (its ``later`` column)."""
    return {VALUE.name: value_later(a, t, spec)}


def longer_window_days(target: Target, config: FunnelConfig, t: int, end: int) -> int:
    """For a mapped probability target at cutoff ``t`` (int ns) with data up to ``end``: the longest
    whole-day window after ``t`` that the data has labelled, up to the target's horizon. Its outcome
    (:attr:`Target.later`) against the model's label-window probability fits the horizon map; it is
    useful only where longer than the label window."""
    return int(min(target.answer_days(config), (end - t) // DAY_NS))

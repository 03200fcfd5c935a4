"""Time-ordered backtest folds over snapshot cutoffs.

A label at cutoff ``c`` looks at events in ``[c, c + horizon)``. A row may only teach a model about a
later row if its label window has closed before the later cutoff, so every fold keeps a gap:
each training cutoff ``c`` has ``c + horizon <= first validation cutoff``, and each validation cutoff
has ``c + horizon <= test cutoff``. No training label overlaps a validation or test window, and the
features of a later row (events strictly before its cutoff) may see an earlier row's label window,
exactly as they would in production.

Folds form a rolling origin: the latest fold tests on the latest cutoff whose labels are complete,
each earlier fold one snapshot before, and training windows expand from the first cutoff.

:func:`plan_backtest` never refuses a short history that has labels. It uses as many out-of-time
folds as fit (down to one, with fewer validation cutoffs if need be) and says so; when not even one
fits, it plans an **in-time** estimate instead: customers are hashed into groups, and each fold tests
on one group's rows at every labelled cutoff, validates on another group and trains on the rest.
No customer is in two parts of a fold, but the test rows share their time with the training rows, so
the estimate is optimistic where behaviour drifts over time, and every output says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from funnelcast.features.errors import TrainingDataError


class SplitError(TrainingDataError):
    """The data has too few cutoffs for the requested backtest."""


@dataclass(frozen=True)
class Fold:
    """One backtest fold: cutoffs to train on, to validate on (early stopping and calibration), and to test on."""

    index: int
    train: tuple[pd.Timestamp, ...]
    valid: tuple[pd.Timestamp, ...]
    test: pd.Timestamp
    groups: int = 0
    """In-time folds only: customers are hashed into this many groups; the fold tests on group
    ``index`` and validates on group ``index + 1`` (mod ``groups``), at every labelled cutoff."""

    @property
    def in_time(self) -> bool:
        """True for a customer-grouped in-time fold (its test rows share their cutoffs with training)."""
        return self.groups > 0

    def select(self, rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """The fold's training, validation and test rows of a target's labelled rows."""
        if not self.in_time:
            cutoff = rows["cutoff"]
            return rows[cutoff.isin(self.train)], rows[cutoff.isin(self.valid)], rows[cutoff == self.test]
        group = customer_groups(rows["customer_id"], self.groups)
        test, valid = group == self.index, group == (self.index + 1) % self.groups
        return rows[~(test | valid)], rows[valid], rows[test]

    @property
    def train_end(self) -> pd.Timestamp:
        """The last training cutoff (its label window ends a horizon later, at or before the first validation cutoff)."""
        return self.train[-1]

    def describe(self) -> str:
        """The fold in a sentence (cutoff dates), for progress and reports."""
        if self.in_time:
            return (f"in-time fold {self.index}: customers of group {self.index + 1} of {self.groups} tested, group "
                    f"{(self.index + 1) % self.groups + 1} validated, the rest trained on, all at the {len(self.train)} "
                    f"labelled cutoffs {self.train[0]:%Y-%m-%d}..{self.train[-1]:%Y-%m-%d}")
        return (f"fold {self.index}: train {self.train[0]:%Y-%m-%d}..{self.train[-1]:%Y-%m-%d} ({len(self.train)} cutoffs), "
                f"validate {', '.join(f'{c:%Y-%m-%d}' for c in self.valid)}, test {self.test:%Y-%m-%d}")


def backtest_folds(cutoffs, horizon_days: int, n_folds: int = 3, validation_cutoffs: int = 2,
                   min_train_cutoffs: int = 1) -> list[Fold]:
    """Exactly ``n_folds`` rolling-origin folds, oldest first, over the cutoffs that carry known labels
    for a target (:func:`plan_backtest` is the forgiving form training uses).

    Raises :class:`SplitError` naming the cutoffs found and the number needed when the history is too short.
    """
    cuts = sorted(pd.Timestamp(c) for c in set(cutoffs))
    folds = _rolling_folds(cuts, horizon_days, n_folds, validation_cutoffs, min_train_cutoffs)
    if len(folds) < n_folds:
        need = min_train_cutoffs + validation_cutoffs + n_folds
        raise SplitError(
            f"{len(cuts)} labelled cutoffs ({cuts[0]:%Y-%m-%d} to {cuts[-1]:%Y-%m-%d}) allow only {len(folds)} of the "
            f"{n_folds} backtest folds asked for with a {horizon_days}-day horizon gap; that needs at least about {need} "
            "cutoffs plus the gaps. Use more history, fewer training.folds, or fewer training.validation_cutoffs"
            if cuts else f"no labelled cutoffs: a {n_folds}-fold backtest needs at least {need}"
        )
    return folds


def customer_groups(customer_id: pd.Series, groups: int) -> np.ndarray:
    """A stable group number in ``[0, groups)`` per row, from a hash of the customer id (the same id
    is in the same group in every run and at every cutoff)."""
    ids = customer_id.astype(str).to_numpy(dtype=object)
    return (pd.util.hash_array(ids) % np.uint64(groups)).astype(np.int64)


IN_TIME_GROUPS = 4
"""Customer groups of an in-time estimate: each fold tests on a quarter of the customers."""


@dataclass(frozen=True)
class BacktestPlan:
    """The folds a target's history allows, and what was given up to fit them."""

    folds: list[Fold]
    notes: list[str] = field(default_factory=list)

    @property
    def in_time(self) -> bool:
        """True when no out-of-time fold fits and quality is an in-time (customer-grouped) estimate."""
        return bool(self.folds) and self.folds[0].in_time

    @property
    def kind(self) -> str:
        """``out-of-time`` or ``in-time``: how the backtest's quality figures were estimated."""
        return "in-time" if self.in_time else "out-of-time"


def plan_backtest(cutoffs, horizon_days: int, n_folds: int = 3, validation_cutoffs: int = 2) -> BacktestPlan:
    """As many out-of-time folds as the labelled cutoffs allow (at most ``n_folds``, with up to
    ``validation_cutoffs`` each, fewer if only that fits), else an in-time estimate.

    Raises :class:`SplitError` only when nothing can be estimated: no labelled cutoff at all.
    """
    cuts = sorted(pd.Timestamp(c) for c in set(cutoffs))
    if not cuts:
        raise SplitError("no labelled cutoffs: no cutoff's label window has closed before the data ends "
                         "(snapshots.min_history_days plus the horizon is longer than the history)")
    span = f"{len(cuts)} labelled cutoffs ({cuts[0]:%Y-%m-%d} to {cuts[-1]:%Y-%m-%d}) with a {horizon_days}-day horizon gap"
    for valid in range(validation_cutoffs, 0, -1):
        folds = _rolling_folds(cuts, horizon_days, n_folds, valid)
        if folds:
            notes = []
            if len(folds) < n_folds:
                notes.append(f"{span} allow {len(folds)} of the {n_folds} backtest folds asked for (training.folds): "
                             f"quality is measured on {len(folds)} test cutoff{'s' if len(folds) > 1 else ''}")
            if valid < validation_cutoffs:
                notes.append(f"{span}: each fold validates on {valid} cutoff{'s' if valid > 1 else ''}, not the "
                             f"{validation_cutoffs} asked for (training.validation_cutoffs)")
            return BacktestPlan(folds, notes)
    return in_time_plan(cuts, n_folds, f"{span} leave no room for an out-of-time fold (a training, a validation "
                                        "and a test cutoff, each a horizon apart)")


def in_time_plan(cutoffs, n_folds: int, why: str) -> BacktestPlan:
    """Customer-grouped in-time folds over every labelled cutoff; ``why`` says what ruled out an
    out-of-time backtest."""
    cuts = sorted(pd.Timestamp(c) for c in set(cutoffs))
    folds = [Fold(index=g, train=tuple(cuts), valid=tuple(cuts), test=cuts[-1], groups=IN_TIME_GROUPS)
             for g in range(min(max(n_folds, 2), IN_TIME_GROUPS))]
    return BacktestPlan(folds, [
        f"{why}: quality is an IN-TIME estimate, customer-grouped cross-validation over the labelled cutoffs "
        f"({len(folds)} folds, each testing on a different quarter of the customers). It is optimistic where "
        "behaviour drifts over time; more history gives an out-of-time backtest"])


def _rolling_folds(cuts: list[pd.Timestamp], horizon_days: int, n_folds: int, validation_cutoffs: int,
                   min_train_cutoffs: int = 1) -> list[Fold]:
    """The folds testing on the last ``n_folds`` cutoffs that have room for their validation and
    training cutoffs (the earliest may not)."""
    horizon = pd.Timedelta(days=horizon_days)
    folds: list[Fold] = []
    for position in range(max(len(cuts) - n_folds, 0), len(cuts)):
        test = cuts[position]
        valid = [c for c in cuts if c + horizon <= test][-validation_cutoffs:]
        if len(valid) < validation_cutoffs:
            continue
        train = [c for c in cuts if c + horizon <= valid[0]]
        if len(train) >= min_train_cutoffs:
            folds.append(Fold(index=len(folds), train=tuple(train), valid=tuple(valid), test=test))
    return folds

"""Time-ordered backtest folds over snapshot cutoffs.

A label at cutoff ``c`` looks at events in ``[c, c + horizon)``. A row may only teach a model about a
later row if its label window has closed before the later cutoff, so every fold keeps a gap:
each training cutoff ``c`` has ``c + horizon <= first validation cutoff``, and each validation cutoff
has ``c + horizon <= test cutoff``. No training label overlaps a validation or test window, and the
features of a later row (events strictly before its cutoff) may see an earlier row's label window,
exactly as they would in production.

Folds form a rolling origin: the latest fold tests on the latest cutoff whose labels are complete,
each earlier fold one snapshot before, and training windows expand from the first cutoff.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    @property
    def train_end(self) -> pd.Timestamp:
        """The last training cutoff (its label window ends a horizon later, at or before the first validation cutoff)."""
        return self.train[-1]

    def describe(self) -> str:
        """The fold in a sentence (cutoff dates), for progress and reports."""
        return (f"fold {self.index}: train {self.train[0]:%Y-%m-%d}..{self.train[-1]:%Y-%m-%d} ({len(self.train)} cutoffs), "
                f"validate {', '.join(f'{c:%Y-%m-%d}' for c in self.valid)}, test {self.test:%Y-%m-%d}")


def backtest_folds(cutoffs, horizon_days: int, n_folds: int = 3, validation_cutoffs: int = 2,
                   min_train_cutoffs: int = 1) -> list[Fold]:
    """Rolling-origin folds, oldest first, over the cutoffs that carry known labels for a target.

    Raises :class:`SplitError` naming the cutoffs found and the number needed when the history is too short.
    """
    cuts = sorted(pd.Timestamp(c) for c in set(cutoffs))
    horizon = pd.Timedelta(days=horizon_days)
    folds = []
    for k in range(n_folds):
        position = len(cuts) - n_folds + k
        if position < 0:
            break
        test = cuts[position]
        valid = [c for c in cuts if c + horizon <= test][-validation_cutoffs:]
        if len(valid) < validation_cutoffs:
            continue
        train = [c for c in cuts if c + horizon <= valid[0]]
        if len(train) < min_train_cutoffs:
            continue
        folds.append(Fold(index=len(folds), train=tuple(train), valid=tuple(valid), test=test))
    if len(folds) < n_folds:
        need = min_train_cutoffs + validation_cutoffs + n_folds
        raise SplitError(
            f"{len(cuts)} labelled cutoffs ({cuts[0]:%Y-%m-%d} to {cuts[-1]:%Y-%m-%d}) allow only {len(folds)} of the "
            f"{n_folds} backtest folds asked for with a {horizon_days}-day horizon gap; that needs at least about {need} "
            "cutoffs plus the gaps. Use more history, fewer training.folds, or fewer training.validation_cutoffs"
            if cuts else f"no labelled cutoffs: a {n_folds}-fold backtest needs at least {need}"
        )
    return folds

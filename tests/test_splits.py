"""Rolling-origin backtest folds with a horizon gap (training/splits.py).

A label at cutoff ``c`` looks at ``[c, c + horizon)``, so a training cutoff must satisfy
``c + horizon <= first validation cutoff`` and a validation cutoff ``c + horizon <= test cutoff``.
The hand-worked folds below use twelve cutoffs 30 days apart (day 0, 30, ..., 330).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funnelcast.training.splits import Fold, SplitError, backtest_folds, customer_groups, plan_backtest

START = pd.Timestamp("2024-01-01", tz="UTC")
DAY = pd.Timedelta(days=1)
MONTHLY = [START + 30 * i * DAY for i in range(12)]  # c0 .. c11


def _c(*indices: int) -> tuple[pd.Timestamp, ...]:
    return tuple(MONTHLY[i] for i in indices)


def _assert_gaps(folds: list[Fold], horizon_days: int) -> None:
    horizon = pd.Timedelta(days=horizon_days)
    for fold in folds:
        assert fold.train and fold.valid
        for c in fold.train:
            assert c + horizon <= min(fold.valid), fold.describe()
        for c in fold.valid:
            assert c + horizon <= fold.test, fold.describe()


def test_monthly_cutoffs_horizon_60_worked_by_hand() -> None:
    # Test c9 (day 270): validation needs c + 60 <= 270, so c6, c7; training c + 60 <= 180, so c0..c4.
    # c5 and c8 fall in the gaps. Each later fold moves everything one snapshot on.
    folds = backtest_folds(MONTHLY, horizon_days=60, n_folds=3, validation_cutoffs=2)
    assert [(f.index, f.train, f.valid, f.test) for f in folds] == [
        (0, _c(0, 1, 2, 3, 4), _c(6, 7), MONTHLY[9]),
        (1, _c(0, 1, 2, 3, 4, 5), _c(7, 8), MONTHLY[10]),
        (2, _c(0, 1, 2, 3, 4, 5, 6), _c(8, 9), MONTHLY[11]),
    ]
    _assert_gaps(folds, 60)
    assert folds[-1].train_end == MONTHLY[6]


def test_folds_are_oldest_first_and_test_the_last_cutoffs() -> None:
    for n_folds in (1, 2, 4):
        folds = backtest_folds(MONTHLY, horizon_days=60, n_folds=n_folds)
        assert [f.test for f in folds] == MONTHLY[-n_folds:]
        assert [f.index for f in folds] == list(range(n_folds))


def test_training_windows_expand() -> None:
    folds = backtest_folds(MONTHLY, horizon_days=60, n_folds=4)
    for earlier, later in zip(folds, folds[1:]):
        assert set(earlier.train) < set(later.train)
        assert later.train[0] == earlier.train[0] == MONTHLY[0]


@pytest.mark.parametrize("validation_cutoffs", [1, 2, 3])
def test_validation_cutoffs_respected(validation_cutoffs: int) -> None:
    folds = backtest_folds(MONTHLY, horizon_days=60, n_folds=3, validation_cutoffs=validation_cutoffs)
    assert all(len(f.valid) == validation_cutoffs for f in folds)
    # The latest fold validates on the latest cutoffs whose labels close by the test cutoff (c9 and before).
    assert folds[-1].valid == tuple(MONTHLY[10 - validation_cutoffs:10])
    _assert_gaps(folds, 60)


def test_horizon_equal_to_spacing_skips_no_cutoff() -> None:
    folds = backtest_folds(MONTHLY, horizon_days=30, n_folds=3, validation_cutoffs=2)
    for f in folds:
        used = [*f.train, *f.valid, f.test]
        assert used == MONTHLY[: len(used)], f.describe()  # contiguous from c0 to the test cutoff
    assert folds[-1].train == _c(*range(9))
    assert folds[-1].valid == _c(9, 10)


def test_unordered_duplicated_cutoffs_give_the_same_folds() -> None:
    messy = [*reversed(MONTHLY), MONTHLY[3], MONTHLY[9], MONTHLY[0]]
    assert backtest_folds(messy, 60) == backtest_folds(MONTHLY, 60)


def test_describe_names_the_dates() -> None:
    fold = backtest_folds(MONTHLY, 60)[0]
    assert fold.describe() == ("fold 0: train 2024-01-01..2024-04-30 (5 cutoffs), "
                               "validate 2024-06-29, 2024-07-29, test 2024-09-27")


def test_too_few_cutoffs_for_any_fold() -> None:
    with pytest.raises(SplitError, match=r"4 labelled cutoffs \(2024-01-01 to 2024-03-31\) allow only 0 of the 3 "
                                         r"backtest folds asked for with a 60-day horizon gap"):
        backtest_folds(MONTHLY[:4], horizon_days=60, n_folds=3, validation_cutoffs=2)


def test_too_few_cutoffs_for_the_earliest_fold() -> None:
    # Seven cutoffs: the test-c4 fold would validate on c1, c2 and have nothing to train on.
    assert len(backtest_folds(MONTHLY[:7], 60, n_folds=2)) == 2
    with pytest.raises(SplitError, match=r"7 labelled cutoffs .* allow only 2 of the 3 backtest folds"):
        backtest_folds(MONTHLY[:7], 60, n_folds=3)


def test_too_few_training_cutoffs() -> None:
    # The earliest fold has five training cutoffs (c0..c4).
    assert len(backtest_folds(MONTHLY, 60, min_train_cutoffs=5)) == 3
    with pytest.raises(SplitError, match=r"12 labelled cutoffs .* allow only 2 of the 3 .* at least about 11 cutoffs"):
        backtest_folds(MONTHLY, 60, min_train_cutoffs=6)


def test_no_cutoffs() -> None:
    with pytest.raises(SplitError, match=r"no labelled cutoffs: a 3-fold backtest needs at least 6"):
        backtest_folds([], 60)


def test_split_error_is_a_value_error() -> None:
    assert issubclass(SplitError, ValueError)


# --- property: the gap holds for any history -------------------------------------------------------

def _feasible(cuts: list[pd.Timestamp], horizon: pd.Timedelta, n_folds: int, n_valid: int, n_train: int) -> bool:
    """Plain-loop reference: can every one of the last ``n_folds`` cutoffs be a test cutoff?"""
    if len(cuts) < n_folds:
        return False
    for test in cuts[len(cuts) - n_folds:]:
        eligible_valid = [c for c in cuts if c + horizon <= test]
        if len(eligible_valid) < n_valid:
            return False
        first_valid = eligible_valid[len(eligible_valid) - n_valid]
        if sum(1 for c in cuts if c + horizon <= first_valid) < n_train:
            return False
    return True


@settings(max_examples=300, deadline=None)
@given(
    offsets=st.lists(st.integers(0, 500), max_size=30),
    horizon_days=st.integers(1, 120),
    n_folds=st.integers(1, 4),
    n_valid=st.integers(1, 3),
    n_train=st.integers(1, 3),
)
def test_gap_invariants_hold_for_random_histories(offsets, horizon_days, n_folds, n_valid, n_train) -> None:
    cutoffs = [START + o * DAY for o in offsets]
    cuts = sorted(set(cutoffs))
    horizon = pd.Timedelta(days=horizon_days)
    feasible = _feasible(cuts, horizon, n_folds, n_valid, n_train)
    if not feasible:
        with pytest.raises(SplitError, match=rf"(^{len(cuts)} labelled cutoffs|^no labelled cutoffs)"):
            backtest_folds(cutoffs, horizon_days, n_folds, n_valid, n_train)
        return
    folds = backtest_folds(cutoffs, horizon_days, n_folds, n_valid, n_train)
    assert [f.test for f in folds] == cuts[-n_folds:]
    _assert_gaps(folds, horizon_days)
    for f in folds:
        assert len(f.valid) == n_valid
        assert len(f.train) >= n_train
        assert list(f.train) == sorted(f.train) and list(f.valid) == sorted(f.valid)
        # Nothing usable is wasted: training is every cutoff whose label closes by the first validation
        # cutoff, and validation the latest cutoffs whose labels close by the test cutoff.
        assert list(f.train) == [c for c in cuts if c + horizon <= f.valid[0]]
        assert list(f.valid) == [c for c in cuts if c + horizon <= f.test][-n_valid:]
    for earlier, later in zip(folds, folds[1:]):
        assert set(earlier.train) <= set(later.train)


# --- plan_backtest: never refuse a history that has labels ------------------------------------------

def test_plan_uses_every_fold_that_fits_and_says_so() -> None:
    full = plan_backtest(MONTHLY, 60, n_folds=3, validation_cutoffs=2)
    assert full.folds == backtest_folds(MONTHLY, 60, 3, 2) and full.notes == [] and full.kind == "out-of-time"
    # Seven cutoffs fit two folds of the three asked for (what backtest_folds refuses).
    short = plan_backtest(MONTHLY[:7], 60, n_folds=3, validation_cutoffs=2)
    assert [f.test for f in short.folds] == MONTHLY[5:7]
    assert len(short.notes) == 1 and "allow 2 of the 3 backtest folds" in short.notes[0]
    _assert_gaps(short.folds, 60)


def test_plan_gives_up_validation_cutoffs_before_folds() -> None:
    # Five cutoffs, horizon 60: c0 trains, c2 validates, c4 tests; two validation cutoffs do not fit.
    plan = plan_backtest(MONTHLY[:5], 60, n_folds=3, validation_cutoffs=2)
    assert [(f.train, f.valid, f.test) for f in plan.folds] == [(_c(0), _c(2), MONTHLY[4])]
    assert any("validates on 1 cutoff, not the 2 asked for" in n for n in plan.notes)
    _assert_gaps(plan.folds, 60)


def test_plan_falls_back_to_a_customer_grouped_in_time_estimate() -> None:
    plan = plan_backtest(MONTHLY[:3], 60, n_folds=3)
    assert plan.in_time and plan.kind == "in-time" and len(plan.folds) == 3
    assert "IN-TIME estimate" in plan.notes[0] and "customer-grouped" in plan.notes[0]
    ids = pd.Series([f"c{i}" for i in range(400)] * 3)
    rows = pd.DataFrame({"customer_id": ids, "cutoff": np.repeat(MONTHLY[:3], 400)})
    tested = []
    for fold in plan.folds:
        train, valid, test = fold.select(rows)
        assert len(train) + len(valid) + len(test) == len(rows)
        parts = [set(part["customer_id"]) for part in (train, valid, test)]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])  # no customer in two parts
        assert set(test["cutoff"]) == set(MONTHLY[:3])  # every labelled cutoff is tested
        assert 50 < test["customer_id"].nunique() < 150  # about a quarter of the customers
        tested.append(parts[2])
    assert not (tested[0] & tested[1] or tested[1] & tested[2])
    # The groups are a stable function of the id (the same in every run).
    np.testing.assert_array_equal(customer_groups(ids, 4), customer_groups(ids.copy(), 4))


def test_plan_refuses_only_when_nothing_is_labelled() -> None:
    with pytest.raises(SplitError, match="no labelled cutoffs"):
        plan_backtest([], 60)
    assert plan_backtest(MONTHLY[:1], 60).in_time

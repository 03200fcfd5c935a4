"""Metrics a retention lead reads (training/metrics.py): calibration error, top-k targeting and deciles.

The small cases are computed on paper; rows are deliberately not in score order, so nothing passes
by reading the rows top to bottom. Where scikit-learn owns a metric, it is the reference.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from funnelcast.training.metrics import (
    TOP_PERCENTS,
    binary_metrics,
    decile_table,
    expected_calibration_error,
    targeting_table,
    top_k_precision_recall,
)

# Ten customers, scores 0.9 .. 0.05, rows shuffled. In descending score order the labels read
# 1 0 1 0 0 1 0 0 0 0 (three positives).
TEN_P = np.array([0.4, 0.9, 0.05, 0.7, 0.2, 0.8, 0.6, 0.1, 0.5, 0.3])
TEN_Y = np.array([1, 1, 0, 1, 0, 0, 0, 0, 0, 0])


# --- expected calibration error -------------------------------------------------------------------

def test_ece_hand_computed_example() -> None:
    # Bin [0.1, 0.2): p 0.15 + 0.15 = 0.3, y = 1  -> |1 - 0.3|  = 0.70
    # Bin [0.5, 0.6): p 0.55,        y = 0        -> |0 - 0.55| = 0.55
    # Bin [0.8, 0.9): p 0.85 + 0.85 = 1.7, y = 2  -> |2 - 1.7|  = 0.30
    # ECE = (0.70 + 0.55 + 0.30) / 5 = 0.31  (a per-row mean |y - p| would give 0.37)
    p = np.array([0.85, 0.15, 0.55, 0.15, 0.85])
    y = np.array([1, 0, 0, 1, 1])
    assert expected_calibration_error(y, p) == pytest.approx(0.31)


def test_ece_respects_the_number_of_bins() -> None:
    # Two bins: [0, 0.5) holds p 0.15, 0.15 (y = 1) -> 0.70; [0.5, 1] holds 0.55, 0.85, 0.85 (y = 2) -> 0.25.
    p = np.array([0.85, 0.15, 0.55, 0.15, 0.85])
    y = np.array([1, 0, 0, 1, 1])
    assert expected_calibration_error(y, p, bins=2) == pytest.approx(0.95 / 5)


def test_ece_is_zero_for_perfectly_calibrated_bins() -> None:
    # 0.25 bin: one positive in four; 0.75 bin: three in four; p = 1.0 falls in the last bin, p = 0 in the first.
    p = np.array([0.25] * 4 + [0.75] * 4 + [1.0, 1.0, 0.0])
    y = np.array([1, 0, 0, 0] + [1, 1, 0, 1] + [1, 1, 0])
    assert expected_calibration_error(y, p) == pytest.approx(0.0, abs=1e-12)


def test_ece_of_a_constant_overconfident_model() -> None:
    # Everyone at 0.9, half positive: one bin, |5 - 9| / 10 = 0.4.
    assert expected_calibration_error(np.array([1, 0] * 5), np.full(10, 0.9)) == pytest.approx(0.4)


# --- top-k precision and recall -------------------------------------------------------------------

@pytest.mark.parametrize(
    ("percent", "precision", "recall"),
    [
        (10, 1.0, 1 / 3),   # k = 1: the 0.9 row, a positive
        (14, 1.0, 1 / 3),   # 1.4 customers round to k = 1
        (16, 0.5, 1 / 3),   # 1.6 round to k = 2
        (20, 0.5, 1 / 3),   # k = 2: 0.9 (1), 0.8 (0)
        (30, 2 / 3, 2 / 3),  # k = 3: adds 0.7 (1)
        (50, 0.4, 2 / 3),   # k = 5: adds 0.6 (0), 0.5 (0)
        (60, 0.5, 1.0),     # k = 6: adds 0.4 (1)
        (100, 0.3, 1.0),
    ],
)
def test_top_k_precision_recall_follows_score_order(percent: float, precision: float, recall: float) -> None:
    got = top_k_precision_recall(TEN_Y, TEN_P, percent)
    assert got == pytest.approx((precision, recall))


def test_top_k_contacts_at_least_one_customer() -> None:
    # 1 % of ten customers rounds to zero; the top customer is still contacted.
    assert top_k_precision_recall(TEN_Y, TEN_P, 1) == pytest.approx((1.0, 1 / 3))


def test_top_k_recall_is_nan_without_positives() -> None:
    precision, recall = top_k_precision_recall(np.zeros(10), TEN_P, 20)
    assert precision == 0.0
    assert math.isnan(recall)


def test_ties_are_broken_by_row_position() -> None:
    tied = np.full(4, 0.5)
    # The first row wins a tie: precision at 25 % (one customer) is the first row's label.
    assert top_k_precision_recall(np.array([1, 0, 0, 0]), tied, 25)[0] == 1.0
    assert top_k_precision_recall(np.array([0, 0, 0, 1]), tied, 25)[0] == 0.0
    # A strictly higher score still beats an earlier row: 0.9 first, then the earlier of the two 0.5s.
    p = np.array([0.2, 0.5, 0.5, 0.9])
    assert top_k_precision_recall(np.array([0, 0, 1, 0]), p, 50)[0] == 0.0
    assert top_k_precision_recall(np.array([0, 1, 0, 0]), p, 50)[0] == 0.5


def test_tie_breaking_is_reproducible_across_calls() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    p = np.round(rng.random(200), 1)  # eleven distinct values: many ties
    first = [top_k_precision_recall(y, p, k) for k in TOP_PERCENTS]
    assert [top_k_precision_recall(y.copy(), p.copy(), k) for k in TOP_PERCENTS] == first
    table = targeting_table(y, p)
    pd.testing.assert_frame_equal(targeting_table(y, p), table)


# --- the reported metric set ----------------------------------------------------------------------

def test_binary_metrics_agree_with_sklearn() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.99, 500)
    y = (rng.random(500) < p).astype(int)
    m = binary_metrics(y, p)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, p))
    assert m["log_loss"] == pytest.approx(log_loss(y, p))
    assert m["brier"] == pytest.approx(brier_score_loss(y, p))
    assert m["ece"] == pytest.approx(expected_calibration_error(y, p))
    assert m["rows"] == 500
    assert m["positives"] == y.sum()
    assert m["positive_rate"] == pytest.approx(y.mean())
    assert m["mean_probability"] == pytest.approx(p.mean())
    for k in TOP_PERCENTS:
        assert (m[f"precision_at_{k}pct"], m[f"recall_at_{k}pct"]) == pytest.approx(top_k_precision_recall(y, p, k))


def test_binary_metrics_auc_is_nan_for_a_single_class() -> None:
    p = np.array([0.1, 0.4, 0.7, 0.2])
    for y in (np.zeros(4), np.ones(4)):
        m = binary_metrics(y, p)
        assert math.isnan(m["roc_auc"])
        assert math.isnan(m["pr_auc"])
        assert math.isfinite(m["log_loss"])
        assert math.isfinite(m["brier"])


def test_binary_metrics_log_loss_stays_finite_for_certain_wrong_predictions() -> None:
    # p = 0 for a positive would be an infinite log loss; probabilities are clipped at 1e-7.
    m = binary_metrics(np.array([1, 0]), np.array([0.0, 0.0]))
    assert m["log_loss"] == pytest.approx(-math.log(1e-7) / 2, rel=1e-6)


def test_top_decile_lift_is_precision_at_10pct_over_base_rate() -> None:
    # Twenty customers, four positives (rate 0.2); the top two scores are both positives.
    p = np.linspace(0.95, 0.0, 20)
    y = np.zeros(20)
    y[[0, 1, 10, 19]] = 1
    order = np.random.default_rng(1).permutation(20)
    m = binary_metrics(y[order], p[order])
    assert m["precision_at_10pct"] == 1.0
    assert m["top_decile_lift"] == pytest.approx(1.0 / 0.2)
    # And in general: the ratio of the two reported numbers.
    rng = np.random.default_rng(2)
    q = rng.random(300)
    z = (rng.random(300) < q).astype(int)
    m = binary_metrics(z, q)
    assert m["top_decile_lift"] == pytest.approx(m["precision_at_10pct"] / z.mean())


def test_top_decile_lift_is_nan_without_positives() -> None:
    assert math.isnan(binary_metrics(np.zeros(10), TEN_P)["top_decile_lift"])


# --- targeting trade-off table --------------------------------------------------------------------

def test_targeting_table_hand_example() -> None:
    table = targeting_table(TEN_Y, TEN_P, percents=(20, 50))
    assert table["contacted"].tolist() == [2, 5]
    assert table["expected_positives"].tolist() == pytest.approx([0.9 + 0.8, 0.9 + 0.8 + 0.7 + 0.6 + 0.5])
    assert table["positives_reached"].tolist() == [1, 2]
    assert table["precision"].tolist() == pytest.approx([0.5, 0.4])
    assert table["recall"].tolist() == pytest.approx([1 / 3, 2 / 3])
    assert table["lift"].tolist() == pytest.approx([0.5 / 0.3, 0.4 / 0.3])


@pytest.mark.parametrize(
    ("rows", "contacted"),
    [
        (200, [2, 4, 10, 20, 40, 100]),
        # 0.3 and 0.6 customers round to none, but at least one is contacted; 1.5 rounds to 2.
        (30, [1, 1, 2, 3, 6, 15]),
    ],
)
def test_targeting_table_rows_and_contacted_counts(rows: int, contacted: list[int]) -> None:
    rng = np.random.default_rng(rows)
    p = rng.random(rows)
    y = (rng.random(rows) < p).astype(int)
    table = targeting_table(y, p)
    assert table["top_percent"].tolist() == [1, 2, 5, 10, 20, 50]
    assert table["contacted"].tolist() == contacted
    assert table["recall"].is_monotonic_increasing  # non-decreasing
    assert table["positives_reached"].is_monotonic_increasing
    # Independent reference: sort scores descending with a plain sorted() and add up.
    by_score = sorted(zip(p, y), key=lambda pair: -pair[0])
    for row in table.itertuples():
        top = by_score[: row.contacted]
        assert row.expected_positives == pytest.approx(sum(s for s, _ in top))
        assert row.positives_reached == sum(label for _, label in top)
        assert row.precision == pytest.approx(row.positives_reached / row.contacted)
        assert row.recall == pytest.approx(row.positives_reached / y.sum())
        assert row.lift == pytest.approx(row.precision / y.mean())


# --- score deciles --------------------------------------------------------------------------------

def test_decile_table_has_ten_equal_deciles_with_decile_one_on_top() -> None:
    rng = np.random.default_rng(5)
    p = rng.random(50)
    y = rng.integers(0, 2, 50)
    table = decile_table(y, p)
    assert table["decile"].tolist() == list(range(1, 11))
    assert table["customers"].tolist() == [5] * 10
    assert table["max_score"].iloc[0] == p.max()
    assert table["min_score"].iloc[-1] == p.min()
    # Decile d's lowest score is above decile d+1's highest.
    assert (table["min_score"].to_numpy()[:-1] > table["max_score"].to_numpy()[1:]).all()
    assert table["positives"].sum() == y.sum()


def test_decile_table_observed_rate_on_a_constructed_example() -> None:
    # Scores 0.00, 0.05, ..., 0.95: two customers a decile. Positives: 0.95, 0.90, 0.85, 0.80 and 0.00.
    p = np.arange(20) / 20
    y = np.zeros(20, dtype=int)
    y[[19, 18, 17, 16, 0]] = 1
    order = np.random.default_rng(7).permutation(20)
    table = decile_table(y[order], p[order])
    assert table["observed_rate"].tolist() == pytest.approx([1, 1, 0, 0, 0, 0, 0, 0, 0, 0.5])
    assert table["positives"].tolist() == [2, 2, 0, 0, 0, 0, 0, 0, 0, 1]
    assert table["mean_predicted"].iloc[0] == pytest.approx((0.95 + 0.90) / 2)
    assert table["mean_predicted"].iloc[-1] == pytest.approx(0.025)
    assert (table["min_score"].iloc[0], table["max_score"].iloc[0]) == pytest.approx((0.90, 0.95))


def test_decile_table_sizes_differ_by_at_most_one_when_not_divisible() -> None:
    table = decile_table(np.zeros(25), np.linspace(0, 1, 25))
    assert len(table) == 10
    assert table["customers"].sum() == 25
    assert set(table["customers"]) <= {2, 3}

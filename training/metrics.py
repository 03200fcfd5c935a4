"""Scores of a probability model on labelled rows: discrimination, calibration and targeting.

Everything scikit-learn has is taken from it (ROC-AUC, PR-AUC, log loss, Brier score, the
calibration curve). Expected calibration error and the targeting tables are what a retention lead
reads, so they are defined here, once, for the report, MLflow and ``funnelcast train --json``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

TOP_PERCENTS = (1, 2, 5, 10, 20, 50)
"""Share of customers contacted (percent of the scored population) in the targeting trade-off table."""

ECE_BINS = 10


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    """Mean |observed rate - mean predicted probability| over ``bins`` equal-width probability bins,
    weighted by the share of rows in each bin (the usual ECE)."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    gap = np.abs(np.bincount(idx, weights=y, minlength=bins) - np.bincount(idx, weights=p, minlength=bins))
    return float(gap.sum() / max(len(p), 1))


def _top_order(p: np.ndarray) -> np.ndarray:
    """Row order by descending score; ties broken by row position so results are reproducible."""
    return np.lexsort((np.arange(len(p)), -np.asarray(p, dtype=float)))


def top_k_precision_recall(y: np.ndarray, p: np.ndarray, percent: float) -> tuple[float, float]:
    """Precision and recall when contacting the top ``percent`` % of rows by score."""
    y = np.asarray(y, dtype=float)
    k = max(1, int(round(len(y) * percent / 100)))
    hits = y[_top_order(p)[:k]].sum()
    positives = y.sum()
    return float(hits / k), float(hits / positives) if positives else float("nan")


LOWER_IS_BETTER = {"log_loss", "brier", "ece"}
"""Metrics where a smaller value is better."""


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """The metric set reported for every model, fold and transition.

    Keys: ``roc_auc``, ``pr_auc``, ``log_loss``, ``brier``, ``ece``, ``top_decile_lift``,
    ``precision_at_{k}pct`` and ``recall_at_{k}pct`` for k in :data:`TOP_PERCENTS`, ``rows``,
    ``positives``, ``positive_rate``, ``mean_probability``. AUCs are NaN when only one class is present.
    """
    y = np.asarray(y, dtype=float)
    p = np.clip(np.asarray(p, dtype=float), 1e-7, 1 - 1e-7)
    both = 0 < y.sum() < len(y)
    rate = float(y.mean()) if len(y) else float("nan")
    out = {
        "rows": float(len(y)),
        "positives": float(y.sum()),
        "positive_rate": rate,
        "mean_probability": float(p.mean()) if len(p) else float("nan"),
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, p)) if both else float("nan"),
        "log_loss": float(log_loss(y, p, labels=[0, 1])) if len(y) else float("nan"),
        "brier": float(brier_score_loss(y, p)) if len(y) else float("nan"),
        "ece": expected_calibration_error(y, p),
    }
    for k in TOP_PERCENTS:
        prec, rec = top_k_precision_recall(y, p, k)
        out[f"precision_at_{k}pct"] = prec
        out[f"recall_at_{k}pct"] = rec
    out["top_decile_lift"] = out["precision_at_10pct"] / rate if rate > 0 else float("nan")
    return out


def targeting_table(y: np.ndarray, p: np.ndarray, percents: tuple[float, ...] = TOP_PERCENTS) -> pd.DataFrame:
    """For contacting the top k % by score: customers contacted, expected positives reached (the sum
    of calibrated probabilities: what the model promises), positives actually reached, precision,
    recall and lift over contacting at random."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    order = _top_order(p)
    rate = y.mean()
    rows = []
    for k in percents:
        n = max(1, int(round(len(y) * k / 100)))
        top = order[:n]
        hits = y[top].sum()
        rows.append({
            "top_percent": k,
            "contacted": n,
            "expected_positives": float(p[top].sum()),
            "positives_reached": int(hits),
            "precision": hits / n,
            "recall": hits / y.sum() if y.sum() else float("nan"),
            "lift": (hits / n) / rate if rate > 0 else float("nan"),
        })
    return pd.DataFrame(rows)


def decile_table(y: np.ndarray, p: np.ndarray) -> pd.DataFrame:
    """Score deciles (1 = highest scores) with their score range, mean predicted probability and
    observed positive rate: the calibration check a retention lead can read."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    order = _top_order(p)
    decile = np.empty(len(p), dtype=int)
    decile[order] = np.arange(len(p)) * 10 // max(len(p), 1) + 1
    frame = pd.DataFrame({"decile": decile, "y": y, "p": p})
    table = frame.groupby("decile").agg(
        customers=("y", "size"), min_score=("p", "min"), max_score=("p", "max"),
        mean_predicted=("p", "mean"), observed_rate=("y", "mean"), positives=("y", "sum"),
    ).reset_index()
    table["positives"] = table["positives"].astype(int)
    return table


VALUE_SHARES = (10, 20)
"""Top percents (by predicted value) whose share of the realised spend :func:`value_metrics` reports."""


def _lorenz(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Cumulative share of the realised amount ``y`` over rows ordered by descending ``pred``."""
    total = y.sum()
    return np.cumsum(y[_top_order(pred)]) / total if total > 0 else np.zeros(len(y))


def value_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """The metric set of an amount prediction (spend in a window) against the realised amounts.

    Keys: ``rows``, ``spenders`` (rows with a positive amount), ``actual_total``, ``predicted_total``,
    ``total_error`` (signed: predicted total / actual total - 1), ``mae``, ``rmse``, ``spearman``
    (rank correlation), ``gini`` (normalised: the area between the Lorenz curve of the realised amounts
    ranked by prediction and the diagonal, over that of the perfect ranking; 1 is perfect, 0 random)
    and ``top_{k}pct_share`` for k in :data:`VALUE_SHARES`: the share of the realised total that the top
    k % by prediction went on to spend.
    """
    from scipy.stats import spearmanr

    y = np.asarray(y, dtype=float)
    pred = np.asarray(pred, dtype=float)
    n = len(y)
    actual, predicted = float(y.sum()), float(pred.sum())
    out = {"rows": float(n), "spenders": float((y > 0).sum()), "actual_total": actual, "predicted_total": predicted,
           "total_error": predicted / actual - 1 if actual > 0 else float("nan"),
           "mae": float(np.abs(pred - y).mean()) if n else float("nan"),
           "rmse": float(np.sqrt(((pred - y) ** 2).mean())) if n else float("nan")}
    varied = n > 1 and np.ptp(y) > 0 and np.ptp(pred) > 0
    out["spearman"] = float(spearmanr(y, pred).statistic) if varied else float("nan")
    if actual > 0 and n > 1:
        diagonal = np.arange(1, n + 1) / n
        gini = (_lorenz(y, pred) - diagonal).sum()
        best = (_lorenz(y, y) - diagonal).sum()
        out["gini"] = float(gini / best) if best > 0 else float("nan")
    else:
        out["gini"] = float("nan")
    for k in VALUE_SHARES:
        top = max(1, int(round(n * k / 100))) if n else 0
        out[f"top_{k}pct_share"] = float(y[_top_order(pred)[:top]].sum() / actual) if actual > 0 else float("nan")
    return out

"""Plots and the HTML report of one target, on a small real backtest (real LightGBM, logistic and
heuristic fits on a synthetic churn table whose true probabilities are known)."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pandas as pd
import pytest
from sklearn.isotonic import IsotonicRegression

from funnelcast.training.backtest import FoldResult, TargetBacktest
from funnelcast.training.metrics import binary_metrics
from funnelcast.features.model_input import Attribute, ModelInput
from funnelcast.training.model import fit_target_model
from funnelcast.training.report import (
    plot_calibration,
    plot_feature_importance,
    plot_gains,
    plot_shap_summary,
    shap_values,
    write_report,
)
from funnelcast.training.splits import BacktestPlan, Fold

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STAGES = ("awareness", "interest", "consideration", "purchase")
FAST = {"n_estimators": 300, "learning_rate": 0.1, "min_child_samples": 40}
MODEL_INPUT = ModelInput(("days_since_last_activity", "count_activity_90d", "support_contacts_30d", "tenure_days",
                          "current_stage"), [Attribute("segment", "category", ("enterprise", "mid", "smb"))])


def _training_table(rows: int = 3000, cutoffs: int = 8) -> pd.DataFrame:
    """Synthetic churn training set over monthly UTC cutoffs; ``p_true`` is the generating probability."""
    rng = np.random.default_rng(0)
    per_cutoff = rows // cutoffs
    cutoff = np.repeat(pd.date_range("2024-01-01", periods=cutoffs, freq="MS", tz="UTC"), per_cutoff)
    n = len(cutoff)
    days = rng.exponential(30.0, n)
    days[rng.random(n) < 0.05] = np.nan  # never active
    count_90 = rng.poisson(5.0, n)
    support = rng.poisson(0.3, n)
    stage = rng.integers(0, len(STAGES), n)
    segment = rng.choice(["smb", "mid", "enterprise"], n)
    logit = (-1.2 + 0.03 * np.nan_to_num(days, nan=90.0) - 0.25 * count_90 + 0.6 * support
             + np.select([segment == "smb", segment == "enterprise"], [0.4, -0.4], 0.0) - 0.1 * stage)
    p_true = 1.0 / (1.0 + np.exp(-logit))
    return pd.DataFrame({
        "customer_id": [f"c{i % per_cutoff:05d}" for i in range(n)],
        "cutoff": cutoff,
        "stage": np.asarray(STAGES, dtype=object)[stage],
        "days_since_last_activity": days,
        "count_activity_90d": count_90,
        "support_contacts_30d": support,
        "tenure_days": rng.uniform(10, 1000, n),
        "current_stage": stage,
        "segment": pd.Categorical(segment),
        "churn_label": pd.array((rng.random(n) < p_true).astype(int), dtype="Int8"),
        "p_true": p_true,
    })


def _recency_frequency(frame: pd.DataFrame) -> np.ndarray:
    days = frame["days_since_last_activity"].fillna(10_000.0).to_numpy(dtype=float)
    return np.log1p(days) - np.log1p(frame["count_activity_90d"].to_numpy(dtype=float))


def _fold(table: pd.DataFrame, index: int, test_position: int) -> FoldResult:
    cuts = sorted(table["cutoff"].unique())
    fold = Fold(index=index, train=tuple(cuts[:test_position - 1]), valid=(cuts[test_position - 1],),
                test=cuts[test_position])
    train = table[table["cutoff"].isin(fold.train)]
    valid = table[table["cutoff"].isin(fold.valid)]
    test = table[table["cutoff"] == fold.test]
    model = fit_target_model("churn", train, valid, MODEL_INPUT, FAST, early_stopping_rounds=20,
                             threads=1)  # all-core OpenMP crawls on a busy CI box
    logistic = fit_target_model("churn", train, valid, MODEL_INPUT, FAST, learner="logistic", early_stopping_rounds=20,
                                threads=1)
    heuristic = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(
        _recency_frequency(valid), valid["churn_label"].to_numpy(dtype=float))
    scores = pd.DataFrame({
        "customer_id": test["customer_id"].to_numpy(),
        "cutoff": test["cutoff"].array,
        "stage": test["stage"].to_numpy(),
        "label": test["churn_label"].to_numpy(dtype=int),
        "p_funnelcast": model.predict_proba(test),
        "p_lightgbm": model.predict_proba(test),
        "p_logistic": logistic.predict_proba(test),
        "p_recency_frequency": np.clip(heuristic.predict(_recency_frequency(test)), 1e-6, 1 - 1e-6),
        "p_oracle": test["p_true"].to_numpy(),
    })
    y = scores["label"].to_numpy()
    metrics = {name: binary_metrics(y, scores[f"p_{name}"].to_numpy())
               for name in ("funnelcast", "lightgbm", "logistic", "recency_frequency", "oracle")}
    return FoldResult(fold=fold, metrics=metrics, transitions={}, scores=scores, model=model,
                      models={"lightgbm": model, "logistic": logistic}, raw={})


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return _training_table()


@pytest.fixture(scope="module")
def backtest(table: pd.DataFrame) -> TargetBacktest:
    folds = [_fold(table, index=0, test_position=6), _fold(table, index=1, test_position=7)]
    y = table["churn_label"].to_numpy(dtype=int)
    selection = {name: float(np.mean([f.metrics[name]["roc_auc"] for f in folds])) for name in ("lightgbm", "logistic")}
    refit = {"learner": "lightgbm", "rounds": 40, "rows": len(table), "cutoffs": 8,
             "last_training_cutoff": "2024-08-01 00:00:00+00:00", "calibration_rows": 1234,
             "calibration_cutoffs": ["2024-07-01", "2024-08-01"], "calibration_segments": [3, 4], "estimate": "out-of-time",
             "seasonal_cells": 17}
    return TargetBacktest(target="churn", folds=folds, rows=len(table), positives=int(y.sum()),
                          plan=BacktestPlan([f.fold for f in folds], ["only 2 of the 3 folds fit"]), learner="lightgbm",
                          selection=selection, selection_metric="roc_auc", model=folds[-1].model, refit=refit)


@pytest.fixture(scope="module")
def images(backtest: TargetBacktest, table: pd.DataFrame, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("plots")
    test = table[table["cutoff"] == backtest.latest.fold.test]
    return {
        "calibration": plot_calibration(backtest.latest.scores, out / "calibration.png"),
        "gains": plot_gains(backtest.latest.scores, out / "gains.png"),
        "feature_importance": plot_feature_importance(backtest.model, out / "importance.png"),
        "shap_summary": plot_shap_summary(backtest.model, test, out / "shap.png", max_rows=300),
    }


def _transitions(backtest: TargetBacktest) -> dict[str, dict]:
    """Per-stage metrics of the latest fold; the last stage is cut to its negatives, so its AUCs are NaN."""
    scores = backtest.latest.scores
    out = {}
    for a, b in zip(STAGES, STAGES[1:]):
        part = scores[scores["stage"] == a]
        if b == "purchase":
            part = part[part["label"] == 0]
        out[f"convert:{a}->{b}"] = {name: binary_metrics(part["label"].to_numpy(), part[f"p_{name}"].to_numpy())
                                    for name in ("funnelcast", "logistic")}
    return out


def _report(backtest: TargetBacktest, images: dict, path, **kwargs) -> str:
    defaults = dict(title="Churn <script>alert(1)</script> & co", images=images,
                    data_summary={"rows": 3000, "positive rate": 0.2345, "source": "synthetic <test>",
                                  "config": {"horizon_days": 30, "windows": [7, 30, 90]}},
                    decision={"alias": "champion", "version": 3, "reason": "beats the champion by 0.012 ROC-AUC"},
                    transitions=_transitions(backtest))
    written = write_report(backtest, path, **{**defaults, **kwargs})
    assert written == path
    return path.read_text(encoding="utf-8")


def test_every_plot_writes_a_png(images: dict) -> None:
    for name, path in images.items():
        data = path.read_bytes()
        assert data[:8] == PNG_MAGIC, name
        assert len(data) > 5_000, name


def test_shap_contributions_plus_bias_sum_to_raw_score(backtest: TargetBacktest, table: pd.DataFrame) -> None:
    model = backtest.model
    frame = table[table["cutoff"] == backtest.latest.fold.test]
    contrib, X, names = shap_values(model, frame, max_rows=200, seed=1)
    assert contrib.shape == X.shape == (200, len(model.feature_names_))
    assert names == model.feature_names_
    full = model.booster_.predict(X, pred_contrib=True, num_iteration=model.best_iteration_)
    raw = model.booster_.predict(X, raw_score=True, num_iteration=model.best_iteration_)
    np.testing.assert_allclose(contrib.sum(axis=1) + full[:, -1], raw, rtol=0, atol=1e-6)
    # The sample is seeded, drawn without replacement, and every row when the frame is small enough.
    again = shap_values(model, frame, max_rows=200, seed=1)[1]
    np.testing.assert_array_equal(np.nan_to_num(X, nan=-1), np.nan_to_num(again, nan=-1))
    all_rows = shap_values(model, frame, max_rows=10_000)[1]
    np.testing.assert_array_equal(np.nan_to_num(all_rows, nan=-1), np.nan_to_num(model.matrix(frame), nan=-1))


def test_report_sections_margins_and_self_containment(backtest: TargetBacktest, images: dict, tmp_path) -> None:
    text = _report(backtest, images, tmp_path / "report.html")
    headings = ["Model", "Test metrics (latest fold)", "Backtest (mean ± sd over 2 folds)", "Per transition",
                "Targeting trade-off", "Score deciles", "Data"]
    positions = [text.index(f"<h2>{h}</h2>") for h in headings]
    assert positions == sorted(positions)
    assert text.index("registered as version 3, alias champion: beats the champion") < positions[0]

    auc = {name: m["roc_auc"] for name, m in backtest.latest.metrics.items()}
    assert f"<td>funnelcast − logistic</td><td>{auc['funnelcast'] - auc['logistic']:+.4f}</td>" in text
    assert f"<td>funnelcast − recency_frequency</td><td>{auc['funnelcast'] - auc['recency_frequency']:+.4f}</td>" in text
    assert "<td>funnelcast − lightgbm</td>" not in text  # the selected learner is not compared with itself
    assert f"<td>gap to oracle</td><td>{auc['oracle'] - auc['funnelcast']:+.4f}</td>" in text
    # How quality was estimated, what was selected from what, and how the registered model was made.
    assert "Quality estimate: out-of-time" in text and "only 2 of the 3 folds fit" in text
    assert f"<tr><td>logistic</td><td>{backtest.selection['logistic']:.4f}</td><td></td></tr>" in text
    assert f"<tr><td>lightgbm</td><td>{backtest.selection['lightgbm']:.4f}</td><td>selected</td></tr>" in text
    assert "refitted on all" in text and "40 boosting rounds" in text and "correction for 2 stage(s)" in text
    assert "Seasonal shift: 17 (stage, cutoff) cells measured" in text
    for fold in backtest.folds:
        assert fold.fold.describe() in text

    assert "<script>" not in text
    assert "Churn &lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in text
    assert "synthetic &lt;test&gt;" in text
    assert "&quot;horizon_days&quot;: 30" in text  # dict values rendered as JSON
    assert text.count('src="data:image/png;base64,') == len(images)
    for caption in images:
        assert f"<figcaption>{caption}</figcaption>" in text
    assert "http://" not in text and "https://" not in text

    assert "<td>3,000</td>" in text  # counts carry thousands separators
    share = backtest.latest.metrics["funnelcast"]["precision_at_10pct"]
    assert f"<td>10%</td><td>{round(len(backtest.latest.scores) / 10):,}</td>" in text
    assert f"<td>{share:.4f}</td>" in text


def test_nan_metric_renders_as_dash(backtest: TargetBacktest, images: dict, tmp_path) -> None:
    latest = backtest.latest
    metrics = {**latest.metrics, "recency_frequency": {**latest.metrics["recency_frequency"], "ece": float("nan")}}
    broken = dataclasses.replace(backtest, folds=[*backtest.folds[:-1], dataclasses.replace(latest, metrics=metrics)])
    text = _report(broken, images, tmp_path / "report.html", decision=None)
    row = re.search(r"<tr><td>recency_frequency</td>(.*?)</tr>", text).group(1)
    cells = re.findall(r"<td>(.*?)</td>", row)
    assert cells[4] == "–"  # ece
    assert "nan" not in row.lower()
    # A transition whose test rows hold one class has no AUC (binary_metrics returns NaN).
    row = re.search(r"<tr><td>convert:consideration-&gt;purchase</td><td>funnelcast</td>(.*?)</tr>", text).group(1)
    assert re.findall(r"<td>(.*?)</td>", row)[2] == "–"
    assert "registered as version" not in text

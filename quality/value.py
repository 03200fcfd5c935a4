"""The value target in the quality suite: the product's expected spend beside independent baselines.

Per data set whose events carry purchase amounts, at each test cutoff (the latest cutoffs whose
``value.label_days`` window has closed), every model predicts each buyer's spend in the label window
after the cutoff (what the product's labels say; its 365-day horizon is a fixed multiple of that per
stage) and is scored against the spend realised there:

- ``product``: the value model funnelcast registered when trained on the rows before the cutoff
  (``ValueModel.predict_label``).
- ``last_window``: the spend of the same number of days just before the cutoff (nothing is fitted:
  "next quarter = last quarter").
- ``lightgbm``: a plain LightGBM regressor (Tweedie, fixed settings) on the suite's own features
  (:func:`quality.baselines.simple_features`), fitted on the same training rows and labels.
- ``bg_nbd``: BG/NBD × Gamma-Gamma (``lifetimes``) fitted on the purchase days before the cutoff, its
  RFM summary computed here (not the product's): expected purchases in the window × expected spend per
  purchase day.

Metrics are :func:`funnelcast.training.metrics.value_metrics` (MAE, RMSE, signed error of the total,
Spearman, normalised Gini, the share of realised spend the top 10/20 % captured). The margin is the
product's Gini minus the best baseline's; the aims: a margin ≥ 0 and the total within ±:data:`TOTAL_AIM`.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import pandas as pd

VALUE_BASELINES = ("last_window", "lightgbm", "bg_nbd")
VALUE_MODELS = ("product", *VALUE_BASELINES)
VALUE_METRICS = ("mae", "rmse", "total_error", "spearman", "gini", "top_10pct_share", "top_20pct_share",
                 "rows", "spenders")
TOTAL_AIM = 0.10
"""The product's signed error of the total realised spend should be within ±10 %."""
DAY = pd.Timedelta(days=1)


def _metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    from funnelcast.training.metrics import value_metrics

    from quality.run import _num

    m = value_metrics(y, pred)
    return {k: _num(m[k]) for k in VALUE_METRICS}


def purchases(events: pd.DataFrame, config) -> pd.DataFrame:
    """The purchase events of ``events``: customer_id (str), timestamp, amount (NaN → 0). Read once per
    test cutoff; every baseline below takes its window of them."""
    buys = events.loc[events["event_type"].astype(str).isin(config.purchase_event_types),
                      ["customer_id", "timestamp", "amount"]]
    return buys.assign(customer_id=buys["customer_id"].astype(str), amount=pd.to_numeric(buys["amount"]).fillna(0.0))


def last_window(buys: pd.DataFrame, ids: pd.Series, cutoff: pd.Timestamp, days: int) -> np.ndarray:
    """Each of ``ids``' spend (``buys``: :func:`purchases`) in the ``days`` before ``cutoff``."""
    recent = buys.loc[(buys["timestamp"] >= cutoff - days * DAY) & (buys["timestamp"] < cutoff)]
    spend = recent.groupby("customer_id")["amount"].sum()
    return spend.reindex(ids.astype(str).to_numpy()).fillna(0.0).to_numpy()


def rfm(buys: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Per buyer before ``cutoff`` (``buys``: :func:`purchases`), BTYD's summary in days: ``frequency``
    (repeat purchase days), ``recency`` (first to last purchase day), ``T`` (first purchase day to the
    cutoff) and ``monetary_value`` (mean spend of the repeat purchase days; 0 without one)."""
    buys = buys.loc[buys["timestamp"] < cutoff]
    day = buys["timestamp"].dt.floor("D")
    days = buys.assign(day=day).groupby(["customer_id", "day"], as_index=False)["amount"].sum()
    g = days.groupby("customer_id")
    first, last, n = g["day"].min(), g["day"].max(), g["day"].size()
    first_spend = days.sort_values("day").groupby("customer_id")["amount"].first()
    repeat_spend = g["amount"].sum() - first_spend
    out = pd.DataFrame({"frequency": (n - 1).astype(float), "recency": (last - first) / DAY,
                        "T": (cutoff.floor("D") - first) / DAY})
    out["monetary_value"] = np.where(out["frequency"] > 0, repeat_spend / out["frequency"].clip(lower=1), 0.0)
    return out


def bg_nbd_spend(buys: pd.DataFrame, ids: pd.Series, cutoff: pd.Timestamp, days: int) -> np.ndarray:
    """BG/NBD × Gamma-Gamma expected spend of ``ids`` in the ``days`` after ``cutoff``, fitted on the
    purchases (``buys``) before it (0 for a customer with no purchase before it; the mean repeat spend
    where Gamma-Gamma has no repeat to go on)."""
    from lifetimes import BetaGeoFitter, GammaGammaFitter

    summary = rfm(buys, cutoff)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bg = BetaGeoFitter(penalizer_coef=0.001).fit(summary["frequency"], summary["recency"], summary["T"])
        expected_purchases = bg.conditional_expected_number_of_purchases_up_to_time(
            days, summary["frequency"], summary["recency"], summary["T"])
        repeat = summary[(summary["frequency"] > 0) & (summary["monetary_value"] > 0)]
        gg = GammaGammaFitter(penalizer_coef=0.001).fit(repeat["frequency"], repeat["monetary_value"])
        per_day = gg.conditional_expected_average_profit(summary["frequency"], summary["monetary_value"])
    per_day = per_day.where(summary["frequency"] > 0, repeat["monetary_value"].mean())
    spend = np.asarray(expected_purchases, dtype=float) * np.asarray(per_day, dtype=float)
    return pd.Series(spend, index=summary.index).reindex(ids.astype(str).to_numpy()).fillna(0.0).to_numpy()


def lightgbm_regressor(seed: int = 0, threads: int = 1):
    """A plain LightGBM Tweedie regressor with the classifier baseline's fixed settings."""
    import lightgbm as lgb

    from quality.baselines import LIGHTGBM_SETTINGS

    return lgb.LGBMRegressor(objective="tweedie", **LIGHTGBM_SETTINGS, random_state=seed, n_jobs=threads)


def score_value_cutoff(data_events: pd.DataFrame, config, full, train_set, cutoff: pd.Timestamp, result,
                       product_error: str | None, train_seconds: float, threads: int, say) -> dict[str, Any]:
    """One test cutoff of the value target: the product trained on rows before it, the baselines on the
    same rows (or the events before it), all scored on the cutoff's buyers."""
    from funnelcast.features.targets import VALUE

    from quality.baselines import FEATURES, simple_features
    from quality.run import _cutoff_text

    days = config.value.label_days
    rows = full.rows(VALUE.name)
    test = rows.loc[rows["cutoff"] == cutoff]
    y = test[VALUE.label].to_numpy(dtype=float)
    train_rows = train_set.rows(VALUE.name)
    entry: dict[str, Any] = {
        "test_cutoff": _cutoff_text(cutoff), "label_days": days,
        "train_rows": int(len(train_rows)), "train_cutoffs": int(train_rows["cutoff"].nunique()),
        "test_rows": int(len(y)), "test_spenders": int((y > 0).sum()), "training_seconds": round(train_seconds, 2),
    }
    if product_error is not None:
        entry["product"] = {"error": product_error}
    elif VALUE.name in result.skipped:
        entry["product"] = {"error": f"cannot train: skipped {result.skipped[VALUE.name]}"}
    else:
        entry["product"] = _metrics(y, result.targets[VALUE.name].backtest.model.predict_label(test))
    say(f"value: baselines at {cutoff:%Y-%m-%d}")
    started = time.perf_counter()
    buys = purchases(data_events, config)
    entry["last_window"] = _metrics(y, last_window(buys, test["customer_id"], cutoff, days))
    try:
        train_X = simple_features(data_events, train_rows, config).loc[:, list(FEATURES)]
        test_X = simple_features(data_events, test, config).loc[:, list(FEATURES)]
        model = lightgbm_regressor(config.training.seed, threads).fit(train_X, train_rows[VALUE.label].to_numpy(dtype=float))
        entry["lightgbm"] = _metrics(y, model.predict(test_X))
    except ValueError as exc:
        entry["lightgbm"] = {"error": str(exc)}
    try:
        entry["bg_nbd"] = _metrics(y, bg_nbd_spend(buys, test["customer_id"], cutoff, days))
    except Exception as exc:  # noqa: BLE001 - a baseline that cannot fit is recorded, the suite goes on
        entry["bg_nbd"] = {"error": f"{type(exc).__name__}: {exc}"}
    entry["baseline_seconds"] = round(time.perf_counter() - started, 2)
    _value_comparisons(entry)
    if product_error is None and VALUE.name in result.targets and "churn" in result.targets:
        entry["outreach"] = outreach_rankings(buys, config, test, cutoff, result)
    return entry


RANKINGS = ("p_x_expected", "odds_x_expected", "p_x_trailing", "trailing")
"""Orders of the outreach list compared by :func:`outreach_rankings`: churn probability p × the value
model's expected spend (the product's ``value_at_risk``), p / (1 − p) × expected spend (p × the
expected spend *if retained*, when a churner spends nothing), p × trailing spend, and trailing spend."""
OUTREACH_SHARES = (10, 20)


def outreach_rankings(buys: pd.DataFrame, config, test: pd.DataFrame, cutoff: pd.Timestamp, result) -> dict[str, Any]:
    """Which order of the outreach list finds the spend that was lost: on the test cutoff's buyers whom the
    churn model scores (``churn_eligible``), each ranking of :data:`RANKINGS`, and the share of their lost
    spend — per customer max(0, spend in the ``value.label_days`` before the cutoff − spend in those after
    it; ``buys``: :func:`purchases`) — that its top 10 / 20 % hold. Trailing spend is over
    ``serving.value_window_days``, as served."""
    from funnelcast.features.targets import CHURN

    listed = test.loc[test[CHURN.eligible_column].to_numpy(dtype=bool)]
    if len(listed) == 0:
        return {"error": "no buyer at the cutoff is scored for churn"}
    days = config.value.label_days
    ids = listed["customer_id"]
    p = np.clip(result.targets["churn"].backtest.model.predict_proba(listed), 0.0, 1 - 1e-6)
    expected = result.targets["value"].backtest.model.predict(listed)
    trailing = last_window(buys, ids, cutoff, config.serving.value_window_days)
    before = last_window(buys, ids, cutoff, days)
    after = last_window(buys, ids, cutoff + days * DAY, days)  # the window after: [t, t + days)
    return {**lost_shares(p, expected, trailing, np.clip(before - after, 0.0, None)), "window_days": days}


def lost_shares(p: np.ndarray, expected: np.ndarray, trailing: np.ndarray, lost: np.ndarray) -> dict[str, Any]:
    """For each of :data:`RANKINGS` (from churn probabilities ``p`` < 1, expected and trailing spend), the
    share of the total ``lost`` spend held by its top k % (ties kept in row order)."""
    scores = {"p_x_expected": p * expected, "odds_x_expected": p / (1 - p) * expected, "p_x_trailing": p * trailing,
              "trailing": trailing}
    total = float(lost.sum())
    out: dict[str, Any] = {"rows": int(len(p)), "lost_total": total}
    for name, score in scores.items():
        order = np.argsort(-score, kind="stable")
        for k in OUTREACH_SHARES:
            top = order[: max(1, int(round(len(order) * k / 100)))]
            out[f"{name}_top_{k}pct_lost_share"] = float(lost[top].sum() / total) if total > 0 else None
    return out


def _value_comparisons(entry: dict[str, Any]) -> None:
    """The product's Gini margin over the best baseline's, and the aims."""
    from quality.run import _num

    product = entry.get("product", {}).get("gini")
    baselines = [entry.get(b, {}).get("gini") for b in VALUE_BASELINES]
    baselines = [g for g in baselines if g is not None and not np.isnan(g)]
    best = max(baselines) if baselines else None
    entry["best_baseline_gini"] = best
    entry["gini_margin_over_best_baseline"] = _num(product - best) if product is not None and best is not None else None
    total = entry.get("product", {}).get("total_error")
    entry["aims"] = {
        "gini_at_least_best_baseline": None if entry["gini_margin_over_best_baseline"] is None
        else bool(entry["gini_margin_over_best_baseline"] >= 0),
        "total_within": TOTAL_AIM,
        "total_within_aim": None if total is None else bool(abs(total) <= TOTAL_AIM),
    }


def combine_value_cutoffs(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The value target's record over its test cutoffs: each model's metrics averaged over the cutoffs
    the product scored (rows and spenders summed), the Gini margin as the mean of the per-cutoff margins,
    the aims on those means, every cutoff's entry under ``per_cutoff``."""
    from quality.run import _mean

    both = [e for e in entries if e.get("product", {}).get("gini") is not None]
    out: dict[str, Any] = {"kind": "value", "test_cutoffs": [e["test_cutoff"] for e in entries],
                           "scored_cutoffs": [e["test_cutoff"] for e in both],
                           "test_rows": sum(e.get("test_rows", 0) for e in both), "per_cutoff": entries}
    if not both:
        errors = [e.get("product", {}).get("error") or e.get("error") for e in entries]
        out["product"] = {"error": next((x for x in errors if x), "no test cutoff could be scored")}
        out["error"] = out["product"]["error"]
        return out
    for name in VALUE_MODELS:
        scored = [e[name] for e in both if e.get(name, {}).get("gini") is not None]
        if scored:
            out[name] = {k: (sum(m.get(k) or 0 for m in scored) if k in ("rows", "spenders") else _mean([m.get(k) for m in scored]))
                         for k in VALUE_METRICS}
    outreach = [e["outreach"] for e in both if "rows" in e.get("outreach", {})]
    if outreach:
        out["outreach"] = {k: (sum(o[k] for o in outreach) if k in ("rows", "lost_total") else _mean([o.get(k) for o in outreach]))
                           for k in outreach[0] if k != "window_days"}
        out["outreach"]["window_days"] = outreach[0]["window_days"]
    _value_comparisons(out)
    out["gini_margin_over_best_baseline"] = _mean([e.get("gini_margin_over_best_baseline") for e in both])
    out["aims"]["gini_at_least_best_baseline"] = (None if out["gini_margin_over_best_baseline"] is None
                                                  else bool(out["gini_margin_over_best_baseline"] >= 0))
    return out


def value_table_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per data set with a value record: the product's and each baseline's Gini and total error."""
    rows = []
    for name, record in results.items():
        e = record.get("targets", {}).get("value")
        if e is None:
            continue
        row = {"dataset": name, "error": e.get("error"), "cutoffs": f"{len(e.get('scored_cutoffs', []))}/"
               f"{len(e.get('test_cutoffs', []))}", "rows": e.get("test_rows"),
               "margin": e.get("gini_margin_over_best_baseline"), "aims": e.get("aims", {}),
               "outreach": e.get("outreach")}
        for model in VALUE_MODELS:
            m = e.get(model, {})
            row[f"{model}_gini"], row[f"{model}_total_error"], row[f"{model}_mae"] = (
                m.get("gini"), m.get("total_error"), m.get("mae"))
        rows.append(row)
    return rows

"""Independent baselines: simple recency/frequency/monetary features and two stock models.

Why independent: the product's own baselines (``funnelcast.training.baselines``) read the product's
feature frame, so a bug in funnelcast's feature code (a leak past the cutoff, a wrong window) would
flatter them and the product alike. These features are computed here, from the validated events
table alone, with plain pandas/numpy and none of funnelcast's feature code; only the funnel config
(which event types are purchases, outbound touches or stages) is shared, because a user would hand
both the same description of their data.

Every feature of a (customer, cutoff) row sees only that customer's events strictly before the
cutoff (``timestamp < cutoff``), like the product's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

DAY_NS = 86_400 * 10**9

FEATURES = (
    "days_since_last_event",
    "tenure_days",
    "events_30d",
    "events_90d",
    "events_total",
    "active_days_90d",
    "purchases_total",
    "purchases_90d",
    "spend_total",
    "days_since_last_purchase",
    "days_since_last_own_activity",
    "own_events_90d",
    "events_prev_30d",
    "trend_30d",
    "current_stage",
)
"""The baseline feature columns, in order. Recencies are NaN where the customer has no such event;
``trend_30d`` is (events in the last 30 days + 1) / (events in the 30 days before + 1);
``current_stage`` is the index of the furthest funnel stage the customer's event types evidence
(NaN before any stage)."""


def _ns(values: Any) -> np.ndarray:
    """Timestamps (tz-aware or naive UTC, any unit) as int64 nanoseconds since the epoch."""
    ts = pd.to_datetime(pd.Series(values), utc=True)
    return ts.dt.as_unit("ns").array.asi8.copy()


def _last_before(code: np.ndarray, ts: np.ndarray, starts: np.ndarray, n_before: np.ndarray) -> np.ndarray:
    """Per customer code, the latest ``ts`` among its first ``n_before`` events (sorted by code, time);
    NaN where there is none. ``starts[c]`` is where customer ``c``'s block begins."""
    out = np.full(len(starts), np.nan)
    has = n_before > 0
    out[has] = ts[starts[has] + n_before[has] - 1]
    return out


class _Sorted:
    """One kind of events (all, purchases, own activity) as arrays sorted by customer code then time."""

    def __init__(self, code: np.ndarray, ts: np.ndarray, n_codes: int, amount: np.ndarray | None = None) -> None:
        order = np.lexsort((ts, code))
        self.code, self.ts = code[order], ts[order]
        self.amount = None if amount is None else amount[order]
        self.n_codes = n_codes
        counts = np.bincount(self.code, minlength=n_codes)
        self.starts = np.concatenate(([0], np.cumsum(counts)[:-1]))

    def count(self, lo: int | None, hi: int) -> np.ndarray:
        """Events per code with ``lo <= ts < hi`` (no lower bound when ``lo`` is None)."""
        mask = self.ts < hi
        if lo is not None:
            mask &= self.ts >= lo
        return np.bincount(self.code[mask], minlength=self.n_codes)

    def last_before(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(events per code before ``t``, time of the latest of them or NaN)."""
        n = self.count(None, t)
        return n, _last_before(self.code, self.ts, self.starts, n)


def simple_features(events: pd.DataFrame, rows: pd.DataFrame, config) -> pd.DataFrame:
    """The :data:`FEATURES` of every ``(customer_id, cutoff)`` row of ``rows``, from ``events``
    (``customer_id``, ``timestamp``, ``event_type``, ``amount``) strictly before each row's cutoff.

    ``config`` (a funnel config) names purchase and outbound event types and the stages. Returns a
    float frame with ``rows``' index. Vectorised: one pass over the events per distinct cutoff, none
    per customer. A customer with no event before the cutoff gets zero counts and NaN recencies.
    """
    missing = {"customer_id", "cutoff"} - set(rows.columns)
    if missing:
        raise ValueError(f"simple_features: rows lack column(s) {sorted(missing)}; they need customer_id and cutoff")
    missing = {"customer_id", "timestamp", "event_type"} - set(events.columns)
    if missing:
        raise ValueError(f"simple_features: events lack column(s) {sorted(missing)}")
    out = pd.DataFrame(np.nan, index=rows.index, columns=list(FEATURES), dtype=float)
    if len(rows) == 0:
        return out

    ids = events["customer_id"].astype(str).to_numpy(dtype=object)
    codes, uniques = pd.factorize(ids)
    n_codes = len(uniques)
    ts = _ns(events["timestamp"])
    etype = events["event_type"].astype(str).to_numpy(dtype=object)
    amount = (pd.to_numeric(events["amount"], errors="coerce").fillna(0.0).to_numpy(dtype=float)
              if "amount" in events.columns else np.zeros(len(events)))

    purchase = np.isin(etype, list(config.purchase_event_types))
    own = ~np.isin(etype, list(config.outbound_event_types))
    stage_of = {et: i for i, stage in enumerate(config.stages) for et in stage.event_types}
    stage = pd.Series(etype).map(stage_of).fillna(-1).to_numpy(dtype=np.int64)

    every = _Sorted(codes, ts, n_codes)
    buys = _Sorted(codes[purchase], ts[purchase], n_codes, amount[purchase])
    mine = _Sorted(codes[own], ts[own], n_codes)
    staged = [_Sorted(codes[stage == s], ts[stage == s], n_codes) for s in range(len(config.stages))]
    day = every.ts // DAY_NS

    row_code = pd.Index(uniques).get_indexer(rows["customer_id"].astype(str).to_numpy(dtype=object))
    row_cut = _ns(rows["cutoff"])
    for t in np.unique(row_cut):
        at = np.flatnonzero(row_cut == t)
        c = row_code[at]
        known = c >= 0
        ck = c[known]
        t = int(t)
        d30, d60, d90 = (t - k * DAY_NS for k in (30, 60, 90))

        n_all, last = every.last_before(t)
        first = np.full(n_codes, np.nan)
        first[n_all > 0] = every.ts[every.starts[n_all > 0]]
        window = (every.ts >= d90) & (every.ts < t)
        new_day = np.ones(window.sum(), dtype=bool)
        wc, wd = every.code[window], day[window]
        new_day[1:] = (wc[1:] != wc[:-1]) | (wd[1:] != wd[:-1])
        active_days = np.bincount(wc[new_day], minlength=n_codes)
        n_buy, last_buy = buys.last_before(t)
        spend = np.bincount(buys.code[buys.ts < t], weights=buys.amount[buys.ts < t], minlength=n_codes)
        _, last_own = mine.last_before(t)
        e30, e_prev = every.count(d30, t), every.count(d60, d30)
        current = np.full(n_codes, np.nan)
        for s, part in enumerate(staged):  # stages in journey order: the furthest evidenced wins
            current[part.count(None, t) > 0] = s

        values = {
            "days_since_last_event": (t - last) / DAY_NS,
            "tenure_days": (t - first) / DAY_NS,
            "events_30d": e30,
            "events_90d": every.count(d90, t),
            "events_total": n_all,
            "active_days_90d": active_days,
            "purchases_total": n_buy,
            "purchases_90d": buys.count(d90, t),
            "spend_total": spend,
            "days_since_last_purchase": (t - last_buy) / DAY_NS,
            "days_since_last_own_activity": (t - last_own) / DAY_NS,
            "own_events_90d": mine.count(d90, t),
            "events_prev_30d": e_prev,
            "trend_30d": (e30 + 1.0) / (e_prev + 1.0),
            "current_stage": current,
        }
        block = np.full((len(at), len(FEATURES)), np.nan)
        block[known] = np.column_stack([np.asarray(values[f], dtype=float)[ck] for f in FEATURES])
        # Customers with no event at all: zero counts, NaN recencies and stage, a flat trend.
        unknown = ~known
        if unknown.any():
            for j, f in enumerate(FEATURES):
                if not (f.startswith("days_since") or f in ("tenure_days", "current_stage")):
                    block[unknown, j] = 1.0 if f == "trend_30d" else 0.0
        out.iloc[at] = block
    return out


def _log1p_nonnegative(x: np.ndarray) -> np.ndarray:
    return np.log1p(np.clip(x, 0.0, None))


def logistic_pipeline(seed: int = 0):
    """Median imputation (with missing indicators), log1p, standardisation, L2 logistic regression."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    return make_pipeline(
        SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
        FunctionTransformer(_log1p_nonnegative),
        StandardScaler(),
        LogisticRegression(C=1.0, max_iter=2000, random_state=seed),
    )


LIGHTGBM_SETTINGS: dict[str, Any] = {
    "n_estimators": 300, "learning_rate": 0.05, "num_leaves": 15, "min_child_samples": 50, "subsample": 0.8,
    "subsample_freq": 1, "colsample_bytree": 0.8, "reg_lambda": 1.0, "verbose": -1, "deterministic": True,
    "force_row_wise": True,
}
"""The plain LightGBM baselines' fixed settings (this classifier, and quality/value.py's regressor)."""


def lightgbm_model(seed: int = 0, threads: int = 1):
    """A plain LightGBM classifier with modest fixed settings: no tuning, no early stopping, no calibration."""
    import lightgbm as lgb

    return lgb.LGBMClassifier(**LIGHTGBM_SETTINGS, random_state=seed, n_jobs=threads)


BASELINES = ("logistic", "lightgbm")
"""Baseline names, as they appear in the runner's results."""


def fit_baselines(train_X: pd.DataFrame, train_y: Any, seed: int = 0, threads: int = 1) -> dict[str, Any]:
    """Fit both baselines on the same rows; returns name → fitted scikit-learn estimator
    (``predict_proba(X)[:, 1]`` gives probabilities, see :func:`predict_baselines`).

    Raises ``ValueError`` when the training labels hold one class only.
    """
    y = np.asarray(train_y, dtype=int)
    if len(y) == 0 or y.min() == y.max():
        raise ValueError(f"baselines need both classes in training: {len(y):,} rows with {int(y.sum()):,} positives")
    X = train_X.loc[:, list(FEATURES)].to_numpy(dtype=float)
    return {"logistic": logistic_pipeline(seed).fit(X, y),
            "lightgbm": lightgbm_model(seed, threads).fit(pd.DataFrame(X, columns=list(FEATURES)), y)}


def predict_baselines(models: dict[str, Any], test_X: pd.DataFrame) -> dict[str, np.ndarray]:
    """Name → positive-class probabilities of each fitted baseline on ``test_X``."""
    X = test_X.loc[:, list(FEATURES)].to_numpy(dtype=float)
    return {"logistic": models["logistic"].predict_proba(X)[:, 1],
            "lightgbm": models["lightgbm"].predict_proba(pd.DataFrame(X, columns=list(FEATURES)))[:, 1]}


def baseline_probabilities(train_X: pd.DataFrame, train_y: Any, test_X: pd.DataFrame, seed: int = 0,
                           threads: int = 1) -> dict[str, np.ndarray]:
    """Fit both baselines on the training rows and return their test probabilities by name."""
    return predict_baselines(fit_baselines(train_X, train_y, seed, threads), test_X)

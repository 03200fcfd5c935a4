"""The Scorer: champion models from the registry, the features they were trained on, scores and reasons.

One object scores everywhere — batch files, the outreach list and the HTTP service — through one
path: events as :class:`~features.behaviour.EventArrays` → :func:`~features.behaviour.compute_features`
(the training code) → the model's input matrix → calibrated probabilities → path-attribution
reasons. A request's single customer and a million-row batch differ only in how many rows go through.

Per customer the scorer reports:

* ``status``: ``prospect`` (before the churn stage, active), ``customer`` (at the churn stage or
  later, not churned), ``churned`` (already churned by the funnel's definition), ``lapsed`` (a
  prospect inactive past ``conversion.active_within_days``) or ``no_history``. A probability is
  only given where the model was trained to give one (the training labels' eligibility), else null.
* ``next_stage_probability`` and ``churn_probability``: calibrated, from the champion models.
* ``percentile``: the churn probability's percentile among the customers of the latest scored
  population (the batch itself, or the population the service scored at start-up), and ``risk_tier``
  from the config's churn-probability floors.
* ``customer_value``: spend in the ``serving.value_window_days`` before ``as_of`` (no value model
  yet), and ``value_at_risk`` = churn probability × value, by which the outreach list ranks.
* ``reasons``: the features pushing the score up most (churn for customers, conversion for
  prospects), in words (:mod:`serving.reasons`).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import zoneinfo
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from funnelcast.features.behaviour import (
    DAY_NS,
    EventArrays,
    FeatureSpec,
    compute_features,
    cutoff_ns,
    feature_spec,
)
from funnelcast.features.funnel import OTHER, FunnelConfig, load_config
from funnelcast.features.labels import eligibility
from funnelcast.serving.attribution import PathAttribution, top_features
from funnelcast.serving.reasons import Phrasebook
from funnelcast.serving.rowpredict import RowPredictor
from funnelcast.training.model import TargetModel, to_matrix

TARGETS = ("convert", "churn")
BATCH_CHUNK = 65_536  # customers per scoring chunk: bounds memory at ~150 MB whatever the population
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_NO_DATE = np.iinfo(np.int64).min
# int64 nanoseconds (numpy/pandas time) cover 1677-09-21 to 2262-04-11; a day's margin for time zones.
_FIRST, _LAST = dt.datetime(1677, 9, 23), dt.datetime(2262, 4, 10)
_MICROSECOND = dt.timedelta(microseconds=1)


class ScoringError(ValueError):
    """Input the scorer cannot score (a bad event, an unknown attribute value); the message names it."""


class ModelMismatchError(ValueError):
    """Models that cannot be served together or with the given funnel config."""


# ---- customer attributes ----------------------------------------------------------------------

@dataclass(frozen=True)
class Attributes:
    """Static customer attributes, encoded once for one model: category codes / numbers as float,
    dates as int64 ns (``days_since_<col>`` depends on the cutoff, so it is computed per request)."""

    numbers: np.ndarray  # (C, A) float: one column per non-date attribute feature
    dates: np.ndarray  # (C, D) int64 ns, _NO_DATE where unknown
    raw: dict[str, np.ndarray] = field(default_factory=dict)  # the original values, for filters (segment)

    def take(self, rows: np.ndarray | slice) -> Attributes:
        """The attributes of some customers (positions in the encoded order)."""
        return Attributes(self.numbers[rows], self.dates[rows], {k: v[rows] for k, v in self.raw.items()})


class AttributePlan:
    """Where each of a model's input columns comes from: a behaviour column, or a customer attribute."""

    def __init__(self, model: TargetModel, spec: FeatureSpec) -> None:
        col = {c: i for i, c in enumerate(spec.columns)}
        feats = model.feature_names_
        self.behaviour_pos = np.array([j for j, f in enumerate(feats) if f in col], dtype=np.intp)
        self.behaviour_idx = np.array([col[f] for f in feats if f in col], dtype=np.intp)
        attr = [(j, f) for j, f in enumerate(feats) if f not in col]
        self.date_pos = np.array([j for j, f in attr if f.startswith("days_since_") and f not in model.categories_], dtype=np.intp)
        self.date_cols = [f.removeprefix("days_since_") for j, f in attr if j in set(self.date_pos.tolist())]
        self.number_pos = np.array([j for j, f in attr if j not in set(self.date_pos.tolist())], dtype=np.intp)
        self.number_cols = [f for j, f in attr if j not in set(self.date_pos.tolist())]
        self.vocab = {c: {v: i for i, v in enumerate(model.categories_[c])} for c in self.number_cols if c in model.categories_}
        self.categories = model.categories_
        self.n_features = len(feats)

    @property
    def columns(self) -> list[str]:
        return self.number_cols + self.date_cols

    def encode_frame(self, customers: pd.DataFrame | None, ids: np.ndarray, keep: Iterable[str] = ()) -> Attributes:
        """Encode a validated customers table for ``ids`` (customers absent from it get missing values),
        the same way :func:`training.model.to_matrix` encodes a training set."""
        n = len(ids)
        if customers is None or not self.columns:
            numbers = np.full((n, len(self.number_cols)), np.nan)
            return Attributes(numbers, np.full((n, len(self.date_cols)), _NO_DATE, dtype=np.int64))
        table = customers.set_index("customer_id").reindex(pd.Index(ids, dtype=object))
        missing = [c for c in self.columns if c not in table.columns]
        if missing:
            raise ScoringError(f"the customers table lacks attribute column(s) {missing} the model was trained on")
        frame = table[self.number_cols].reset_index(drop=True)
        numbers = to_matrix(frame, self.number_cols, {c: v for c, v in self.categories.items() if c in self.number_cols})
        dates = np.empty((n, len(self.date_cols)), dtype=np.int64)
        for k, c in enumerate(self.date_cols):
            values = table[c]
            ns = values.to_numpy(dtype="datetime64[ns]").view(np.int64)
            dates[:, k] = np.where(values.notna().to_numpy(), ns, _NO_DATE)
        raw = {c: table[c].to_numpy(dtype=object) for c in keep if c in table.columns}
        return Attributes(numbers, dates, raw)

    def encode_dict(self, attrs: dict[str, Any], tz: zoneinfo.ZoneInfo | None) -> tuple[Attributes, list[str]]:
        """One customer's attributes from a request; returns the encoding and the keys the model does not use."""
        numbers = np.full((1, len(self.number_cols)), np.nan)
        for k, c in enumerate(self.number_cols):
            value = attrs.get(c)
            if value is None:
                continue
            if c in self.vocab:
                numbers[0, k] = self.vocab[c].get(str(value), np.nan)  # unseen category: missing, as in training
            else:
                try:
                    numbers[0, k] = float(value)
                except (TypeError, ValueError):
                    raise ScoringError(f"customer.{c} must be a number, got {value!r}") from None
                if not np.isfinite(numbers[0, k]):
                    raise ScoringError(f"customer.{c} must be a finite number, got {value!r}")
        dates = np.full((1, len(self.date_cols)), _NO_DATE, dtype=np.int64)
        for k, c in enumerate(self.date_cols):
            value = attrs.get(c)
            if value is not None:
                dates[0, k] = _timestamp_ns(value, tz, f"customer.{c}")
        ignored = sorted(set(attrs) - set(self.columns))
        return Attributes(numbers, dates), ignored

    def matrix(self, behaviour: np.ndarray, attrs: Attributes, t: int) -> np.ndarray:
        """The model's input matrix at cutoff ``t`` from behaviour rows and their customers' attributes."""
        X = np.empty((len(behaviour), self.n_features), dtype=np.float64)
        X[:, self.behaviour_pos] = behaviour[:, self.behaviour_idx]
        X[:, self.number_pos] = attrs.numbers
        if len(self.date_pos):
            known = (attrs.dates != _NO_DATE) & (attrs.dates < t)
            X[:, self.date_pos] = np.where(known, (t - attrs.dates) / DAY_NS, np.nan)
        return X


def _timestamp_ns(value: Any, tz: zoneinfo.ZoneInfo | None, where: str) -> int:
    """int64 ns since epoch (UTC) of a datetime or ISO string; naive values are read in ``tz``.

    Called once per event of a request: the common case (an ISO string with an offset, well inside
    the representable range) takes C-level steps only."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)  # Python 3.11+: 'Z', offsets, dates, fractions
        except ValueError:
            raise ScoringError(f"{where} {value!r} is not an ISO 8601 date or timestamp") from None
    if not isinstance(value, dt.datetime):
        if not isinstance(value, dt.date):
            raise ScoringError(f"{where} must be an ISO 8601 timestamp, got {value!r}")
        value = dt.datetime(value.year, value.month, value.day)
    if not _FIRST.year < value.year < _LAST.year and not _FIRST <= value.replace(tzinfo=None) <= _LAST:
        raise ScoringError(f"{where} {value.isoformat()} is outside the supported range {_FIRST.year}–{_LAST.year}")
    if value.tzinfo is None:
        if tz is None:
            raise ScoringError(f"{where} {value.isoformat()} has no UTC offset and the funnel config sets no "
                               "source_timezone; add an offset such as 'Z' or '+02:00'")
        value = value.replace(tzinfo=tz)
    return ((value - _EPOCH) // _MICROSECOND) * 1000


# ---- scored rows ------------------------------------------------------------------------------

@dataclass
class Scored:
    """Scores of a block of customers (arrays aligned to ``customer_ids``)."""

    customer_ids: np.ndarray
    as_of: int  # ns
    stage: np.ndarray  # float stage index, NaN: none yet
    status: np.ndarray  # object
    p_convert: np.ndarray  # NaN where not eligible
    p_churn: np.ndarray
    value: np.ndarray
    reasons_for: np.ndarray  # object: "churn", "convert" or None
    reasons: list[list[dict[str, Any]]]  # per row, largest credit first
    raw: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class Population:
    """The churn probabilities of a scored population: the reference for percentiles."""

    sorted_churn: np.ndarray
    as_of: int

    @classmethod
    def of(cls, p_churn: np.ndarray, as_of: int) -> Population:
        p = p_churn[~np.isnan(p_churn)]
        return cls(np.sort(p), as_of)

    def percentile(self, p: np.ndarray) -> np.ndarray:
        """100 × share of the population scoring at most ``p``; NaN for NaN or an empty population."""
        n = len(self.sorted_churn)
        out = np.full(len(p), np.nan)
        ok = ~np.isnan(p)
        if n:
            out[ok] = 100.0 * np.searchsorted(self.sorted_churn, p[ok], side="right") / n
        return out


class Scorer:
    """Champion models (one per target), the funnel they were trained on, and how to explain them."""

    def __init__(self, models: dict[str, TargetModel], versions: dict[str, str], config: FunnelConfig | None = None,
                 names: dict[str, str] | None = None) -> None:
        if not models:
            raise ModelMismatchError("no models to score with")
        embedded = [m.metadata_.get("funnel_config") for m in models.values()]
        trained = FunnelConfig.model_validate(embedded[0]) if embedded[0] is not None else None
        if config is None:
            config = trained if trained is not None else load_config()
        for target, model in models.items():
            if model.config_hash_ and model.config_hash_ != config.data_hash():
                raise ModelMismatchError(
                    f"the {target} model (version {versions.get(target)}) was trained with a different funnel config "
                    f"(data hash {model.config_hash_[:12]}, this config's {config.data_hash()[:12]}): its features "
                    "would not mean what it learned. Serve with the config it was trained with, or retrain"
                )
        self.config = config
        self.spec = feature_spec(config)
        self.models = models
        self.versions = versions
        self.names = names or {t: f"{config.training.model_name_prefix}-{t}" for t in models}
        self.plans = {t: AttributePlan(m, self.spec) for t, m in models.items()}
        self.attributions = {t: PathAttribution.from_booster(m.booster_, m.best_iteration_) for t, m in models.items()}
        self.row_predictors = {t: RowPredictor(m.booster_, m.best_iteration_) for t, m in models.items()}
        self.phrases = Phrasebook(self.spec)
        self.tz = zoneinfo.ZoneInfo(config.source_timezone) if config.source_timezone else None
        settings = config.serving
        self.tier_names = np.array([t.name for t in settings.risk_tiers], dtype=object)
        self.tier_floors = np.array([t.min_churn_probability for t in settings.risk_tiers])
        self._type_code = {t: i for i, t in enumerate(config.event_types)}
        self._stage_names = np.array(list(config.stage_names) + [None], dtype=object)
        self._channel_code = {c: i for i, c in enumerate(config.channel_names)}

    @classmethod
    def from_registry(cls, config: FunnelConfig | None = None, *, tracking_uri: str | None = None,
                      home: Any = None, alias: str = "champion") -> Scorer:
        """The ``alias`` version of every configured target's registered model.

        Raises :class:`training.tracking.RegistryError` naming the store and the model when one is missing.
        """
        from funnelcast.training import tracking

        tracking.connect(tracking_uri, home)
        base = config or load_config()
        models, versions, names = {}, {}, {}
        for target in base.training.targets:
            name = f"{base.training.model_name_prefix}-{target}"
            versions[target], models[target] = tracking.load_model(name, alias)
            names[target] = name
        return cls(models, versions, config, names)

    # ---- the one path --------------------------------------------------------------------------
    def score_arrays(self, arrays: EventArrays, t: int, attrs: dict[str, Attributes], *, reasons: bool = True,
                     threads: int = 1) -> Scored:
        """Score every customer of ``arrays`` at cutoff ``t`` (events strictly before it)."""
        behaviour = compute_features(arrays, t, self.spec, threads=threads)
        elig = eligibility(arrays, t, self.spec, behaviour)
        n = arrays.n_customers
        probs = {}
        contributions = {}
        eligible = {"convert": elig.convert, "churn": elig.churn}
        explain = {"churn": elig.churn, "convert": elig.convert & ~elig.churn}
        for target, model in self.models.items():
            X = self.plans[target].matrix(behaviour, attrs[target], t)
            rows = np.flatnonzero(eligible[target])
            p = np.full(n, np.nan)
            # One customer (a request): LightGBM's single-row fast path, the same numbers with ~20 µs
            # less set-up per call (serving/rowpredict.py).
            one = self.row_predictors[target] if n == 1 else None
            if len(rows):
                raw = np.array([one.raw_score(X[0])]) if one else model.raw_score(X[rows], num_threads=threads)
                p[rows] = model.probability(raw)
            probs[target] = p
            if reasons:
                why = np.flatnonzero(explain[target])
                if len(why):
                    attribution = self.attributions[target]
                    credit = (attribution.credit(one.leaves(X[0])[None]) if one
                              else attribution.contributions(model.booster_, X[why], threads))
                    contributions[target] = (why, X[why], credit)
        status = np.full(n, "no_history", dtype=object)
        has_stage = ~np.isnan(elig.stage)
        status[has_stage] = "prospect"
        status[elig.lapsed] = "lapsed"
        status[elig.churn] = "customer"
        status[elig.churned] = "churned"
        reasons_for = np.full(n, None, dtype=object)
        row_reasons: list[list[dict[str, Any]]] = [[] for _ in range(n)]
        for target, (rows, X, credit) in contributions.items():
            reasons_for[rows] = target
            self._phrase(target, rows, X, credit, row_reasons)
        return Scored(
            customer_ids=arrays.customer_ids, as_of=t, stage=elig.stage, status=status,
            p_convert=probs.get("convert", np.full(n, np.nan)), p_churn=probs.get("churn", np.full(n, np.nan)),
            value=trailing_spend(arrays, t, self.spec, self.config.serving.value_window_days),
            reasons_for=reasons_for, reasons=row_reasons,
        )

    def _phrase(self, target: str, rows: np.ndarray, X: np.ndarray, credit: np.ndarray,
                out: list[list[dict[str, Any]]]) -> None:
        names = self.models[target].feature_names_
        vocab = self.models[target].categories_
        k = self.config.serving.reasons
        # Candidates beyond k: a customer's top credits often restate one fact (events, activity, 30-day count).
        idx, amount = top_features(credit, 4 * k)
        idx = np.where(amount >= self.config.serving.min_reason_credit, idx, -1)  # immaterial pushes: no reason
        phrase, concept = self.phrases.phrase, self.phrases.concept
        for i, r in enumerate(rows.tolist()):
            items: list[dict[str, Any]] = []
            facts = set()
            for j, c in zip(idx[i].tolist(), amount[i].tolist(), strict=True):
                if j < 0 or len(items) == k:
                    break
                name = names[j]
                fact = concept(name)
                if fact in facts:
                    continue
                facts.add(fact)
                value = X[i, j]
                if name in vocab:
                    value = None if np.isnan(value) else vocab[name][int(value)]
                else:
                    value = None if np.isnan(value) else round(float(value), 4)
                items.append({"text": phrase(name, float("nan") if value is None and name not in vocab else value),
                              "feature": name, "value": value, "contribution": round(c, 6)})
            out[r] = items

    # ---- presentation --------------------------------------------------------------------------
    def risk_tier(self, p_churn: np.ndarray) -> np.ndarray:
        tiers = np.full(len(p_churn), None, dtype=object)
        ok = ~np.isnan(p_churn)
        # Floors are descending; the first floor reached names the tier.
        first = np.argmax(p_churn[ok, None] >= self.tier_floors[None, :], axis=1)
        tiers[ok] = self.tier_names[first]
        return tiers

    def stage_names(self, stage: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        names = self._stage_names
        k = len(names) - 1
        idx = np.where(np.isnan(stage), k, stage).astype(np.int64)
        nxt = np.where(idx + 1 < k, idx + 1, k)
        return names[idx], names[np.where(idx == k, k, nxt)]

    def frame(self, s: Scored, population: Population | None = None) -> pd.DataFrame:
        """A table a CRM imports: one row per customer, reasons as ``reason_1..k`` text columns."""
        population = population or Population.of(s.p_churn, s.as_of)
        stage, nxt = self.stage_names(s.stage)
        out = pd.DataFrame({
            "customer_id": pd.array(s.customer_ids, dtype="string"),
            "as_of": pd.Timestamp(s.as_of, tz="UTC"),
            "stage": pd.array(stage, dtype="string"),
            "status": pd.array(s.status, dtype="string"),
            "next_stage": pd.array(nxt, dtype="string"),
            "next_stage_probability": s.p_convert,
            "churn_probability": s.p_churn,
            "percentile": population.percentile(s.p_churn),
            "risk_tier": pd.array(self.risk_tier(s.p_churn), dtype="string"),
            "customer_value": s.value,
            "value_at_risk": np.where(np.isnan(s.p_churn), np.nan, s.p_churn * s.value),
        })
        for k in range(self.config.serving.reasons):
            out[f"reason_{k + 1}"] = pd.array([r[k]["text"] if len(r) > k else None for r in s.reasons], dtype="string")
        out["reasons_for"] = pd.array(s.reasons_for, dtype="string")
        for target in TARGETS:
            out[f"{target}_model_version"] = self.versions.get(target)
        return out

    def records(self, s: Scored, population: Population) -> list[dict[str, Any]]:
        """JSON-ready results, one per customer (the HTTP service's answer)."""
        stage, nxt = self.stage_names(s.stage)
        pct = population.percentile(s.p_churn)
        tiers = self.risk_tier(s.p_churn)
        as_of = iso_utc(s.as_of)
        versions = dict(self.versions)
        out = []
        for i in range(len(s.customer_ids)):
            pc, pn = float(s.p_churn[i]), float(s.p_convert[i])
            out.append({
                "customer_id": str(s.customer_ids[i]), "as_of": as_of, "stage": stage[i], "status": s.status[i],
                "next_stage": nxt[i],
                "next_stage_probability": None if np.isnan(pn) else round(pn, 6),
                "churn_probability": None if np.isnan(pc) else round(pc, 6),
                "percentile": None if np.isnan(pct[i]) else round(float(pct[i]), 2),
                "risk_tier": tiers[i],
                "customer_value": round(float(s.value[i]), 2),
                "value_at_risk": None if np.isnan(pc) else round(pc * float(s.value[i]), 2),
                "reasons": s.reasons[i], "reasons_for": s.reasons_for[i], "model_versions": versions,
            })
        return out

    # ---- inputs ------------------------------------------------------------------------------
    def encode_attributes(self, customers: pd.DataFrame | None, ids: np.ndarray, keep: Iterable[str] = ()) -> dict[str, Attributes]:
        return {t: plan.encode_frame(customers, ids, keep) for t, plan in self.plans.items()}

    def payload_arrays(self, customer_id: str, events: list[dict[str, Any]], t: int) -> tuple[EventArrays, dict[str, int]]:
        """One customer's events from a request, encoded as the event contract would (unknown types and
        channels by the config's policy, exact duplicates dropped); events at or after ``t`` stay invisible.
        Returns the arrays and counts of what was dropped or altered.

        Column by column (list comprehensions over C-level look-ups, numpy after that): this runs once
        per ``/score_events`` request, ~50 events, and costs a few microseconds per event."""
        cfg, tz = self.config, self.tz
        counts = {"duplicates_dropped": 0, "event_types_mapped_to_other": 0, "channels_mapped_to_other": 0,
                  "events_at_or_after_as_of": 0}
        try:
            ts = [_timestamp_ns(e["timestamp"], tz, "") for e in events]
        except ScoringError:  # again, one by one, for a message that names the event
            ts = [_timestamp_ns(e["timestamp"], tz, f"events[{i}].timestamp") for i, e in enumerate(events)]
        code = _vocabulary_codes([e["event_type"] for e in events], self._type_code, counts, "event_type",
                                 "unknown_event_types", "event_types_mapped_to_other", cfg.event_types, "types")
        ch = _vocabulary_codes([e.get("channel") for e in events], self._channel_code, counts, "channel",
                               "unknown_channels", "channels_mapped_to_other", cfg.channel_names, "channels",
                               missing=len(cfg.channel_names))
        amounts = [e.get("amount") for e in events]
        props = [e.get("properties") for e in events]
        props = [json.dumps(v, sort_keys=True, default=str) if isinstance(v, (dict, list)) else v for v in props]
        # Exact duplicates (every field equal) are dropped; the first of each stays, in request order.
        unique = list(dict.fromkeys(zip(ts, code, ch, amounts, props, strict=True)))
        counts["duplicates_dropped"] = len(events) - len(unique)
        n = len(unique)
        cols = list(zip(*unique, strict=True)) if n else [(), (), (), ()]
        ts_arr = np.array(cols[0], dtype=np.int64)
        order = np.argsort(ts_arr, kind="stable")
        counts["events_at_or_after_as_of"] = int(np.count_nonzero(ts_arr >= t))
        arrays = EventArrays(
            customer_ids=np.array([customer_id], dtype=object), starts=np.array([0, n], dtype=np.int64),
            customer=np.zeros(n, dtype=np.int64), ts=ts_arr[order],
            event_type=np.array(cols[1], dtype=np.int64)[order], channel=np.array(cols[2], dtype=np.int64)[order],
            amount=np.array([np.nan if v is None else v for v in cols[3]], dtype=np.float64)[order],
        )
        return arrays, counts

    def score_payload(self, events: list[dict[str, Any]], customer: dict[str, Any] | None, customer_id: str | None,
                      as_of: Any, population: Population) -> dict[str, Any]:
        """One customer scored from the events of a request (``/score_events``): the JSON-ready result,
        with what was dropped, altered or ignored under ``input``. Raises :class:`ScoringError` naming
        what is wrong with the request."""
        limit = self.config.serving.max_events_per_request
        if len(events) > limit:
            raise ScoringError(f"events holds {len(events):,} events; at most {limit:,} per request")
        ids = {i for e in events if (i := e.get("customer_id")) is not None} | ({customer_id} if customer_id else set())
        if len(ids) > 1:
            raise ScoringError(f"the events name more than one customer ({sorted(ids)[:5]}); send one customer per request")
        t = self.as_of_ns(as_of)
        arrays, counts = self.payload_arrays(ids.pop() if ids else "", events, t)
        attrs, ignored = {}, []
        for target, plan in self.plans.items():
            attrs[target], ignored = plan.encode_dict(customer or {}, self.tz)
        result = self.records(self.score_arrays(arrays, t, attrs), population)[0]
        result["input"] = {"events": len(events), **counts, "ignored_attributes": ignored}
        return result

    def as_of_ns(self, value: Any) -> int:
        """A request's or command's as-of time as int ns; None is now (naive: the config's source zone, else UTC)."""
        if value is None:
            return cutoff_ns(pd.Timestamp.now(tz="UTC"))
        return _timestamp_ns(value, self.tz or dt.timezone.utc, "as_of")


@functools.lru_cache(maxsize=256)
def iso_utc(ns: int) -> str:
    """ISO 8601 of int ns since epoch, in UTC (cached: a service answers with the same as-of often)."""
    return pd.Timestamp(ns, tz="UTC").isoformat()


def _vocabulary_codes(values: list[Any], codes: dict[str, int], counts: dict[str, int], field_name: str, policy: str,
                      counter: str, known: Iterable[str], noun: str, missing: int | None = None) -> list[int]:
    """The codes of a request's event types or channels (``missing`` for a None, where one is allowed).
    An unknown value is the config's ``other`` code (counted under ``counter``) or, when its ``policy``
    is ``error`` (no ``other`` code), a :class:`ScoringError` naming the event and the known values."""
    out = [missing if v is None and missing is not None else codes.get(v, -1) for v in values]
    if -1 not in out:
        return out
    other = codes.get(OTHER)
    for i, c in enumerate(out):
        if c >= 0:
            continue
        if other is None:
            raise ScoringError(f"events[{i}].{field_name} {values[i]!r} is not in the funnel config ({policy}: error); "
                               f"known {noun}: {', '.join(known)}")
        counts[counter] += 1
        out[i] = other
    return out


def trailing_spend(a: EventArrays, t: int, spec: FeatureSpec, days: int) -> np.ndarray:
    """Per customer, the amounts of purchase events in ``[t - days, t)``."""
    m = spec.type_purchase[a.event_type] & (a.ts < t) & (a.ts >= t - days * DAY_NS)
    amount = a.amount[m]
    return np.bincount(a.customer[m], weights=np.where(np.isnan(amount), 0.0, amount), minlength=a.n_customers)


def source_arrays(events: pd.DataFrame, customers: pd.DataFrame | None, config: FunnelConfig) -> EventArrays:
    """A validated event source encoded for scoring: every customer with events or in ``customers``."""
    ids = None
    if customers is not None:
        ids = sorted(set(events["customer_id"].astype(str)) | set(customers["customer_id"].astype(str)))
    return EventArrays.from_frame(events, config, customer_ids=ids)


def subset(a: EventArrays, codes: np.ndarray) -> EventArrays:
    """The events of the customers ``codes`` (distinct, any order), recoded 0..len(codes)-1 in that order."""
    starts, ends = a.starts[codes], a.starts[codes + 1]
    lengths = ends - starts
    new_starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    total = int(new_starts[-1])
    idx = np.repeat(starts - new_starts[:-1], lengths) + np.arange(total)
    return EventArrays(
        customer_ids=a.customer_ids[codes], starts=new_starts,
        customer=np.repeat(np.arange(len(codes), dtype=np.int64), lengths),
        ts=a.ts[idx], event_type=a.event_type[idx], channel=a.channel[idx], amount=a.amount[idx],
    )


def score_population(scorer: Scorer, arrays: EventArrays, customers: pd.DataFrame | None, t: int, *,
                     reasons: bool = True, threads: int = 1, keep: Iterable[str] = (),
                     attributes: dict[str, Attributes] | None = None,
                     progress: Callable[[int, int], None] | None = None) -> Scored:
    """Score every customer of ``arrays`` in chunks (memory stays bounded); rows keep ``arrays``' order.

    ``attributes``: the customers' attributes already encoded in ``arrays``' customer order (else
    encoded here, once: re-indexing the customers table costs seconds at a million rows)."""
    if attributes is None:
        attributes = scorer.encode_attributes(customers, arrays.customer_ids, keep)
    parts: list[Scored] = []
    n = arrays.n_customers
    for c0 in range(0, max(n, 1), BATCH_CHUNK):
        c1 = min(n, c0 + BATCH_CHUNK)
        block = arrays.customers_slice(c0, c1)
        attrs = {target: a.take(slice(c0, c1)) for target, a in attributes.items()}
        parts.append(scorer.score_arrays(block, t, attrs, reasons=reasons, threads=threads))
        if progress is not None:
            progress(c1, n)
    raw = next(iter(attributes.values())).raw
    if len(parts) == 1:
        parts[0].raw = raw
        return parts[0]
    return Scored(
        customer_ids=np.concatenate([p.customer_ids for p in parts]), as_of=t,
        stage=np.concatenate([p.stage for p in parts]), status=np.concatenate([p.status for p in parts]),
        p_convert=np.concatenate([p.p_convert for p in parts]), p_churn=np.concatenate([p.p_churn for p in parts]),
        value=np.concatenate([p.value for p in parts]), reasons_for=np.concatenate([p.reasons_for for p in parts]),
        reasons=[r for p in parts for r in p.reasons], raw=raw,
    )


class CustomerBase:
    """Every customer of an event source, scored at ``as_of``: the latest scored population.

    The service holds one (built at start-up) to score customers by id, to place any score in the
    population (percentile) and to rank the outreach list; batch ``funnelcast score`` and ``outreach``
    build one too. By default the population is scored without reasons (cheap) and reasons are computed
    for the rows asked for; ``reasons=True`` gives every row of :attr:`table` its reasons (a batch file).
    Customer attributes are encoded once, here, and taken by row for every request.
    """

    def __init__(self, scorer: Scorer, arrays: EventArrays, customers: pd.DataFrame | None, as_of: int, *,
                 reasons: bool = False, threads: int = 1, progress: Callable[[int, int], None] | None = None) -> None:
        self.scorer = scorer
        self.arrays = arrays
        self.as_of = as_of
        # A dict, not a pandas Index: a request's few ids are looked up in microseconds (an Index of
        # strings converts its Arrow array on every get_indexer call: ~1 ms per request).
        self.code = {cid: i for i, cid in enumerate(arrays.customer_ids.tolist())}
        self.attributes = scorer.encode_attributes(customers, arrays.customer_ids, keep=("segment",))
        self.scored = score_population(scorer, arrays, customers, as_of, reasons=reasons, threads=threads,
                                       attributes=self.attributes, progress=progress)
        self.population = Population.of(self.scored.p_churn, as_of)
        self.table = scorer.frame(self.scored, self.population)

    def score_ids(self, ids: list[str], as_of: int | None = None) -> tuple[Scored, list[str]]:
        """Scores with reasons for ``ids`` (first occurrence order, repeats once) and the ids not in the source."""
        unique = list(dict.fromkeys(ids))
        found = [self.code.get(i, -1) for i in unique]
        unknown = [i for i, c in zip(unique, found, strict=True) if c < 0]
        codes = np.array([c for c in found if c >= 0], dtype=np.intp)
        block = subset(self.arrays, codes)
        attrs = {target: a.take(codes) for target, a in self.attributes.items()}
        return self.scorer.score_arrays(block, self.as_of if as_of is None else as_of, attrs), unknown

    def outreach(self, top: int, stage: str | None = None, segment: str | None = None) -> tuple[pd.DataFrame, Scored]:
        """The ``top`` customers to contact first, by expected value at risk (churn probability × customer
        value), among customers the churn model scores, optionally of one stage and/or segment: the table
        (with reason columns) and the same rows as :class:`Scored` (reasons in full)."""
        cfg = self.scorer.config
        table = self.table
        keep = table["status"].eq("customer").to_numpy()
        if stage is not None:
            if stage not in cfg.stage_names:
                raise ScoringError(f"stage {stage!r} is not a stage of the funnel; stages are {list(cfg.stage_names)}")
            keep &= table["stage"].eq(stage).fillna(False).to_numpy()
        if segment is not None:
            if "segment" not in self.scored.raw:
                raise ScoringError("the customers table has no 'segment' attribute, so the list cannot be filtered by segment")
            segments = pd.Series(self.scored.raw["segment"], dtype="string")
            keep &= segments.eq(segment).fillna(False).to_numpy()
        ranked = table.loc[keep].sort_values(["value_at_risk", "churn_probability", "customer_id"],
                                             ascending=[False, False, True], kind="stable").head(top)
        explained, _ = self.score_ids(ranked["customer_id"].tolist())
        text = self.scorer.frame(explained, self.population).set_index("customer_id")
        reason_cols = [c for c in text.columns if c.startswith("reason")]
        ranked = ranked.drop(columns=reason_cols).join(text[reason_cols], on="customer_id")
        if "segment" in self.scored.raw:
            ranked.insert(ranked.columns.get_loc("stage") + 1, "segment",
                          pd.array(self.scored.raw["segment"][ranked.index.to_numpy()], dtype="string"))
        ranked.insert(0, "rank", np.arange(1, len(ranked) + 1))
        return ranked.reset_index(drop=True), explained

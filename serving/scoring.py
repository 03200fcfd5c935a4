"""The Scorer: champion models from the registry, the features they were trained on, scores and reasons.

One object scores everywhere — batch files, the outreach list and the HTTP service — through one
path: events as :class:`~funnelcast.features.events.EventArrays` (from a source, or a request's JSON
events, by one :class:`~funnelcast.features.events.EventEncoder`) →
:func:`~funnelcast.features.behaviour.compute_features` (the training code) → each model's fitted
:class:`~funnelcast.features.model_input.ModelInput` (its matrix) → calibrated probabilities →
path-attribution reasons. A request's single customer and a million-row batch differ only in how
many rows go through.

Per customer the scorer reports:

* ``status``: ``prospect`` (before the churn stage, active), ``customer`` (at the churn stage or
  later, not churned), ``churned`` (already churned by the funnel's definition), ``lapsed`` (a
  prospect inactive past ``conversion.active_within_days``) or ``no_history``. A probability is
  only given where the model was trained to give one (the training labels' eligibility), else null.
* a probability per target (``next_stage_probability``, ``churn_probability``; the field each
  :class:`~funnelcast.features.targets.Target` names): calibrated, from the champion models.
* ``percentile``: the churn probability's percentile among the customers of the latest scored
  population (the batch itself, or the population the service scored at start-up), and ``risk_tier``
  from the config's churn-probability floors.
* ``customer_value``: for a buyer (at the churn stage or later, churned or not) with a value model
  served, the expected spend in the next ``value.horizon_days`` (:mod:`funnelcast.training.value`);
  otherwise the spend in the ``serving.value_window_days`` before ``as_of``. ``value_basis`` says
  which (``expected_next_<n>d`` or ``spent_last_<n>d``). ``value_at_risk`` = churn probability ×
  value, by which the outreach list ranks.
* ``reasons``: the features pushing the score up most (churn for customers, conversion for
  prospects), in words (:mod:`funnelcast.serving.reasons`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from funnelcast.features.behaviour import FeatureSpec, compute_features, feature_spec
from funnelcast.features.errors import FunnelcastError
from funnelcast.features.events import DUPLICATES, EventArrays, EventEncoder, mapped_to_other
from funnelcast.features.funnel import FunnelConfig, load_config
from funnelcast.features.labels import eligibility
from funnelcast.features.model_input import Attributes, ModelInput
from funnelcast.features.targets import PROBABILITY_TARGETS, TARGETS, VALUE
from funnelcast.features.timestamps import DAY_NS, now_ns, stated_ns
from funnelcast.serving.attribution import PathAttribution, top_features
from funnelcast.serving.reasons import Phrasebook
from funnelcast.serving.rowpredict import RowPredictor
from funnelcast.training.model import TargetModel
from funnelcast.training.value import ValueModel

RISK_TARGET = "churn"
"""The target whose probability places a customer in the population (percentile, risk tier) and, times
the customer's value, ranks the outreach list."""
BATCH_CHUNK = 65_536  # customers per scoring chunk: bounds memory at ~150 MB whatever the population


class ScoringError(FunnelcastError, ValueError):
    """A request or command the scorer cannot answer (too many events, an unknown stage); the message names it."""


class ModelMismatchError(FunnelcastError, ValueError):
    """Models that cannot be served together or with the given funnel config."""

    kind = "model"


# ---- scored rows ------------------------------------------------------------------------------

@dataclass
class Scored:
    """Scores of a block of customers (arrays aligned to ``customer_ids``)."""

    customer_ids: np.ndarray
    as_of: int  # ns
    stage: np.ndarray  # float stage index, NaN: none yet
    status: np.ndarray  # object
    probabilities: dict[str, np.ndarray]  # target -> calibrated probability, NaN where the target does not apply
    value: np.ndarray
    reasons_for: np.ndarray  # object: the target the reasons explain, or None
    reasons: list[list[dict[str, Any]]]  # per row, largest credit first
    raw: dict[str, np.ndarray] = field(default_factory=dict)
    predicted_value: np.ndarray | None = None
    """(bool) rows whose value is the value model's prediction (else trailing spend); None: no value model."""

    def probability(self, target: str) -> np.ndarray:
        """The target's probabilities (all NaN where no model of it is served)."""
        p = self.probabilities.get(target)
        return p if p is not None else np.full(len(self.customer_ids), np.nan)

    @property
    def p_risk(self) -> np.ndarray:
        """The risk target's probabilities (:data:`RISK_TARGET`)."""
        return self.probability(RISK_TARGET)

    @classmethod
    def concat(cls, parts: Sequence[Scored], raw: dict[str, np.ndarray]) -> Scored:
        """One block from consecutive blocks scored at the same as-of time."""
        return cls(
            customer_ids=np.concatenate([p.customer_ids for p in parts]), as_of=parts[0].as_of,
            stage=np.concatenate([p.stage for p in parts]), status=np.concatenate([p.status for p in parts]),
            probabilities={t: np.concatenate([p.probabilities[t] for p in parts]) for t in parts[0].probabilities},
            value=np.concatenate([p.value for p in parts]), reasons_for=np.concatenate([p.reasons_for for p in parts]),
            reasons=[r for p in parts for r in p.reasons], raw=raw,
            predicted_value=None if parts[0].predicted_value is None else np.concatenate([p.predicted_value for p in parts]),
        )


@dataclass(frozen=True)
class Population:
    """The risk probabilities of a scored population: the reference for percentiles."""

    sorted_risk: np.ndarray
    as_of: int

    @classmethod
    def of(cls, p_risk: np.ndarray, as_of: int) -> Population:
        """The population of the non-missing risk probabilities ``p_risk`` scored at ``as_of`` (int ns)."""
        p = p_risk[~np.isnan(p_risk)]
        return cls(np.sort(p), as_of)

    def percentile(self, p: np.ndarray) -> np.ndarray:
        """100 × share of the population scoring at most ``p``; NaN for NaN or an empty population."""
        n = len(self.sorted_risk)
        out = np.full(len(p), np.nan)
        ok = ~np.isnan(p)
        if n:
            out[ok] = 100.0 * np.searchsorted(self.sorted_risk, p[ok], side="right") / n
        return out


class Scorer:
    """Champion models (one per target), the funnel they were trained on, and how to explain them.

    Every entry point scores through :meth:`score_arrays`: batch files and the outreach list
    (:class:`CustomerBase`, :func:`score_population`), ids (:meth:`CustomerBase.score_ids`) and one
    customer's JSON events (:meth:`score_payload`). Each model's fitted
    :class:`~funnelcast.features.model_input.ModelInput` builds its matrix; events are encoded by the
    funnel's :class:`~funnelcast.features.events.EventEncoder`.
    """

    def __init__(self, models: dict[str, TargetModel | ValueModel], versions: dict[str, str],
                 config: FunnelConfig | None = None, names: dict[str, str] | None = None) -> None:
        models = dict(models)
        value_model = models.pop(VALUE.name, None)
        if not models:
            raise ModelMismatchError("no models to score with" if value_model is None else
                                     "a value model alone cannot score: customer_value ranks by churn probability too")
        embedded = [m.metadata_.get("funnel_config") for m in models.values()]
        trained = FunnelConfig.model_validate(embedded[0]) if embedded[0] is not None else None
        if config is None:
            config = trained if trained is not None else load_config()
        checked = {**models, **({VALUE.name: value_model} if value_model is not None else {})}
        for target, model in checked.items():
            if model.config_hash_ and model.config_hash_ != config.data_hash():
                raise ModelMismatchError(
                    f"the {target} model (version {versions.get(target)}) was trained with a different funnel config "
                    f"(data hash {model.config_hash_[:12]}, this config's {config.data_hash()[:12]}): its features "
                    "would not mean what it learned. Serve with the config it was trained with, or retrain"
                )
        self.config = config
        self.spec = feature_spec(config)
        for target, model in checked.items():
            if tuple(model.input_.behaviour) != self.spec.columns:
                raise ModelMismatchError(
                    f"the {target} model (version {versions.get(target)}) was trained on behaviour columns in another "
                    "order or of another funnel than this config builds; serve with the config it was trained with")
        self.models = models
        self.value_model: ValueModel | None = value_model
        """The value target's model (None: customer_value is trailing spend)."""
        self.versions = versions
        self.names = names or {t: f"{config.training.model_name_prefix}-{t}" for t in checked}
        self.encoder = EventEncoder(config)
        # Models trained together share one input contract: customers are encoded once per distinct one.
        self._inputs: list[tuple[ModelInput, list[str]]] = []
        for target, model in checked.items():
            group = next((g for g in self._inputs if g[0] == model.input_), None)
            if group is None:
                self._inputs.append((model.input_, [target]))
            else:
                group[1].append(target)
        self.attributions = {t: PathAttribution.from_booster(m.booster_, m.best_iteration_) for t, m in models.items()}
        self.row_predictors = {t: RowPredictor(m.booster_, m.best_iteration_) for t, m in models.items()}
        self._value_row = None if value_model is None else RowPredictor(value_model.booster_, value_model.best_iteration_)
        self.phrases = Phrasebook(self.spec)
        settings = config.serving
        self.tier_names = np.array([t.name for t in settings.risk_tiers], dtype=object)
        self.tier_floors = np.array([t.min_churn_probability for t in settings.risk_tiers])
        self._stage_names = np.array(list(config.stage_names) + [None], dtype=object)
        # Reasons go to the first target (by priority) a customer is eligible for.
        self._reason_order = sorted(models, key=lambda t: TARGETS[t].reason_priority)
        value_days = value_model.horizon_days_ if value_model is not None else settings.value_window_days
        self.value_bases = np.array([f"spent_last_{settings.value_window_days}d", f"expected_next_{value_days}d"], dtype=object)

    def horizons(self) -> dict[str, dict[str, Any]]:
        """Per served target, the days its prediction answers (``horizon_days``) and the days its model
        learnt (``label_days``); a probability target carried from a shorter window adds its map's κ."""
        out: dict[str, dict[str, Any]] = {}
        for name, model in self.models.items():
            horizon_map = model.horizon_map_
            days = TARGETS[name].horizon_days(self.config)
            out[name] = ({"horizon_days": days, "label_days": days} if horizon_map is None else
                         {"horizon_days": horizon_map.horizon_days, "label_days": horizon_map.label_days,
                          "kappa": horizon_map.kappa})
        if self.value_model is not None:
            out[VALUE.name] = {"horizon_days": self.value_model.horizon_days_, "label_days": self.value_model.label_days_}
        return out

    @classmethod
    def from_registry(cls, config: FunnelConfig | None = None, *, tracking_uri: str | None = None,
                      home: Any = None, alias: str = "champion") -> Scorer:
        """The ``alias`` version of every configured target's registered model.

        Raises :class:`~funnelcast.training.tracking.RegistryError` naming the store and the model when
        one is missing.
        """
        from funnelcast.training import tracking

        tracking.connect(tracking_uri, home, create=False)
        base = config or load_config()
        models, versions, names = {}, {}, {}
        for target in base.training.targets:
            name = f"{base.training.model_name_prefix}-{target}"
            if target == VALUE.name and tracking.alias_version(name, alias) is None:
                continue  # training skips value without purchase amounts: customer_value is then trailing spend
            versions[target], models[target] = tracking.load_model(name, alias)
            names[target] = name
        return cls(models, versions, config, names)

    # ---- inputs ------------------------------------------------------------------------------
    def encode_attributes(self, customers: pd.DataFrame | None, ids: np.ndarray, keep: Iterable[str] = ()) -> dict[str, Attributes]:
        """Every model's encoding of a validated customers table's attributes for ``ids`` (in that order)."""
        keep = tuple(keep)
        out = {}
        for model_input, targets in self._inputs:
            encoded = model_input.encode_customers(customers, ids, keep)
            out.update(dict.fromkeys(targets, encoded))
        return out

    def encode_customer(self, attributes: Mapping[str, Any]) -> tuple[dict[str, Attributes], list[str]]:
        """Every model's encoding of one customer's attributes from a request, and the keys no model uses."""
        out: dict[str, Attributes] = {}
        ignored: set[str] | None = None
        for model_input, targets in self._inputs:
            encoded, unused = model_input.encode_customer(attributes)
            out.update(dict.fromkeys(targets, encoded))
            ignored = set(unused) if ignored is None else ignored & set(unused)
        return out, sorted(ignored or ())

    def as_of_ns(self, value: Any) -> int:
        """A stated as-of time as int ns: None is now; naive values are in the config's
        ``source_timezone``, else UTC (:mod:`funnelcast.features.timestamps`)."""
        return now_ns() if value is None else stated_ns(value, self.config.source_timezone, "as_of")

    # ---- the one path --------------------------------------------------------------------------
    def score_arrays(self, arrays: EventArrays, t: int, attrs: dict[str, Attributes], *, reasons: bool = True,
                     threads: int = 1) -> Scored:
        """Score every customer of ``arrays`` at cutoff ``t`` (events strictly before it)."""
        behaviour = compute_features(arrays, t, self.spec, threads=threads)
        elig = eligibility(arrays, t, self.spec, behaviour)
        n = arrays.n_customers
        probs = {}
        contributions = {}
        explained = np.zeros(n, dtype=bool)
        for target in self._reason_order:
            model = self.models[target]
            X = model.input_.matrix(behaviour, attrs[target], t)
            eligible = TARGETS[target].eligible(elig)
            rows = np.flatnonzero(eligible)
            p = np.full(n, np.nan)
            # One customer (a request): LightGBM's single-row fast path, the same numbers with ~20 µs
            # less set-up per call (serving/rowpredict.py).
            one = self.row_predictors[target] if n == 1 else None
            linear = None
            if len(rows):
                scored = X[rows]
                # The logistic part's per-column log-odds: computed once, for the score and for the reasons.
                linear = model.linear_contributions(scored)
                tree = None
                if model.uses_booster:
                    tree = np.array([one.raw_score(X[0])]) if one else model.booster_raw(scored, num_threads=threads)
                p[rows] = model.probability(model.combine(tree, scored, linear), scored, at=t)
            probs[target] = p
            if reasons:
                why = np.flatnonzero(eligible & ~explained)
                explained |= eligible
                if len(why):
                    explained_X = X[why]
                    attribution = self.attributions[target]
                    tree_credit = None
                    if model.uses_booster:
                        tree_credit = (attribution.credit(one.leaves(X[0])[None]) if one
                                       else attribution.contributions(model.booster_, explained_X, threads))
                    mine = None if linear is None else linear[np.searchsorted(rows, why)]  # why: some of rows
                    contributions[target] = (why, explained_X, model.credits(tree_credit, explained_X, mine))
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
        value = trailing_spend(arrays, t, self.spec, self.config.serving.value_window_days)
        predicted = None
        if self.value_model is not None:
            predicted = VALUE.eligible(elig)
            rows = np.flatnonzero(predicted)
            if len(rows):
                X = self.value_model.input_.matrix(behaviour, attrs[VALUE.name], t)[rows]
                if n == 1:  # one customer: LightGBM's single-row fast path, as for the probabilities
                    raw = np.array([self._value_row.raw_score(X[0])])
                else:
                    raw = self.value_model.booster_raw(X, num_threads=threads)
                value[rows] = self.value_model.predict(X, raw=raw)
        return Scored(
            customer_ids=arrays.customer_ids, as_of=t, stage=elig.stage, status=status,
            probabilities={target: probs[target] for target in self.models},
            value=value, reasons_for=reasons_for, reasons=row_reasons, predicted_value=predicted,
        )

    def score_payload(self, events: list[Mapping[str, Any]], customer: Mapping[str, Any] | None,
                      customer_id: str | None, as_of: Any, population: Population) -> dict[str, Any]:
        """One customer scored from the events of a request (``/score_events``): the JSON-ready result,
        with what was dropped, altered or ignored under ``input``. Raises a
        :class:`~funnelcast.features.errors.FunnelcastError` naming what is wrong with the request."""
        limit = self.config.serving.max_events_per_request
        if len(events) > limit:
            raise ScoringError(f"events holds {len(events):,} events; at most {limit:,} per request")
        t = self.as_of_ns(as_of)
        arrays, summary = self.encoder.records(events, customer_id)
        attrs, ignored = self.encode_customer(customer or {})
        result = self.records(self.score_arrays(arrays, t, attrs), population)[0]
        result["input"] = {
            "events": len(events), "duplicates_dropped": summary.count(DUPLICATES),
            "event_types_mapped_to_other": summary.count(mapped_to_other("event_type")),
            "channels_mapped_to_other": summary.count(mapped_to_other("channel")),
            "events_at_or_after_as_of": int(np.count_nonzero(arrays.ts >= t)), "ignored_attributes": ignored,
        }
        return result

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
        """The risk tier of each churn probability (None where there is none), from ``serving.risk_tiers``."""
        tiers = np.full(len(p_churn), None, dtype=object)
        ok = ~np.isnan(p_churn)
        # Floors are descending; the first floor reached names the tier.
        first = np.argmax(p_churn[ok, None] >= self.tier_floors[None, :], axis=1)
        tiers[ok] = self.tier_names[first]
        return tiers

    def value_basis(self, s: Scored) -> np.ndarray:
        """Per row, what ``customer_value`` is: ``expected_next_<n>d`` (the value model's prediction) or
        ``spent_last_<n>d`` (trailing spend: no value model, or a customer who has not bought)."""
        predicted = s.predicted_value if s.predicted_value is not None else np.zeros(len(s.value), dtype=bool)
        return self.value_bases[predicted.astype(np.intp)]

    def stage_names(self, stage: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(stage, next stage) names of float stage indices; None before any stage or after the last."""
        names = self._stage_names
        k = len(names) - 1
        idx = np.where(np.isnan(stage), k, stage).astype(np.int64)
        nxt = np.where(idx + 1 < k, idx + 1, k)
        return names[idx], names[np.where(idx == k, k, nxt)]

    def frame(self, s: Scored, population: Population | None = None) -> pd.DataFrame:
        """A table a CRM imports: one row per customer, a probability column per target, reasons as
        ``reason_1..k`` text columns."""
        population = population or Population.of(s.p_risk, s.as_of)
        stage, nxt = self.stage_names(s.stage)
        p_risk = s.p_risk
        out = pd.DataFrame({
            "customer_id": pd.array(s.customer_ids, dtype="string"),
            "as_of": pd.Timestamp(s.as_of, tz="UTC"),
            "stage": pd.array(stage, dtype="string"),
            "status": pd.array(s.status, dtype="string"),
            "next_stage": pd.array(nxt, dtype="string"),
            **{target.probability: s.probability(name) for name, target in PROBABILITY_TARGETS.items()},
            "percentile": population.percentile(p_risk),
            "risk_tier": pd.array(self.risk_tier(p_risk), dtype="string"),
            "customer_value": s.value,
            "value_basis": pd.array(self.value_basis(s), dtype="string"),
            "value_at_risk": np.where(np.isnan(p_risk), np.nan, p_risk * s.value),
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
        p_risk = s.p_risk
        pct = population.percentile(p_risk)
        tiers = self.risk_tier(p_risk)
        as_of = iso_utc(s.as_of)
        versions = dict(self.versions)
        fields = [(target.probability, s.probability(name).tolist()) for name, target in PROBABILITY_TARGETS.items()]
        basis = self.value_basis(s)
        out = []
        for i in range(len(s.customer_ids)):
            risk = float(p_risk[i])
            row = {"customer_id": str(s.customer_ids[i]), "as_of": as_of, "stage": stage[i], "status": s.status[i],
                   "next_stage": nxt[i]}
            for name, p in fields:
                row[name] = None if p[i] != p[i] else round(p[i], 6)
            row.update({
                "percentile": None if np.isnan(pct[i]) else round(float(pct[i]), 2),
                "risk_tier": tiers[i],
                "customer_value": round(float(s.value[i]), 2),
                "value_basis": basis[i],
                "value_at_risk": None if np.isnan(risk) else round(risk * float(s.value[i]), 2),
                "reasons": s.reasons[i], "reasons_for": s.reasons_for[i], "model_versions": versions,
            })
            out.append(row)
        return out


@functools.lru_cache(maxsize=256)
def iso_utc(ns: int) -> str:
    """ISO 8601 of int ns since epoch, in UTC (cached: a service answers with the same as-of often)."""
    return pd.Timestamp(ns, tz="UTC").isoformat()


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
    return Scored.concat(parts, raw)


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
        self.events_after_as_of = int(np.count_nonzero(arrays.ts >= as_of))
        """Events of the source at or after ``as_of``: out of view of every score."""
        # A dict, not a pandas Index: a request's few ids are looked up in microseconds (an Index of
        # strings converts its Arrow array on every get_indexer call: ~1 ms per request).
        self.code = {cid: i for i, cid in enumerate(arrays.customer_ids.tolist())}
        self.attributes = scorer.encode_attributes(customers, arrays.customer_ids, keep=("segment",))
        self.scored = score_population(scorer, arrays, customers, as_of, reasons=reasons, threads=threads,
                                       attributes=self.attributes, progress=progress)
        self.population = Population.of(self.scored.p_risk, as_of)
        self.table = scorer.frame(self.scored, self.population)

    def score_ids(self, ids: list[str], as_of: int | None = None) -> tuple[Scored, list[str]]:
        """Scores with reasons for ``ids`` (first occurrence order, repeats once) and the ids not in the source."""
        unique = list(dict.fromkeys(ids))
        found = [self.code.get(i, -1) for i in unique]
        unknown = [i for i, c in zip(unique, found, strict=True) if c < 0]
        codes = np.array([c for c in found if c >= 0], dtype=np.intp)
        block = self.arrays.subset(codes)
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

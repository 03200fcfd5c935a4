"""The HTTP service CRM systems call: BentoML, and the only module that knows BentoML exists.

Start it with ``funnelcast serve`` (which checks the registry and the API key first, then runs
``bentoml serve serving.service:Funnelcast``). Settings come from the environment, because BentoML
builds the service in its own worker process:

===============================  ==========================================================
``FUNNELCAST_EVENTS``            event source (Parquet/CSV path or SQL URL), read at start-up
``FUNNELCAST_CUSTOMERS``         customers table (optional; needed for segment filters)
``FUNNELCAST_CONFIG``            funnel config YAML (default: the config the models carry)
``FUNNELCAST_AS_OF``             the population's as-of time (default: now)
``MLFLOW_TRACKING_URI``          the registry (or ``FUNNELCAST_MLFLOW_DIR`` for an embedded store)
``FUNNELCAST_API_KEY``           the bearer key every API request must carry
``FUNNELCAST_INSECURE=1``        serve without a key (local use only; ``funnelcast serve --insecure``)
===============================  ==========================================================

Latency choices (``../shared/PERF-NOTES.md``): ``async`` APIs, access log and metrics off, tracing
skipped for the API routes, one LightGBM thread per request, and ``gc.freeze()`` after start-up so
the collector does not walk the loaded models on every full collection.
"""

from __future__ import annotations

import gc
import hmac
import os
from typing import Annotated, Any

import bentoml
from bentoml.exceptions import InvalidArgument
from pydantic import BaseModel, ConfigDict, Field

from serving.scoring import CustomerBase, Scored, Scorer, ScoringError, source_arrays

MAX_IDS = 1000
MAX_EVENTS = 10_000
MAX_TOP = 10_000
API_ROUTES = ("score", "score_events", "outreach", "model_info")
OPEN_PATHS = frozenset({"/", "/healthz", "/livez", "/readyz", "/docs.json", "/metrics"})


class EventIn(BaseModel):
    """One event of the event contract (``customer_id`` optional: the request names the customer)."""

    model_config = ConfigDict(extra="forbid")
    timestamp: str = Field(min_length=1, max_length=64, description="ISO 8601, with a UTC offset unless the funnel sets source_timezone.")
    event_type: str = Field(min_length=1, max_length=64)
    channel: str | None = Field(None, max_length=64)
    amount: float | None = Field(None, ge=0, le=1e12, allow_inf_nan=False)
    properties: dict[str, Any] | str | None = None
    customer_id: str | None = Field(None, max_length=256)


class BearerAuth:
    """ASGI middleware: every path but health, readiness and the OpenAPI document needs
    ``Authorization: Bearer <FUNNELCAST_API_KEY>``; anything else gets 401."""

    def __init__(self, app: Any) -> None:
        self.app = app
        key = os.environ.get("FUNNELCAST_API_KEY", "")
        self.key = f"Bearer {key}".encode() if key else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.key is None or scope["path"] in OPEN_PATHS or scope["path"].startswith("/static_content"):
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        if hmac.compare_digest(given, self.key):
            await self.app(scope, receive, send)
            return
        body = b'{"error": "missing or invalid API key: send the header Authorization: Bearer <key>"}'
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _setting(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


@bentoml.service(
    name="funnelcast",
    workers=1,
    traffic={"timeout": 60},
    metrics={"enabled": False},
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": ",".join(API_ROUTES)},
)
class Funnelcast:
    """Next-stage conversion and churn scores, with reasons, for CRM systems."""

    def __init__(self) -> None:
        from features.events import read_customers, read_events
        from features.funnel import load_config

        if _setting("FUNNELCAST_API_KEY") is None and _setting("FUNNELCAST_INSECURE") != "1":
            raise RuntimeError("FUNNELCAST_API_KEY is not set; set it, or start with --insecure for local use only")
        events = _setting("FUNNELCAST_EVENTS")
        if events is None:
            raise RuntimeError("FUNNELCAST_EVENTS names no event source")
        config_path = _setting("FUNNELCAST_CONFIG")
        self.scorer = Scorer.from_registry(load_config(config_path) if config_path else None,
                                           home=_setting("FUNNELCAST_MLFLOW_DIR"))
        cfg = self.scorer.config
        ev, summary = read_events(events, cfg)
        customers = read_customers(_setting("FUNNELCAST_CUSTOMERS"), cfg)[0] if _setting("FUNNELCAST_CUSTOMERS") else None
        arrays = source_arrays(ev, customers, cfg)
        del ev
        self.as_of = self.scorer.as_of_ns(_setting("FUNNELCAST_AS_OF"))
        self.base = CustomerBase(self.scorer, arrays, customers, self.as_of)
        self.source = {"events": summary.as_dict(), "customers": int(arrays.n_customers)}
        self.info = self._model_info()
        # The loaded models and arrays are long-lived: keep the collector from walking them (tail latency).
        gc.collect()
        gc.freeze()

    def _model_info(self) -> dict[str, Any]:
        from training import tracking

        models = {}
        for target, version in self.scorer.versions.items():
            info = tracking.version_info(self.scorer.names[target], version)
            models[target] = {k: v for k, v in info.items() if k != "input_hash"}
        return {"models": models, "tracking_uri": tracking.tracking_uri(), "funnel": self.scorer.config.name,
                "config_data_hash": self.scorer.config.data_hash(), "population_as_of": _iso(self.as_of),
                "population": {"customers": self.source["customers"], "scored_for_churn": len(self.base.population.sorted_churn)},
                "event_source": self.source["events"]}

    def _as_of(self, value: str | None) -> int:
        try:
            return self.as_of if value is None else self.scorer.as_of_ns(value)
        except ScoringError as exc:
            raise InvalidArgument(str(exc)) from None

    def _records(self, scored: Scored) -> list[dict[str, Any]]:
        return self.scorer.records(scored, self.base.population)

    @bentoml.api(route="/score")
    async def score(
        self,
        customer_ids: Annotated[list[Annotated[str, Field(min_length=1, max_length=256)]],
                                Field(min_length=1, max_length=MAX_IDS, description="Customers to score.")],
        as_of: Annotated[str | None, Field(max_length=64, description="ISO 8601 (default: the population's as-of time).")] = None,
    ) -> dict[str, Any]:
        """Scores with reasons for customers of the event source; ids it does not know come back in ``unknown``."""
        limit = self.scorer.config.serving.max_customers_per_request
        if len(customer_ids) > limit:
            raise InvalidArgument(f"customer_ids holds {len(customer_ids):,} ids; at most {limit:,} per request")
        scored, unknown = self.base.score_ids(customer_ids, self._as_of(as_of))
        return {"results": self._records(scored), "unknown": unknown}

    @bentoml.api(route="/score_events")
    async def score_events(
        self,
        events: Annotated[list[EventIn], Field(max_length=MAX_EVENTS, description="The customer's events.")],
        customer: Annotated[dict[str, Any] | None, Field(description="Static attributes (segment, country, signup_date, ...).")] = None,
        customer_id: Annotated[str | None, Field(max_length=256)] = None,
        as_of: Annotated[str | None, Field(max_length=64, description="ISO 8601 (default: now).")] = None,
    ) -> dict[str, Any]:
        """Score one customer from the events in the request; nothing is read from the event source."""
        scorer = self.scorer
        limit = scorer.config.serving.max_events_per_request
        if len(events) > limit:
            raise InvalidArgument(f"events holds {len(events):,} events; at most {limit:,} per request")
        ids = {e.customer_id for e in events if e.customer_id is not None} | ({customer_id} if customer_id else set())
        if len(ids) > 1:
            raise InvalidArgument(f"the events name more than one customer ({sorted(ids)[:5]}); send one customer per request")
        try:
            t = scorer.as_of_ns(as_of)
            arrays, counts = scorer.payload_arrays(ids.pop() if ids else "", [e.__dict__ for e in events], t)
            attrs, ignored = {}, []
            for target, plan in scorer.plans.items():
                attrs[target], ignored = plan.encode_dict(customer or {}, scorer.tz)
        except ScoringError as exc:
            raise InvalidArgument(str(exc)) from None
        result = self._records(scorer.score_arrays(arrays, t, attrs))[0]
        result["input"] = {"events": len(events), **counts, "ignored_attributes": ignored}
        return result

    @bentoml.api(route="/outreach")
    async def outreach(
        self,
        top: Annotated[int, Field(ge=1, le=MAX_TOP, description="How many customers.")] = 50,
        stage: Annotated[str | None, Field(max_length=64)] = None,
        segment: Annotated[str | None, Field(max_length=256)] = None,
    ) -> dict[str, Any]:
        """The customers to contact first: highest churn probability × customer value, with reasons."""
        if top > self.scorer.config.serving.max_outreach:
            raise InvalidArgument(f"top {top:,} is over serving.max_outreach ({self.scorer.config.serving.max_outreach:,})")
        try:
            ranked, explained = self.base.outreach(top, stage, segment)
        except ScoringError as exc:
            raise InvalidArgument(str(exc)) from None
        rows = self._records(explained)
        segments = ranked["segment"].tolist() if "segment" in ranked.columns else [None] * len(rows)
        for rank, (row, seg) in enumerate(zip(rows, segments, strict=True), start=1):
            row["rank"] = rank
            row["segment"] = None if seg is None or seg != seg else str(seg)
        return {"as_of": _iso(self.as_of), "results": rows}

    @bentoml.api(route="/model_info")
    async def model_info(self) -> dict[str, Any]:
        """Model versions, training dates and test metrics, and the population the service scored."""
        return self.info


Funnelcast.add_asgi_middleware(BearerAuth)


def _iso(ns: int) -> str:
    import pandas as pd

    return pd.Timestamp(ns, tz="UTC").isoformat()

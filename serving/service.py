"""The HTTP service CRM systems call: BentoML, and the only module that knows BentoML exists.

Start it with ``funnelcast serve`` (which checks the registry and the API key first, then runs
``bentoml serve funnelcast.serving.service:Funnelcast``). Settings come from the environment, because BentoML
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

Latency choices (measured by ``bench/bench_serving.py``; the README's Performance section): ``async``
APIs, access log and metrics off, tracing skipped for the API routes, uvicorn on httptools + uvloop
(installed with funnelcast; uvicorn picks them up), answers encoded by pydantic-core and returned as
finished responses, one LightGBM thread per request (its single-row C API for one customer), and
``gc.freeze()`` after start-up so the collector does not walk the loaded models on every full
collection. Request bodies are pydantic models with ``extra="forbid"``, passed as ``input_spec``.
"""

from __future__ import annotations

import gc
import hmac
import logging
import os
import time
from collections import Counter
from typing import Annotated, Any

import bentoml
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import to_json
from starlette.responses import Response

from funnelcast.features.errors import FunnelcastError
from funnelcast.features.events import redact_url
from funnelcast.serving.scoring import iso_utc

MAX_IDS = 1000
MAX_EVENTS = 10_000
MAX_TOP = 10_000
MAX_EVENT_BYTES = 1_600
"""The most JSON one event of a request can need: its fields at their length limits, a few properties."""
MAX_BODY_BYTES = MAX_EVENTS * MAX_EVENT_BYTES + 64 * 1024
"""Request bodies beyond this (16 MB) are refused with 413 before they are read into memory or parsed:
more than the largest request the limits allow (10,000 events; 1,000 ids need ~260 KB)."""
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


# Request bodies: a field the API does not know is a 400 naming it (a typo such as "customer_id" for
# "customer_ids" must not be ignored). BentoML builds these from the method's signature but without
# extra="forbid", so they are spelled out and passed as ``input_spec``; the methods take the same names.
class ScoreRequest(BaseModel):
    """The body of ``POST /score``."""
    model_config = ConfigDict(extra="forbid")
    customer_ids: Annotated[list[Annotated[str, Field(min_length=1, max_length=256)]],
                            Field(min_length=1, max_length=MAX_IDS, description="Customers to score.")]
    as_of: Annotated[str | None, Field(max_length=64, description="ISO 8601 (default: the population's as-of time).")] = None


class ScoreEventsRequest(BaseModel):
    """The body of ``POST /score_events``."""
    model_config = ConfigDict(extra="forbid")
    events: Annotated[list[EventIn], Field(max_length=MAX_EVENTS, description="The customer's events.")]
    customer: Annotated[dict[str, Any] | None, Field(description="Static attributes (segment, country, signup_date, ...).")] = None
    customer_id: Annotated[str | None, Field(max_length=256)] = None
    as_of: Annotated[str | None, Field(max_length=64, description="ISO 8601 (default: now).")] = None


class OutreachRequest(BaseModel):
    """The body of ``POST /outreach``."""
    model_config = ConfigDict(extra="forbid")
    top: Annotated[int, Field(ge=1, le=MAX_TOP, description="How many customers.")] = 50
    stage: Annotated[str | None, Field(max_length=64)] = None
    segment: Annotated[str | None, Field(max_length=256)] = None


class ModelInfoRequest(BaseModel):
    """The body of ``POST /model_info`` (empty)."""
    model_config = ConfigDict(extra="forbid")


def _json(body: Any, status: int = 200) -> Response:
    """A JSON response, encoded by pydantic-core (Rust) and handed to BentoML as a finished Response:
    BentoML's own output path rebuilds the output model's JSON schema on every response (~0.3 ms).
    Strict JSON: a NaN or infinity would be null, a numpy scalar its Python value."""
    return Response(to_json(body, inf_nan_mode="null", fallback=_plain), status_code=status, media_type="application/json")


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _bad_request(message: str) -> Response:
    """Our 400s: ``{"error": message}`` (what BentoML sends for a pydantic validation error too, with ``detail``)."""
    return _json({"error": message}, 400)


def _api_key() -> str:
    """The API key every request must carry: ``$FUNNELCAST_API_KEY``, stripped (as ``funnelcast serve`` checks it)."""
    return os.environ.get("FUNNELCAST_API_KEY", "").strip()


class RequestGate:
    """ASGI middleware in front of every route: the API key, then the body size.

    * Every path but health, readiness and the OpenAPI document needs ``Authorization: Bearer <key>``
      (the scheme in any case, RFC 7235; the key as ``$FUNNELCAST_API_KEY`` holds it, stripped);
      anything else gets 401.
    * A body larger than :data:`MAX_BODY_BYTES` gets 413 before it is read: by its ``Content-Length``,
      or, sent in chunks without one, once the chunks pass the limit (those bodies are buffered here).
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        key = _api_key()
        self.key = key.encode() if key else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if self.key is not None and path not in OPEN_PATHS and not path.startswith("/static_content"):
            given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            scheme, _, token = given.strip().partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
                await _answer(send, 401, b'{"error": "missing or invalid API key: send the header Authorization: Bearer <key>"}',
                              [(b"www-authenticate", b"Bearer")])
                return
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None:
            if not length.isdigit() or int(length) > MAX_BODY_BYTES:
                await _answer(send, 413, _too_large())
                return
            await self.app(scope, receive, send)
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        chunks, size = [], 0  # a chunked body: read it here, up to the limit, then hand it on
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > MAX_BODY_BYTES:
                await _answer(send, 413, _too_large())
                return
            chunks.append(message)
            if not message.get("more_body", False):
                break
        replay = iter(chunks)

        async def replayed() -> dict:
            return next(replay, None) or await receive()

        await self.app(scope, replayed, send)


def _too_large() -> bytes:
    return to_json({"error": f"the request body is larger than {MAX_BODY_BYTES:,} bytes, more than any request "
                             f"within the limits needs (at most {MAX_EVENTS:,} events or {MAX_IDS:,} ids)"})


async def _answer(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = ()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), *headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


BENTOML_REQUEST_LOGGER = "bentoml._internal.server.http_app"
"""Where BentoML logs a request it refused, at ERROR with a traceback that quotes the request's values."""


class RejectedRequestLog(logging.Filter):
    """Rejected requests are logged briefly, without a single value from their bodies.

    BentoML logs every request its input model refuses at ERROR with a traceback, and pydantic's message
    in it quotes the offending values (an e-mail address as ``customer_id``, a card number in
    ``properties``): personal data in the server log, ~1.9 KB per bad request. This filter, on BentoML's
    request logger, turns those records into one WARNING line per ``interval`` seconds counting the
    rejections by reason (pydantic's error types, or BentoML's error class); the client still gets its
    400 naming the field. Any other record (a bug: a 5xx) passes unchanged.
    """

    def __init__(self, interval: float = 10.0) -> None:
        super().__init__()
        self.interval = interval
        self.counts: Counter[str] = Counter()
        self.last = float("-inf")

    def filter(self, record: logging.LogRecord) -> bool:
        reasons = _rejection_reasons(record.exc_info[1] if record.exc_info else None)
        if reasons is None:
            return True
        self.counts.update(reasons)
        now = time.monotonic()
        if now - self.last < self.interval:
            return False
        self.last = now
        summary = ", ".join(f"{reason} {n}" for reason, n in sorted(self.counts.items()))
        self.counts.clear()
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg, record.args = "rejected requests since the last such line (no request values logged): %s", (summary,)
        record.exc_info = record.exc_text = record.stack_info = None
        return True


def _rejection_reasons(exc: BaseException | None) -> list[str] | None:
    """The reasons a request was refused (one per problem), or None where ``exc`` is not a refusal."""
    from bentoml.exceptions import BentoMLException

    if isinstance(exc, ValidationError):
        return [e["type"] for e in exc.errors(include_url=False, include_context=False, include_input=False)]
    if isinstance(exc, BentoMLException) and 400 <= int(exc.error_code) < 500:
        return [type(exc).__name__]
    return None


def _setting(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


@bentoml.service(
    name="funnelcast",
    workers=1,
    # BentoML keeps a 60 s timer (and its future) alive per request for the whole timeout, never cancelled:
    # at ~1,200 req/s that is ~75k live timers, and the worker's full garbage collections walked them for
    # 100-200 ms (max latency at c=8: 124 ms). Answers take milliseconds (the largest, /outreach of 10,000
    # with reasons, well under a second): a 10 s timeout still answers a stuck request with a 504 and keeps
    # collections short (max 14 ms; bench/bench_serving.py).
    traffic={"timeout": 10},
    metrics={"enabled": False},
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": ",".join(API_ROUTES)},
)
class Funnelcast:
    """Next-stage conversion and churn scores, with reasons, for CRM systems."""

    def __init__(self) -> None:
        from funnelcast.project import Project

        logging.getLogger(BENTOML_REQUEST_LOGGER).addFilter(RejectedRequestLog())
        if not _api_key() and _setting("FUNNELCAST_INSECURE") != "1":
            raise RuntimeError("FUNNELCAST_API_KEY is not set; set it, or start with --insecure for local use only")
        events = _setting("FUNNELCAST_EVENTS")
        if events is None:
            raise RuntimeError("FUNNELCAST_EVENTS names no event source")
        if _setting("FUNNELCAST_CWD"):  # relative sources are relative to where `funnelcast serve` ran
            os.chdir(_setting("FUNNELCAST_CWD"))
        # One LightGBM/feature thread per request: the event loop's requests share the cores.
        project = Project(_setting("FUNNELCAST_CONFIG"), mlflow_dir=_setting("FUNNELCAST_MLFLOW_DIR"), threads=1)
        self.problem: str | None = None
        try:
            self.scorer = project.scorer()
            data = project.load(events, _setting("FUNNELCAST_CUSTOMERS"), config=self.scorer.config)
            expected = _setting("FUNNELCAST_SOURCE_SHA256")
            found = None if expected is None else data.fingerprint()  # one hash of every row: seconds at scale
            if found is not None and found != expected:
                raise FunnelcastError(
                    "the event or customers source changed since `funnelcast serve` read it at start-up (SHA-256 of "
                    f"the validated rows {found[:12]}, at start-up {expected[:12]}); this worker will not "
                    "serve a different population: restart `funnelcast serve` to load the new one")
        except FunnelcastError as exc:
            # A worker restarted by BentoML that cannot serve the start-up population stays up, says why and
            # fails readiness (503), instead of raising into a restart loop that also takes /livez down.
            self.problem = f"not ready: {exc}"
            logging.getLogger("funnelcast.serving").error("%s", self.problem)
            return
        self.base = project.customer_base(data, as_of=_setting("FUNNELCAST_AS_OF"), scorer=self.scorer)
        self.as_of = self.base.as_of
        self.source = {"events": data.summary.as_dict(), "customers": int(self.base.arrays.n_customers)}
        del data  # the validated frames: the service keeps only the encoded arrays
        self.info = self._model_info()
        # The loaded models and arrays are long-lived: keep the collector from walking them (tail latency).
        gc.collect()
        gc.freeze()

    def __is_ready__(self) -> bool:
        """BentoML's readiness hook: ready only with the population `funnelcast serve` validated at start-up."""
        return self.problem is None

    def _model_info(self) -> dict[str, Any]:
        from funnelcast.training import tracking

        models = {}
        for target, version in self.scorer.versions.items():
            info = tracking.version_info(self.scorer.names[target], version)
            models[target] = {k: v for k, v in info.items() if k != "input_hash"}
        return {"models": models, "tracking_uri": redact_url(tracking.tracking_uri()), "funnel": self.scorer.config.name,
                "config_data_hash": self.scorer.config.data_hash(), "horizons": self.scorer.horizons(),
                "population_as_of": iso_utc(self.as_of),
                "population": {"customers": self.source["customers"], "scored_for_churn": len(self.base.population.sorted_risk)},
                "event_source": self.source["events"]}

    @bentoml.api(route="/score", input_spec=ScoreRequest)
    async def score(self, customer_ids: list[str], as_of: str | None = None) -> dict[str, Any]:
        """Scores with reasons for customers of the event source; ids it does not know come back in ``unknown``."""
        if self.problem is not None:
            return _json({"error": self.problem}, 503)
        limit = self.scorer.config.serving.max_customers_per_request
        if len(customer_ids) > limit:
            return _bad_request(f"customer_ids holds {len(customer_ids):,} ids; at most {limit:,} per request")
        try:
            t = self.as_of if as_of is None else self.scorer.as_of_ns(as_of)
        except FunnelcastError as exc:
            return _bad_request(str(exc))
        scored, unknown = self.base.score_ids(customer_ids, t)
        return _json({"results": self.scorer.records(scored, self.base.population), "unknown": unknown})

    @bentoml.api(route="/score_events", input_spec=ScoreEventsRequest)
    async def score_events(self, events: list[EventIn], customer: dict[str, Any] | None = None,
                           customer_id: str | None = None, as_of: str | None = None) -> dict[str, Any]:
        """Score one customer from the events in the request; nothing is read from the event source."""
        if self.problem is not None:
            return _json({"error": self.problem}, 503)
        try:
            result = self.scorer.score_payload([e.__dict__ for e in events], customer, customer_id, as_of,
                                               self.base.population)
        except FunnelcastError as exc:
            return _bad_request(str(exc))
        return _json(result)

    @bentoml.api(route="/outreach", input_spec=OutreachRequest)
    async def outreach(self, top: int = 50, stage: str | None = None, segment: str | None = None) -> dict[str, Any]:
        """The customers to contact first: highest churn probability × customer value, with reasons."""
        if self.problem is not None:
            return _json({"error": self.problem}, 503)
        if top > self.scorer.config.serving.max_outreach:
            return _bad_request(f"top {top:,} is over serving.max_outreach ({self.scorer.config.serving.max_outreach:,})")
        try:
            ranked, explained = self.base.outreach(top, stage, segment)
        except FunnelcastError as exc:
            return _bad_request(str(exc))
        rows = self.scorer.records(explained, self.base.population)
        segments = ranked["segment"].tolist() if "segment" in ranked.columns else [None] * len(rows)
        for rank, (row, seg) in enumerate(zip(rows, segments, strict=True), start=1):
            row["rank"] = rank
            row["segment"] = None if seg is None or seg != seg else str(seg)
        return _json({"as_of": iso_utc(self.as_of), "results": rows})

    @bentoml.api(route="/model_info", input_spec=ModelInfoRequest)
    async def model_info(self) -> dict[str, Any]:
        """Model versions, training dates and test metrics, and the population the service scored."""
        if self.problem is not None:
            return _json({"error": self.problem}, 503)
        return _json(self.info)


Funnelcast.add_asgi_middleware(RequestGate)

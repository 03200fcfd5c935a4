"""Write a table (scores, an outreach list) where a CRM can import it: a file, a SQL table or a webhook.

The destination is chosen from ``out``:

* a path ending ``.parquet``/``.pq`` or ``.csv`` (``file://`` allowed): the file is written next to
  its final name and moved into place, so an importer never sees half a file. CSV and SQL hold
  scalars only, so list and dict cells (``reasons``) are written there as JSON text.
* a SQL URL with the table in the fragment, as for sources (``sqlite:///crm.db#scores``,
  ``postgresql+psycopg://user@host/db#table=scores``): the table is *replaced* inside one
  transaction, so a failed write leaves the previous table as it was.
* an ``http://``/``https://`` URL: a webhook (CRM write-back). Rows are POSTed as JSON in batches,
  ``{"what": ..., "batch": i, "batches": n, "rows": [...]}`` with ``i`` counted from 1; NaN and NA
  become ``null``, tz-aware timestamps ISO 8601 UTC instants ending in ``Z`` (millisecond
  precision; naive timestamps stay naive), numpy scalars plain numbers, lists JSON lists.

Webhook delivery is idempotent and resumable:

* **Idempotency.** Every batch carries ``Idempotency-Key``, a sha256 of ``what`` and the batch's
  canonical JSON rows. The key depends on content only, so a resent batch (after a timeout whose
  request did reach the receiver, or a rerun after local state was lost) carries the same key and
  the receiver can drop the duplicate.
* **Retries.** HTTP 5xx, 408, 429, timeouts and connection errors are retried with exponential
  back-off (``backoff_seconds``, doubling, at most ``max_attempts`` attempts per batch). Any other
  non-2xx answer stops the run at once.
* **Resume.** The key of every acknowledged (2xx) batch is appended, and fsync'd, to a state file
  in ``state_dir`` (default ``.funnelcast/webhook-state``) named after the destination and
  ``what``. A run skips batches whose key is already there, so re-running a failed command sends
  only what is missing. The file stays after a successful run: rerunning with identical rows sends
  nothing; delete the file to force a full resend.

Credentials never appear in a message: URLs are shown redacted and header values are never echoed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from urllib.parse import quote, unquote
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import httpx
import numpy as np
import pandas as pd
import tenacity

from funnelcast.features.errors import FunnelcastError
from funnelcast.features.events import EventDataError, SqlSource, parse_source, redact_url

DEFAULT_STATE_DIR = Path(".funnelcast") / "webhook-state"
WEBHOOK_TOKEN_ENV = "FUNNELCAST_WEBHOOK_TOKEN"
"""A bearer token for webhooks, sent as ``Authorization: Bearer <token>`` unless ``headers`` carry one."""
FILE_KINDS = {".parquet": "Parquet", ".pq": "Parquet", ".csv": "CSV"}
RETRY_STATUSES = frozenset({408, 429})  # plus every 5xx
_MAX_WAIT_SECONDS = 60.0
# Network trouble worth another attempt; anything else from httpx (a malformed URL, an unsupported
# scheme) would fail the same way again.
_TRANSIENT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


class SinkError(FunnelcastError, ValueError):
    """A destination that cannot take the rows; the message names it (credentials redacted) and why."""

    kind = "destination"


class DeliveryError(SinkError):
    """A webhook receiver that did not take the rows (refused, failing, unreachable): a delivery failure."""

    kind = "delivery"

    @property
    def headline(self) -> str:
        return "delivery failed"


@dataclass(frozen=True)
class SinkReport:
    """What a write did. For files and SQL a write is one batch and never retried."""

    destination: str  # redacted, human readable
    rows: int  # rows in the table
    batches_sent: int  # webhook: batches acknowledged in this run (files/SQL: 1)
    batches_skipped: int  # webhook: batches a previous run already delivered (resume)
    retries: int  # webhook: retried attempts in this run

    def line(self) -> str:
        """One sentence for the CLI."""
        if not self.destination.lower().startswith(("http://", "https://")):
            return f"Wrote {self.rows:,} rows to {self.destination}."
        batches = self.batches_sent + self.batches_skipped
        return (
            f"Delivered {self.rows:,} rows to {self.destination} in {batches:,} batches: {self.batches_sent:,} sent now, "
            f"{self.batches_skipped:,} already delivered by an earlier run, {self.retries:,} retries."
        )


def write_table(
    frame: pd.DataFrame,
    out: str | Path,
    *,
    what: str = "scores",
    batch_rows: int = 500,
    state_dir: str | Path | None = None,
    timeout: float = 10.0,
    max_attempts: int = 6,
    backoff_seconds: float = 0.5,
    headers: dict[str, str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SinkReport:
    """Write ``frame`` to a file, a SQL table or a webhook, chosen from ``out`` (see the module docstring).

    ``what`` names the table in webhook bodies and keys; ``batch_rows``, ``state_dir``, ``timeout``
    (seconds per request), ``max_attempts``, ``backoff_seconds`` (first wait) and ``headers`` (e.g.
    ``Authorization``; by default a bearer token from ``$FUNNELCAST_WEBHOOK_TOKEN`` where it is set)
    apply to webhooks only. ``progress(done_rows, total_rows)`` is called after
    each batch. Raises :class:`SinkError` when the destination cannot take the rows.
    """
    spec = str(out)
    if spec.lower().startswith(("http://", "https://")):
        if batch_rows < 1 or max_attempts < 1:
            raise SinkError(f"batch_rows and max_attempts must be at least 1, got {batch_rows} and {max_attempts}")
        headers = dict(headers or {})
        token = os.environ.get(WEBHOOK_TOKEN_ENV, "").strip()
        given = any(k.lower() == "authorization" for k in headers)
        if re.match(r"^https?://[^/@]+@", spec, flags=re.IGNORECASE) and (token or given):
            raise SinkError(
                f"{_display(spec)}: the URL carries credentials and "
                f"{'an Authorization header' if given else '$' + WEBHOOK_TOKEN_ENV} is set too; say which to send: "
                "drop the credentials from the URL, or unset the token")
        if token and not given:
            headers["Authorization"] = f"Bearer {token}"
        return _write_webhook(
            frame, spec, what=what, batch_rows=batch_rows, state_dir=Path(state_dir or DEFAULT_STATE_DIR),
            timeout=timeout, max_attempts=max_attempts, backoff_seconds=backoff_seconds, headers=headers,
            progress=progress,
        )
    try:
        target = parse_source(spec)
    except EventDataError:  # the only complaint parse_source has: a SQL URL without a fragment
        raise SinkError(f"{_display(spec)}: a SQL destination needs a table; append '#TABLE' or '#table=TABLE'") from None
    if isinstance(target, SqlSource):
        destination = _write_sql(frame, target)
    else:
        destination = _write_file(frame, target)
    if progress is not None:
        progress(len(frame), len(frame))
    return SinkReport(destination, rows=len(frame), batches_sent=1, batches_skipped=0, retries=0)


# ---- files and SQL -----------------------------------------------------------------------------

def _write_file(frame: pd.DataFrame, path: Path) -> str:
    kind = FILE_KINDS.get(path.suffix.lower())
    if kind is None:
        raise SinkError(
            f"{path}: unknown destination type {path.suffix or '(no suffix)'!r}; write to .parquet, .pq, .csv, "
            "a SQL URL ('sqlite:///crm.db#scores') or an http(s):// webhook"
        )
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "Parquet":
            frame.to_parquet(partial, index=False)
        else:
            _nested_as_json(frame).to_csv(partial, index=False)
        os.replace(partial, path)
    except (OSError, ValueError, TypeError) as exc:
        partial.unlink(missing_ok=True)
        raise SinkError(f"{path}: could not write the {kind} file: {exc}") from None
    return f"{path} ({kind})"


SQL_MODES = ("keep", "replace")


def _write_sql(frame: pd.DataFrame, target: SqlSource) -> str:
    """Replace a table's rows in one transaction.

    Where the table exists, its rows are deleted and the new ones inserted (``mode=keep``, the
    default): the table itself, its indexes, grants and the views that depend on it stay. Its columns
    must be the rows' columns; ``#table=T&mode=replace`` drops and recreates it instead (a table with
    dependent views cannot be dropped on PostgreSQL). A failed write leaves the old rows as they were.
    """
    import sqlalchemy as sa

    url = _display(target.url)
    if not target.table:
        not_a_query = ", not a query" if target.query is not None else ""
        raise SinkError(f"{url}: a SQL destination needs a table to replace{not_a_query}; write '#TABLE' or '#table=TABLE'")
    table, _, options = target.table.partition("&")
    mode = dict(part.partition("=")[::2] for part in options.split("&") if part).get("mode", "keep")
    destination = f"{url} (table {table})"
    if mode not in SQL_MODES:
        raise SinkError(f"{destination}: mode {mode!r}: use mode=keep (delete and insert rows, the default) or mode=replace")
    scrub = _scrubber(target.url, {})
    try:
        engine = sa.create_engine(target.url)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise SinkError(f"{destination}: not a usable database URL: {scrub(str(exc))}") from None
    if engine.dialect.driver == "pysqlite":
        _transactional_ddl(engine)
    rows = _nested_as_json(frame)
    try:
        with engine.begin() as conn:
            existing = sa.inspect(conn).has_table(table)
            if existing and mode == "keep":
                columns = [c["name"] for c in sa.inspect(conn).get_columns(table)]
                if set(columns) != set(map(str, rows.columns)):
                    missing = sorted(set(map(str, rows.columns)) - set(columns))
                    extra = sorted(set(columns) - set(map(str, rows.columns)))
                    raise SinkError(
                        f"{destination}: the table's columns are not the rows' (the table lacks {missing}, has "
                        f"{extra} besides); nothing was written. Write with '#table={table}&mode=replace' to recreate "
                        "it (that drops its indexes, grants and dependent views), or align the table")
                conn.execute(sa.table(table).delete())
                rows.to_sql(table, conn, if_exists="append", index=False)
            else:
                rows.to_sql(table, conn, if_exists="replace", index=False)
    except SinkError:
        raise
    except (sa.exc.SQLAlchemyError, pd.errors.DatabaseError, ValueError) as exc:
        reason = scrub(str(exc).splitlines()[0])
        raise SinkError(f"{destination}: the write failed and was rolled back, the table is unchanged: {reason}") from None
    finally:
        engine.dispose()
    return destination


def _transactional_ddl(engine: Any) -> None:
    """Make pysqlite run DROP/CREATE inside the transaction (SQLAlchemy's documented recipe).

    Python's sqlite3 otherwise opens a transaction only before INSERT/UPDATE/DELETE, so the DROP of
    ``if_exists="replace"`` would commit on its own and a failed insert would leave an empty table.
    """
    import sqlalchemy as sa

    @sa.event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")


def _nested_as_json(frame: pd.DataFrame) -> pd.DataFrame:
    """List, tuple, array and dict cells (``reasons``) as JSON text, for CSV and SQL columns."""
    def nested(value: Any) -> bool:
        return isinstance(value, (list, tuple, dict, np.ndarray))

    out = frame
    for position, dtype in enumerate(frame.dtypes):
        column = frame.iloc[:, position]
        if dtype == object and column.map(nested).any():
            out = out.copy() if out is frame else out
            out.isetitem(position, column.map(lambda v: json.dumps(v, default=_plain) if nested(v) else v))
    return out


def _plain(value: Any) -> Any:
    """json.dumps fallback: numpy arrays and scalars as Python values, anything else as text."""
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    return str(value)


# ---- webhook -----------------------------------------------------------------------------------

class _RetryableStatus(Exception):
    """A 5xx, 408 or 429 answer: worth another attempt."""


def _write_webhook(
    frame: pd.DataFrame,
    url: str,
    *,
    what: str,
    batch_rows: int,
    state_dir: Path,
    timeout: float,
    max_attempts: int,
    backoff_seconds: float,
    headers: dict[str, str],
    progress: Callable[[int, int], None] | None,
) -> SinkReport:
    destination = _display(url)
    scrub = _scrubber(url, headers)
    try:
        httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise SinkError(f"{destination}: not a usable webhook URL: {scrub(str(exc))}") from None
    rows = _json_rows(frame, destination)
    batches = [rows[i:i + batch_rows] for i in range(0, len(rows), batch_rows)]
    state_file = _state_file(url, what, state_dir)
    records = _delivered(state_file)
    delivered = {r["key"] for r in records}
    as_of = _as_of(frame)
    unfinished = _unfinished_as_of(records)
    if unfinished is not None and as_of is not None and unfinished != as_of:
        raise SinkError(
            f"{destination}: a delivery of these {what} scored as of {unfinished} is unfinished ({state_file}), and "
            f"this run's rows are scored as of {as_of}: their Idempotency-Keys differ, so resuming would send rows "
            f"again under new keys. Re-run with --as-of {unfinished} to resume it, or delete the state file to "
            "start a new delivery")
    try:
        state_file.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SinkError(f"{destination}: the delivery state cannot be kept in {state_file.parent}: {exc}") from None

    retries = 0

    def count_retry(_state: tenacity.RetryCallState) -> None:
        nonlocal retries
        retries += 1

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max_attempts),
        wait=tenacity.wait_exponential(multiplier=backoff_seconds, max=max(backoff_seconds, _MAX_WAIT_SECONDS)),
        retry=tenacity.retry_if_exception_type((_RetryableStatus, *_TRANSIENT_ERRORS)),
        before_sleep=count_retry,
        reraise=True,
    )
    client_headers = httpx.Headers(headers)
    client_headers["Content-Type"] = "application/json"
    sent = skipped = done = 0
    with httpx.Client(timeout=timeout, headers=client_headers) as client, state_file.open("a", encoding="utf-8") as state:
        if state.tell() and not state_file.read_bytes().endswith(b"\n"):
            state.write("\n")  # a line torn by a crash must not swallow the next record

        def post(body: bytes, key: str) -> httpx.Response:
            response = client.post(url, content=body, headers={"Idempotency-Key": key})
            if response.status_code >= 500 or response.status_code in RETRY_STATUSES:
                raise _RetryableStatus(f"HTTP {response.status_code}: {response.text[:200]!r}")
            return response

        for number, batch in enumerate(batches, start=1):
            canonical = json.dumps(batch, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            key = hashlib.sha256(f"{what}\n{canonical}".encode()).hexdigest()
            where = f"{destination}: batch {number} of {len(batches)}"
            if key in delivered:
                skipped += 1
            else:
                body = json.dumps(
                    {"what": what, "batch": number, "batches": len(batches), "rows": batch},
                    separators=(",", ":"), ensure_ascii=False,
                )
                try:
                    response = retrying(post, body.encode("utf-8"), key)
                except (_RetryableStatus, *_TRANSIENT_ERRORS) as exc:
                    last = str(exc) if isinstance(exc, _RetryableStatus) else f"{type(exc).__name__}: {exc}"
                    raise DeliveryError(
                        f"{where} failed after {max_attempts} attempts; last error: {scrub(last)}. "
                        f"{sent + skipped} of {len(batches)} batches are delivered (recorded in {state_file}); "
                        "re-running the same command resumes without resending delivered batches"
                    ) from None
                except httpx.HTTPError as exc:
                    raise DeliveryError(f"{where} could not be sent: {type(exc).__name__}: {scrub(str(exc))}") from None
                if not response.is_success:
                    raise DeliveryError(
                        f"{where} was refused with HTTP {response.status_code}, not retried: "
                        f"{scrub(response.text[:200])!r}. {sent + skipped} earlier batches are delivered "
                        f"(recorded in {state_file}); fix the cause and re-run to resume"
                    )
                # Recorded before moving on, so a crash later never causes this batch to be resent.
                state.write(json.dumps({"batch": number, "batches": len(batches), "key": key, "rows": len(batch),
                                        "as_of": as_of}) + "\n")
                state.flush()
                os.fsync(state.fileno())
                sent += 1
            done += len(batch)
            if progress is not None:
                progress(done, len(rows))
    return SinkReport(destination, rows=len(rows), batches_sent=sent, batches_skipped=skipped, retries=retries)


def _json_rows(frame: pd.DataFrame, destination: str) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts: pandas' own encoder turns NaN/NA/inf into null and timestamps into ISO text."""
    try:
        text = frame.to_json(orient="records", date_format="iso", date_unit="ms", default_handler=str)
    except ValueError as exc:  # e.g. duplicate column names
        raise SinkError(f"{destination}: the table cannot be sent as JSON: {exc}") from None
    return json.loads(text)


def _state_file(url: str, what: str, state_dir: Path) -> Path:
    # Named by the URL without its password (which is never hashed into a file name), so two endpoints
    # never share a state file.
    named = re.sub(r"://([^:/@]+):[^@]+@", r"://\1:***@", url)
    digest = hashlib.sha256(f"{named}\n{what}".encode()).hexdigest()
    return Path(state_dir) / f"{digest[:32]}.jsonl"


def _delivered(state_file: Path) -> list[dict[str, Any]]:
    """Records of batches acknowledged by earlier runs; a line torn by a crash is ignored."""
    if not state_file.exists():
        return []
    records = []
    for line in state_file.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            if isinstance(record, dict) and "key" in record:
                records.append(record)
        except ValueError:
            continue
    return records


def _as_of(frame: pd.DataFrame) -> str | None:
    """The one as-of instant of a scores table (ISO UTC), or None for a table without one."""
    if "as_of" not in frame.columns or frame.empty:
        return None
    values = pd.to_datetime(frame["as_of"], utc=True).unique()
    return pd.Timestamp(values[0]).isoformat() if len(values) == 1 else None


def _unfinished_as_of(records: list[dict[str, Any]]) -> str | None:
    """The as-of instant of the latest delivery that has not sent every batch, or None."""
    by_as_of: dict[str | None, set[int]] = {}
    totals: dict[str | None, int] = {}
    for r in records:
        by_as_of.setdefault(r.get("as_of"), set()).add(r.get("batch"))
        totals[r.get("as_of")] = r.get("batches", 0)
    latest = records[-1].get("as_of") if records else None
    if latest is not None and len(by_as_of[latest]) < totals.get(latest, 0):
        return latest
    return None


def pending_delivery(out: str, what: str, state_dir: str | Path | None = None) -> str | None:
    """The as-of instant (ISO UTC) of an unfinished webhook delivery of ``what`` to ``out``, or None.

    A re-run that scores as of that instant resends nothing already delivered; ``funnelcast score`` and
    ``outreach`` resume with it when no ``--as-of`` is given."""
    if not str(out).lower().startswith(("http://", "https://")):
        return None
    return _unfinished_as_of(_delivered(_state_file(str(out), what, Path(state_dir or DEFAULT_STATE_DIR))))


# ---- keeping secrets out of messages -----------------------------------------------------------

def _display(url: str) -> str:
    """A URL fit to print: no password, no webhook user (often an API key), no query values."""
    shown = re.sub(r"^(https?://)[^/@]+@", r"\1***@", redact_url(url), flags=re.IGNORECASE)
    base, sep, query = shown.partition("?")
    if not sep:
        return shown
    names = [part.partition("=")[0] for part in query.split("&") if part]
    return base + "?" + "&".join(f"{name}=***" for name in names)


def _scrubber(url: str, headers: dict[str, str]) -> Callable[[str], str]:
    """A function that takes secrets out of a text (an error, a response body): the URL is shown as
    :func:`_display` shows it, and its credentials, query values and every header value (whole, and
    the token after a scheme such as ``Bearer``) become ``***``."""
    secrets = [part.partition("=")[2] for part in url.partition("?")[2].split("#")[0].split("&")]
    userinfo = re.match(r"^([a-z][a-z0-9+.-]*)://([^/@]*)@", url, flags=re.IGNORECASE)
    if userinfo:  # a webhook's user is often an API key; a database user name is not a secret
        user, _, password = userinfo.group(2).partition(":")
        secrets += [password, user] if userinfo.group(1).lower() in ("http", "https") else [password]
        # The forms they travel in: percent-decoded, and HTTP Basic's base64 of "user:password".
        plain_user, plain_password = unquote(user), unquote(password)
        secrets += [plain_user, plain_password,
                    base64.b64encode(f"{plain_user}:{plain_password}".encode()).decode(),
                    base64.b64encode(userinfo.group(2).encode()).decode()]
    for value in headers.values():
        secrets += [value, *value.split()[-1:]]
    secrets += [quote(s, safe="") for s in secrets]
    secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
    shown = _display(url)

    def scrub(text: str) -> str:
        text = text.replace(url, shown)
        for secret in secrets:
            text = text.replace(secret, "***")
        return text

    return scrub

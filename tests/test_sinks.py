"""Sinks: files, SQL tables replaced atomically, and a webhook that is idempotent, retries and resumes.

The webhook tests talk to a real HTTP receiver on loopback that behaves like a careful CRM endpoint:
it records every request, processes each Idempotency-Key once, and fails on command.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from funnelcast.serving.sinks import SinkError, SinkReport, write_table

SECRET = "sekrit"


def scores(n: int = 2345) -> pd.DataFrame:
    """A scores table: NaN every 7th score, UTC times a minute apart, reasons lists of 0-2 items."""
    churn = np.linspace(0.0, 1.0, n)
    churn[::7] = np.nan
    return pd.DataFrame(
        {
            "customer_id": [f"c{i:05d}" for i in range(n)],
            "churn_score": churn,
            "rank": np.arange(1, n + 1, dtype="int64"),
            "as_of": pd.Timestamp("2024-05-01T10:00:00Z") + pd.to_timedelta(np.arange(n), unit="min"),
            "reasons": [["recency", "frequency"][: i % 3] for i in range(n)],
        }
    )


def small() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "score": [0.25, np.nan, 0.75],
            "customer_id": ["007", "b", "c"],
            "as_of": pd.to_datetime(["2024-05-01T10:00:00Z", "2024-05-02T00:00:00+02:00", "2024-12-31T23:59:59Z"], utc=True),
            "visits": np.array([3, 0, 12], dtype="int64"),
        }
    )


def assert_small_equal(back: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Compare values, not dtypes: CSV and SQLite give times back as text."""
    assert list(back.columns) == list(expected.columns)
    np.testing.assert_array_equal(back["score"].to_numpy(float), expected["score"].to_numpy(float))
    assert back["customer_id"].astype(str).tolist() == expected["customer_id"].tolist()
    assert pd.to_datetime(back["as_of"], utc=True).tolist() == expected["as_of"].tolist()
    assert back["visits"].astype("int64").tolist() == expected["visits"].tolist()


# ---- files -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["out.parquet", "nested/deeper/out.pq", "out.csv", "nested/out.CSV"])
def test_file_round_trip(tmp_path: Path, name: str) -> None:
    frame = small()
    calls = []
    report = write_table(frame, tmp_path / name, progress=lambda done, total: calls.append((done, total)))
    path = tmp_path / name
    back = pd.read_csv(path, dtype={"customer_id": str}) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    assert_small_equal(back, frame)
    if path.suffix.lower() != ".csv":
        assert back["as_of"].dt.tz is not None
    assert (report.rows, report.batches_sent, report.batches_skipped, report.retries) == (3, 1, 0, 0)
    assert calls == [(3, 3)]
    assert str(path) in report.line() and "3 rows" in report.line()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no partial file left behind


def test_csv_writes_lists_as_json_and_accepts_file_urls(tmp_path: Path) -> None:
    frame = pd.DataFrame({"customer_id": ["a", "b"], "reasons": [["recency", "visits"], []]})
    write_table(frame, f"file://{tmp_path}/out.csv")
    back = pd.read_csv(tmp_path / "out.csv")
    assert back["reasons"].map(json.loads).tolist() == [["recency", "visits"], []]


def test_unknown_suffix_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SinkError, match=r"'\.xlsx'.*\.parquet.*\.csv"):
        write_table(small(), tmp_path / "out.xlsx")
    assert not (tmp_path / "out.xlsx").exists()


# ---- SQL ---------------------------------------------------------------------------------------

def check_sql_replace(url: str, table: str) -> None:
    """Write, read back, replace with a smaller table, then fail a write and find the old table intact."""
    engine = sa.create_engine(url.partition("#")[0])
    try:
        first = small()
        report = write_table(first, url)
        assert report.rows == 3 and table in report.destination
        with engine.connect() as conn:
            assert_small_equal(pd.read_sql(sa.text(f'SELECT * FROM "{table}"'), conn), first)

        second = small().iloc[1:].reset_index(drop=True)
        write_table(second, url)
        with engine.connect() as conn:
            back = pd.read_sql(sa.text(f'SELECT * FROM "{table}"'), conn)
        assert len(back) == 2
        assert_small_equal(back, second)

        # The last row cannot be bound, so the insert fails after DROP and CREATE: both must roll back.
        broken = small().astype({"customer_id": object})
        broken.loc[2, "customer_id"] = object()
        with pytest.raises(SinkError, match="rolled back"):
            write_table(broken, url)
        with engine.connect() as conn:
            assert_small_equal(pd.read_sql(sa.text(f'SELECT * FROM "{table}"'), conn), second)
    finally:
        engine.dispose()


def test_sqlite_table_is_replaced_atomically(tmp_path: Path) -> None:
    check_sql_replace(f"sqlite:///{tmp_path}/x.db#scores", "scores")


@pytest.mark.postgres
def test_postgres_table_is_replaced_atomically(postgres_url: str, postgres_table: str) -> None:
    check_sql_replace(f"{postgres_url}#table={postgres_table}", postgres_table)


def test_sql_destination_needs_a_table(tmp_path: Path) -> None:
    with pytest.raises(SinkError, match="needs a table to replace, not a query"):
        write_table(small(), f"sqlite:///{tmp_path}/x.db#query=SELECT 1")
    with pytest.raises(SinkError, match="#table=TABLE"):
        write_table(small(), f"sqlite:///{tmp_path}/x.db")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+nosuchdriver://crm:hunter22@127.0.0.1/test#scores",  # no such driver
        "postgresql+psycopg://crm:hunter22@127.0.0.1:1/test#scores",  # nothing listening
    ],
)
def test_sql_errors_name_the_database_without_the_password(url: str) -> None:
    with pytest.raises(SinkError, match=r"crm:\*\*\*@127\.0\.0\.1") as caught:
        write_table(small(), url)
    assert "hunter22" not in str(caught.value)


# ---- webhook: a real receiver ------------------------------------------------------------------

@dataclass
class Receiver:
    """A CRM endpoint that processes each Idempotency-Key once.

    ``script[batch]`` lists the answers to that batch's next attempts: an HTTP status, or a float,
    seconds to stall *after* processing before answering 200 (a timeout whose work was done).
    From ``down_from`` on, every batch gets 503.
    """

    url: str = ""
    script: dict[int, list[int | float]] = field(default_factory=dict)
    down_from: int | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    delivered: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    replays: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def rows(self) -> list[dict[str, Any]]:
        return [row for batch in self.delivered.values() for row in batch]

    def assert_each_row_once(self, frame: pd.DataFrame) -> None:
        ids = [row["customer_id"] for row in self.rows()]
        assert sorted(ids) == sorted(frame["customer_id"]) and len(set(ids)) == len(ids)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real endpoint would

    def do_POST(self) -> None:  # noqa: N802 - the name http.server dispatches to
        receiver: Receiver = self.server.receiver  # type: ignore[attr-defined]
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        key = self.headers.get("Idempotency-Key")
        with receiver.lock:
            plan = receiver.script.get(body["batch"])
            action = plan.pop(0) if plan else 200
            if receiver.down_from is not None and body["batch"] >= receiver.down_from:
                action = 503
            stall = action if isinstance(action, float) else 0.0
            status = 200 if stall else int(action)
            receiver.requests.append(
                {"batch": body["batch"], "key": key, "status": status, "headers": dict(self.headers), "body": body}
            )
            if 200 <= status < 300:
                if key in receiver.delivered:
                    receiver.replays.append(key)
                else:
                    receiver.delivered[key] = body["rows"]
        time.sleep(stall)
        # A careless server echoing the caller's credentials; none of it may reach an error message.
        answer = f"status {status}; you sent Authorization={self.headers.get('Authorization')}".encode()
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
        except OSError:  # the client gave up waiting
            pass

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def receiver():
    state = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.receiver = state  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/crm/hook"
    yield state
    server.shutdown()
    server.server_close()


def send(frame: pd.DataFrame, receiver: Receiver, tmp_path: Path, **options: Any) -> SinkReport:
    options = {"batch_rows": 500, "state_dir": tmp_path / "state", "backoff_seconds": 0.01, "timeout": 10.0} | options
    return write_table(frame, options.pop("url", receiver.url), **options)


def test_webhook_delivers_every_row_once_in_batches(receiver: Receiver, tmp_path: Path) -> None:
    frame = scores()
    calls = []
    report = send(frame, receiver, tmp_path, what="churn", progress=lambda done, total: calls.append((done, total)))

    assert (report.rows, report.batches_sent, report.batches_skipped, report.retries) == (2345, 5, 0, 0)
    assert calls == [(500, 2345), (1000, 2345), (1500, 2345), (2000, 2345), (2345, 2345)]
    assert [r["batch"] for r in receiver.requests] == [1, 2, 3, 4, 5]
    assert {(r["body"]["what"], r["body"]["batches"]) for r in receiver.requests} == {("churn", 5)}
    assert [len(r["body"]["rows"]) for r in receiver.requests] == [500, 500, 500, 500, 345]
    assert all(r["headers"]["Content-Type"] == "application/json" for r in receiver.requests)
    assert len({r["key"] for r in receiver.requests}) == 5 and all(len(r["key"]) == 64 for r in receiver.requests)
    receiver.assert_each_row_once(frame)
    assert not receiver.replays

    by_id = {row["customer_id"]: row for row in receiver.rows()}
    for i in (0, 7, 1234, 2344):  # NaN rows (multiples of 7) and ordinary ones
        row, want = by_id[f"c{i:05d}"], frame.iloc[i]
        assert list(row) == list(frame.columns)
        if np.isnan(want["churn_score"]):
            assert row["churn_score"] is None
        else:
            assert row["churn_score"] == pytest.approx(want["churn_score"])
        assert row["rank"] == i + 1 and isinstance(row["rank"], int)
        assert row["as_of"].endswith("Z") and pd.Timestamp(row["as_of"]) == want["as_of"]
        assert row["reasons"] == want["reasons"]
    assert "2,345 rows" in report.line() and "5 sent now" in report.line()


def test_webhook_retries_transient_failures_with_the_same_key(receiver: Receiver, tmp_path: Path) -> None:
    frame = scores()
    # Batch 3: processed, but answered after the 1 s timeout. (A shorter timeout made other batches time
    # out too on a loaded CI host: every request must be far quicker than the timeout but the scripted one.)
    receiver.script = {2: [500, 500], 3: [1.6]}
    started = time.monotonic()
    report = send(frame, receiver, tmp_path, timeout=1.0)

    assert time.monotonic() - started < 6
    assert (report.batches_sent, report.retries) == (5, 3)
    answers = [(r["batch"], r["status"]) for r in receiver.requests if r["batch"] in (2, 3)]
    assert answers == [(2, 500), (2, 500), (2, 200), (3, 200), (3, 200)]
    third = [r["key"] for r in receiver.requests if r["batch"] == 3]
    assert len(set(third)) == 1 and receiver.replays == third[:1]  # resent with the SAME key, deduplicated
    receiver.assert_each_row_once(frame)


def test_webhook_refusal_stops_at_once_without_leaking_credentials(receiver: Receiver, tmp_path: Path) -> None:
    receiver.script = {1: [400]}
    with pytest.raises(SinkError, match=r"batch 1 of 5 was refused with HTTP 400, not retried: 'status 400") as caught:
        send(scores(), receiver, tmp_path, headers={"Authorization": f"Bearer {SECRET}"})
    assert SECRET not in str(caught.value) and "Authorization=***" in str(caught.value)
    assert [r["batch"] for r in receiver.requests] == [1]
    assert not receiver.delivered


def test_webhook_resumes_after_exhausted_retries(receiver: Receiver, tmp_path: Path) -> None:
    frame = scores()
    receiver.down_from = 3
    exhausted = r"batch 3 of 5 failed after 3 attempts; last error: HTTP 503.*2 of 5 batches are delivered.*resumes"
    with pytest.raises(SinkError, match=exhausted) as caught:
        send(frame, receiver, tmp_path, max_attempts=3)
    assert [r["batch"] for r in receiver.requests] == [1, 2, 3, 3, 3]
    first_keys = {r["key"] for r in receiver.requests if r["batch"] in (1, 2)}
    assert "re-running the same command" in str(caught.value)

    # A crash while recording leaves a torn line; it must neither break nor swallow the next record.
    [state_file] = (tmp_path / "state").iterdir()
    with state_file.open("a") as state:
        state.write('{"batch": 3, "ke')

    receiver.down_from = None
    before = len(receiver.requests)
    report = send(frame, receiver, tmp_path, max_attempts=3)

    assert (report.batches_sent, report.batches_skipped, report.retries) == (3, 2, 0)
    assert [r["batch"] for r in receiver.requests[before:]] == [3, 4, 5]
    for key in first_keys:
        assert [r["status"] for r in receiver.requests if r["key"] == key] == [200]
    receiver.assert_each_row_once(frame)
    assert not receiver.replays
    assert send(frame, receiver, tmp_path).batches_skipped == 5


def test_webhook_rerun_sends_only_what_changed(receiver: Receiver, tmp_path: Path) -> None:
    frame = scores()
    send(frame, receiver, tmp_path)
    keys = [r["key"] for r in receiver.requests]

    again = send(frame, receiver, tmp_path)
    assert (again.batches_sent, again.batches_skipped) == (0, 5) and len(receiver.requests) == 5

    changed = frame.copy()
    changed.loc[1600, "churn_score"] = 0.5  # in batch 4
    report = send(changed, receiver, tmp_path)
    assert (report.batches_sent, report.batches_skipped) == (1, 4)
    assert [r["batch"] for r in receiver.requests[5:]] == [4]

    # Local state lost: the same table carries the same keys, so the receiver can drop every batch.
    send(frame, receiver, tmp_path, state_dir=tmp_path / "elsewhere")
    assert [r["key"] for r in receiver.requests[6:]] == keys and receiver.replays == keys


def test_webhook_headers_reach_the_receiver_and_secrets_stay_out_of_errors(receiver: Receiver, tmp_path: Path) -> None:
    url = f"{receiver.url}?api_key={SECRET}-in-query"
    report = send(scores(600), receiver, tmp_path, url=url, headers={"Authorization": f"Bearer {SECRET}"})
    assert {r["headers"]["Authorization"] for r in receiver.requests} == {f"Bearer {SECRET}"}
    assert SECRET not in report.destination and SECRET not in report.line()

    receiver.down_from = 1
    with pytest.raises(SinkError) as caught:
        send(scores(700), receiver, tmp_path, url=url, headers={"Authorization": f"Bearer {SECRET}"}, max_attempts=2)
    assert "HTTP 503" in str(caught.value) and SECRET not in str(caught.value)

    # A connection that cannot be made at all: the error names the URL, redacted.
    with pytest.raises(SinkError, match="ConnectError") as caught:
        send(scores(10), receiver, tmp_path, url=f"http://user:{SECRET}@127.0.0.1:1/hook?token={SECRET}", max_attempts=2)
    assert SECRET not in str(caught.value)


# ---- issue 21: credentials in every form, delivery failures, resumes at the same as-of -------------

def test_basic_credentials_in_the_url_never_reach_a_message_in_any_encoding(receiver: Receiver, tmp_path: Path) -> None:
    """The receiver echoes the Authorization header httpx builds from user:password@ (base64): hidden too."""
    import base64

    from funnelcast.serving.sinks import DeliveryError

    receiver.script = {1: [400]}
    url = receiver.url.replace("http://", "http://alice:p%40ss-w0rd@")
    with pytest.raises(DeliveryError) as caught:
        send(scores(), receiver, tmp_path, url=url)
    message = str(caught.value)
    assert "Basic" in message  # the echo is there, its value is not
    for secret in ("p@ss-w0rd", "p%40ss-w0rd", base64.b64encode(b"alice:p@ss-w0rd").decode(), "alice"):
        assert secret not in message, (secret, message)
    assert caught.value.headline == "delivery failed"


def test_credentials_in_the_url_and_a_token_are_refused_as_ambiguous(receiver: Receiver, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUNNELCAST_WEBHOOK_TOKEN", "t0ken-value")
    url = receiver.url.replace("http://", "http://alice:secret@")
    with pytest.raises(SinkError, match="carries credentials and \\$FUNNELCAST_WEBHOOK_TOKEN is set too") as caught:
        send(scores(), receiver, tmp_path, url=url)
    assert "secret" not in str(caught.value) and "t0ken-value" not in str(caught.value)
    assert not receiver.requests


def test_redacted_urls_hide_passwords_and_secret_query_values() -> None:
    from funnelcast.features.events import redact_url

    assert redact_url("postgresql+psycopg://crm:hunter2@db:5432/crm") == "postgresql+psycopg://crm:***@db:5432/crm"
    shown = redact_url("https://mlflow.example.com/api?token=abc123&page=2&api_key=k&signature=s")
    assert shown == "https://mlflow.example.com/api?token=***&page=2&api_key=***&signature=***"
    assert redact_url("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"


def test_a_resume_must_score_as_of_the_same_instant(receiver: Receiver, tmp_path: Path) -> None:
    """A failed delivery is resumed only by rows scored at its as-of instant (which funnelcast score reuses
    by itself); rows of another instant would resend everything under new keys, and are refused."""
    from funnelcast.serving.sinks import DeliveryError, pending_delivery

    def at(instant: str) -> pd.DataFrame:
        return scores().assign(as_of=pd.Timestamp(instant), churn_score=np.linspace(0, 1, 2345) + len(instant))

    first = at("2024-05-01T10:00:00Z")
    receiver.down_from = 3
    with pytest.raises(DeliveryError, match="batch 3 of 5 failed"):
        send(first, receiver, tmp_path, max_attempts=2)
    state = tmp_path / "state"
    assert pending_delivery(receiver.url, "scores", state) == "2024-05-01T10:00:00+00:00"
    with pytest.raises(SinkError, match=r"unfinished .* Re-run with --as-of 2024-05-01T10:00:00\+00:00 to resume"):
        send(at("2024-05-02T09:30:00Z"), receiver, tmp_path)
    receiver.down_from = None
    report = send(first, receiver, tmp_path)
    assert (report.batches_skipped, report.batches_sent) == (2, 3)
    receiver.assert_each_row_once(first)
    assert pending_delivery(receiver.url, "scores", state) is None  # finished: a new as-of starts a new delivery
    assert send(at("2024-05-02T09:30:00Z"), receiver, tmp_path).batches_sent == 5


def check_sql_keeps_the_table(url: str, table: str) -> None:
    """Where the table exists, its rows are replaced and the table kept: an index and a dependent view
    survive (on PostgreSQL a view makes DROP fail); other columns are refused; mode=replace recreates."""
    engine = sa.create_engine(url.partition("#")[0])
    try:
        write_table(small(), url)
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE INDEX "{table}_ix" ON "{table}" (customer_id)'))
            conn.execute(sa.text(f'CREATE VIEW "{table}_v" AS SELECT customer_id FROM "{table}"'))
        second = small().iloc[1:].reset_index(drop=True)
        write_table(second, url)
        with engine.connect() as conn:
            assert_small_equal(pd.read_sql(sa.text(f'SELECT * FROM "{table}"'), conn), second)
            assert len(pd.read_sql(sa.text(f'SELECT * FROM "{table}_v"'), conn)) == 2
            assert f"{table}_ix" in {ix["name"] for ix in sa.inspect(conn).get_indexes(table)}
        with pytest.raises(SinkError, match=r"the table's columns are not the rows' \(the table lacks \['extra'\]"):
            write_table(second.assign(extra=1), url)
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP VIEW "{table}_v"'))
        write_table(second.assign(extra=1), url + "&mode=replace")  # '#scores&mode=replace' or '#table=t&mode=replace'
        with engine.connect() as conn:
            assert "extra" in {c["name"] for c in sa.inspect(conn).get_columns(table)}
    finally:
        engine.dispose()


def test_sqlite_table_keeps_its_indexes_and_views(tmp_path: Path) -> None:
    check_sql_keeps_the_table(f"sqlite:///{tmp_path}/x.db#scores", "scores")


@pytest.mark.postgres
def test_postgres_table_keeps_its_indexes_and_views(postgres_url: str, postgres_table: str) -> None:
    check_sql_keeps_the_table(f"{postgres_url}#table={postgres_table}", postgres_table)

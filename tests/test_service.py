"""The HTTP service as a CRM system meets it: the real ``funnelcast serve`` on loopback, no mocks.

One server per module (``funnelcast serve`` → BentoML) over the :func:`served_models` champions and
their simulation. Its answers are checked against the in-process :class:`serving.scoring.Scorer`
(same models, same event source), its refusals against what the brief of each endpoint promises, and
its whole OpenAPI surface with schemathesis: no generated request may get a 5xx.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
KEY = secrets.token_urlsafe(24)
READY_TIMEOUT = 180
EXIT_TIMEOUT = 120
COMPARED = ("customer_id", "stage", "status", "next_stage", "next_stage_probability", "churn_probability",
            "percentile", "risk_tier", "customer_value", "value_basis", "value_at_risk", "reasons_for", "model_versions")


LOGS: dict[str, Path] = {}
"""Base URL of a running server -> the file its stdout and stderr go to."""


# ---- helpers ------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any funnelcast/MLflow setting that could steer the server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FUNNELCAST_", "MLFLOW_"))}
    env["FUNNELCAST_THREADS"] = "1"
    env.update(extra)
    return env


def _serve_args(home: Path, sim_dir: Path, end: pd.Timestamp, port: int) -> list[str]:
    return [sys.executable, "-m", "funnelcast", "serve",
            "--events", str(sim_dir / "events.parquet"), "--customers", str(sim_dir / "customers.parquet"),
            "--as-of", str(end), "--mlflow-dir", str(home), "--port", str(port)]


def _stop(proc: subprocess.Popen) -> None:
    """End the process group the server runs in, and BentoML's workers (which start sessions of their own)."""
    import psutil

    try:
        children = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
    except psutil.NoSuchProcess:
        children = []
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    _, alive = psutil.wait_procs(children, timeout=10)
    for child in alive:  # left behind by the arbiter: end them by id
        child.kill()
    psutil.wait_procs(alive, timeout=10)


def _run_to_exit(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run a command that must exit by itself; (code, stdout, stderr). A hang fails the test."""
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        _stop(proc)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(args)} did not exit within {EXIT_TIMEOUT} s\nstdout:\n{out}\nstderr:\n{err}")
    return proc.returncode, out, err


def _iso(ts: Any) -> str:
    """A UTC timestamp as ISO 8601 with 'Z' (full precision)."""
    return pd.Timestamp(ts).tz_convert("UTC").isoformat().replace("+00:00", "Z")


def _error_text(resp: httpx.Response) -> str:
    """The whole error response as text (the message, and pydantic's detail where there is one)."""
    try:
        return json.dumps(resp.json())
    except ValueError:
        return resp.text


def _squash(text: str) -> str:
    return "".join(text.split())


# ---- fixtures -----------------------------------------------------------------------------------

@contextlib.contextmanager
def _serving(args: list[str], env: dict[str, str], log_path: Path, cwd: Path = REPO, ready: bool = True):
    """A ``funnelcast serve`` process (its own session); yields (process, base URL) once /readyz answers
    200 (``ready``) or at all (any status: a server that must say it is not ready)."""
    port = args[args.index("--port") + 1]
    log = log_path.open("wb")
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    LOGS[base] = log_path
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"funnelcast serve exited with {proc.returncode} before it was ready:\n"
                            f"{log_path.read_text(errors='replace')}")
            try:
                if (status := httpx.get(f"{base}/readyz", timeout=2).status_code) == 200 or not ready:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"funnelcast serve was not ready within {READY_TIMEOUT} s:\n{log_path.read_text(errors='replace')}")
            time.sleep(0.5)
        yield proc, base
    finally:
        _stop(proc)
        log.close()


@pytest.fixture(scope="module")
def server(served_models, small_sim, tmp_path_factory):
    """Base URL of a running ``funnelcast serve`` (ready: /readyz answered 200)."""
    home, sim_dir, _ = served_models
    log_path = tmp_path_factory.mktemp("serve-log") / "server.log"
    with _serving(_serve_args(home, sim_dir, small_sim.end, _free_port()), _clean_env(FUNNELCAST_API_KEY=KEY),
                  log_path) as (_, base):
        yield base


@pytest.fixture(scope="module")
def api(server):
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def anon(server):
    with httpx.Client(base_url=server, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def reference(served_models, small_sim):
    """The in-process scorer over the same event source, population and as-of time as the server."""
    from funnelcast.features.events import EventArrays, read_customers, read_events
    from funnelcast.serving.scoring import CustomerBase, Scorer

    home, sim_dir, _ = served_models
    scorer = Scorer.from_registry(home=home)
    cfg = scorer.config
    events, _ = read_events(sim_dir / "events.parquet", cfg)
    customers, _ = read_customers(sim_dir / "customers.parquet", cfg)
    ids = sorted(set(events["customer_id"].astype(str)) | set(customers["customer_id"].astype(str)))
    as_of_ns = scorer.as_of_ns(str(small_sim.end))
    base = CustomerBase(scorer, EventArrays.from_frame(events, cfg, customer_ids=ids), customers, as_of_ns)
    return {"scorer": scorer, "base": base, "events": events, "customers": customers, "ids": ids, "as_of_ns": as_of_ns}


@pytest.fixture(scope="module")
def as_of(small_sim) -> str:
    return _iso(small_sim.end)


def _reference_records(reference, ids: list[str]) -> list[dict[str, Any]]:
    scorer, base = reference["scorer"], reference["base"]
    scored, unknown = base.score_ids(ids)
    assert unknown == []
    # Through JSON, as the server sends them.
    return json.loads(json.dumps(scorer.records(scored, base.population)))


@pytest.fixture(scope="module")
def one_customer(reference, small_sim, api):
    """(id, request body for /score_events, its /score result): the first customer (by id) with at least
    20 events before as_of and a known value of every attribute whom the churn model scores (so the result
    has probabilities and reasons)."""
    events, customers = reference["events"], reference["customers"]
    before = events[events["timestamp"] < small_sim.end]
    counts = before.groupby("customer_id", observed=True).size()
    known = set(customers.loc[customers["employees"].notna(), "customer_id"].astype(str))  # every kind of attribute
    candidates = sorted(set(counts[counts >= 20].index.astype(str)) & known)
    scored = api.post("/score", json={"customer_ids": candidates[:200]}).json()["results"]
    cid = next(r["customer_id"] for r in scored if r["churn_probability"] is not None and r["reasons"])
    mine = before[before["customer_id"] == cid].sort_values("timestamp")
    payload = []
    for row in mine.itertuples(index=False):
        e: dict[str, Any] = {"timestamp": _iso(row.timestamp), "event_type": str(row.event_type)}
        if not pd.isna(row.channel):
            e["channel"] = str(row.channel)
        if not pd.isna(row.amount):
            e["amount"] = float(row.amount)
        payload.append(e)
    # Every attribute the customer table holds (a missing one scores as missing, unlike the table's value:
    # the logistic part of a blend imputes it, so a forgotten attribute moves the score).
    attrs = customers[customers["customer_id"] == cid].iloc[0]
    customer: dict[str, Any] = {}
    for column in customers.columns.drop("customer_id"):
        value = attrs[column]
        if pd.isna(value):
            continue
        if isinstance(value, pd.Timestamp):
            customer[column] = _iso(value)
        elif isinstance(value, (int, float)):
            customer[column] = float(value)
        else:
            customer[column] = str(value)
    assert {"segment", "signup_date", "employees"} <= customer.keys()
    body = {"events": payload, "customer": customer, "customer_id": cid, "as_of": _iso(small_sim.end)}
    result = next(r for r in scored if r["customer_id"] == cid)
    return cid, body, result


def _same_score(got: dict[str, Any], want: dict[str, Any]) -> None:
    for key in ("stage", "status", "next_stage", "next_stage_probability", "churn_probability", "percentile",
                "risk_tier", "customer_value", "value_basis", "value_at_risk", "reasons_for"):
        assert got[key] == want[key], (key, got[key], want[key])
    assert [r["text"] for r in got["reasons"]] == [r["text"] for r in want["reasons"]]
    assert [r["feature"] for r in got["reasons"]] == [r["feature"] for r in want["reasons"]]


# ---- authentication -----------------------------------------------------------------------------

def test_api_routes_need_the_bearer_key(anon, api):
    body = {"customer_ids": ["c0000000"]}
    missing = anon.post("/score", json=body)
    assert missing.status_code == 401
    assert "API key" in missing.text and missing.headers.get("www-authenticate") == "Bearer"
    for header in (f"Bearer {KEY}x", f"Bearer {KEY[:-1]}", KEY, f"Basic {KEY}", "Bearer", f"Bearer{KEY}"):
        assert anon.post("/score", json=body, headers={"Authorization": header}).status_code == 401, header
    for route in ("/score_events", "/outreach", "/model_info"):
        assert anon.post(route, json={}).status_code == 401, route
    assert api.post("/score", json=body).status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/livez", "/readyz", "/docs.json"])
def test_health_and_openapi_are_open(anon, path):
    resp = anon.get(path)
    assert resp.status_code == 200, resp.text
    if path == "/docs.json":
        paths = resp.json()["paths"]
        assert {"/score", "/score_events", "/outreach", "/model_info"} <= set(paths)


# ---- validation ---------------------------------------------------------------------------------

def _event(**kw: Any) -> dict[str, Any]:
    return {"timestamp": "2025-06-01T10:00:00Z", "event_type": "pricing_view", "channel": "search", **kw}


INVALID = {
    "malformed JSON": ("/score", b'{"customer_ids": ["c0000001",', ["json"]),
    "missing customer_ids": ("/score", {"as_of": "2025-06-01T00:00:00Z"}, ["customer_ids", "required"]),
    "empty customer_ids": ("/score", {"customer_ids": []}, ["customer_ids", "at least 1"]),
    "too many ids": ("/score", {"customer_ids": [f"id{i}" for i in range(1001)]}, ["customer_ids", "1000"]),
    "bad as_of": ("/score", {"customer_ids": ["c0000001"], "as_of": "not-a-date"}, ["as_of", "not-a-date"]),
    "unknown event type": ("/score_events", {"events": [_event(event_type="teleported")]}, ["events[0]", "teleported"]),
    "negative amount": ("/score_events", {"events": [_event(event_type="order", amount=-5.0)]},
                        ["amount", "greater than or equal to 0"]),
    "bad event timestamp": ("/score_events", {"events": [_event(timestamp="last tuesday")]},
                            ["events[0].timestamp", "last tuesday"]),
    "naive event timestamp": ("/score_events", {"events": [_event(timestamp="2025-06-01T10:00:00")]},
                              ["events[0].timestamp", "without a time zone", "source_timezone"]),
    "too many events": ("/score_events", {"events": [_event()] * 10_001}, ["events", "10000"]),
    "two customers": ("/score_events", {"events": [_event(customer_id="c0000001"), _event(customer_id="c0000002")]},
                      ["more than one customer", "c0000001", "c0000002"]),
    "request id differs from event id": ("/score_events", {"events": [_event(customer_id="c0000001")], "customer_id": "c0000002"},
                                         ["more than one customer"]),
    "outreach top=0": ("/outreach", {"top": 0}, ["top", "greater than or equal to 1"]),
    "outreach top too big": ("/outreach", {"top": 10_001}, ["top", "10000"]),
    "outreach unknown stage": ("/outreach", {"top": 5, "stage": "nirvana"}, ["nirvana", "not a stage"]),
    # A misspelt field is an error, not silently ignored (the request would quietly mean something else).
    "unknown field in /score": ("/score", {"customer_ids": ["c0000001"], "asof": "2025-06-01"}, ["asof", "extra inputs"]),
    "unknown field in /score_events": ("/score_events", {"events": [_event()], "cutomer": {"segment": "smb"}},
                                       ["cutomer", "extra inputs"]),
    "unknown field in an event": ("/score_events", {"events": [_event(ammount=5.0)]}, ["ammount", "extra inputs"]),
    "unknown field in /outreach": ("/outreach", {"top": 5, "segmnet": "smb"}, ["segmnet", "extra inputs"]),
    "unknown field in /model_info": ("/model_info", {"verbose": True}, ["verbose", "extra inputs"]),
}


@pytest.mark.parametrize("case", list(INVALID), ids=list(INVALID))
def test_bad_requests_get_a_4xx_naming_the_problem(api, case):
    route, body, needles = INVALID[case]
    if isinstance(body, bytes):
        resp = api.post(route, content=body, headers={"content-type": "application/json"})
    else:
        resp = api.post(route, json=body)
    assert resp.status_code in (400, 422), (resp.status_code, resp.text)
    body = resp.json()  # one shape for every error: {"error": "...", ["detail": [...] from pydantic]}
    assert isinstance(body, dict) and isinstance(body.get("error"), str), body
    text = _error_text(resp)
    for needle in needles:
        assert needle.lower() in text.lower(), (needle, text)


def _attributes_of_kind(scorer, kind: str) -> list[str]:
    return sorted({a.name for m in scorer.models.values() for a in m.input_.attributes if a.kind == kind})


def test_non_numeric_value_for_a_numeric_attribute(api, reference, as_of):
    numeric = _attributes_of_kind(reference["scorer"], "number")
    assert numeric, "the served models must use a numeric customer attribute (tests/conftest.py: small_sim)"
    col = numeric[0]
    resp = api.post("/score_events", json={"events": [_event()], "customer": {col: "lots"}, "as_of": as_of})
    assert resp.status_code in (400, 422), resp.text
    assert f"customer.{col}" in _error_text(resp) and "lots" in _error_text(resp)


def test_date_attribute_must_be_a_timestamp(api, reference, as_of):
    dates = _attributes_of_kind(reference["scorer"], "date")
    assert dates, "the served models must use a date customer attribute (the simulator's signup_date)"
    col = dates[0]
    resp = api.post("/score_events", json={"events": [_event()], "customer": {col: "someday"}, "as_of": as_of})
    assert resp.status_code in (400, 422), resp.text
    assert f"customer.{col}" in _error_text(resp) and "someday" in _error_text(resp)


# ---- /score -------------------------------------------------------------------------------------

def test_unknown_ids_come_back_and_duplicates_are_scored_once(api, reference):
    known = reference["ids"][:2]
    resp = api.post("/score", json={"customer_ids": [known[1], "no-such-customer", known[0], known[1], known[1]]})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [r["customer_id"] for r in body["results"]] == [known[1], known[0]]
    assert body["unknown"] == ["no-such-customer"]
    only_unknown = api.post("/score", json={"customer_ids": ["nobody", "nobody"]}).json()
    assert only_unknown == {"results": [], "unknown": ["nobody"]}


def test_score_agrees_with_the_in_process_scorer(api, reference, as_of):
    ids = reference["ids"][::80][:50]
    assert len(ids) == 50
    resp = api.post("/score", json={"customer_ids": ids})
    assert resp.status_code == 200, resp.text
    got = resp.json()
    assert got["unknown"] == []
    want = _reference_records(reference, ids)
    assert [r["customer_id"] for r in got["results"]] == ids
    for g, w in zip(got["results"], want, strict=True):
        for key in COMPARED:
            assert g[key] == w[key], (g["customer_id"], key, g[key], w[key])
        assert [r["text"] for r in g["reasons"]] == [r["text"] for r in w["reasons"]], g["customer_id"]
        assert g["as_of"] == w["as_of"] == as_of.replace("Z", "+00:00")
    # The sample is worth comparing: several statuses, both probabilities, reasons.
    statuses = {r["status"] for r in got["results"]}
    assert len(statuses) >= 2, statuses
    assert any(r["churn_probability"] is not None for r in got["results"])
    # ...and both kinds of customer value: the value model's for buyers, trailing spend for the rest.
    assert {r["value_basis"] for r in got["results"]} == {"expected_next_365d", "spent_last_365d"}
    assert all(r["model_versions"]["value"] == reference["scorer"].versions["value"] for r in got["results"])
    assert any(r["next_stage_probability"] is not None for r in got["results"])
    assert any(r["reasons"] for r in got["results"])
    # The same ids with the default as_of spelled out give the same answer.
    explicit = api.post("/score", json={"customer_ids": ids[:10], "as_of": as_of}).json()
    assert explicit["results"] == got["results"][:10]


# ---- /score_events ------------------------------------------------------------------------------

def test_score_events_agrees_with_score_for_the_same_customer(api, one_customer):
    cid, body, by_id = one_customer
    resp = api.post("/score_events", json=body)
    assert resp.status_code == 200, resp.text
    got = resp.json()
    assert got["customer_id"] == cid
    _same_score(got, by_id)
    assert got["input"] == {"events": len(body["events"]), "duplicates_dropped": 0, "event_types_mapped_to_other": 0,
                            "channels_mapped_to_other": 0, "events_at_or_after_as_of": 0, "ignored_attributes": []}
    assert len(body["events"]) >= 20
    # Events without customer_id, the request naming none: the same score.
    anonymous = dict(body)
    anonymous.pop("customer_id")
    again = api.post("/score_events", json=anonymous)
    assert again.status_code == 200, again.text
    _same_score(again.json(), by_id)


def test_score_events_drops_an_exact_duplicate(api, one_customer):
    _, body, by_id = one_customer
    events = list(body["events"])
    resp = api.post("/score_events", json={**body, "events": events + [events[len(events) // 2]]})
    assert resp.status_code == 200, resp.text
    got = resp.json()
    assert got["input"]["duplicates_dropped"] == 1
    assert got["input"]["events"] == len(events) + 1
    _same_score(got, by_id)


def test_score_events_ignores_events_at_or_after_as_of(api, one_customer, small_sim):
    _, body, by_id = one_customer
    late = [{"timestamp": _iso(small_sim.end + pd.Timedelta(days=2)), "event_type": "order", "channel": "direct", "amount": 999.0}]
    resp = api.post("/score_events", json={**body, "events": body["events"] + late})
    assert resp.status_code == 200, resp.text
    got = resp.json()
    assert got["input"]["events_at_or_after_as_of"] == 1
    assert got["input"]["duplicates_dropped"] == 0
    _same_score(got, by_id)


def test_score_events_reports_ignored_attributes_and_mapped_channels(api, one_customer):
    _, body, by_id = one_customer
    events = [dict(e) for e in body["events"]]
    resp = api.post("/score_events", json={**body, "customer": {**body["customer"], "shoe_size": 44}, "events": events})
    assert resp.status_code == 200, resp.text
    assert resp.json()["input"]["ignored_attributes"] == ["shoe_size"]
    _same_score(resp.json(), by_id)
    events[0]["channel"] = "carrier_pigeon"  # unknown_channels: map_to_other in the default funnel
    mapped = api.post("/score_events", json={**body, "events": events})
    assert mapped.status_code == 200, mapped.text
    assert mapped.json()["input"]["channels_mapped_to_other"] == 1


# ---- /outreach ----------------------------------------------------------------------------------

def test_outreach_top_five(api, reference):
    resp = api.post("/outreach", json={"top": 5})
    assert resp.status_code == 200, resp.text
    rows = resp.json()["results"]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    values = [r["value_at_risk"] for r in rows]
    assert all(v is not None for v in values) and values == sorted(values, reverse=True)
    assert all(r["status"] == "customer" for r in rows)
    assert all(len(r["reasons"]) >= 1 and all(x["text"] for x in r["reasons"]) for r in rows)
    # The same list the in-process customer base ranks.
    ranked, _ = reference["base"].outreach(5)
    assert [r["customer_id"] for r in rows] == ranked["customer_id"].tolist()


@pytest.mark.parametrize("stage", ["purchase", "loyalty"])
def test_outreach_stage_filter(api, stage):
    resp = api.post("/outreach", json={"top": 20, "stage": stage})
    assert resp.status_code == 200, resp.text
    rows = resp.json()["results"]
    assert rows, f"no customers at stage {stage}"
    assert {r["stage"] for r in rows} == {stage}


def test_outreach_segment_filter(api, reference):
    customers = reference["customers"].set_index("customer_id")
    segment = str(customers["segment"].astype(str).value_counts().index[0])
    resp = api.post("/outreach", json={"top": 20, "segment": segment})
    assert resp.status_code == 200, resp.text
    rows = resp.json()["results"]
    assert rows
    assert {r["segment"] for r in rows} == {segment}
    assert {str(customers.loc[r["customer_id"], "segment"]) for r in rows} == {segment}
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    assert api.post("/outreach", json={"top": 5, "segment": "no-such-segment"}).json()["results"] == []


# ---- /model_info --------------------------------------------------------------------------------

def test_model_info(api, reference, served_models, as_of):
    resp = api.post("/model_info", json={})
    assert resp.status_code == 200, resp.text
    info = resp.json()
    scorer = reference["scorer"]
    assert set(info["models"]) == {"convert", "churn", "value"}
    for target, model in info["models"].items():
        assert model["version"] == scorer.versions[target]
        assert model["name"] == f"funnelcast-{target}"
        assert pd.Timestamp(model["trained_at"]) is not pd.NaT
        if target == "value":  # an amount: ranked by normalised Gini, no ROC-AUC
            assert 0 < float(model["test_gini"]) <= 1 and "test_roc_auc" not in model
            continue
        auc = float(model["test_roc_auc"])
        assert 0.5 < auc <= 1.0, auc
    # What each probability answers (here every label window is the horizon) and what customer_value spans.
    assert info["horizons"] == {"convert": {"horizon_days": 30, "label_days": 30}, "churn": {"horizon_days": 60, "label_days": 60},
                                "value": {"horizon_days": 365, "label_days": 90}}
    assert info["population"]["customers"] == len(reference["ids"])
    assert info["population"]["scored_for_churn"] == len(reference["base"].population.sorted_risk) > 0
    assert info["population_as_of"] == as_of.replace("Z", "+00:00")
    assert str(served_models[0]) in info["tracking_uri"]


# ---- start-up refusals --------------------------------------------------------------------------

def test_serve_refuses_to_start_without_an_api_key(served_models, small_sim):
    home, sim_dir, _ = served_models
    code, out, err = _run_to_exit(_serve_args(home, sim_dir, small_sim.end, _free_port()), _clean_env())
    assert code == 2, (code, out, err)
    assert "FUNNELCAST_API_KEY" in err


def test_serve_refuses_to_start_without_champions(served_models, small_sim, tmp_path):
    from funnelcast.training import tracking

    _, sim_dir, _ = served_models
    empty = tmp_path  # an MLflow home whose store exists but holds no champions
    tracking.connect(home=empty)
    code, out, err = _run_to_exit(_serve_args(empty, sim_dir, small_sim.end, _free_port()),
                                  _clean_env(FUNNELCAST_API_KEY=KEY))
    assert code == 2, (code, out, err)
    said = _squash(out + err)
    assert _squash(str(empty)) in said, said
    assert "funnelcast-convert" in said
    assert "Traceback" not in err


# ---- property-based: nothing the schema allows (or nearly allows) gets a 5xx --------------------

OPERATIONS = ["GET /healthz", "GET /livez", "GET /readyz", "GET /metrics",
              "POST /score", "POST /score_events", "POST /outreach", "POST /model_info"]


@pytest.fixture(scope="module")
def openapi(server):
    import schemathesis

    return schemathesis.openapi.from_url(f"{server}/docs.json")


def test_openapi_lists_the_operations_fuzzed(openapi):
    labels = {op.ok().label for op in openapi.get_all_operations()}
    assert labels == set(OPERATIONS)


@pytest.mark.parametrize("label", OPERATIONS)
def test_schemathesis_finds_no_server_error(openapi, server, label):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis import GenerationMode

    method, path = label.split(" ")
    operation = openapi[path][method]
    strategy = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))
    failures: list[str] = []

    @settings(max_examples=50, deadline=None, derandomize=True, database=None, print_blob=False,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
    @given(case=strategy)
    def fuzz(case) -> None:
        response = case.call(base_url=server, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
        if response.status_code >= 500:
            failures.append(f"{response.status_code} {response.text[:300]}\n    {case.as_curl_command()}")
        assert response.status_code < 500

    try:
        fuzz()
    except AssertionError:
        pytest.fail(f"{label}: server errors for generated requests:\n" + "\n".join(failures[:5]))


def test_well_formed_event_payloads_never_get_a_server_error(api, reference):
    """Hypothesis over payloads the schema cannot describe well (real ISO timestamps, known and unknown
    types and channels, attributes): a 200 with sane numbers or a 4xx with a message, never a 5xx.

    Timestamps stay in 1970-2200 and ``properties`` text or absent: out-of-range timestamps and
    ``properties`` objects have their own regression tests below."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    cfg = reference["scorer"].config
    zones = st.sampled_from([dt.timezone.utc, dt.timezone(dt.timedelta(hours=2)), dt.timezone(dt.timedelta(hours=-5, minutes=-30))])
    stamps = st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2200, 1, 1), timezones=zones).map(
        lambda d: d.isoformat())
    recent = st.datetimes(min_value=dt.datetime(2024, 1, 1), max_value=dt.datetime(2026, 3, 1), timezones=zones).map(
        lambda d: d.isoformat())
    event = st.fixed_dictionaries(
        {"timestamp": st.one_of(recent, recent, stamps), "event_type": st.sampled_from(list(cfg.event_types))},
        optional={
            "channel": st.one_of(st.none(), st.sampled_from(list(cfg.channel_names)), st.text(min_size=1, max_size=8)),
            "amount": st.one_of(st.none(), st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False)),
            "properties": st.one_of(st.none(), st.text(max_size=10)),
        },
    )
    customer = st.fixed_dictionaries({}, optional={
        "segment": st.one_of(st.sampled_from(["smb", "enterprise", "consumer"]), st.text(max_size=5), st.integers()),
        "country": st.one_of(st.sampled_from(["US", "DE", "IN"]), st.none()),
        "signup_date": recent,
        "unused": st.integers(),
    })
    body = st.fixed_dictionaries({"events": st.lists(event, max_size=40)},
                                 optional={"customer": customer, "as_of": recent, "customer_id": st.text(min_size=1, max_size=8)})

    outcomes: dict[int, int] = {}

    @settings(max_examples=60, deadline=None, derandomize=True, database=None, print_blob=False,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(payload=body)
    def fuzz(payload: dict[str, Any]) -> None:
        resp = api.post("/score_events", json=payload)
        outcomes[resp.status_code] = outcomes.get(resp.status_code, 0) + 1
        assert resp.status_code < 500, (resp.status_code, resp.text, json.dumps(payload)[:2000])
        if resp.status_code != 200:
            assert resp.status_code in (400, 422) and "error" in resp.text
            return
        out = resp.json()
        assert out["input"]["events"] == len(payload["events"])
        for key in ("next_stage_probability", "churn_probability"):
            assert out[key] is None or 0.0 <= out[key] <= 1.0, out
        assert out["percentile"] is None or 0.0 <= out["percentile"] <= 100.0
        assert out["customer_value"] is not None and math.isfinite(out["customer_value"]) and out["customer_value"] >= 0

    fuzz()
    assert outcomes.get(200, 0) >= 20, f"too few payloads were scored to mean much: {outcomes}"


# ---- bugs the first version of these tests found (fixed; kept as regression tests) -----------------

def test_event_properties_object_is_accepted(api, as_of):
    resp = api.post("/score_events", json={"events": [_event(properties={"page": "/pricing"})], "as_of": as_of})
    assert resp.status_code == 200, (resp.status_code, resp.text)


OUT_OF_RANGE = {
    "event timestamp year 1": ("/score_events", {"events": [_event(timestamp="0001-01-01T00:00:00Z")]}, "events[0].timestamp"),
    "event timestamp year 9999": ("/score_events", {"events": [_event(timestamp="9999-12-31T00:00:00Z")]}, "events[0].timestamp"),
    "score_events as_of year 1": ("/score_events", {"events": [_event()], "as_of": "0001-01-01T00:00:00Z"}, "as_of"),
    "score as_of year 1": ("/score", {"customer_ids": ["c0000001"], "as_of": "0001-01-01T00:00:00Z"}, "as_of"),
    "score as_of year 2300": ("/score", {"customer_ids": ["c0000001"], "as_of": "2300-01-01T00:00:00Z"}, "as_of"),
    "signup_date year 1": ("/score_events", {"events": [_event()], "customer": {"signup_date": "0001-01-01T00:00:00Z"},
                                             "as_of": "2026-01-01T00:00:00Z"}, "customer.signup_date"),
}


@pytest.mark.parametrize("case", list(OUT_OF_RANGE), ids=list(OUT_OF_RANGE))
def test_timestamps_outside_the_representable_range_get_a_400(api, case):
    route, body, field = OUT_OF_RANGE[case]
    resp = api.post(route, json=body)
    assert resp.status_code in (400, 422), (resp.status_code, resp.text)
    assert field in _error_text(resp)


def test_huge_amounts_are_refused_and_the_largest_allowed_keep_customer_value_finite(api):
    events = [_event(event_type="order", amount=1e308, timestamp="2025-12-01T00:00:00Z"),
              _event(event_type="order", amount=1e308, timestamp="2025-12-02T00:00:00Z")]
    resp = api.post("/score_events", json={"events": events, "as_of": "2026-01-01T00:00:00Z"})
    assert resp.status_code in (400, 422), resp.text  # amounts are capped at 1e12 by the request schema
    assert "amount" in _error_text(resp)
    largest = [_event(event_type="order" if d == 1 else "repeat_order", amount=1e12, timestamp=f"2025-12-{d:02d}T00:00:00Z")
               for d in range(1, 29)]
    resp = api.post("/score_events", json={"events": largest, "as_of": "2026-01-01T00:00:00Z"})
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["status"] == "customer" and out["churn_probability"] is not None
    # A buyer: the value model's expected spend (its trees saw nothing near 1e12 a day, and say so by
    # staying finite), never an overflow.
    assert out["value_basis"] == "expected_next_365d"
    assert math.isfinite(out["customer_value"]) and out["customer_value"] > 0 and math.isfinite(out["value_at_risk"])


def test_answers_are_strict_json():
    """The service encodes answers itself (pydantic-core): numpy scalars become numbers, NaN null."""
    import numpy as np

    from funnelcast.serving.service import _json

    body = _json({"n": np.int64(2), "x": float("nan"), "y": np.float32(0.5), "z": [np.bool_(True)]}).body
    assert b"NaN" not in body
    assert json.loads(body) == {"n": 2, "x": None, "y": 0.5, "z": [True]}
    with pytest.raises(Exception, match="cannot encode"):
        _json({"when": object()})


# ---- safety -----------------------------------------------------------------------------------------

def test_rejected_requests_put_no_request_values_and_no_traceback_in_the_log(api, server, as_of):
    """Personal data in a refused body (an e-mail as customer_id, a card and a phone number in properties)
    never reaches the server log; refusals are counted per reason on one brief WARNING line at most
    every 10 s, not logged at ERROR with a traceback per request."""
    log_path = LOGS[server]
    before = log_path.stat().st_size
    private = ["bob@example.com", "4111 1111 1111 1111", "+44 20 7946 0958"]
    event = _event(amount="lots", properties={"card": private[1], "phone": private[2]}, customer_id=private[0])
    bodies = [{"events": [event], "customer_id": private[0], "as_of": as_of},
              {"events": [_event()], "customer_id": private[0], "surprise": private[1]}]
    for _ in range(30):
        for body in bodies:
            assert api.post("/score_events", json=body).status_code == 400
    malformed = api.post("/score_events", content=f'{{"customer_id": "{private[0]}", "events": [{private[1]}'.encode(),
                         headers={"Content-Type": "application/json"})
    assert malformed.status_code == 400
    time.sleep(1)  # the server's handlers flush their lines
    with log_path.open("rb") as f:
        f.seek(before)
        written = f.read().decode(errors="replace")
    for value in private:
        assert value not in written
    assert "Traceback" not in written and " ERROR " not in written
    assert len(written) < 2_000, written  # 61 refusals: at most a few summary lines


def test_the_auth_scheme_is_case_insensitive_and_the_key_is_compared_as_serve_checks_it(server):
    for header in (f"bearer {KEY}", f"BEARER {KEY}", f"Bearer  {KEY}"):
        resp = httpx.post(f"{server}/model_info", json={}, headers={"Authorization": header}, timeout=30)
        assert resp.status_code == 200, (header, resp.text)
    for header in (f"Basic {KEY}", f"Bearer {KEY}x", "Bearer", KEY):
        assert httpx.post(f"{server}/model_info", json={}, headers={"Authorization": header}, timeout=30).status_code == 401


def test_a_body_beyond_the_limits_is_refused_with_413_before_it_is_read(api):
    from funnelcast.serving.service import MAX_BODY_BYTES

    huge = b'{"events": [' + b" " * (MAX_BODY_BYTES + 1) + b"]}"
    resp = api.post("/score_events", content=huge, headers={"Content-Type": "application/json"})
    assert resp.status_code == 413 and "larger than" in resp.json()["error"]

    def chunks():  # no Content-Length: sent chunked
        yield b'{"events": ['
        for _ in range(MAX_BODY_BYTES // 1_000_000 + 2):
            yield b" " * 1_000_000
        yield b"]}"

    resp = api.post("/score_events", content=chunks(), headers={"Content-Type": "application/json"})
    assert resp.status_code == 413
    # A chunked body within the limit is read and answered as usual.
    small = json.dumps({"events": [_event()], "as_of": "2025-07-01T00:00:00Z"}).encode()
    resp = api.post("/score_events", content=iter([small[:10], small[10:]]), headers={"Content-Type": "application/json"})
    assert resp.status_code == 200, resp.text


def test_the_gate_reads_the_key_as_serve_does(monkeypatch):
    """In-process: a key configured with surrounding whitespace is the stripped key (serve strips it too)."""
    import asyncio

    from funnelcast.serving.service import RequestGate

    async def ok(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    monkeypatch.setenv("FUNNELCAST_API_KEY", "  s3cret\n")
    gate = RequestGate(ok)

    async def status(authorization: bytes) -> int:
        sent = []

        async def send(message):
            sent.append(message)

        async def receive():
            return {"type": "http.request", "body": b"{}", "more_body": False}

        scope = {"type": "http", "path": "/score", "method": "POST",
                 "headers": [(b"authorization", authorization), (b"content-length", b"2")]}
        await gate(scope, receive, send)
        return sent[0]["status"]

    assert asyncio.run(status(b"Bearer s3cret")) == 200
    assert asyncio.run(status(b"bearer s3cret")) == 200
    assert asyncio.run(status(b"Bearer   s3cret ")) == 200  # whitespace around the token is not part of the key
    assert asyncio.run(status(b"Bearer s3cre")) == 401


def test_serve_reads_its_sources_before_starting_and_refuses_an_unreadable_one(served_models, small_sim, tmp_path):
    home, sim_dir, _ = served_models
    args = _serve_args(home, sim_dir, small_sim.end, _free_port())
    args[args.index("--events") + 1] = str(tmp_path / "no-such-events.parquet")
    started = time.monotonic()
    code, out, err = _run_to_exit(args, _clean_env(FUNNELCAST_API_KEY=KEY))
    assert code == 2 and "no such file" in err and "Traceback" not in err, (code, out, err)
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::"])
def test_insecure_serving_on_a_reachable_host_needs_a_second_flag(served_models, small_sim, host, tmp_path):
    home, sim_dir, _ = served_models
    args = [*_serve_args(home, sim_dir, small_sim.end, _free_port()), "--insecure", "--host", host]
    code, out, err = _run_to_exit(args, _clean_env())
    assert code == 2 and "--allow-insecure-remote" in err, (code, out, err)
    # Said explicitly, the check passes (the run then stops at the next one: here, a missing event source).
    args[args.index("--events") + 1] = str(tmp_path / "missing.parquet")
    code, out, err = _run_to_exit([*args, "--allow-insecure-remote"], _clean_env())
    assert code == 2 and "missing.parquet" in err and "--allow-insecure-remote" not in err, (code, out, err)


def test_the_service_is_imported_from_the_installed_package_not_the_working_directory(served_models, small_sim, tmp_path):
    """A folder holding funnelcast/serving/service.py (or serving/service.py) where serve runs is not imported."""
    home, sim_dir, _ = served_models
    marker = tmp_path / "imported-from-cwd"
    planted = f"open({str(marker)!r}, 'w').write('planted code ran')\n"
    for package in ("funnelcast/serving", "serving"):
        (tmp_path / package).mkdir(parents=True)
        (tmp_path / package / "__init__.py").write_text(planted)
        (tmp_path / package / "service.py").write_text(planted)
    (tmp_path / "funnelcast" / "__init__.py").write_text(planted)
    shutil.copy(sim_dir / "events.parquet", tmp_path / "events.parquet")
    # The installed console script, as an operator runs it (`python -m funnelcast` would itself import a
    # 'funnelcast' folder from the current directory: that is Python's rule for -m, not funnelcast's).
    exe = shutil.which("funnelcast", path=str(Path(sys.executable).parent))
    args = [exe, *_serve_args(home, sim_dir, small_sim.end, _free_port())[3:]]
    args[args.index("--events") + 1] = "events.parquet"  # relative to where serve runs
    with _serving(args, _clean_env(FUNNELCAST_API_KEY=KEY), tmp_path / "server.log", cwd=tmp_path) as (_, base):
        resp = httpx.post(f"{base}/model_info", json={}, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
        assert resp.status_code == 200 and resp.json()["population"]["customers"] > 0
    assert not marker.exists()


def test_a_restarted_worker_never_serves_a_changed_source(served_models, small_sim, tmp_path):
    """The events file changes after start-up and the worker restarts: it stays up, fails readiness and
    answers 503 saying why, instead of serving other customers (or crash-looping)."""
    import psutil

    home, sim_dir, _ = served_models
    events = tmp_path / "events.parquet"
    shutil.copy(sim_dir / "events.parquet", events)
    args = _serve_args(home, sim_dir, small_sim.end, _free_port())
    args[args.index("--events") + 1] = str(events)
    with _serving(args, _clean_env(FUNNELCAST_API_KEY=KEY), tmp_path / "server.log") as (proc, base):
        frame = pd.read_parquet(events)
        frame.iloc[: len(frame) // 2].to_parquet(events)  # half the customers' events: another population
        workers = [p for p in psutil.Process(proc.pid).children(recursive=True) if "worker" in " ".join(p.cmdline())]
        assert workers, [p.cmdline() for p in psutil.Process(proc.pid).children(recursive=True)]
        for worker in workers:
            worker.kill()
        deadline = time.monotonic() + READY_TIMEOUT
        status = None
        while time.monotonic() < deadline:
            try:
                status = httpx.get(f"{base}/readyz", timeout=2).status_code
                if status == 503:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert status == 503
        assert httpx.get(f"{base}/livez", timeout=5).status_code == 200
        resp = httpx.post(f"{base}/score", json={"customer_ids": ["c0000001"]}, headers={"Authorization": f"Bearer {KEY}"},
                          timeout=30)
        assert resp.status_code == 503 and "changed since `funnelcast serve` read it" in resp.json()["error"]

"""The funnelcast command, run as a user runs it: a real subprocess of the installed console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

EXE = shutil.which("funnelcast", path=str(Path(sys.executable).parent)) or "funnelcast"


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FUNNELCAST_THREADS": os.environ.get("FUNNELCAST_THREADS", "1")}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def simdir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    r = run("simulate", "--customers", "400", "--seed", "3", "--out", str(out), "--start", "2024-01-01", "--end", "2024-12-01")
    assert r.returncode == 0, r.stderr
    return out


def test_simulate_writes_events_customers_and_truth(simdir):
    for name in ("events", "customers", "truth"):
        assert (simdir / f"{name}.parquet").exists()
    ev = pd.read_parquet(simdir / "events.parquet")
    assert ev["customer_id"].nunique() <= 400 and len(ev) > 1000


def test_simulate_csv_on_request(tmp_path):
    r = run("simulate", "--customers", "50", "--out", str(tmp_path), "--format", "csv", "--end", "2024-03-01", "--no-truth")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "events.csv").exists()
    r = run("check", "--events", str(tmp_path / "events.csv"))
    assert r.returncode == 0, r.stderr


def test_check_reports_a_verdict_per_target(simdir):
    r = run("check", "--events", str(simdir / "events.parquet"), "--customers", str(simdir / "customers.parquet"), "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    targets = report["readiness"]["targets"]
    assert set(targets) == {
        "convert:awareness->interest", "convert:interest->consideration",
        "convert:consideration->purchase", "convert:purchase->loyalty", "churn", "value",
    }
    assert all(isinstance(t["ready"], bool) and t["verdict"] for t in targets.values())
    assert report["validation"]["rows_read"] == report["validation"]["rows_out"]
    human = run("check", "--events", str(simdir / "events.parquet"))
    assert "readiness per target" in human.stdout and "minimums" in human.stdout


def test_check_says_not_ready_when_history_is_short(tmp_path):
    r = run("simulate", "--customers", "200", "--out", str(tmp_path), "--end", "2024-03-15", "--no-truth")
    assert r.returncode == 0, r.stderr
    report = json.loads(run("check", "--events", str(tmp_path / "events.parquet"), "--json").stdout)
    churn = report["readiness"]["targets"]["churn"]
    assert churn["ready"] is False and "history" in churn["verdict"]


def test_features_one_row_per_customer(simdir, tmp_path):
    out = tmp_path / "f.parquet"
    r = run("features", "--events", str(simdir / "events.parquet"), "--customers", str(simdir / "customers.parquet"),
            "--cutoff", "2024-07-01", "--out", str(out))
    assert r.returncode == 0, r.stderr
    f = pd.read_parquet(out)
    assert f["customer_id"].is_unique
    assert len(f) == 400  # every customer of the customers table
    ev = pd.read_parquet(simdir / "events.parquet")
    ev["customer_id"] = ev["customer_id"].astype("string")
    before = ev[ev["timestamp"] < pd.Timestamp("2024-07-01", tz="UTC")].groupby("customer_id").size()
    got = f.set_index("customer_id")["count_events_all_time"]
    pd.testing.assert_series_equal(got[before.index].astype(int), before.astype(int), check_names=False)


@pytest.mark.slow
def test_demo_runs_the_main_job_end_to_end_and_train_retrains_on_its_data(tmp_path):
    r = run("demo", "--out", str(tmp_path), "--customers", "2500", "--seed", "1")
    assert r.returncode == 0, r.stderr
    for step in ("1. simulated", "2. validated", "3. readiness", "4. training set", "5. trained"):
        assert step in r.stdout
    table = pd.read_parquet(tmp_path / "training_set.parquet")
    assert len(table) > 1000 and table["customer_id"].nunique() > 500
    assert (tmp_path / "sim" / "truth.parquet").exists()
    for target in ("convert", "churn", "value"):
        assert (tmp_path / "report" / f"report_{target}.html").exists()
        assert f"funnelcast-{target} version 1 -> champion" in r.stdout
    assert "oracle" in r.stdout and (tmp_path / "mlruns" / "mlflow.db").exists()
    assert "value: spend in the 90 days after the latest test cutoff" in r.stdout and "pareto_nbd" in r.stdout

    # `train` on the demo's data and store: the truth beside the events is found, the new versions
    # match the champions on the same fold (same data, config and seed) and so become champions.
    sim = tmp_path / "sim"
    r = run("train", "--events", str(sim / "events.parquet"), "--customers", str(sim / "customers.parquet"),
            "--as-of", "2026-01-01", "--json", "--mlflow-dir", str(tmp_path / "mlruns"), "--report-dir", str(tmp_path / "r2"))
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert {"convert", "churn", "convert:awareness->interest"} <= set(result)
    for target in ("convert", "churn"):
        entry = result[target]
        assert entry["model_version"] == "2" and entry["alias"] == "champion"
        assert "not worse than the champion" in entry["decision"]
        assert entry["oracle_roc_auc"] is not None and entry["logistic_test_roc_auc"] is not None
    # The value model's own champion gate: normalised Gini, compared on the same fold.
    value = result["value"]
    assert value["model_version"] == "2" and value["alias"] == "champion"
    assert "not worse than the champion" in value["decision"] and "test gini" in value["decision"]
    # Comparing with the champions downloads their artifacts: without MLflow's progress bars between
    # funnelcast's own lines.
    assert "Downloading artifacts" not in r.stdout + r.stderr


def test_train_on_too_little_data_exits_2_naming_the_counts(simdir, tmp_path):
    import yaml

    from funnelcast.features.funnel import load_config

    raw = load_config().model_dump(mode="json")
    raw["readiness"]["min_positives"] = 100_000
    cfg = tmp_path / "strict.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    r = run("train", "--events", str(simdir / "events.parquet"), "--mlflow-dir", str(tmp_path / "mlruns"),
            "--as-of", "2024-12-01", "--config", str(cfg))
    assert r.returncode == 2
    assert "no target has enough labelled data" in r.stderr and "positives" in r.stderr
    assert "Traceback" not in r.stderr


def test_training_set_command(simdir, tmp_path):
    out = tmp_path / "t.parquet"
    r = run("training-set", "--events", str(simdir / "events.parquet"), "--out", str(out))
    assert r.returncode == 0, r.stderr
    t = pd.read_parquet(out)
    assert {"convert_label", "churn_label", "stage", "cutoff"} <= set(t.columns)


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        ("customer_id,timestamp\n1,2024-01-01T00:00:00Z\n", "event_type"),
        ("customer_id,timestamp,event_type\n1,yesterday,order\n", "unparseable"),
        ("customer_id,timestamp,event_type\n1,2024-01-01 10:00,order\n", "source_timezone"),
        ("customer_id,timestamp,event_type\n1,2024-01-01T00:00:00Z,teleport\n", "teleport"),
        ("customer_id,timestamp,event_type,amount\n1,2024-01-01T00:00:00Z,order,-5\n", "negative"),
        ("customer_id,timestamp,event_type\n,2024-01-01T00:00:00Z,order\n", "customer_id"),
        ("customer_id,timestamp,event_type\n1,2199-01-01T00:00:00Z,order\n", "as-of"),
        ("customer_id,timestamp,event_type\n1,2999-01-01T00:00:00Z,order\n", "outside the years"),
    ],
)
def test_bad_input_exits_nonzero_with_one_paragraph(tmp_path, content, expect):
    path = tmp_path / "events.csv"
    path.write_text(content)
    for cmd in (["check", "--events", str(path)], ["features", "--events", str(path), "--cutoff", "2024-02-01", "--out", str(tmp_path / "o.parquet")]):
        r = run(*cmd)
        assert r.returncode == 2
        assert expect in r.stderr
        assert "Traceback" not in r.stderr and "Traceback" not in r.stdout


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["check", "--events", "/nonexistent/events.parquet"], "no such file"),
        (["check", "--events", "sqlite:///nowhere.db"], "names no table"),
        (["features", "--events", "x.parquet", "--cutoff", "not-a-date", "--out", "o.parquet"], "--cutoff 'not-a-date' is not an ISO 8601 date"),
        (["check", "--events", "x.parquet", "--config", "/nonexistent.yaml"], "does not exist"),
    ],
)
def test_bad_arguments_exit_nonzero_without_traceback(args, expect):
    r = run(*args)
    assert r.returncode == 2
    assert expect in r.stderr and "Traceback" not in r.stderr


def test_bad_config_names_the_field(tmp_path, simdir):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("stages:\n  - name: a\n    event_types: [x]\n  - name: b\n    event_types: [x]\nchurn:\n  applies_from_stage: b\n")
    r = run("check", "--events", str(simdir / "events.parquet"), "--config", str(cfg))
    assert r.returncode == 2
    assert "two stages" in r.stderr and "Traceback" not in r.stderr


def test_truth_is_found_beside_the_events_in_either_format(tmp_path):
    from funnelcast import EventDataError, Project, find_truth

    (tmp_path / "events.csv").write_text("customer_id,timestamp,event_type\n")
    assert find_truth(str(tmp_path / "events.csv")) is None
    pd.DataFrame({"customer_id": ["a"], "cutoff": ["2024-01-01T00:00:00Z"], "p_churn": [0.1]}).to_csv(tmp_path / "truth.csv", index=False)
    assert list(find_truth(str(tmp_path / "events.csv"))["customer_id"]) == ["a"]
    assert find_truth("sqlite:///crm.db#events") is None
    events = pd.DataFrame({"customer_id": ["a"], "timestamp": ["2024-01-01T00:00:00Z"], "event_type": ["order"]})
    with pytest.raises(EventDataError, match="truth table .*nope.parquet.*no such file"):
        Project().load(events, truth=str(tmp_path / "nope.parquet"))

def test_only_errors_raised_on_purpose_become_a_paragraph_and_a_bug_shows_as_a_bug(tmp_path, monkeypatch):
    """``funnelcast check`` in-process: a FunnelcastError is one paragraph with exit code 2; any other
    exception (a bug, here a ValueError deep in the library) keeps its type and traceback."""
    from typer.testing import CliRunner

    from funnelcast.cli import app
    from funnelcast.features.errors import TrainingDataError
    from funnelcast.project import Project

    events = tmp_path / "events.csv"
    events.write_text("customer_id,timestamp,event_type\n1,2024-01-01T00:00:00Z,order\n")
    runner = CliRunner()

    def on_purpose(self, data, customers=None, *, data_end=None):
        raise TrainingDataError("not enough history for anything")

    monkeypatch.setattr(Project, "check", on_purpose)
    result = runner.invoke(app, ["check", "--events", str(events)])
    assert result.exit_code == 2 and result.exception is not None  # typer.Exit(2)
    assert "funnelcast check: bad input. not enough history for anything" in " ".join(result.output.split())

    def bug(self, data, customers=None, *, data_end=None):
        return {}["no such key"]

    monkeypatch.setattr(Project, "check", bug)
    result = runner.invoke(app, ["check", "--events", str(events)])
    assert result.exit_code == 1 and isinstance(result.exception, KeyError)
    assert "bad input" not in result.output


def test_an_unwritable_output_folder_is_a_paragraph(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    r = run("simulate", "--customers", "50", "--end", "2024-03-01", "--no-truth", "--out", str(blocker / "sim"))
    assert r.returncode == 2 and "bad destination" in r.stderr and "could not write the simulation" in r.stderr
    assert "Traceback" not in r.stderr


def test_check_reports_how_customers_and_events_match_and_warns_when_they_do_not(tmp_path):
    events = tmp_path / "events.csv"
    events.write_text("customer_id,timestamp,event_type\nc1,2024-01-01T00:00:00Z,order\nc2,2024-01-02T00:00:00Z,order\n")
    customers = tmp_path / "customers.csv"
    customers.write_text("customer_id,segment\nbob@example.com,smb\nalice@example.com,smb\nc1,smb\n")
    r = run("check", "--events", str(events), "--customers", str(customers), "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)["readiness"]
    assert report["customers_matched"] == {
        "customers_table_ids": 3, "of_them_with_events": 1, "share_of_table_with_events": 0.3333,
        "event_customer_ids": 2, "of_them_in_table": 1, "share_of_event_customers_in_table": 0.5}
    assert any("only 33% of the customers table's 3 ids have events" in w for w in report["warnings"])
    r = run("check", "--events", str(events), "--customers", str(customers))
    assert "1 of its 3 ids have events; 1 of the 2 customers in the events are in it" in r.stdout
    assert "warning:" in r.stdout


def test_features_refuse_a_cutoff_after_the_as_of_time(tmp_path):
    events = tmp_path / "events.csv"
    events.write_text("customer_id,timestamp,event_type\nc1,2025-01-01T00:00:00Z,order\n")
    r = run("features", "--events", str(events), "--cutoff", "2027-01-01", "--as-of", "2026-01-01", "--out", str(tmp_path / "f.parquet"))
    assert r.returncode == 2 and "is after the data's extraction time (as-of) 2026-01-01" in r.stderr, r.stderr
    assert not (tmp_path / "f.parquet").exists()
    r = run("features", "--events", str(events), "--cutoff", "2026-01-01", "--as-of", "2026-01-01", "--out", str(tmp_path / "f.parquet"))
    assert r.returncode == 0, r.stderr

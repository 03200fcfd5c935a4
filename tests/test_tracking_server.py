"""Training against a real MLflow tracking server started on loopback (``MLFLOW_TRACKING_URI`` use)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest

from funnelcast.training import tracking
from funnelcast.training.train import train

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def mlflow_server(tmp_path):
    exe = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
    assert exe, "the mlflow command is installed with funnelcast"
    port = _free_port()
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [exe, "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "MLFLOW_TRACKING_URI": ""},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"mlflow server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    yield url, tmp_path
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def test_training_logs_and_registers_through_a_tracking_server(mlflow_server, small_table, config, monkeypatch):
    url, folder = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    result = train(small_table, config, report_dir=folder / "report")
    assert result.tracking_uri == url
    client = mlflow.MlflowClient(tracking_uri=url)
    for target, tr in result.targets.items():
        assert str(client.get_model_version_by_alias(f"funnelcast-{target}", "champion").version) == tr.version
        metric = "test_gini" if target == "value" else "test_roc_auc"
        assert client.get_run(tr.run_id).data.metrics[metric] > 0.5, target
    # The artifacts went through the server into its artifact store, not into a local folder.
    assert any((folder / "server-artifacts").rglob("report_churn.html"))
    assert any((folder / "server-artifacts").rglob("report_value.html"))
    version, model = tracking.load_model("funnelcast-churn")
    assert version == result.targets["churn"].version
    assert model.feature_names_ == result.targets["churn"].backtest.model.feature_names_


def test_an_empty_registry_names_the_store_and_the_model(tmp_path):
    tracking.connect(home=tmp_path / "empty")
    with pytest.raises(tracking.RegistryError, match="no model 'funnelcast-churn' with alias 'champion' in the registry at sqlite:///"):
        tracking.load_model("funnelcast-churn")

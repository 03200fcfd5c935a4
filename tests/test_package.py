"""The installed package: one namespace, nothing generic at the top level, and a public API."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess:
    # -P: do not put the working directory on sys.path, so the repository's own folders are not seen
    # as top-level packages; only what the install provides is importable.
    return subprocess.run([sys.executable, "-P", "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_nothing_installs_as_features_training_or_serving(tmp_path):
    for name in ("features", "training", "serving"):
        result = _run(f"import {name}", tmp_path)
        assert result.returncode != 0 and "No module named" in result.stderr, (name, result.stderr)
    result = _run("import funnelcast.features.funnel, funnelcast.training.model, funnelcast.serving.scoring", ROOT)
    assert result.returncode == 0, result.stderr


def test_a_notebook_folder_with_its_own_features_module_still_imports_funnelcast(tmp_path):
    (tmp_path / "features.py").write_text("RAISE = 1\n")
    (tmp_path / "serving.py").write_text("RAISE = 1\n")
    code = ("import sys; sys.path.insert(0, '.'); import features; assert features.RAISE == 1; "
            "from funnelcast.features.funnel import load_config; print(load_config().name)")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "five-stage-journey"

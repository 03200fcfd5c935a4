"""bench/scale.py's bookkeeping: stages follow one another with their own peak, and train's progress
messages map to the stages its table reports."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import scale  # noqa: E402


def test_stages_close_in_order_with_their_own_peak():
    stages = scale.Stages()
    stages.start("small")
    stages.start("small")  # the same stage again: one entry
    stages.start("big")
    block = np.ones(64 * 1024 * 1024 // 8)  # 64 MiB touched inside "big"
    block.sum()
    stages.start("after")
    del block
    stages.close()
    names = [s["stage"] for s in stages.done]
    assert names == ["small", "big", "after"]
    small, big, _ = stages.done
    assert all(s["wall_s"] >= 0 and s["cpu_s"] >= 0 for s in stages.done)
    if big["peak_rss_bytes"] is not None:  # Linux: the peak is reset per stage
        assert big["peak_rss_bytes"] - big["rss_before_bytes"] >= 60 * 1024 * 1024
        assert small["peak_rss_bytes"] < big["peak_rss_bytes"]


def test_train_progress_messages_map_to_stages():
    assert scale._train_stage("convert: fold 1/3: train 2024-04-01..2025-01-01") == "convert: backtest"
    assert scale._train_stage("churn: lightgbm selected (roc_auc 0.9500 over 3 folds); refitting it on every "
                              "labelled cutoff") == "churn: refit"
    assert scale._train_stage("value: fitting the BTYD baselines (BG/NBD, MBG/NBD, Pareto/NBD, Gamma-Gamma)") == "value: btyd"
    assert scale._train_stage("value: logging to MLflow and registering funnelcast-value") == "value: register + report"

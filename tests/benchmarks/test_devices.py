"""Smoke test of benchmarks/devices.py on a tiny prepared workspace (CPU; no times asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from metarec_tasks.params import update_params_file
from tests.helpers import REPO, build_episodes_workspace

FAST = {"meta.epochs": 2, "meta.patience": 2, "ranking.meta.epochs": 2}


def test_devices_benchmark_runs_the_model_stages_and_reads_back_their_figures(tmp_path):
    ws = build_episodes_workspace(tmp_path)
    update_params_file(ws / "params.yaml", FAST)
    out = tmp_path / "devices.json"
    command = [sys.executable, "-m", "benchmarks.devices", "--workspace", str(ws), "--out", str(out)]
    result = subprocess.run([*command, "--devices", "cpu"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    cpu = json.loads(out.read_text())["results"]["cpu"]
    assert list(cpu["stages"]) == ["train", "finetune", "evaluate"]
    assert all(stage["wall_s"] > 0 for stage in cpu["stages"].values())
    assert cpu["rating_validation"]["metric"] == "val_mae" and cpu["rating_validation"]["epochs"] <= 2
    assert cpu["ranker_validation"]["metric"] == "val_recall@20"
    assert "model.mae" in cpu["headline"]
    assert "| cpu | train |" in out.with_suffix(".md").read_text()
    if not torch.cuda.is_available():  # asked for a GPU that is not there: one line, no report
        refused = subprocess.run([*command, "--devices", "cuda"], cwd=REPO, capture_output=True, text=True)
        assert refused.returncode == 1 and refused.stderr.strip() == (
            "no CUDA device on this machine: run with --devices cpu"
        )

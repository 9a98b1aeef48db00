"""`dvc repro` runs the seven stages end to end in a fresh workspace, then has nothing left to do."""

import json
import subprocess

import pytest

from tests.helpers import BIN

STAGES = ("ingest", "validate", "episodes", "train", "finetune", "evaluate", "publish")


def dvc(root, *args):
    result = subprocess.run([str(BIN / "dvc"), *args], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.mark.slow
def test_dvc_repro_end_to_end_then_no_op(workspace):
    first = dvc(workspace, "repro")
    for stage in STAGES:
        assert f"Running stage '{stage}'" in first

    receipt = json.loads((workspace / "reports" / "publish.json").read_text())
    assert receipt["published"] and receipt["recommendation_rows"] > 0
    metrics = json.loads((workspace / "reports" / "metrics.json").read_text())["predictors"]
    assert metrics["model"]["mae"] < metrics["global_mean"]["mae"]

    second = dvc(workspace, "repro")
    assert "Running stage" not in second
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in second
    assert "up to date" in dvc(workspace, "status")


@pytest.mark.slow
def test_a_param_change_reruns_only_downstream_stages(workspace):
    from metarec_tasks.params import update_params_file

    dvc(workspace, "repro")
    update_params_file(workspace / "params.yaml", {"finetune.top_k": 3})
    out = dvc(workspace, "repro")
    for stage in ("ingest", "validate", "episodes", "train"):
        assert f"Stage '{stage}' didn't change" in out
    assert "Running stage 'finetune'" in out

"""`dvc exp run -S key=value` (docs/operations.md, experiments): the experiment runs the stages up to
its target with the value set, `dvc exp show` lists it with that value, and a value the params model
refuses fails the stage with the one-line ConfigError and records no experiment."""

import json
import subprocess

import pytest

from tests.helpers import BIN


def dvc(root, *args, ok=True):
    result = subprocess.run([str(BIN / "dvc"), *args], cwd=root, capture_output=True, text=True)
    assert (result.returncode == 0) == ok, result.stdout + result.stderr
    return result.stdout + result.stderr


def experiments(root) -> dict[str, dict]:
    """Experiment name → its params.yaml, from `dvc exp show --json`."""
    shown = json.loads(dvc(root, "exp", "show", "--json"))
    return {
        rev["name"]: rev["data"]["params"]["params.yaml"]["data"]
        for commit in shown
        for experiment in commit.get("experiments") or []
        for rev in experiment["revs"]
    }


@pytest.mark.slow
def test_dvc_exp_run_sets_a_param_for_one_experiment(workspace):
    out = dvc(workspace, "exp", "run", "validate", "-S", "validate.max_bad_row_share=0.2", "-n", "loose")
    assert "Running stage 'validate'" in out and "Running stage 'episodes'" not in out  # stops at target
    assert experiments(workspace)["loose"]["validate"]["max_bad_row_share"] == 0.2
    quality = json.loads((workspace / "reports" / "data_quality.json").read_text())
    shares = {c["expected"] for c in quality["checks"] if c["check"] == "max_bad_row_share"}
    assert shares == {"<= 0.2"}  # the experiment's value reached the stage
    assert not (workspace / "warehouse").exists()  # publish did not run: nothing was published

    refused = dvc(
        workspace, "exp", "run", "validate", "-S", "validate.max_bad_row_share=2", "-n", "bad", ok=False
    )
    assert "validate.max_bad_row_share: Input should be less than or equal to 1 (got 2)" in refused
    assert "Traceback" not in refused and "bad" not in experiments(workspace)

"""Expected failures end with a clear message and an exit code — never a traceback."""

import subprocess

import pandas as pd
import pytest

from metarec_tasks.orchestration.airflow_tasks import StageFailed, run_dvc_stage
from metarec_tasks.paths import Workspace
from tests.helpers import BIN


def metarec(root, *args):
    return subprocess.run([str(BIN / "metarec"), "--root", str(root), *args], capture_output=True, text=True)


def _break_raw_events(root):
    path = Workspace(root).raw / "events.parquet"
    events = pd.read_parquet(path)
    events["event_type"] = "hover"
    events.to_parquet(path)


def test_bad_data_exits_2_with_a_message_not_a_traceback(workspace):
    assert metarec(workspace, "ingest").returncode == 0
    _break_raw_events(workspace)
    result = metarec(workspace, "validate")
    assert result.returncode == 2
    assert "failed a data-quality check" in result.stderr and "max_bad_row_share" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_foreign_model_file_is_refused(workspace):
    ws = Workspace(workspace)
    ws.models.mkdir(parents=True)
    ws.model_file.write_bytes(b"definitely not a torch file")
    for stage in ("ingest", "validate", "episodes"):
        assert metarec(workspace, stage).returncode == 0
    result = metarec(workspace, "finetune")
    assert result.returncode == 4 and "is not a MetaRec model file" in result.stderr
    assert "Traceback" not in result.stderr


def test_param_prints_one_value(workspace):
    result = metarec(workspace, "param", "run.run_date")
    assert result.returncode == 0 and result.stdout.strip() == "2026-10-20"


@pytest.mark.slow
def test_dag_stage_reports_bad_data_as_not_retryable(workspace):
    run_dvc_stage("ingest", workspace)
    _break_raw_events(workspace)
    with pytest.raises(StageFailed) as err:
        run_dvc_stage("validate", workspace)
    assert not err.value.retryable
    assert "data-quality check failed" in str(err.value)

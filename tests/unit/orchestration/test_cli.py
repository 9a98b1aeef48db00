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


def test_a_stage_logs_levels_survive_into_the_task_log_and_a_skip_is_one_line(tmp_path, caplog):
    """The DAG task re-logs the stage's lines at their own level; DVC's skip becomes one clear line."""
    import logging
    import sys

    from metarec_tasks.orchestration.airflow_tasks import run_command

    lines = [
        "2026-12-01 02:00:00,000 WARNING metarec_tasks.logs.landing: landing partition x is missing",
        "2026-12-01 02:00:01,000 ERROR metarec: validate failed a data-quality check: ...",
        "Stage 'ingest' didn't change, skipping",
    ]
    script = "; ".join(f"print({line!r})" for line in lines)
    with caplog.at_level(logging.INFO, logger="metarec_tasks.orchestration.airflow_tasks"):
        run_command([sys.executable, "-c", script], tmp_path, "ingest")
    levels = {r.getMessage(): r.levelno for r in caplog.records}
    assert levels[f"[ingest] {lines[0]}"] == logging.WARNING
    assert levels[f"[ingest] {lines[1]}"] == logging.ERROR
    assert levels[f"[ingest] {lines[2]}"] == logging.INFO
    assert (
        levels["stage ingest: up to date (inputs, code and params unchanged), skipped by DVC"] == logging.INFO
    )


def test_a_shard_before_train_exits_2_naming_what_is_missing(workspace):
    result = metarec(workspace, "finetune-shard", "0")
    assert result.returncode == 2
    assert "events.parquet is missing" in result.stderr and "dvc repro train" in result.stderr
    assert "Traceback" not in result.stderr

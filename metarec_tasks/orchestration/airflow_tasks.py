"""What the Airflow tasks do, as plain functions: the bridge between a DAG run and DVC.

A nightly run writes its settings into `params.yaml`, runs each stage with
`dvc repro --single-item <stage>` in the pipeline workspace, then pushes the DVC outputs and records
the exact hashes (`dvc.lock`) in the warehouse. Because the stages run through DVC, a scheduled run,
a manual trigger and a laptop `dvc repro` execute identical code with identical caching.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections import deque
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from metarec_tasks.errors import EXIT_DATA_QUALITY, retryable
from metarec_tasks.params import PARAMS_FILE, load_params
from metarec_tasks.paths import PROJECT_ROOT, Workspace
from metarec_tasks.run_settings import apply_run_settings
from metarec_tasks.stages import STAGES

log = logging.getLogger(__name__)

WORKSPACE_ENV = "METAREC_WORKSPACE"
COMMIT_ENV = "METAREC_GIT_COMMIT"  # "1": commit params.yaml + dvc.lock after each run
OUTPUT_TAIL_LINES = 40
LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")  # as metarec's log format writes them
SHARD_TASK = "recommend_shard"  # the DAG's task mapped over the user shards of finetune's top-K
DVC_UP_TO_DATE = "didn't change, skipping"  # `dvc repro` for a stage whose deps, params and outs match

# DAG Param name → params.yaml key. `None` values leave params.yaml as committed.
CONF_TO_PARAMS = {
    "algorithm": "meta.algorithm",
    "meta_epochs": "meta.epochs",
    "force_publish": "publish.force",
    "source": "source.kind",
}


# What each stage produces, as Airflow Assets (lineage in the Assets view; a downstream DAG can be
# scheduled on `metarec_recommendations_published`): asset name → the `Workspace` property of its path.
STAGE_ASSETS: dict[str, dict[str, str]] = {
    "ingest": {"metarec_raw_logs": "raw"},
    "validate": {"metarec_validated_logs": "validated", "metarec_data_quality": "data_quality_report"},
    "episodes": {"metarec_episodes": "episodes"},
    "train": {"metarec_models": "models"},
    "finetune": {"metarec_predictions": "predictions"},
    "evaluate": {"metarec_evaluation": "metrics"},
    "publish": {"metarec_recommendations_published": "publish_receipt", "metarec_run_page": "run_page"},
}


def stage_assets(stage: str, root: Path) -> list:
    """The Assets a stage's task updates (file URIs under the workspace)."""
    from airflow.sdk import Asset

    ws = Workspace(root.resolve())
    return [Asset(uri=getattr(ws, path).as_uri(), name=name) for name, path in STAGE_ASSETS[stage].items()]


class StageFailed(RuntimeError):
    def __init__(self, stage: str, returncode: int, tail: str):
        self.stage, self.returncode = stage, returncode
        kind = "data-quality check failed" if returncode == EXIT_DATA_QUALITY else f"exit code {returncode}"
        super().__init__(f"stage {stage!r} failed ({kind}):\n{tail}")

    @property
    def retryable(self) -> bool:
        """Bad data stays bad on a retry; other failures (a lost worker, a full disk) may not."""
        return retryable(self.returncode)


def workspace_root() -> Path:
    """The git + DVC workspace the pipeline runs in (default: this checkout)."""
    return Path(os.environ.get(WORKSPACE_ENV) or PROJECT_ROOT)


def run_date_for(conf_run_date: str | None, logical_date: datetime | None) -> date:
    """An explicit run date wins; a scheduled run processes the day that just ended."""
    if conf_run_date:
        return date.fromisoformat(str(conf_run_date))
    if logical_date is None:
        raise ValueError("no run_date given and the run has no logical date")
    return (logical_date - timedelta(days=1)).date()


def prepare_run(root: Path, conf: dict[str, Any], logical_date: datetime | None) -> dict[str, Any]:
    """Write this run's settings into params.yaml (only the keys that change), after putting back
    what the previous run changed: no run's settings outlive it (`run_settings.py`)."""
    overrides: dict[str, Any] = {"run.run_date": run_date_for(conf.get("run_date"), logical_date).isoformat()}
    for name, key in CONF_TO_PARAMS.items():
        if conf.get(name) is not None:
            overrides[key] = conf[name]
    changed = apply_run_settings(Workspace(root), overrides)
    params = load_params(root / PARAMS_FILE)
    log.info("run %s: params %s (%s)", params.run.run_id, overrides, "updated" if changed else "unchanged")
    return {"run_id": params.run.run_id, "overrides": overrides, "params_changed": changed}


def _env() -> dict[str, str]:
    """The stage commands (`metarec`, `dvc`) live next to this interpreter; make sure they are found."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


def _tool(name: str) -> str:
    """`dvc` or `metarec`: the one next to this interpreter when there is one."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def run_command(args: list[str], root: Path, stage: str) -> None:
    """Run a command, stream its output to the task log, raise StageFailed with the tail on failure."""
    log.info("$ %s (in %s)", " ".join(args), root)
    tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
    with subprocess.Popen(
        args, cwd=root, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        assert proc.stdout is not None
        skipped = False
        for line in proc.stdout:
            text = line.rstrip()
            tail.append(text)
            skipped = skipped or DVC_UP_TO_DATE in text
            log.log(line_level(text), "[%s] %s", stage, text)
        returncode = proc.wait()
    if returncode == 0 and skipped:
        log.info("stage %s: up to date (inputs, code and params unchanged), skipped by DVC", stage)
    if returncode != 0:
        raise StageFailed(stage, stage_exit_code(root, stage, returncode), "\n".join(tail))


def line_level(line: str) -> int:
    """The level a stage's own log line was written at (`… ERROR metarec: …`), so the task log keeps
    its warnings and errors as such; other output (DVC's, progress) is INFO."""
    for name in LEVELS:
        if f" {name} " in line[:60]:
            return logging.getLevelName(name)
    return logging.INFO


def stage_exit_code(root: Path, stage: str, returncode: int) -> int:
    """`dvc repro` exits with its own code when a stage command fails; the stage's exit code is
    what `metarec <stage>` recorded in its status file (the command's own code when there is none)."""
    status = Workspace(root).stage_status(stage)
    recorded = json.loads(status.read_text()).get("exit_code") if status.is_file() else None
    return int(recorded) if recorded else returncode


def run_dvc_stage(stage: str, root: Path | None = None) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    root = root or workspace_root()
    Workspace(root).stage_status(stage).unlink(missing_ok=True)  # only this attempt's outcome counts
    run_command([_tool("dvc"), "repro", "--single-item", stage], root, stage)


def shard_tasks(shards: int) -> list[int]:
    """The user shards that run as their own DAG tasks: none for one shard — `finetune` computes it in
    its own process, where a separate task would only choose the night's candidates a second time."""
    return list(range(shards)) if shards > 1 else []


def run_shard(index: int, root: Path | None = None) -> None:
    """One user shard of finetune's published top-K, run outside DVC, beside the other shards: DVC
    would run shards one after another (one repository lock per workspace); the `finetune` stage
    reads the shard back, or computes it when it is missing or stale (personalization/shards.py)."""
    root = root or workspace_root()
    run_command([_tool("metarec"), "finetune-shard", str(index)], root, f"finetune shard {index}")


def version_run(root: Path, airflow_run_id: str | None) -> dict[str, Any]:
    """Push DVC outputs to the remote and record the lock (exact data/model hashes) in the warehouse."""
    from metarec_tasks.publishing.warehouse import open_warehouse, record_versions

    params = load_params(root / PARAMS_FILE)
    run_command([_tool("dvc"), "push", "--quiet"], root, "version")
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    recorded = record_versions(open_warehouse(params, root), params.run.run_id, lock, airflow_run_id)
    committed = False
    if os.environ.get(COMMIT_ENV) == "1":
        committed = _git_commit(root, f"metarec run {params.run.run_id} ({airflow_run_id})")
    return {
        "run_id": params.run.run_id,
        "recorded": recorded,
        "committed": committed,
        "stages": sorted(lock.get("stages", {})),
    }


def _git_commit(root: Path, message: str) -> bool:
    run_command(["git", "add", PARAMS_FILE, "dvc.lock"], root, "version")
    staged = subprocess.run(["git", "diff", "--cached", "--quiet"], cwd=root)
    if staged.returncode == 0:
        return False
    run_command(["git", "commit", "--quiet", "-m", message], root, "version")
    return True

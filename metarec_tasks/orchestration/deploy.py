"""Deployment helpers: set up the shared pipeline workspace and drive Airflow's REST API v2.

A scale-out deployment (docker/docker-compose.yaml, or Kubernetes) runs every Airflow component in its
own container; they share one git + DVC workspace on a volume. `init_workspace` is what the compose init
service runs to create or refresh that workspace from the project files baked into the image, and
`AirflowClient` is how an operator (or the topology test) triggers a run with parameters and waits for it.

    python -m metarec_tasks.orchestration.deploy admin-user  # AIRFLOW_ADMIN_USERNAME / _PASSWORD
    python -m metarec_tasks.orchestration.deploy init-workspace /data/workspace \
        --set orchestration.gpu_queue=gpu
    python -m metarec_tasks.orchestration.deploy trigger --url http://localhost:8080 \
        --conf '{"meta_epochs": 3}' --wait
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from metarec_tasks.params import PARAMS_FILE, update_params_file
from metarec_tasks.paths import PROJECT_ROOT
from metarec_tasks.stages import GPU_STAGES

log = logging.getLogger(__name__)

DAG_ID = "metarec_nightly"
GPU_POD_TEMPLATE_ENV = "METAREC_GPU_POD_TEMPLATE"  # set under the KubernetesExecutor only
# The pipeline definition a workspace needs; params.yaml is only copied into a new workspace, so
# settings an operator changed there survive an image upgrade.
PIPELINE_FILES = (
    "dvc.yaml",
    ".dvcignore",
    ".gitignore",
    ".dvc/config",
    ".dvc/.gitignore",
    "landing/README.md",  # the landing folder is a DVC dependency of ingest: it must exist
)
CODE_DIR = "metarec_tasks"  # dvc.yaml names the stage code as deps, so the workspace carries a copy
REPORT_GITIGNORES = ("reports/.gitignore", "reports/plots/.gitignore")
# Who commits params.yaml + dvc.lock after each run (METAREC_GIT_COMMIT=1); containers have no ~/.gitconfig.
GIT_IDENTITY = {"user.name": "MetaRec", "user.email": "metarec@localhost"}
TERMINAL_STATES = frozenset({"success", "failed"})
PASSWORDS_FILE_ENV = "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"


def gpu_executor_config(stage: str) -> dict[str, Any]:
    """Per-task executor config: the GPU pod template for GPU stages under the KubernetesExecutor.

    Empty everywhere else (Celery, local), so the DAG stays executor-agnostic; the template file is
    read by the KubernetesExecutor, which needs no import here.
    """
    template = os.environ.get(GPU_POD_TEMPLATE_ENV)
    if stage in GPU_STAGES and template:
        return {"pod_template_file": template}
    return {}


def parse_assignments(pairs: list[str]) -> dict[str, Any]:
    """`key=value` pairs into dotted-key overrides; values are YAML (`3` is an int, `gpu` a str)."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"expected key=value, got {pair!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def init_workspace(
    root: Path, source: Path, overrides: dict[str, Any] | None = None, remote: str | None = None
) -> bool:
    """Create or refresh a git + DVC pipeline workspace from the project files at `source`.

    Idempotent: the pipeline files and stage code are refreshed (DVC re-runs the stages whose code
    changed), params.yaml is created once and then only receives `overrides`, and the result is
    committed. Returns whether anything was committed.
    """
    root.mkdir(parents=True, exist_ok=True)
    for name in (*PIPELINE_FILES, *REPORT_GITIGNORES):
        if (source / name).exists():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source / name, root / name)
    if not (root / PARAMS_FILE).exists():
        shutil.copy(source / PARAMS_FILE, root / PARAMS_FILE)
    shutil.rmtree(root / CODE_DIR, ignore_errors=True)
    shutil.copytree(source / CODE_DIR, root / CODE_DIR, ignore=shutil.ignore_patterns("__pycache__"))
    if overrides:
        update_params_file(root / PARAMS_FILE, overrides)
    if not (root / ".git").exists():
        _git(root, "init", "-q")
    for key, value in GIT_IDENTITY.items():
        if subprocess.run(["git", "config", "--local", key], cwd=root, capture_output=True).returncode:
            _git(root, "config", "--local", key, value)
    if remote:
        # .dvc/config.local is git-ignored: a deployment's remote never lands in the project's history.
        subprocess.run(
            ["dvc", "remote", "add", "--local", "-f", "-d", "deploy", remote], cwd=root, check=True
        )
    _git(root, "add", "-A")
    if subprocess.run(["git", "diff", "--cached", "--quiet"], cwd=root).returncode == 0:
        log.info("workspace %s is up to date", root)
        return False
    _git(root, "commit", "-q", "-m", "metarec deployment: refresh pipeline and code")
    log.info("workspace %s initialized from %s", root, source)
    return True


def write_admin_user(passwords_file: Path, username: str, password: str) -> None:
    """Set a user's password in the simple auth manager's passwords file (other users are kept).

    Airflow generates random passwords into this file for users it does not find there; writing it
    first is how a deployment chooses the admin password from its secrets instead.
    """
    if not username or not password:
        raise ValueError("an admin user needs a non-empty username and password")
    passwords = json.loads(passwords_file.read_text() or "{}") if passwords_file.exists() else {}
    passwords[username] = password
    passwords_file.parent.mkdir(parents=True, exist_ok=True)
    passwords_file.touch(mode=0o600)
    passwords_file.write_text(json.dumps(passwords) + "\n")
    log.info("admin user %r written to %s", username, passwords_file)


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True)


class AirflowClient:
    """The few REST API v2 calls an operator needs: a token, a trigger, a run's state, its tasks."""

    def __init__(self, base_url: str, username: str | None = None, password: str | None = None):
        import httpx  # an Airflow dependency; imported here so DAG parsing never pays for it

        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=30)
        token = self._token(username, password)
        self._http.headers["Authorization"] = f"Bearer {token}"

    def _token(self, username: str | None, password: str | None) -> str:
        """A JWT from the auth manager: POST credentials, or GET when every user is an admin."""
        if username is None:
            response = self._http.get("/auth/token")
        else:
            response = self._http.post("/auth/token", json={"username": username, "password": password})
        response.raise_for_status()
        return response.json()["access_token"]

    def get(self, path: str) -> dict[str, Any]:
        response = self._http.get(f"/api/v2{path}")
        response.raise_for_status()
        return response.json()

    def dag_ready(self, dag_id: str = DAG_ID) -> bool:
        """Whether the dag-processor has serialized the DAG (the API answers 404 until then)."""
        response = self._http.get(f"/api/v2/dags/{dag_id}")
        return response.status_code == 200

    def unpause(self, dag_id: str = DAG_ID) -> None:
        self._http.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": False}).raise_for_status()

    def trigger(
        self, conf: dict[str, Any], dag_id: str = DAG_ID, logical_date: datetime | None = None
    ) -> dict[str, Any]:
        """A manual run; without a logical date the DAG processes `conf["run_date"]`."""
        body = {"logical_date": logical_date.isoformat() if logical_date else None, "conf": conf}
        response = self._http.post(f"/api/v2/dags/{dag_id}/dagRuns", json=body)
        response.raise_for_status()
        return response.json()

    def wait(self, run_id: str, dag_id: str = DAG_ID, timeout: float = 600, poll: float = 2) -> str:
        """Poll until the run finishes; returns its final state (raises TimeoutError)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.get(f"/dags/{dag_id}/dagRuns/{run_id}")["state"]
            if state in TERMINAL_STATES:
                return state
            time.sleep(poll)
        raise TimeoutError(f"run {run_id} of {dag_id} did not finish within {timeout} s")

    def task_instances(self, run_id: str, dag_id: str = DAG_ID) -> list[dict[str, Any]]:
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]

    def close(self) -> None:
        self._http.close()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m metarec_tasks.orchestration.deploy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init-workspace", help="create or refresh the shared pipeline workspace")
    init.add_argument("root", type=Path)
    init.add_argument("--source", type=Path, default=os.environ.get("METAREC_SOURCE") or PROJECT_ROOT)
    init.add_argument("--remote", help="DVC remote URL or path (kept in .dvc/config.local)")
    init.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="params.yaml override")
    sub.add_parser("admin-user", help="write the admin user from AIRFLOW_ADMIN_USERNAME/_PASSWORD")
    trigger = sub.add_parser("trigger", help="trigger metarec_nightly through the REST API v2")
    trigger.add_argument("--url", default=os.environ.get("AIRFLOW_API_URL", "http://localhost:8080"))
    trigger.add_argument("--username", default=os.environ.get("AIRFLOW_USERNAME"))
    trigger.add_argument("--password", default=os.environ.get("AIRFLOW_PASSWORD"))
    trigger.add_argument("--conf", default="{}", help="DAG params as JSON, e.g. '{\"meta_epochs\": 3}'")
    trigger.add_argument("--wait", action="store_true", help="wait for the run and print task states")
    args = parser.parse_args(argv)
    if args.command == "init-workspace":
        init_workspace(args.root, args.source, parse_assignments(args.set), args.remote)
        return 0
    if args.command == "admin-user":
        write_admin_user(
            Path(os.environ[PASSWORDS_FILE_ENV]),
            os.environ.get("AIRFLOW_ADMIN_USERNAME", "admin"),
            os.environ.get("AIRFLOW_ADMIN_PASSWORD", ""),
        )
        return 0
    client = AirflowClient(args.url, args.username, args.password)
    run = client.trigger(json.loads(args.conf))
    log.info("triggered %s", run["dag_run_id"])
    if not args.wait:
        return 0
    state = client.wait(run["dag_run_id"])
    for ti in client.task_instances(run["dag_run_id"]):
        log.info("%-10s %-8s queue=%s", ti["task_id"], ti["state"], ti["queue"])
    log.info("run %s: %s", run["dag_run_id"], state)
    return 0 if state == "success" else 1


if __name__ == "__main__":
    raise SystemExit(main())

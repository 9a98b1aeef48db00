"""Shared fixtures: tiny parameters, throwaway git+DVC workspaces, an Airflow home, PostgreSQL.

Airflow reads its configuration at import time, so its environment is set here, before any test
module can import it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="metarec-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["DVC_NO_ANALYTICS"] = "1"
os.environ.pop("METAREC_WAREHOUSE_URL", None)
os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"

# Small enough that a whole pipeline runs in seconds, big enough that the model can learn.
TINY = {
    "run.run_date": "2026-10-20",
    "source.history_days": 10,
    "synthetic.initial_users": 220,
    "synthetic.new_users_per_day": 6,
    "synthetic.initial_items": 80,
    "synthetic.new_items_per_day": 1,
    "synthetic.daily_active_share": 0.5,
    "meta.epochs": 3,
    "meta.pretrain_epochs": 2,
    "meta.meta_batch_size": 16,
    "finetune.chunk_size": 64,
    # Tiny worlds are too small for the model to beat every baseline reliably; the gate logic itself
    # is tested in test_warehouse.py/test_evaluate.py, and `make run` uses the full gate.
    "evaluate.gate_baselines": ["global_mean"],
}
TRACKED = (
    "dvc.yaml",
    "params.yaml",
    ".dvcignore",
    ".gitignore",
    ".dvc/config",
    ".dvc/.gitignore",
    "landing/README.md",
)


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


def make_workspace(root: Path, overrides: dict | None = None) -> Path:
    """A fresh git + DVC pipeline workspace with the project's pipeline files and tiny params."""
    from metarec_tasks.params import update_params_file

    for name in TRACKED:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, root / name)
    for folder in ("reports", "reports/plots"):
        if (REPO / folder / ".gitignore").exists():
            (root / folder).mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / folder / ".gitignore", root / folder / ".gitignore")
    # dvc.yaml lists the stage code as deps; a copy makes them resolve inside the workspace.
    shutil.copytree(
        REPO / "metarec_tasks", root / "metarec_tasks", ignore=shutil.ignore_patterns("__pycache__")
    )
    update_params_file(root / "params.yaml", {**TINY, **(overrides or {})})
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "-c", "user.email=ci@metarec", "-c", "user.name=ci", "commit", "-qm", "workspace")
    return root


@pytest.fixture
def tiny_params(tmp_path):
    """Validated tiny Params, from a copy of the project's params.yaml."""
    from metarec_tasks.params import load_params, update_params_file

    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    update_params_file(tmp_path / "params.yaml", TINY)
    return load_params(tmp_path / "params.yaml")


@pytest.fixture
def workspace(tmp_path) -> Path:
    return make_workspace(tmp_path / "ws")


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite Airflow metadata database in a throwaway AIRFLOW_HOME."""
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], check=True, capture_output=True)
    return _AIRFLOW_HOME


POSTGRES_ADMIN_URL = os.environ.get(
    "METAREC_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session")
def postgres_url():
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI but unreachable at {POSTGRES_ADMIN_URL}: {exc}")
        pytest.skip(f"no PostgreSQL at {POSTGRES_ADMIN_URL} (set METAREC_TEST_POSTGRES_URL): {exc}")
    name = f"metarec_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield admin.url.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)

"""Shared fixtures: tiny parameters, throwaway git+DVC workspaces, an Airflow home, PostgreSQL.

Airflow reads its configuration at import time, so its environment is set here, before any test
module can import it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.helpers import BIN, POSTGRES_ADMIN_URL, REPO, TINY, make_workspace

_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="metarec-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["DVC_NO_ANALYTICS"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"  # the text encoder must load from its package, never the hub
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.pop("METAREC_WAREHOUSE_URL", None)
os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"


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

"""The docker-compose topology, for real, as processes on loopback.

PostgreSQL holds the Airflow metadata and the warehouse (two throwaway databases), Redis is the Celery
broker, and `airflow scheduler`, `dag-processor`, `api-server` and two `celery worker`s (one for the
default queue, one standing in for the GPU worker on the `gpu` queue; both serve the shard queue)
run as separate process groups. The test triggers `metarec_nightly` with a conf through the REST API
v2, waits for it, checks that the GPU stages ran on the queue params.yaml names and finetune's two user
shards on the shard queue that both workers serve, reads the result from the warehouse, and makes sure
that no process is left behind.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from metarec_tasks.orchestration.airflow_tasks import SHARD_TASK
from tests.helpers import BIN, POSTGRES_ADMIN_URL, REPO, TINY

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

REDIS_URL = os.environ.get("METAREC_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")  # a dedicated db
GPU_QUEUE = "gpu"
SHARD_QUEUE = "shards"
SHARDS = 2
RUN_DATE = "2026-10-20"
CONF = {"run_date": RUN_DATE, "algorithm": "fomaml", "meta_epochs": 2, "force_publish": True}
MARKER = "METAREC_TOPOLOGY_TEST"  # every process we start carries it, so leftovers can be found
STARTUP_TIMEOUT_S = 240
RUN_TIMEOUT_S = 420
STOP_TIMEOUT_S = 30


def _unreachable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def databases():
    """Two fresh PostgreSQL databases: Airflow's metadata and the warehouse; dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        _unreachable(f"no PostgreSQL at {POSTGRES_ADMIN_URL}: {exc}")
    suffix = uuid.uuid4().hex[:10]
    names = {"airflow": f"metarec_af_{suffix}", "warehouse": f"metarec_wh_{suffix}"}
    with admin.connect() as conn:
        for name in names.values():
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield {
        role: admin.url.set(database=name).render_as_string(hide_password=False)
        for role, name in names.items()
    }
    with admin.connect() as conn:
        for name in names.values():
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def broker():
    """A dedicated Redis database as the Celery broker, emptied before and after."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        _unreachable(f"no Redis at {REDIS_URL}: {exc}")
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def processes_with_marker(token: str) -> list[int]:
    """PIDs whose environment carries this test's marker: anything we (or our children) started."""
    needle = f"{MARKER}={token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


@dataclass
class Topology:
    """Airflow components as process groups; `stop` ends them all and reports any survivor."""

    env: dict[str, str]
    logs: Path
    token: str
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, *args: str) -> None:
        log = (self.logs / f"{name}.log").open("w")
        self.procs[name] = subprocess.Popen(
            [str(BIN / "airflow"), *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a task's children die with it
        )
        log.close()

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                pytest.fail(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def executed_by(self, name: str) -> set[str]:
        """Task ids a Celery worker executed, from its own log."""
        text = (self.logs / f"{name}.log").read_text(errors="replace")
        return {
            m.group(1)
            for line in text.splitlines()
            if "Executing workload in Celery" in line
            for m in [re.search(r"task_id='(\w+)'", line)]
            if m
        }

    def stop(self) -> list[int]:
        """SIGTERM every group (workers shut down warm), SIGKILL what remains; return survivors."""
        for proc in self.procs.values():
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.procs.values():
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        time.sleep(0.5)
        survivors = processes_with_marker(self.token)
        for pid in survivors:  # never leave them running, but report them as a failure
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return survivors


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def airflow_env(home: Path, workspace: Path, databases: dict[str, str], broker: str, port: int, token: str):
    env = dict(os.environ)
    env.update(
        {
            MARKER: token,
            "AIRFLOW_HOME": str(home),
            "PYTHONPATH": str(REPO),
            "METAREC_WORKSPACE": str(workspace),
            "METAREC_WAREHOUSE_URL": databases["warehouse"],
            "METAREC_GIT_COMMIT": "1",  # as in docker-compose.yaml: the last task commits dvc.lock
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "metarec:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": databases["airflow"],
            "AIRFLOW__CELERY__BROKER_URL": broker,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + databases["airflow"],
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "DVC_NO_ANALYTICS": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.pop("AIRFLOW_CONFIG", None)
    return env


@pytest.fixture
def topology(tmp_path, databases, broker):
    from metarec_tasks.orchestration.deploy import init_workspace, write_admin_user

    workspace = tmp_path / "workspace"
    # No schedule: unpausing a scheduled DAG would start the latest nightly run next to ours.
    # No retries: a failing task must fail the run now, not after the production retry delay.
    overrides = {
        **TINY,
        "orchestration.gpu_queue": GPU_QUEUE,
        "orchestration.shard_queue": SHARD_QUEUE,
        "finetune.shards": SHARDS,
        "finetune.chunk_size": 64,  # the tiny world's users in more chunks than shards
        "orchestration.schedule": None,
        "orchestration.retries": 0,
    }
    init_workspace(workspace, REPO, overrides, remote=str(tmp_path / "dvc-remote"))
    home, logs = tmp_path / "airflow", tmp_path / "logs"
    home.mkdir()
    logs.mkdir()
    token = uuid.uuid4().hex
    port = free_port()
    env = airflow_env(home, workspace, databases, broker, port, token)
    password = secrets.token_urlsafe(12)
    write_admin_user(home / "passwords.json", "metarec", password)  # what airflow-init does
    migrate = subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True)
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]

    topo = Topology(env=env, logs=logs, token=token)
    try:
        topo.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(port))
        topo.start("dag-processor", "dag-processor")
        topo.start("scheduler", "scheduler")
        for queue in ("default", GPU_QUEUE):
            topo.start(
                f"worker-{queue}",
                *("celery", "worker", "--queues", f"{queue},{SHARD_QUEUE}", "--concurrency", "1"),
                *("--celery-hostname", f"{queue}-{token[:8]}@%h", "--skip-serve-logs"),
            )
        yield topo, f"http://127.0.0.1:{port}", password, workspace
    finally:
        survivors = topo.stop()
        assert not survivors, f"processes left behind: {survivors}"


def connect_when_ready(topo: Topology, url: str, password: str):
    """Log in once the api-server answers and wait until the dag-processor has parsed the DAG."""
    import httpx

    from metarec_tasks.orchestration.deploy import AirflowClient

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    client = None
    while time.monotonic() < deadline:
        topo.check_alive()
        try:
            client = client or AirflowClient(url, "metarec", password)
            if client.dag_ready():
                return client
        except httpx.TransportError:
            pass
        time.sleep(2)
    pytest.fail(
        f"DAG not available after {STARTUP_TIMEOUT_S} s:\n"
        f"{topo.tail('api-server')}\n{topo.tail('dag-processor')}"
    )


def test_nightly_run_on_celery_topology(topology):
    from sqlalchemy import create_engine, text

    topo, url, password, workspace = topology
    client = connect_when_ready(topo, url, password)
    client.unpause()
    run = client.trigger(CONF)  # no logical date, as an operator's manual run (README)
    run_id = run["dag_run_id"]
    assert run["conf"] == CONF

    try:
        state = client.wait(run_id, timeout=RUN_TIMEOUT_S)
        if state != "success":
            tasks = client.get(f"/dags/metarec_nightly/dagRuns/{run_id}/taskInstances")["task_instances"]
            pytest.fail(f"run ended {state}: " + ", ".join(f"{t['task_id']}={t['state']}" for t in tasks))
    except TimeoutError:
        topo.check_alive()
        raise
    instances = client.task_instances(run_id)
    tis = {ti["task_id"]: ti for ti in instances}
    states = {(ti["task_id"], ti["map_index"]): ti["state"] for ti in instances}
    assert state == "success", f"{states}\n{topo.tail('worker-default')}\n{topo.tail('worker-gpu')}"
    assert set(states.values()) == {"success"}
    assert sorted(i for task, i in states if task == SHARD_TASK) == list(range(SHARDS))  # mapped
    # GPU stages went to the queue params.yaml names, which only the GPU worker serves.
    queues = {task: ti["queue"] for task, ti in tis.items()}
    assert {queues["train"], queues["finetune"]} == {GPU_QUEUE} and queues[SHARD_TASK] == SHARD_QUEUE
    assert {q for task, q in queues.items() if task not in ("train", "finetune", SHARD_TASK)} == {"default"}
    # ...each worker ran only the tasks of its queues; the shards ran on the shard queue, which both
    # serve: which worker takes a shard is Celery's choice (one worker may take both), not asserted.
    gpu, default = topo.executed_by("worker-gpu"), topo.executed_by("worker-default")
    assert {"train", "finetune"} <= gpu <= {"train", "finetune", SHARD_TASK}
    assert set(tis) - {"train", "finetune", SHARD_TASK} <= default <= set(tis) - {"train", "finetune"}
    assert SHARD_TASK in gpu | default
    shards = sorted((workspace / "data" / "shards").glob(f"*-of-{SHARDS}.parquet"))
    assert [p.name for p in shards] == [f"{i}-of-{SHARDS}.parquet" for i in range(SHARDS)]
    client.close()

    engine = create_engine(topo.env["METAREC_WAREHOUSE_URL"])
    with engine.connect() as conn:
        record = conn.execute(text("SELECT * FROM runs WHERE run_id = :r"), {"r": f"nightly-{RUN_DATE}"})
        record = record.mappings().one()
        producer = conn.execute(
            text("SELECT candidate FROM producers WHERE run_id = :r"), {"r": f"nightly-{RUN_DATE}"}
        ).scalar_one()
        latest = conn.execute(
            text(
                "SELECT run_id, count(*) AS n, count(DISTINCT user_id) AS users "
                "FROM latest_recommendations GROUP BY run_id"
            )
        ).all()
    engine.dispose()
    # The trigger's conf reached the stages, and the last task recorded the run's exact versions.
    assert record["params"]["meta"]["algorithm"] == "fomaml"  # the trigger's `algorithm`: the rating model
    assert record["params"]["meta"]["epochs"] == 2
    # the record names the producer of the published rows: the night's selected candidate
    assert record["algorithm"] == producer
    assert record["published"]
    assert record["airflow_run_id"] == run_id
    assert set(record["dvc_lock"]["stages"]) >= {"ingest", "train", "finetune", "publish"}
    assert len(latest) == 1 and latest[0].run_id == f"nightly-{RUN_DATE}"
    assert latest[0].n == record["recommendation_rows"] > 0
    assert latest[0].users > 0
    # The versions went to the DVC remote and into the workspace's git history, by its own identity.
    assert any((workspace.parent / "dvc-remote").rglob("*"))
    head = subprocess.run(
        ["git", "log", "-1", "--format=%an|%s"], cwd=workspace, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert head == f"MetaRec|metarec run nightly-{RUN_DATE} ({run_id})"
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "dvc.lock", "params.yaml"], cwd=workspace)
    assert dirty.returncode == 0

"""docker/ and Kubernetes deployment, checked without a container engine.

There is no Docker here, so these tests check what can be checked statically: the compose file parses
and declares the topology the project relies on (services, queues, GPU reservation, shared volumes),
its configuration comes only from docker/.env.example with no secret committed, the Dockerfile passes
hadolint and installs the pinned requirements, and the KubernetesExecutor pod templates give a GPU to
the GPU stages only. The helpers the compose init service runs are exercised for real.
"""

from __future__ import annotations

import json
import re
import stat
import subprocess

import pytest
import yaml

from tests.helpers import BIN, REPO

DOCKER = REPO / "docker"
AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-worker-gpu",
}
# ${NAME}, ${NAME:-default}, ${NAME:?error}; `$${NAME}` is an escaped, container-side variable.
COMPOSE_VAR = re.compile(r"(?<!\$)\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "docker-compose.yaml").read_text())


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    values = {}
    for line in (DOCKER / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution, enough for this file (then `$$` becomes `$`)."""

    def replace(match: re.Match) -> str:
        name, op, arg = match.groups()
        value = env.get(name, "")
        if op in (":?", "?") and not value:
            raise KeyError(f"{name} is required: {arg}")
        return value or (arg if op in (":-", "-") else "")

    return COMPOSE_VAR.sub(replace, text).replace("$$", "$")


def command_args(service: dict) -> list[str]:
    cmd = service["command"]
    return cmd.split() if isinstance(cmd, str) else list(cmd)


def queues_of(service: dict) -> str:
    args = command_args(service)
    return args[args.index("--queues") + 1]


def test_compose_declares_the_topology(compose):
    services = compose["services"]
    assert {"postgres", "redis", *AIRFLOW_SERVICES} <= set(services)
    assert command_args(services["airflow-apiserver"]) == ["api-server"]
    for name, command in [
        ("airflow-scheduler", "scheduler"),
        ("airflow-dag-processor", "dag-processor"),
        ("airflow-triggerer", "triggerer"),
    ]:
        assert command_args(services[name]) == [command]
    init_script = " ".join(command_args(services["airflow-init"]))
    for step in ("airflow db migrate", "deploy admin-user", "deploy init-workspace"):
        assert step in init_script
    # Two Celery workers: CPU on the default queue, GPU on `gpu`, behind a profile, with a GPU reserved.
    cpu, gpu = services["airflow-worker"], services["airflow-worker-gpu"]
    assert command_args(cpu)[:2] == ["celery", "worker"] and queues_of(cpu) == "default"
    assert command_args(gpu)[:2] == ["celery", "worker"] and queues_of(gpu) == "gpu"
    assert gpu["profiles"] == ["gpu"] and "profiles" not in cpu
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"


def test_compose_shares_workspace_and_remote_on_one_volume(compose):
    assert {"metarec-data", "postgres-data", "airflow-logs"} <= set(compose["volumes"])
    for name in AIRFLOW_SERVICES:
        service = compose["services"][name]
        assert "metarec-data:/data" in service["volumes"], name
        env = service["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["METAREC_WORKSPACE"].startswith("/data/")
        assert "postgres:5432/metarec_warehouse" in env["METAREC_WAREHOUSE_URL"]
    init = " ".join(command_args(compose["services"]["airflow-init"]))
    assert "--remote /data/dvc-remote" in init
    assert "orchestration.gpu_queue=$${METAREC_GPU_QUEUE}" in init


def test_compose_configuration_comes_from_env_example(compose, env_example):
    text = (DOCKER / "docker-compose.yaml").read_text()
    referenced = {m.group(1) for m in COMPOSE_VAR.finditer(text)}
    assert referenced - set(env_example) == set(), "documented in docker/.env.example"
    required = {m.group(1) for m in COMPOSE_VAR.finditer(text) if m.group(2) in (":?", "?")}
    assert {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "AIRFLOW_ADMIN_PASSWORD", "AIRFLOW_JWT_SECRET"} <= required
    assert all(env_example[name] == "" for name in required), "no secret value is committed"
    with pytest.raises(KeyError, match=r"is required: set \w+ in docker/\.env"):
        interpolate(text, env_example)
    # Filled in, the file is complete: every Airflow component sees the same secrets and URLs.
    filled = {**env_example, **{name: f"secret-{name.lower()}" for name in required}}
    resolved = yaml.safe_load(interpolate(text, filled))
    envs = [resolved["services"][name]["environment"] for name in AIRFLOW_SERVICES]
    for key in (
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "METAREC_WAREHOUSE_URL",
    ):
        assert len({env[key] for env in envs}) == 1, key
    assert "secret-postgres_password@postgres" in envs[0]["METAREC_WAREHOUSE_URL"]
    assert resolved["services"]["airflow-init"]["environment"]["METAREC_GPU_QUEUE"] == "gpu"
    gpu_worker = resolved["services"]["airflow-worker-gpu"]["environment"]
    assert str(gpu_worker["METAREC_TRAIN_NPROC"]) == env_example["GPU_COUNT"]  # one train process per GPU
    ignored = subprocess.run(["git", "check-ignore", "-q", "docker/.env"], cwd=REPO)
    assert ignored.returncode == 0, "docker/.env must be git-ignored"


def test_warehouse_database_is_created_by_the_init_script(compose):
    sql = (DOCKER / "postgres" / "init-warehouse.sql").read_text()
    created = re.findall(r"^CREATE DATABASE (\w+);", sql, flags=re.MULTILINE)
    url = compose["services"]["airflow-scheduler"]["environment"]["METAREC_WAREHOUSE_URL"]
    assert created == [url.rsplit("/", 1)[1]]
    mounts = compose["services"]["postgres"]["volumes"]
    assert any(m.startswith("./postgres/init-warehouse.sql:/docker-entrypoint-initdb.d/") for m in mounts)


def test_dockerfile_passes_hadolint():
    result = subprocess.run(
        [str(BIN / "hadolint"), "--no-color", "Dockerfile"], cwd=DOCKER, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_installs_the_pinned_project_as_non_root(compose):
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(
        r"^FROM apache/airflow:slim-\$\{AIRFLOW_VERSION\}-python\$\{PYTHON_VERSION\}", text, re.M
    )
    assert "ARG AIRFLOW_VERSION=3.3.2" in text and "ARG PYTHON_VERSION=3.11" in text
    assert "pip install --no-cache-dir -r requirements.txt" in text
    pins = dict(line.split("==") for line in (REPO / "requirements.txt").read_text().split() if "==" in line)
    assert f"ARG TORCH_VERSION={pins['torch']}" in text
    assert pins["apache-airflow"] == "3.3.2"
    users = re.findall(r"^USER (\S+)", text, flags=re.MULTILINE)
    assert users[-1] not in ("0", "root")
    assert re.search(r"^HEALTHCHECK ", text, flags=re.MULTILINE)
    for match in re.finditer(r"^COPY --chown=\S+ (.+) \S+$", text, flags=re.MULTILINE):
        for source in match.group(1).split():
            assert (REPO / source).exists(), f"COPY source {source} is missing"
    # The GPU worker is the same Dockerfile built against a CUDA wheel index.
    services = compose["services"]
    cpu_index = services["airflow-worker"]["build"]["args"]["TORCH_INDEX_URL"]
    gpu_index = services["airflow-worker-gpu"]["build"]["args"]["TORCH_INDEX_URL"]
    assert "/whl/cpu" in cpu_index and re.search(r"/whl/cu\d+", gpu_index)
    assert services["airflow-worker-gpu"]["image"] != services["airflow-worker"]["image"]


def test_pod_templates_give_a_gpu_to_the_gpu_template_only():
    base = yaml.safe_load((DOCKER / "k8s" / "pod-template.yaml").read_text())
    gpu = yaml.safe_load((DOCKER / "k8s" / "gpu-pod-template.yaml").read_text())
    for pod in (base, gpu):
        assert pod["kind"] == "Pod" and pod["apiVersion"] == "v1"
        (container,) = pod["spec"]["containers"]
        assert container["name"] == "base"  # the name the KubernetesExecutor requires
        assert {"name": "metarec-data", "mountPath": "/data"} in container["volumeMounts"]
    assert gpu["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in base["spec"]["containers"][0]["resources"].get("limits", {})


@pytest.mark.parametrize("template", [None, "/opt/metarec/docker/k8s/gpu-pod-template.yaml"])
def test_dag_passes_the_gpu_pod_template_to_gpu_stages_only(airflow_db, monkeypatch, template):
    from airflow.dag_processing.dagbag import DagBag

    from metarec_tasks.orchestration.airflow_tasks import SHARD_TASK
    from metarec_tasks.orchestration.deploy import GPU_POD_TEMPLATE_ENV, GPU_STAGES

    if template:
        monkeypatch.setenv(GPU_POD_TEMPLATE_ENV, template)
    else:
        monkeypatch.delenv(GPU_POD_TEMPLATE_ENV, raising=False)
    dag = DagBag(dag_folder=str(REPO / "dags")).get_dag("metarec_nightly")
    configs = {task.task_id: task.executor_config for task in dag.tasks}
    for task_id, config in configs.items():
        gpu = task_id in GPU_STAGES or task_id == SHARD_TASK  # finetune's user shards: its own work
        expected = {"pod_template_file": template} if template and gpu else {}
        assert config == expected, task_id


def test_init_workspace_creates_then_refreshes(tmp_path):
    from metarec_tasks.orchestration.deploy import init_workspace, parse_assignments
    from metarec_tasks.params import load_params

    root, remote = tmp_path / "ws", tmp_path / "remote"
    overrides = parse_assignments(["orchestration.gpu_queue=gpu", "meta.epochs=2"])
    assert overrides == {"orchestration.gpu_queue": "gpu", "meta.epochs": 2}
    assert init_workspace(root, REPO, overrides, remote=str(remote)) is True
    params = load_params(root / "params.yaml")
    assert params.orchestration.gpu_queue == "gpu" and params.meta.epochs == 2
    assert (root / "metarec_tasks" / "orchestration" / "deploy.py").exists()
    remotes = subprocess.run(["dvc", "remote", "list"], cwd=root, capture_output=True, text=True).stdout
    assert "deploy" in remotes and str(remote) in remotes
    # The deployment's remote lives in the git-ignored config.local, not in the committed config.
    assert (root / ".dvc" / "config").read_text() == (REPO / ".dvc" / "config").read_text()
    # Idempotent, and an operator's edit of params.yaml survives a refresh.
    assert init_workspace(root, REPO, overrides, remote=str(remote)) is False
    (root / "params.yaml").write_text((root / "params.yaml").read_text().replace("top_k: 10", "top_k: 7"))
    assert init_workspace(root, REPO, {}, remote=str(remote)) is True
    assert load_params(root / "params.yaml").finetune.top_k == 7
    status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True)
    assert status.stdout == ""


def test_admin_user_is_written_for_the_simple_auth_manager(tmp_path):
    from metarec_tasks.orchestration.deploy import write_admin_user

    path = tmp_path / "secrets" / "passwords.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"viewer": "v"}))
    write_admin_user(path, "admin", "s3cret")
    assert json.loads(path.read_text()) == {"viewer": "v", "admin": "s3cret"}
    fresh = tmp_path / "fresh.json"
    write_admin_user(fresh, "admin", "x")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    with pytest.raises(ValueError):
        write_admin_user(path, "admin", "")


def test_compose_init_script_sets_up_admin_and_workspace(compose, tmp_path):
    """Run airflow-init's own script (all but `airflow db migrate`) as the container would."""
    import os

    script = compose["services"]["airflow-init"]["command"][-1]
    steps = script.replace("airflow db migrate\n", "").replace("$${", "${")
    assert "airflow" not in steps.split("python -m")[0]
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "METAREC_WORKSPACE": str(tmp_path / "data" / "workspace"),
        "METAREC_SOURCE": str(REPO),
        "METAREC_GPU_QUEUE": "gpu",
        "AIRFLOW_ADMIN_USERNAME": "ops",
        "AIRFLOW_ADMIN_PASSWORD": "from-the-env-file",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(tmp_path / "secrets" / "passwords.json"),
    }
    steps = steps.replace("/data/dvc-remote", str(tmp_path / "data" / "dvc-remote"))
    subprocess.run(["bash", "-euo", "pipefail", "-c", steps], env=env, check=True, capture_output=True)
    assert json.loads((tmp_path / "secrets" / "passwords.json").read_text()) == {"ops": "from-the-env-file"}
    from metarec_tasks.params import load_params

    workspace = tmp_path / "data" / "workspace"
    assert load_params(workspace / "params.yaml").orchestration.gpu_queue == "gpu"
    log = subprocess.run(["git", "log", "--format=%an"], cwd=workspace, capture_output=True, text=True)
    assert log.stdout.split() == ["MetaRec"]

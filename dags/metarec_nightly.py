"""MetaRec nightly: validate the day's behavior logs, meta-learn, personalize, gate, publish top-K.

Each task runs one DVC stage of `dvc.yaml` in the pipeline workspace, so this DAG, a manual trigger
and a laptop `dvc repro` execute the same code. Before `finetune`, `recommend_shard` is mapped over
the run's `finetune.shards` user shards (one task each, shared by the workers); `finetune` reads
them back, or computes any that is missing or stale itself, as a laptop `dvc repro` does. Trigger
manually with parameters to re-run a day (`run_date`), try another algorithm, or force a publish
past the gate.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import get_args

from airflow.sdk import Param, chain, dag, get_current_context, task

from metarec_tasks.orchestration.airflow_tasks import SHARD_TASK, shard_tasks, stage_assets, workspace_root
from metarec_tasks.orchestration.alerts import DecisionAlert, TaskFailedAlert
from metarec_tasks.orchestration.deploy import gpu_executor_config
from metarec_tasks.params import Algorithm, load_params
from metarec_tasks.stages import GPU_STAGES, STAGES

PARAMS = load_params(workspace_root() / "params.yaml")
ORCHESTRATION = PARAMS.orchestration
# read when Airflow parses the DAG, as the queues and timeouts are; a run whose params.yaml says
# otherwise is still right: finetune computes the shards no task did
SHARDS = PARAMS.finetune.shards


def stage(name: str, queue: str = ORCHESTRATION.default_queue):
    """One pipeline stage as a task; bad data fails it at once instead of retrying."""

    @task(
        task_id=name,
        queue=queue,
        executor_config=gpu_executor_config(name),
        execution_timeout=ORCHESTRATION.task_timeout(name),
        outlets=stage_assets(name, workspace_root()),
        on_success_callback=[DecisionAlert(workspace_root())] if name == "publish" else None,
    )
    def run_stage() -> None:
        from metarec_tasks.orchestration.airflow_tasks import run_dvc_stage

        fail_fast(lambda: run_dvc_stage(name))

    return run_stage()


@task(
    task_id=SHARD_TASK,
    queue=ORCHESTRATION.shard_queue,
    executor_config=gpu_executor_config("finetune"),
    execution_timeout=ORCHESTRATION.task_timeout(SHARD_TASK),
)
def recommend_shard(index: int) -> None:
    """One user shard of finetune's published top-K, outside DVC (finetune merges the shards)."""
    from metarec_tasks.orchestration.airflow_tasks import run_shard

    fail_fast(lambda: run_shard(index))


def fail_fast(run: Callable[[], None]) -> None:
    """Bad data (or configuration) fails the task at once; anything else is retried."""
    from airflow.sdk.exceptions import AirflowFailException

    from metarec_tasks.orchestration.airflow_tasks import StageFailed

    try:
        run()
    except StageFailed as exc:
        if not exc.retryable:
            raise AirflowFailException(str(exc)) from exc
        raise


@dag(
    dag_id="metarec_nightly",
    schedule=ORCHESTRATION.schedule,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": ORCHESTRATION.retries,
        "retry_delay": timedelta(minutes=ORCHESTRATION.retry_delay_minutes),
        "execution_timeout": ORCHESTRATION.task_timeout("default"),
        "on_failure_callback": [TaskFailedAlert(workspace_root())],
    },
    params={
        "run_date": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Day to process (YYYY-MM-DD); default: the day before the logical date",
        ),
        "algorithm": Param(
            None,
            type=["null", "string"],
            enum=[None, *get_args(Algorithm)],
            description="Meta-learning algorithm; default: params.yaml",
        ),
        "meta_epochs": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description="Meta-training epochs; default: params.yaml",
        ),
        "source": Param(
            None,
            type=["null", "string"],
            enum=[None, "synthetic", "landing", "movielens"],
            description="Behavior-log source; default: params.yaml",
        ),
        "force_publish": Param(
            False, type="boolean", description="Publish even if the quality gate rejects the model"
        ),
    },
    doc_md=__doc__,
    tags=["metarec", "recommendations"],
)
def metarec_nightly():
    @task
    def prepare() -> dict:
        """Write this run's parameters into params.yaml (what DVC tracks)."""
        from metarec_tasks.orchestration.airflow_tasks import prepare_run

        context = get_current_context()
        return prepare_run(workspace_root(), dict(context["params"]), context.get("logical_date"))

    @task
    def version() -> dict:
        """Push the DVC outputs and record the run's exact data/model hashes in the warehouse."""
        from metarec_tasks.orchestration.airflow_tasks import version_run

        return version_run(workspace_root(), get_current_context()["run_id"])

    queue = {name: ORCHESTRATION.gpu_queue for name in GPU_STAGES}
    stages = [stage(name, queue.get(name, ORCHESTRATION.default_queue)) for name in STAGES]
    finetune = STAGES.index("finetune")
    shards = [recommend_shard.expand(index=shard_tasks(SHARDS))] if shard_tasks(SHARDS) else []
    chain(prepare(), *stages[:finetune], *shards, *stages[finetune:], version())


metarec_nightly()

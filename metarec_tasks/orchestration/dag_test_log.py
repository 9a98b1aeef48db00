"""Did `airflow dags test` really run the nightly DAG? `make run`'s success check.

Airflow reports `state=success` for a run that ran no task at all (a logical date before the DAG's
`start_date`), so success means: the run succeeded *and* every task of the DAG reached success —
`recommend_shard` once per user shard when there are several (`finetune.shards` in the workspace's
params.yaml; `airflow_tasks.shard_tasks`).

    python -m metarec_tasks.orchestration.dag_test_log .airflow/last-run.log
"""

from __future__ import annotations

import sys
from pathlib import Path

from metarec_tasks.stages import STAGES

TASKS = ("prepare", *STAGES, "version")
TASK_SUCCESS = "new_state=success"
RUN_SUCCESS = "state=success, run_type"


def check(log: str, shards: int) -> str | None:
    """None when the log shows a successful run of every task; otherwise why not, in one line."""
    from metarec_tasks.orchestration.airflow_tasks import shard_tasks

    ran, expected = log.count(TASK_SUCCESS), len(TASKS) + len(shard_tasks(shards))
    if RUN_SUCCESS not in log:
        return "the DAG run did not succeed"
    if ran != expected:
        return f"the DAG run succeeded with {ran} of {expected} tasks run"
    return None


def main(argv: list[str]) -> int:
    from metarec_tasks.orchestration.airflow_tasks import workspace_root
    from metarec_tasks.params import PARAMS_FILE, load_params

    shards = load_params(workspace_root() / PARAMS_FILE).finetune.shards
    problem = check(Path(argv[0]).read_text(errors="replace"), shards)
    if problem:
        print(f"{problem}; see {argv[0]}", file=sys.stderr)  # noqa: T201 - the command's output
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

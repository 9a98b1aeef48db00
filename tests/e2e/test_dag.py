"""The Airflow DAG: it imports cleanly, is wired as designed, and runs end to end in-process."""

import itertools
import json
import subprocess

import pytest

from metarec_tasks.orchestration.airflow_tasks import SHARD_TASK, shard_tasks
from metarec_tasks.stages import STAGES
from tests.helpers import BIN, REPO


@pytest.fixture
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_dagbag_has_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "metarec_nightly" in dagbag.dag_ids


def test_dag_wiring_schedule_and_params(dagbag):
    from metarec_tasks.params import load_params

    params = load_params(REPO / "params.yaml")
    dag = dagbag.get_dag("metarec_nightly")
    finetune = STAGES.index("finetune")
    mapped = [SHARD_TASK] if shard_tasks(params.finetune.shards) else []  # several user shards only
    order = ["prepare", *STAGES[:finetune], *mapped, *STAGES[finetune:], "version"]
    assert set(dag.task_ids) == set(order)
    for upstream, downstream in itertools.pairwise(order):
        assert dag.get_task(downstream).upstream_task_ids == {upstream}
    assert dag.catchup is False and dag.max_active_runs == 1
    orchestration = params.orchestration
    assert dag.schedule == orchestration.schedule
    assert all(t.retries >= 1 for t in dag.tasks)
    # no task can wait forever: each has a timeout, the model stages a longer one
    assert {t.task_id: t.execution_timeout for t in dag.tasks} == {
        name: orchestration.task_timeout(name) for name in order
    }
    assert dag.get_task("train").execution_timeout > dag.get_task("ingest").execution_timeout
    # every stage declares what it produces: lineage in the Assets view
    outlets = {t.task_id: {a.name for a in t.outlets} for t in dag.tasks if t.task_id in STAGES}
    assert all(outlets.values()) and "metarec_recommendations_published" in outlets["publish"]
    assert "metarec_run_page" in outlets["publish"]  # the run page's file:// URI in the Assets view
    assert {"run_date", "algorithm", "meta_epochs", "force_publish"} <= set(dag.params.keys())


def test_invalid_trigger_params_are_rejected(dagbag):
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    dag = dagbag.get_dag("metarec_nightly")
    for bad in ({"algorithm": "sgd-magic"}, {"meta_epochs": 0}, {"force_publish": "yes"}):
        params = ParamsDict(dict(dag.params.items()))
        with pytest.raises(ParamValidationError):
            params.update(bad)
            params.validate()


@pytest.mark.slow
def test_dag_runs_end_to_end_in_process(airflow_db, workspace, monkeypatch, capfd, caplog):
    monkeypatch.setenv("METAREC_WORKSPACE", str(workspace))
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags")).get_dag("metarec_nightly")
    run = dag.test(run_conf={"run_date": "2026-10-19", "meta_epochs": 2})
    assert run.state == "success"

    params = (workspace / "params.yaml").read_text()
    assert 'run_date: "2026-10-19"' in params and "epochs: 2" in params
    status = subprocess.run([str(BIN / "dvc"), "status"], cwd=workspace, capture_output=True, text=True)
    assert "up to date" in status.stdout, status.stdout + status.stderr  # dvc.lock matches the outputs

    receipt = json.loads((workspace / "reports" / "publish.json").read_text())
    assert receipt["run_id"] == "nightly-2026-10-19" and receipt["published"]
    from metarec_tasks.publishing.warehouse import connect, run_row

    record = run_row(connect(f"sqlite:///{workspace}/warehouse/metarec-synthetic.db"), "nightly-2026-10-19")
    assert record["airflow_run_id"] == run.run_id
    assert set(record["dvc_lock"]["stages"]) == set(STAGES)
    train_outs = {out["path"]: out for out in record["dvc_lock"]["stages"]["train"]["outs"]}
    # the record names the producer of the published rows: the night's selected candidate, whose
    # choice finetune recorded; the meta-learned ranker's file is the run's model hash
    assert record["model_hash"] == train_outs["models/rank_model.pt"]["md5"]
    selection = json.loads((workspace / "data" / "predictions" / "selection.json").read_text())
    assert record["algorithm"] == selection["challenger"] == selection["producer"]["candidate"]
    assert (workspace / ".dvc-store" / "files").is_dir()  # outputs pushed to the DVC remote
    # one user shard: finetune computes it itself, no mapped task chooses the candidates a second time
    # (several shards as mapped tasks: tests/e2e/test_celery_topology.py)
    assert "recommend_shard" not in dag.task_ids
    logged = "".join(capfd.readouterr()) + "\n".join(r.getMessage() for r in caplog.records)
    assert "is stale" not in logged

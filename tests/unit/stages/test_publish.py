"""The publish stage on hand-made inputs: what the run record says, and a gate with a missing metric."""

from __future__ import annotations

import pytest

from metarec_tasks.paths import Workspace
from metarec_tasks.publishing.records import file_md5
from metarec_tasks.publishing.warehouse import count_recommendations, open_warehouse, run_row
from metarec_tasks.stages import publish
from tests.helpers import publish_inputs


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace(tmp_path)


def test_the_record_names_the_ranker_that_produced_the_published_rows(tiny_params, ws):
    params = tiny_params.model_copy(
        update={"evaluate": tiny_params.evaluate.model_copy(update={"primary_metric": "catalog_recall@20"})}
    )
    publish_inputs(
        ws, {"model": {"catalog_recall@20": 0.4}}, {"passed": True, "reason": "model beats baselines"}
    )
    receipt = publish.run(params, ws)
    assert receipt["status"] == "published"
    engine = open_warehouse(params, ws.root)
    record = run_row(engine, params.run.run_id)
    assert record["algorithm"] == params.ranking.meta.algorithm != params.meta.algorithm
    assert record["model_hash"] == file_md5(ws.rank_model_file) != file_md5(ws.model_file)
    assert count_recommendations(engine, params.run.run_id) == 2


def test_a_primary_metric_missing_from_the_metrics_rejects_the_run_without_a_crash(tiny_params, ws):
    gate = {"passed": False, "primary_metric": "mae", "reason": "primary metric mae missing for ['model']"}
    publish_inputs(ws, {"global_mean": {"mae": 0.9}}, gate)
    receipt = publish.run(tiny_params, ws)
    assert receipt["status"] == "rejected" and "missing" in receipt["reason"]
    record = run_row(open_warehouse(tiny_params, ws.root), tiny_params.run.run_id)
    assert record["status"] == "rejected" and record["primary_value"] is None

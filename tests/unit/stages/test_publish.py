"""The publish stage on hand-made inputs: the record names the producer, a worse challenger keeps the
champion's rows, a gate with a missing metric rejects without a crash; the run page is written."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import select, text

from metarec_tasks.paths import Workspace
from metarec_tasks.publishing.records import file_md5
from metarec_tasks.publishing.warehouse import (
    LATEST_VIEW,
    count_recommendations,
    open_warehouse,
    producers,
    run_row,
)
from metarec_tasks.stages import publish
from tests.helpers import publish_inputs


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace(tmp_path)


def test_the_record_names_the_producer_of_the_published_rows(tiny_params, ws):
    publish_inputs(ws, {}, {"passed": False, "reason": "the rating gate does not decide the top-K"}, 0.4)
    receipt = publish.run(tiny_params, ws)
    assert receipt["status"] == "published" and "no champion of this source" in receipt["reason"]
    engine = open_warehouse(tiny_params, ws.root)
    record = run_row(engine, tiny_params.run.run_id)
    assert record["algorithm"] == "model" and record["primary_metric"] == "catalog_recall@20"
    assert record["model_hash"] == file_md5(ws.rank_model_file) != file_md5(ws.model_file)
    assert count_recommendations(engine, tiny_params.run.run_id) == 2
    with engine.connect() as conn:
        made_by = conn.execute(select(producers)).mappings().one()
        latest = conn.execute(text(f"SELECT DISTINCT producer FROM {LATEST_VIEW}")).scalars().all()
    assert made_by["candidate"] == "model" and latest == ["model"]
    assert made_by["parts"]["model"]["algorithm"] == tiny_params.ranking.meta.algorithm
    assert made_by["model_hashes"] == {"model": file_md5(ws.rank_model_file)}
    page = ws.run_page.read_text()  # the night's page, even without charts or an item table
    assert f"MetaRec run {tiny_params.run.run_id}" in page and "Decision: Published" in page
    assert receipt["producer"] == "model" and "No charts this run." in page


def test_a_worse_challenger_keeps_the_champions_rows(tiny_params, ws):
    publish_inputs(ws, {}, {}, 0.40)
    assert publish.run(tiny_params, ws)["status"] == "published"
    tomorrow = tiny_params.model_copy(
        update={"run": tiny_params.run.model_copy(update={"run_date": date(2026, 10, 21)})}
    )
    publish_inputs(ws, {}, {}, 0.30)
    receipt = publish.run(tomorrow, ws)
    assert receipt["status"] == "rejected" and "the champion's recommendations stay" in receipt["reason"]
    engine = open_warehouse(tiny_params, ws.root)
    with engine.connect() as conn:
        served = conn.execute(text(f"SELECT DISTINCT run_id FROM {LATEST_VIEW}")).scalars().all()
    assert served == [tiny_params.run.run_id]


def test_a_primary_metric_missing_from_the_metrics_rejects_the_run_without_a_crash(tiny_params, ws):
    gate = {"passed": False, "primary_metric": "mae", "reason": "primary metric mae missing for ['model']"}
    publish_inputs(ws, {"global_mean": {"mae": 0.9}}, gate)
    receipt = publish.run(tiny_params, ws)
    assert receipt["status"] == "rejected" and "missing" in receipt["reason"]
    record = run_row(open_warehouse(tiny_params, ws.root), tiny_params.run.run_id)
    assert record["status"] == "rejected" and record["primary_value"] is None

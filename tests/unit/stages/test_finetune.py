"""The finetune stage on a tiny trained workspace: it loads the run's data once and writes the three
tables evaluate and publish read, with no seen or unavailable item in any list."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from metarec_tasks.orchestration.cli import main
from metarec_tasks.orchestration.summary import selection_lines
from metarec_tasks.params import load_params, update_params_file
from metarec_tasks.paths import Workspace
from metarec_tasks.publishing.records import file_md5, producer_row
from metarec_tasks.stages import evaluate, finetune
from tests.helpers import build_episodes_workspace


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Workspace:
    root = build_episodes_workspace(tmp_path_factory.mktemp("trained"))
    update_params_file(
        root / "params.yaml", {"meta.epochs": 2, "ranking.meta.epochs": 2, "run.device": "cpu"}
    )
    assert main(["--root", str(root), "train"]) == 0
    return Workspace(root)


def test_finetune_loads_the_data_once_and_writes_every_table(trained, monkeypatch):
    calls = []
    real = finetune.load_episode_data
    monkeypatch.setattr(finetune, "load_episode_data", lambda *a, **k: calls.append(1) or real(*a, **k))
    params = load_params(trained.root / "params.yaml")
    counts = finetune.run(params, trained)
    assert len(calls) == 1

    holdout = pd.read_parquet(trained.holdout_predictions)
    for column in ("pred_model", "pred_model_no_adaptation", "pred_pretrained", "pred_pretrained_finetuned"):
        assert holdout[column].notna().all(), column
    assert counts["holdout_rows"] == len(holdout) > 0

    topk = pd.read_parquet(trained.holdout_topk)
    expected = {
        "model",
        "rank_pretrained_finetuned",
        "ease",
        "ease_dropout",
        "popularity",
        "popularity_mf",
        "item_knn",
    }
    assert set(topk["predictor"]) == expected | {"blend", "student", "selected"}
    selection = json.loads(trained.selection.read_text())
    assert selection["challenger"] in expected | {"blend", "student"}
    student = selection["candidates"]["student"]
    assert student["kind"] == "student" and student["knobs"]["teacher"] in expected | {"blend"}
    assert {t["temperature"] for t in student["tried"]} == set(params.distill.temperatures)
    assert {t["kappa"] for t in selection["candidates"]["ease_dropout"]["tried"]} == set(
        params.selection.ease_dropout_kappas
    )
    tasks = pd.read_parquet(trained.tasks_file)
    support = tasks[(tasks["split"] == "test") & (tasks["role"] == "support")]
    seen = set(zip(support["user_id"].astype(str), support["item_id"].astype(str), strict=True))
    lists = topk[topk["predictor"] == "student"]
    assert len(lists) and not any(
        (u, i) in seen for u, i in zip(lists["user_id"], lists["item_id"], strict=True)
    )
    timing = json.loads(trained.distill_timing.read_text())
    assert set(timing["ms_per_1000_users"]) == {student["knobs"]["teacher"], "student"}
    producer = {"candidate": "student", "kind": "student", "parts": {"student": student}}
    lineage = producer_row(producer, params, trained)  # what publish records if the student wins
    assert lineage["model_hashes"]["student"] == file_md5(trained.student_model_file)
    chosen = (
        topk[topk["predictor"] == selection["challenger"]].drop(columns="predictor").reset_index(drop=True)
    )
    selected = topk[topk["predictor"] == "selected"].drop(columns="predictor").reset_index(drop=True)
    pd.testing.assert_frame_equal(chosen, selected)  # `selected` is the challenger's lists
    assert topk.groupby(["predictor", "user_id"]).size().max() <= params.evaluate.catalog_k

    recs = pd.read_parquet(trained.recommendations)
    events = pd.read_parquet(trained.validated_events)
    seen = set(zip(events["user_id"].astype(str), events["item_id"].astype(str), strict=True))
    assert not any((u, i) in seen for u, i in zip(recs["user_id"], recs["item_id"], strict=True))
    assert recs.groupby("user_id").size().max() <= params.finetune.top_k
    assert counts["recommended_users"] == recs["user_id"].nunique() > 0


def test_holdout_users_never_take_part_in_the_selection(trained, tmp_path):
    """Make every holdout user's query worthless: the choice, the knobs and the blend stay the same."""
    import shutil

    params = load_params(trained.root / "params.yaml")
    finetune.run(params, trained)
    before = json.loads(trained.selection.read_text())
    other = Workspace(shutil.copytree(trained.root, tmp_path / "other"))
    tasks = pd.read_parquet(other.tasks_file)
    query = (tasks["split"] == "test") & (tasks["role"] == "query")
    tasks.loc[query, "value"] = 1.0  # no holdout user has a relevant item any more
    tasks.to_parquet(other.tasks_file, index=False)
    finetune.run(params, other)
    after = json.loads(other.selection.read_text())
    assert after == before
    topk = pd.read_parquet(other.holdout_topk)
    assert len(topk) > 0  # holdout users are still scored: they only report


def test_evaluate_reports_the_student_against_its_teacher_and_per_melu_scenario(trained):
    params = load_params(trained.root / "params.yaml")
    finetune.run(params, trained)
    evaluate.run(params, trained)
    report = json.loads(trained.metrics.read_text())["gate"]["selection"]
    distill = report["distill"]
    assert any(line.startswith("Student vs its teacher") for line in selection_lines(report))
    selection = json.loads(trained.selection.read_text())
    assert distill["student"] == "student"
    assert distill["teacher"] == selection["candidates"]["student"]["knobs"]["teacher"]
    for key in ("student_holdout", "teacher_holdout", "student_ms_per_1000_users", "wilcoxon_p"):
        assert distill[key] == distill[key], key  # not NaN
    assert "Distillation: the student `student` learned from" in trained.report.read_text()
    scenarios = pd.read_csv(trained.scenarios)  # the MeLU scenarios' top-K metrics, the student's too
    assert "student.catalog_recall@20" in scenarios and "selected.catalog_recall@20" in scenarios
    assert set(scenarios["scenario"]) <= {
        f"{user}/{item}" for user in ("existing_user", "new_user") for item in ("existing_item", "new_item")
    }


@pytest.mark.parametrize("objective", ["ranking", "rating"])
def test_sharded_recommendations_equal_unsharded_row_for_row(trained, tmp_path, monkeypatch, objective):
    """Three shards — one computed by `metarec finetune-shard` in its own process (as a DAG task),
    one in this process, one left for the stage — merge into the unsharded list, row for row; the
    stage reuses the shards that were computed before it."""
    import shutil
    import subprocess

    from tests.helpers import BIN

    whole = Workspace(shutil.copytree(trained.root, tmp_path / "whole"))
    settings = {"finetune.chunk_size": 16, "ranking.objective": objective}
    update_params_file(whole.root / "params.yaml", settings)
    finetune.run(load_params(whole.root / "params.yaml"), whole)

    sharded = Workspace(shutil.copytree(trained.root, tmp_path / "sharded"))
    update_params_file(sharded.root / "params.yaml", {**settings, "finetune.shards": 3})
    task = subprocess.run(
        [str(BIN / "metarec"), "--root", str(sharded.root), "finetune-shard", "0"],
        capture_output=True,
        text=True,
    )
    assert task.returncode == 0, task.stderr[-2000:]
    assert main(["--root", str(sharded.root), "finetune-shard", "2"]) == 0
    assert main(["--root", str(sharded.root), "finetune-shard", "3"]) == 2  # no such shard: one line, exit 2
    computed = []
    real = finetune.recommend_shard
    monkeypatch.setattr(
        finetune,
        "recommend_shard",
        lambda p, n, s, shard: computed.append(shard.index) or real(p, n, s, shard),
    )
    finetune.run(load_params(sharded.root / "params.yaml"), sharded)
    assert computed == [1]  # shards 0 and 2 were current: read back, not recomputed
    expected = pd.read_parquet(whole.recommendations)
    assert expected["user_id"].nunique() > 3 * 16  # every shard holds users
    pd.testing.assert_frame_equal(pd.read_parquet(sharded.recommendations), expected)

"""`dvc repro` runs the seven stages end to end in a fresh workspace, then has nothing left to do."""

import json
import subprocess

import pytest

from metarec_tasks.stages import STAGES
from tests.helpers import BIN


def dvc(root, *args):
    result = subprocess.run([str(BIN / "dvc"), *args], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.mark.slow
def test_dvc_repro_end_to_end_then_no_op(workspace):
    first = dvc(workspace, "repro")
    for stage in STAGES:
        assert f"Running stage '{stage}'" in first

    receipt = json.loads((workspace / "reports" / "publish.json").read_text())
    assert receipt["published"] and receipt["recommendation_rows"] > 0
    _run_page_is_a_dvc_output_with_the_charts(workspace, receipt)
    metrics = json.loads((workspace / "reports" / "metrics.json").read_text())["predictors"]
    assert metrics["model"]["mae"] < metrics["global_mean"]["mae"]
    _published_topk_is_ranked_and_clean(workspace, metrics)
    shown = dvc(workspace, "metrics", "show", "--json")  # the headline: a few readable numbers
    (workspace_rev,) = json.loads(shown).values()
    headline = workspace_rev["data"]["reports/headline.json"]["data"]
    assert set(headline) >= {"challenger", "selected.catalog_recall@20", "model.mae"} and len(headline) <= 8

    second = dvc(workspace, "repro")
    assert "Running stage" not in second
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in second
    assert "up to date" in dvc(workspace, "status")


@pytest.mark.slow
def test_a_param_change_reruns_only_downstream_stages(workspace):
    from metarec_tasks.params import update_params_file

    dvc(workspace, "repro")
    update_params_file(workspace / "params.yaml", {"finetune.top_k": 3})
    out = dvc(workspace, "repro")
    for stage in ("ingest", "validate", "episodes", "train"):
        assert f"Stage '{stage}' didn't change" in out
    assert "Running stage 'finetune'" in out


def _run_page_is_a_dvc_output_with_the_charts(workspace, receipt):
    """reports/run.html: publish's DVC output, every chart of reports/figures embedded, and the path
    printed by `metarec summary` (what `make run` ends with)."""
    import yaml

    page = (workspace / "reports" / "run.html").read_text()
    lock = yaml.safe_load((workspace / "dvc.lock").read_text())["stages"]["publish"]
    assert "reports/run.html" in {out["path"] for out in lock["outs"]}
    assert f"MetaRec run {receipt['run_id']}" in page and "Decision: Published" in page
    charts = list((workspace / "reports" / "figures").glob("*.png"))
    assert charts and page.count('src="data:image/png;base64,') == len(charts)
    summary = subprocess.run(
        [str(BIN / "metarec"), "--root", str(workspace), "summary"], capture_output=True, text=True
    )
    assert summary.stdout.splitlines()[-1] == f"Run page: {(workspace / 'reports' / 'run.html').as_uri()}"


def _published_topk_is_ranked_and_clean(workspace, metrics):
    """Top-K from the ranking model: never a seen or an unavailable item; every top-K predictor scored."""
    import pandas as pd

    for name in ("model", "popularity", "popularity_mf", "item_knn", "rank_pretrained_finetuned"):
        assert 0.0 <= metrics[name]["catalog_recall@20"] <= 1.0
    recs = pd.read_parquet(workspace / "data" / "predictions" / "recommendations.parquet")
    items = pd.read_parquet(workspace / "data" / "validated" / "items.parquet")
    events = pd.read_parquet(workspace / "data" / "validated" / "events.parquet")
    unavailable = set(items.loc[items["available"] == "false", "item_id"])
    assert unavailable and not set(recs["item_id"]) & unavailable
    seen = set(zip(events["user_id"], events["item_id"], strict=True))
    assert not any(pair in seen for pair in zip(recs["user_id"], recs["item_id"], strict=True))
    assert recs["user_id"].nunique() > events.loc[events["event_type"] == "rating", "user_id"].nunique() * 0.9

"""The report's metric table and charts, and the run summary's columns, follow the metrics evaluate
computes for the configured cut-offs (no hand-written list of names)."""

from __future__ import annotations

from metarec_tasks.evaluation.report import metric_table, panel_series, write_report
from metarec_tasks.evaluation.tables import breakdown, scenario_of, support_bucket
from metarec_tasks.orchestration.summary import summary_metrics
from metarec_tasks.params import load_params
from metarec_tasks.paths import Workspace
from tests.helpers import REPO
from tests.unit.evaluation.frames import DEFAULT, evaluate_params, holdout_frame, topk_frame


def header(table: str) -> list[str]:
    return [cell.strip() for cell in table.splitlines()[0].strip("|").split("|")][2:]


def test_metric_table_shows_the_configured_cut_offs_and_nothing_else():
    ep = evaluate_params(catalog_k=10, binary_k=3, primary_metric="catalog_recall@10")
    results = {
        "model": {"users": 3, "mae": 0.8, "mae_ci95": 0.1, "bin_ndcg@3": 0.6, "catalog_recall@10": 0.3},
        "popularity": {"catalog_recall@10": 0.4, "catalog_ndcg@10": 0.2},
        "global_mean": {"users": 3, "mae": 0.9, "hr@5": 1.0, "catalog_recall@20": 0.9},
    }
    table = metric_table(results, ep)
    assert header(table) == ["mae", "bin_ndcg@3", "catalog_recall@10", "catalog_ndcg@10"]
    assert "0.8000 ± 0.1000" in table
    rows = [line.split("|")[1].strip() for line in table.splitlines()[2:]]
    assert rows == ["popularity", "model", "global_mean"]  # best first; without the metric, last


def test_metric_table_sorts_lower_is_better_metrics_ascending():
    ep = evaluate_params(primary_metric="rmse")
    results = {"a": {"rmse": 1.2}, "b": {"rmse": 0.9}, "c": {"mae": 0.5}}
    rows = [line.split("|")[1].strip() for line in metric_table(results, ep).splitlines()[2:]]
    assert rows == ["b", "a", "c"]


def test_the_cold_start_chart_has_a_primary_metric_panel_for_a_catalog_metric():
    ep = evaluate_params(catalog_k=2, primary_metric="catalog_recall@2")
    holdout = holdout_frame()
    curve = breakdown(holdout, topk_frame(), support_bucket(holdout["support_size"]), ep)
    assert set(panel_series(curve, ep.primary_metric)) == {"model", "popularity"}
    assert set(panel_series(curve, "mae")) == {"model", "global_mean"}


def test_write_report_draws_the_charts_and_the_table(tmp_path):
    params = load_params(
        REPO / "params.yaml", {"evaluate.catalog_k": 2, "evaluate.primary_metric": "catalog_recall@2"}
    )
    ep, holdout, topk = params.evaluate, holdout_frame(), topk_frame()
    curve = breakdown(holdout, topk, support_bucket(holdout["support_size"]), ep)
    scenarios = breakdown(holdout, topk, scenario_of(holdout), ep)
    results = {
        "model": {"users": 3, "mae": 0.5, "catalog_recall@2": 0.67},
        "popularity": {"catalog_recall@2": 0.6},
    }
    ws = Workspace(tmp_path)
    ws.reports.mkdir(parents=True)
    ws.rank_train_log.write_text(  # the ranker's history, as write_history writes it
        "epoch,phase,train_loss,val_recall@2,averaged,seconds\n0,meta,4.5,0.40,0.41,1.0\n1,meta,4.4,0.45,0.44,1.0\n"
    )
    write_report(ws, params, results, {"passed": True, "reason": "ok"}, curve, scenarios)
    text = ws.report.read_text()
    assert "catalog_recall@2" in text and "hr@" not in text
    assert (ws.figures / "cold_start_curve.png").stat().st_size > 0
    assert (ws.figures / "scenarios.png").stat().st_size > 0
    assert (ws.figures / "rank_learning_curve.png").stat().st_size > 0  # the published model's curve
    assert "Ranker learning curve" in text


def test_summary_columns_follow_the_params():
    assert summary_metrics(DEFAULT) == ["mae", "ndcg@5", "bin_ndcg@5", "catalog_recall@20"]
    ep = evaluate_params(ndcg_ks=[1, 7], binary_k=3, catalog_k=10, primary_metric="mrr@3")
    assert summary_metrics(ep) == ["mae", "ndcg@7", "bin_ndcg@3", "catalog_recall@10", "mrr@3"]
    assert summary_metrics(ep, "rmse")[-1] == "rmse"

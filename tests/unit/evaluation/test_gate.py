"""The gate on hand-made results: beat every gate baseline on the primary metric (lower is better
for the error metrics), fail with a reason when a predictor lacks it, and the top-K catalog gate."""

from __future__ import annotations

import math

import pytest

from metarec_tasks.evaluation.gate import catalog_gate, gate
from tests.unit.evaluation.frames import evaluate_params

TOPK_EP = evaluate_params(primary_metric="catalog_recall@20", gate_baselines=["popularity", "item_knn"])
MAE_EP = evaluate_params(primary_metric="mae", gate_baselines=["global_mean", "pretrained"])


def test_passes_when_the_model_beats_the_best_baseline():
    results = {
        "model": {"catalog_recall@20": 0.30},
        "popularity": {"catalog_recall@20": 0.25},
        "item_knn": {"catalog_recall@20": 0.28},
        "not_a_gate_baseline": {"catalog_recall@20": 0.90},
    }
    decision = gate(results, TOPK_EP)
    assert decision["passed"] is True
    assert decision["best_baseline"] == "item_knn" and decision["baseline"] == 0.28
    assert decision["improvement"] == pytest.approx(0.02)
    assert decision["relative_improvement"] == pytest.approx(0.02 / 0.28)
    assert "beats best baseline item_knn" in decision["reason"]
    assert decision["ci_overlap"] is None and "CIs" not in decision["reason"]  # no CI known: no claim


@pytest.mark.parametrize(("ci", "overlap"), [(0.015, True), (0.005, False)])
def test_the_reason_says_when_a_win_is_within_the_confidence_intervals(ci, overlap):
    results = {
        "model": {"catalog_recall@20": 0.30, "catalog_recall@20_ci95": ci},
        "popularity": {"catalog_recall@20": 0.25, "catalog_recall@20_ci95": ci},
        "item_knn": {"catalog_recall@20": 0.28, "catalog_recall@20_ci95": ci},
    }
    decision = gate(results, TOPK_EP)
    assert decision["passed"] is True and decision["ci_overlap"] is overlap
    assert ("within noise" in decision["reason"]) is overlap


@pytest.mark.parametrize("model", [0.27, 0.28, math.nan])
def test_fails_when_a_baseline_is_as_good_or_the_model_is_not_finite(model):
    results = {
        "model": {"catalog_recall@20": model},
        "popularity": {"catalog_recall@20": 0.25},
        "item_knn": {"catalog_recall@20": 0.28},
    }
    decision = gate(results, TOPK_EP)
    assert decision["passed"] is False
    assert "does not beat" in decision["reason"]


def test_lower_is_better_for_mae():
    results = {"model": {"mae": 0.70}, "global_mean": {"mae": 0.90}, "pretrained": {"mae": 0.80}}
    decision = gate(results, MAE_EP)
    assert decision["passed"] is True
    assert decision["best_baseline"] == "pretrained"  # the lowest MAE is the best baseline
    assert decision["improvement"] == pytest.approx(0.10)
    results["model"]["mae"] = 0.85  # better than global_mean, worse than pretrained
    decision = gate(results, MAE_EP)
    assert decision["passed"] is False and decision["improvement"] == pytest.approx(-0.05)


def test_rmse_is_lower_is_better_too():
    ep = evaluate_params(primary_metric="rmse", gate_baselines=["global_mean"])
    assert gate({"model": {"rmse": 0.9}, "global_mean": {"rmse": 1.1}}, ep)["passed"] is True
    assert gate({"model": {"rmse": 1.2}, "global_mean": {"rmse": 1.1}}, ep)["passed"] is False


def test_a_missing_primary_metric_fails_and_names_the_predictors():
    results = {
        "model": {"mae": 0.7},  # the rating model has no catalog metric
        "popularity": {"catalog_recall@20": 0.25},
        # item_knn: not in the results at all
    }
    decision = gate(results, TOPK_EP)
    assert decision["passed"] is False
    assert decision["primary_metric"] == "catalog_recall@20"
    assert "catalog_recall@20" in decision["reason"]
    assert "['item_knn', 'model']" in decision["reason"]
    assert "popularity" not in decision["reason"]


CATALOG_EP = evaluate_params(
    catalog_k=10,
    primary_metric="catalog_recall@10",
    gate_baselines=["popularity"],
    catalog_gate_baselines=["popularity", "item_knn"],
)
PASSED = {"passed": True, "reason": "rating gate ok"}


def test_catalog_gate_without_baselines_returns_the_decision_unchanged():
    ep = evaluate_params(catalog_gate_baselines=[])
    assert catalog_gate(PASSED, {"model": {"catalog_recall@20": 0.0}}, ep) is PASSED


def test_catalog_gate_passes_when_the_model_beats_every_topk_baseline_at_catalog_k():
    results = {
        "model": {"catalog_recall@10": 0.30, "catalog_recall@20": 0.0},
        "popularity": {"catalog_recall@10": 0.25, "catalog_recall@20": 0.9},
        "item_knn": {"catalog_recall@10": 0.29, "catalog_recall@20": 0.9},
    }
    decision = catalog_gate(PASSED, results, CATALOG_EP)
    assert decision["passed"] is True
    assert decision["catalog"] == {
        "metric": "catalog_recall@10",
        "model": 0.30,
        "baselines": {"popularity": 0.25, "item_knn": 0.29},
        "passed": True,
    }
    assert decision["reason"].startswith("rating gate ok; top-K catalog_recall@10 0.3000 beats")


@pytest.mark.parametrize(
    "item_knn",
    [{"catalog_recall@10": 0.31}, {"catalog_recall@10": 0.30}, {"catalog_recall@10": math.nan}, {}, None],
)
def test_catalog_gate_fails_when_a_topk_baseline_is_not_beaten_or_missing(item_knn):
    results = {"model": {"catalog_recall@10": 0.30}, "popularity": {"catalog_recall@10": 0.25}}
    if item_knn is not None:
        results["item_knn"] = item_knn
    decision = catalog_gate(PASSED, results, CATALOG_EP)
    assert decision["passed"] is False and decision["catalog"]["passed"] is False
    assert "does not beat all of" in decision["reason"]


def test_catalog_gate_never_rescues_a_failed_rating_gate_nor_passes_without_the_model():
    results = {
        "model": {"catalog_recall@10": 0.30},
        "popularity": {"catalog_recall@10": 0.25},
        "item_knn": {"catalog_recall@10": 0.20},
    }
    failed = {"passed": False, "reason": "rating gate failed"}
    decision = catalog_gate(failed, results, CATALOG_EP)
    assert decision["passed"] is False and decision["catalog"]["passed"] is True
    del results["model"]
    assert catalog_gate(PASSED, results, CATALOG_EP)["passed"] is False

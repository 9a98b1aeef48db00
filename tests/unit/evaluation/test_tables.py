"""The per-user holdout tables on small hand-made frames: the metric names they produce, the
cold-start and scenario breakdowns (catalog metrics of the top-K predictors included), the ranking."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from metarec_tasks.evaluation.tables import (
    breakdown,
    per_user_catalog,
    per_user_scores,
    predictor_columns,
    ranked_by,
    scenario_of,
    summarize,
    support_bucket,
)
from metarec_tasks.logs.contract import ITEM_KEY, USER_KEY
from metarec_tasks.params import metric_names
from tests.unit.evaluation.frames import evaluate_params, holdout_frame, topk_frame


@pytest.mark.parametrize(
    "update",
    [{}, {"ndcg_ks": [2, 7], "binary_k": 3, "catalog_k": 2, "primary_metric": "catalog_recall@2"}],
)
def test_the_tables_compute_exactly_the_named_metrics(update):
    ep = evaluate_params(**update)
    holdout, topk = holdout_frame(), topk_frame()
    rating = per_user_scores(holdout, "pred_model", ep).columns.drop(USER_KEY)
    catalog = per_user_catalog(topk, holdout, "model", ep).columns.drop(USER_KEY)
    assert [*rating, *catalog] == metric_names(ep)
    assert ep.primary_metric in [*rating, *catalog]


def test_per_user_catalog_against_hand_computed_recall():
    ep = evaluate_params(catalog_k=2, primary_metric="catalog_recall@2")
    scores = per_user_catalog(topk_frame(), holdout_frame(), "model", ep).set_index(USER_KEY)
    assert scores["catalog_recall@2"].to_dict() == {"u1": 0.5, "u2": 1.0, "u3": 0.5}


def test_per_user_catalog_without_relevant_items_keeps_its_columns():
    ep = evaluate_params(catalog_k=2, primary_metric="catalog_recall@2")
    holdout = holdout_frame().assign(value=1.0)
    scores = per_user_catalog(topk_frame(), holdout, "model", ep)
    assert scores.empty and list(scores.columns) == [USER_KEY, "catalog_recall@2", "catalog_ndcg@2"]
    summary = summarize(scores)
    assert summary["users"] == 0 and np.isnan(summary["catalog_recall@2"])


def test_cold_start_curve_has_the_catalog_metrics_of_the_topk_predictors():
    ep = evaluate_params(catalog_k=2, primary_metric="catalog_recall@2")
    holdout = holdout_frame()
    curve = breakdown(holdout, topk_frame(), support_bucket(holdout["support_size"]), ep).set_index("group")
    assert list(curve.index) == [1, 3, 10]
    assert curve["model.catalog_recall@2"].tolist() == [0.5, 1.0, 0.5]
    assert curve["popularity.catalog_recall@2"].tolist() == [0.0, 1.0, 1.0]
    assert {"model.catalog_ndcg@2", "popularity.catalog_ndcg@2"} <= set(curve.columns)
    assert curve["users"].tolist() == [1, 1, 1]
    # the rating predictors keep their MAE; a catalog primary metric is not theirs
    assert {"model.mae", "global_mean.mae"} <= set(curve.columns)
    assert "global_mean.catalog_recall@2" not in curve.columns


def test_scenario_breakdown_scores_the_topk_lists_against_the_scenario_items():
    ep = evaluate_params(catalog_k=2, primary_metric="catalog_recall@2")
    holdout = holdout_frame()
    table = breakdown(holdout, topk_frame(), scenario_of(holdout), ep).set_index("group")
    assert table["model.catalog_recall@2"].to_dict() == {
        "existing_user/existing_item": 0.5,  # u2 {d}: 1; u3 {f}: 0
        "existing_user/new_item": 1.0,  # u3 {g}
        "new_user/existing_item": 1.0,  # u1 {a}
        "new_user/new_item": 0.0,  # u1 {c}
    }
    assert table["popularity.catalog_recall@2"].to_dict() == {
        "existing_user/existing_item": 1.0,
        "existing_user/new_item": 1.0,
        "new_user/existing_item": 0.0,
        "new_user/new_item": 0.0,
    }


def test_a_group_without_relevant_items_gets_nan_catalog_metrics():
    ep = evaluate_params(catalog_k=2, primary_metric="catalog_recall@2")
    holdout = holdout_frame()
    holdout.loc[holdout[USER_KEY] == "u1", "value"] = 1.0
    curve = breakdown(holdout, topk_frame(), support_bucket(holdout["support_size"]), ep).set_index("group")
    assert np.isnan(curve.loc[1, "model.catalog_recall@2"])
    assert curve.loc[3, "model.catalog_recall@2"] == 1.0


def test_breakdown_of_a_query_set_primary_metric_and_no_topk():
    ep = evaluate_params(primary_metric="bin_ndcg@5")
    holdout = holdout_frame()
    empty = pd.DataFrame(columns=[USER_KEY, "predictor", "rank", ITEM_KEY])
    curve = breakdown(holdout, empty, support_bucket(holdout["support_size"]), ep)
    names = predictor_columns(holdout)
    assert {f"{p}.{m}" for p in names for m in ("mae", "bin_ndcg@5")} <= set(curve.columns)
    assert not [c for c in curve.columns if "catalog" in c]


def test_ranked_by_puts_the_best_first_and_predictors_without_the_metric_last():
    results = {
        "a": {"mae": 0.9, "catalog_recall@20": 0.2},
        "b": {"mae": 0.7},
        "c": {"mae": float("nan"), "catalog_recall@20": 0.4},
        "d": {"mae": 0.8, "catalog_recall@20": 0.3},
    }
    assert ranked_by(results, "mae") == ["b", "d", "a", "c"]
    assert ranked_by(results, "catalog_recall@20") == ["c", "d", "a", "b"]

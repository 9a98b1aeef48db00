"""`evaluate.primary_metric` is checked against exactly the metrics evaluate computes, derived from
`ndcg_ks`, `binary_k` and `catalog_k` by the one function `metric_names`."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from metarec_tasks.errors import ConfigError
from metarec_tasks.params import EvaluateParams, load_params, metric_names
from tests.helpers import REPO

DEFAULT = load_params(REPO / "params.yaml").evaluate


def evaluate_params(**update) -> EvaluateParams:
    """Validated EvaluateParams: params.yaml's values with `update` applied (the validator runs)."""
    return EvaluateParams.model_validate({**DEFAULT.model_dump(), **update})


def test_metric_names_follow_the_cut_offs():
    ep = evaluate_params(ndcg_ks=[2, 7], binary_k=3, catalog_k=10, primary_metric="mae")
    assert metric_names(ep) == [
        "mae",
        "rmse",
        "ndcg@2",
        "ndcg@7",
        "bin_ndcg@3",
        "precision@3",
        "recall@3",
        "mrr@3",
        "catalog_recall@10",
        "catalog_ndcg@10",
    ]


def test_no_hit_rate_among_the_metric_names():
    assert not [name for name in metric_names(DEFAULT) if name.startswith("hr@")]


@pytest.mark.parametrize(
    ("update", "metric"),
    [
        ({"catalog_k": 10}, "catalog_recall@10"),
        ({"catalog_k": 10}, "catalog_ndcg@10"),
        ({"binary_k": 3}, "bin_ndcg@3"),
        ({"binary_k": 3}, "mrr@3"),
        ({"ndcg_ks": [7]}, "ndcg@7"),
        ({}, "rmse"),
    ],
)
def test_a_changed_cut_off_is_accepted(update, metric):
    assert evaluate_params(**update, primary_metric=metric).primary_metric == metric


@pytest.mark.parametrize(
    ("update", "metric"),
    [
        ({}, "ndcg@7"),  # 7 is not in ndcg_ks [1, 3, 5]
        ({}, "ndcg@20"),  # the old validator accepted ndcg@1..20
        ({"catalog_k": 10}, "catalog_recall@20"),  # the old validator hard-coded @20
        ({"binary_k": 3}, "bin_ndcg@5"),  # ... and @5
        ({}, "hr@5"),  # hit rate is not computed (it is 1.0 for every non-constant predictor)
        ({}, "accuracy"),
    ],
)
def test_a_metric_evaluate_does_not_compute_is_refused(update, metric):
    with pytest.raises(ValidationError) as error:
        evaluate_params(**update, primary_metric=metric)
    message = str(error.value)
    assert "evaluate.primary_metric" in message and repr(metric) in message
    allowed = metric_names(evaluate_params(**update, primary_metric="mae"))
    assert str(allowed) in message  # lists the allowed values


def test_the_whole_params_file_is_validated_with_a_changed_cut_off():
    overrides = {"evaluate.catalog_k": 10, "evaluate.primary_metric": "catalog_recall@10"}
    assert load_params(REPO / "params.yaml", overrides).evaluate.primary_metric == "catalog_recall@10"
    with pytest.raises(ConfigError, match=r"evaluate\.primary_metric 'ndcg@7' is not a metric"):
        load_params(REPO / "params.yaml", {"evaluate.primary_metric": "ndcg@7"})

"""Each metric against an independent implementation, on random cases with ties."""

import itertools

import numpy as np
import pytest
from sklearn.metrics import ndcg_score

from metarec_tasks.evaluation import metrics

RNG = np.random.default_rng(7)


def _cases(n_cases=200):
    for _ in range(n_cases):
        n = int(RNG.integers(2, 12))
        ratings = RNG.integers(1, 6, n).astype(float)
        scores = RNG.integers(0, 4, n).astype(float)  # few distinct values: many ties
        if RNG.random() < 0.5:
            scores = scores + RNG.random(n)
        yield ratings, scores


@pytest.mark.parametrize("k", [1, 3, 5, 10])
def test_graded_ndcg_matches_sklearn_including_ties(k):
    for ratings, scores in _cases():
        gains = 2.0**ratings - 1
        expected = ndcg_score(gains[None, :], scores[None, :], k=k)
        assert metrics.ndcg_graded(ratings, scores, k) == pytest.approx(expected, abs=1e-12)


def test_tie_averaging_equals_the_mean_over_all_tie_breaks():
    ratings = np.array([5.0, 1.0, 4.0, 3.0])
    scores = np.array([1.0, 1.0, 1.0, 0.0])
    gains = 2.0**ratings - 1
    ideal = np.sort(gains)[::-1][:2] @ metrics.discounts(2)
    values = []
    for perm in itertools.permutations(range(3)):
        order = [*perm, 3]
        values.append(gains[order][:2] @ metrics.discounts(2) / ideal)
    assert metrics.ndcg_graded(ratings, scores, 2) == pytest.approx(np.mean(values))


def _reference_binary(relevant, scores, k):
    pairs = sorted(zip(scores, relevant, strict=True), key=lambda p: (-p[0], p[1]))  # relevant last
    top = [rel for _, rel in pairs[:k]]
    hits = sum(top)
    first = next((i for i, rel in enumerate(top) if rel), None)
    return {
        f"precision@{k}": hits / k,
        f"recall@{k}": hits / sum(relevant) if sum(relevant) else 0.0,
        f"mrr@{k}": 0.0 if first is None else 1 / (first + 1),
        f"ndcg@{k}": ndcg_score(np.asarray(relevant, float)[None, :], np.asarray(scores)[None, :], k=k)
        if sum(relevant)
        else 0.0,
    }


def test_binary_metrics_match_a_reference_loop():
    for ratings, scores in _cases():
        relevant = metrics.top_rated_relevance(ratings, min(5, len(ratings) - 1))
        got = metrics.binary_metrics(relevant, scores, 5)
        want = _reference_binary(relevant.tolist(), scores.tolist(), 5)
        assert got == pytest.approx(want, abs=1e-12)


def test_top_rated_relevance_is_deterministic_under_rating_ties():
    relevant = metrics.top_rated_relevance(np.array([4, 5, 4, 4, 3.0]), 2)
    assert relevant.tolist() == [True, True, False, False, False]


def test_constant_predictor_gets_no_credit_from_row_order():
    ratings = np.array([1.0, 2, 3, 4, 5, 5, 4, 3, 2, 1])
    relevant = metrics.top_rated_relevance(ratings, 5)
    flat = np.zeros(10)
    assert metrics.binary_metrics(relevant, flat, 5)["precision@5"] == 0.0  # pessimistic
    assert 0 < metrics.ndcg_graded(ratings, flat, 5) < metrics.ndcg_graded(ratings, ratings, 5)


def test_catalog_metrics_against_hand_computed_values():
    got = metrics.catalog_metrics(["a", "x", "b", "y"], {"a", "b", "c"}, k=4)
    dcg = 1 + 1 / np.log2(4)
    idcg = 1 + 1 / np.log2(3) + 1 / np.log2(4)
    assert got == pytest.approx({"recall@4": 2 / 3, "ndcg@4": dcg / idcg})


def test_mean_ci95():
    values = RNG.normal(size=400)
    mean, half = metrics.mean_ci95(values)
    assert mean == pytest.approx(values.mean())
    assert half == pytest.approx(1.96 * values.std(ddof=1) / 20)

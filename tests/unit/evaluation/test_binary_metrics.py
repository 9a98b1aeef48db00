"""The binary (RecBole-MetaRec) protocol reports no hit rate: with 5 relevant items among 10 query
items, HR@5 is 1.0 for every predictor that is not constant, so it separates nothing."""

from __future__ import annotations

import numpy as np

from metarec_tasks.evaluation import metrics

RNG = np.random.default_rng(3)


def test_hit_rate_at_5_would_be_one_for_any_non_constant_predictor():
    """Why it is dropped: the top 5 of 10 items misses all 5 relevant ones only for a ranking that
    puts exactly the 5 irrelevant ones first."""
    for _ in range(300):
        n = int(RNG.integers(6, 11))
        ratings = RNG.integers(1, 6, n).astype(float)
        scores = RNG.normal(size=n)
        relevant = metrics.top_rated_relevance(ratings, 5)
        order = metrics.pessimistic_order(relevant, scores)
        hits = relevant[order][:5].sum()
        anti = n == 10 and set(order[:5]) == set(np.flatnonzero(~relevant))
        assert hits > 0 or anti


def test_binary_metrics_have_no_hit_rate():
    ratings = np.array([5.0, 4, 4, 3, 3, 2, 2, 1, 1, 1])
    relevant = metrics.top_rated_relevance(ratings, 5)
    got = metrics.binary_metrics(relevant, RNG.normal(size=10), 5)
    assert set(got) == {"ndcg@5", "precision@5", "recall@5", "mrr@5"}

"""Recommendation metrics for one user at a time, with explicit, documented tie handling.

Two ranking protocols coexist in the cold-start literature and we report both:
- MeLU/TaNP: graded nDCG@k over the user's query items, gain 2^rating − 1;
- RecBole-MetaRec: the 5 query items with the highest true rating are "relevant" (binary), the query
  items are ranked by predicted score, and nDCG/Precision/Recall/MRR@5 are computed on that.
  Hit rate (HR@k: at least one relevant item in the top k) is deliberately not reported: with N
  relevant items among n query items, the top k holds at least k + N − n relevant ones. With the
  defaults (10 query items, 5 relevant, k = 5) a user is missed only when the ranking puts exactly
  the 5 irrelevant items first (e.g. a constant predictor, under pessimistic tie-breaking), and never
  when the user has fewer than 10 query items: HR@5 is 1.0 for every non-constant predictor and
  separates nothing.
Full-catalog metrics (Recall@K, nDCG@K over every item not in the support set) measure what the
published top-K actually is.

Ties in predictions: nDCG averages the discount over the tied positions (the expected DCG under a
random tie-break, as `sklearn.metrics.ndcg_score`), so a constant predictor gets its expected score
rather than a lucky or unlucky row order. Precision/Recall/MRR break ties pessimistically
(relevant items last).
"""

from __future__ import annotations

import numpy as np


def discounts(n: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, n + 2))


def tie_averaged_dcg(gains: np.ndarray, scores: np.ndarray, k: int) -> float:
    """DCG@k of items ranked by `scores`, each tie group sharing the mean discount of its positions."""
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_gains = scores[order], gains[order]
    _, starts, counts = np.unique(-sorted_scores, return_index=True, return_counts=True)
    disc = np.zeros(len(scores))
    disc[: min(k, len(scores))] = discounts(min(k, len(scores)))
    total = 0.0
    for start, count in zip(starts, counts, strict=True):
        total += sorted_gains[start : start + count].mean() * disc[start : start + count].sum()
    return float(total)


def ndcg(gains: np.ndarray, scores: np.ndarray, k: int) -> float:
    """nDCG@k with tie-averaging; 0 when no item has a positive gain."""
    gains, scores = np.asarray(gains, float), np.asarray(scores, float)
    ideal = np.sort(gains)[::-1][:k]
    idcg = float(np.sum(ideal * discounts(len(ideal))))
    return tie_averaged_dcg(gains, scores, k) / idcg if idcg > 0 else 0.0


def ndcg_graded(ratings: np.ndarray, scores: np.ndarray, k: int) -> float:
    """MeLU's definition: gain 2^rating − 1 over the query items."""
    return ndcg(2.0 ** np.asarray(ratings, float) - 1.0, scores, k)


def top_rated_relevance(ratings: np.ndarray, n_relevant: int) -> np.ndarray:
    """RecBole-MetaRec's binary relevance: the `n_relevant` highest-rated query items (earlier rows
    win ties in the true rating, so the definition is deterministic)."""
    ratings = np.asarray(ratings, float)
    relevant = np.zeros(len(ratings), dtype=bool)
    relevant[np.argsort(-ratings, kind="stable")[:n_relevant]] = True
    return relevant


def pessimistic_order(relevant: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Indices by descending score; among equal scores, irrelevant items first."""
    return np.lexsort((relevant.astype(int), -np.asarray(scores, float)))


def binary_metrics(relevant: np.ndarray, scores: np.ndarray, k: int) -> dict[str, float]:
    """nDCG, Precision, Recall and MRR at k for a binary relevance vector (no hit rate: see the module
    docstring)."""
    relevant = np.asarray(relevant, bool)
    n_rel = int(relevant.sum())
    top = relevant[pessimistic_order(relevant, scores)][:k]
    hits = int(top.sum())
    first = int(np.argmax(top)) if hits else -1
    return {
        f"ndcg@{k}": ndcg(relevant.astype(float), np.asarray(scores, float), k),
        f"precision@{k}": hits / k,
        f"recall@{k}": hits / n_rel if n_rel else 0.0,
        f"mrr@{k}": 1.0 / (first + 1) if hits else 0.0,
    }


def catalog_metrics(ranked_items: list[str], relevant_items: set[str], k: int) -> dict[str, float]:
    """Recall@k and nDCG@k of a ranked list against the user's relevant held-out items."""
    top = ranked_items[:k]
    hits = np.asarray([item in relevant_items for item in top], dtype=float)
    n_rel = len(relevant_items)
    idcg = float(np.sum(discounts(min(n_rel, k)))) if n_rel else 0.0
    dcg = float(np.sum(hits * discounts(len(hits))))
    return {
        f"recall@{k}": float(hits.sum() / n_rel) if n_rel else 0.0,
        f"ndcg@{k}": dcg / idcg if idcg > 0 else 0.0,
    }


def mean_ci95(values: np.ndarray) -> tuple[float, float]:
    """Mean and the half-width of its normal-approximation 95% confidence interval."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    if len(values) == 1:
        return float(values[0]), float("nan")
    return float(values.mean()), float(1.96 * values.std(ddof=1) / np.sqrt(len(values)))

"""Recall@K straight from score matrices: the number tuning, fusion and selection maximise.

Same definition as `evaluation.metrics.catalog_metrics` (hits in the top K over the user's relevant
items), vectorized so a grid of baseline knobs or blend weights costs one `argpartition` each.
"""

from __future__ import annotations

import numpy as np


def top_k_rows(scores: np.ndarray, excluded: np.ndarray, k: int) -> np.ndarray:
    """[users, k] item columns of the k best allowed items, best first."""
    masked = np.where(excluded, -np.inf, scores)
    k = min(k, masked.shape[1])
    part = np.argpartition(-masked, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(masked, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def recall_per_user(scores: np.ndarray, excluded: np.ndarray, relevant: list[set[int]], k: int) -> np.ndarray:
    """[users] Recall@k; NaN for a user without relevant items."""
    top = top_k_rows(scores, excluded, k)
    out = np.full(len(relevant), np.nan)
    for u, rel in enumerate(relevant):
        if rel:
            out[u] = len(rel.intersection(top[u].tolist())) / len(rel)
    return out


def mean_recall(scores: np.ndarray, excluded: np.ndarray, relevant: list[set[int]], k: int) -> float:
    values = recall_per_user(scores, excluded, relevant, k)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")

"""Non-meta top-K baselines, scored over the full catalog from training users' interactions.

- `popularity`: how many training users interacted with the item;
- `popularity_mf`: biased MF on the training users' implicit matrix (item bias = popularity share, ALS
  with ridge `ranking.mf_reg`, `ranking.mf_dim` factors), the new user folded in by ridge regression of
  their support row on the item factors — popularity plus a user-taste term;
- `item_knn`: cosine similarity of item columns, the `ranking.knn_neighbors` nearest kept; an item's
  score is its summed similarity to the user's support items (popularity breaks ties).
Each returns [users, n_items] scores; exclusions (support, unavailable) are applied by the caller.
"""

from __future__ import annotations

import numpy as np

from metarec_tasks.params import RankingParams

ALS_ITERATIONS = 10  # alternating ridge solves; the objective flattens well before this on our sizes


def interaction_matrix(items: list[np.ndarray], weights: list[np.ndarray], n_items: int) -> np.ndarray:
    matrix = np.zeros((len(items), n_items), np.float32)
    for u, (rows, w) in enumerate(zip(items, weights, strict=True)):
        matrix[u, rows] = np.maximum(matrix[u, rows], w)
    return matrix


def popularity(train: np.ndarray, support: list[np.ndarray]) -> np.ndarray:
    counts = (train > 0).sum(axis=0).astype(np.float32)
    return np.broadcast_to(counts, (len(support), len(counts))).copy()


class FoldInMF:
    """Biased implicit MF fitted by ALS; new users are folded in with a closed-form ridge solve."""

    def __init__(self, train: np.ndarray, dim: int, reg: float, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.bias = train.mean(axis=0)
        residual = train - self.bias
        n_users, n_items = train.shape
        dim = max(1, min(dim, n_users, n_items))
        self.reg = reg
        self.items = rng.normal(0, 0.1, (n_items, dim)).astype(np.float64)
        users = np.zeros((n_users, dim))
        eye = np.eye(dim)
        for _ in range(ALS_ITERATIONS):
            users = residual @ self.items @ np.linalg.inv(self.items.T @ self.items + reg * eye)
            self.items = residual.T @ users @ np.linalg.inv(users.T @ users + reg * eye)
        self._solve = np.linalg.inv(self.items.T @ self.items + reg * eye) @ self.items.T

    def scores(self, rows: np.ndarray) -> np.ndarray:
        """[users, n_items] for users given as rows of the implicit matrix (their support)."""
        users = (rows - self.bias) @ self._solve.T
        return self.bias + users @ self.items.T


def popularity_mf(train: np.ndarray, support_rows: np.ndarray, rp: RankingParams) -> np.ndarray:
    return FoldInMF(train, rp.mf_dim, rp.mf_reg).scores(support_rows)


def item_knn(train: np.ndarray, support_rows: np.ndarray, neighbors: int) -> np.ndarray:
    binary = (train > 0).astype(np.float32)
    norms = np.sqrt(binary.sum(axis=0)).clip(min=1e-6)
    sim = (binary.T @ binary) / norms[:, None] / norms[None, :]
    np.fill_diagonal(sim, 0.0)
    if neighbors < sim.shape[1]:
        cut = -np.partition(-sim, neighbors - 1, axis=1)[:, neighbors - 1 : neighbors]
        sim = np.where(sim >= cut, sim, 0.0)
    counts = binary.sum(axis=0)
    tie_break = 1e-6 * counts / max(counts.max(), 1.0)
    return (support_rows > 0).astype(np.float32) @ sim + tie_break

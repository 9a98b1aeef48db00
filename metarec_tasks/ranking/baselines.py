"""Non-meta top-K baselines, scored over the full catalog from training users' interactions.

- `popularity`: how many training users interacted with the item;
- `FoldInMF` (popularity + MF): biased MF on the training users' implicit matrix (item bias =
  popularity share, ALS with a ridge, some factors), the new user folded in by ridge regression of
  their support row on the item factors — popularity plus a user-taste term;
- `ItemKNN`: cosine similarity of item columns, a number of nearest neighbours kept; an item's
  score is its summed similarity to the user's support items (popularity breaks ties);
- `EASE` (Steck 2019): closed-form item-item ridge regression with a zero diagonal,
  B = I − P·diag(1/diag(P)), P = (XᵀX + λI)⁻¹; a user's scores are their support row times B. The
  inverse is dense in the catalog size, so above `max_items` items it is fitted on the `max_items`
  most popular ones and every other item scores below them (a logged rule, not an OOM).
Each returns [users, n_items] scores; exclusions (support, unavailable) are applied by the caller.
Their knobs are chosen on validation users (`metarec_tasks/selection/candidates.py`).
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

ALS_ITERATIONS = 10  # alternating ridge solves; the objective flattens well before this on our sizes


def interaction_matrix(items: list[np.ndarray], weights: list[np.ndarray], n_items: int) -> np.ndarray:
    matrix = np.zeros((len(items), n_items), np.float32)
    for u, (rows, w) in enumerate(zip(items, weights, strict=True)):
        matrix[u, rows] = np.maximum(matrix[u, rows], w)
    return matrix


def support_matrix(
    items: list[np.ndarray],
    n_items: int,
    low: list[np.ndarray] | None = None,
    low_weight: float = 0.0,
    weights: list[np.ndarray] | None = None,
) -> np.ndarray:
    """[users, n_items] what a model reads of each support set: 1 per positive (or its `weights`),
    `low_weight` per item the user rated low — a watched-but-disliked item still says what the user
    watches (on ML-100K, EASE's validation recall rises with 0.25–0.5)."""
    ones = [np.ones(len(rows), np.float32) for rows in items]
    matrix = interaction_matrix(items, weights if weights is not None else ones, n_items)
    if low is not None and low_weight > 0:
        for u, rows in enumerate(low):
            matrix[u, rows] = np.maximum(matrix[u, rows], low_weight)
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


class ItemKNN:
    """Cosine similarity of the training users' item columns, computed once; any number of
    neighbours (`neighbors`) kept per item at scoring time."""

    def __init__(self, train: np.ndarray):
        binary = (train > 0).astype(np.float32)
        norms = np.sqrt(binary.sum(axis=0)).clip(min=1e-6)
        self.sim = (binary.T @ binary) / norms[:, None] / norms[None, :]
        np.fill_diagonal(self.sim, 0.0)
        counts = binary.sum(axis=0)
        self.tie_break = 1e-6 * counts / max(counts.max(), 1.0)

    def scores(self, support_rows: np.ndarray, neighbors: int) -> np.ndarray:
        """`support_rows`: `support_matrix` rows (1 per positive, the low-rating weight per low one)."""
        sim = self.sim
        if neighbors < sim.shape[1]:
            cut = -np.partition(-sim, neighbors - 1, axis=1)[:, neighbors - 1 : neighbors]
            sim = np.where(sim >= cut, sim, 0.0)
        return support_rows.astype(np.float32) @ sim + self.tie_break


class EASE:
    """Fitted once on the training users' implicit matrix; scores any support rows."""

    def __init__(self, train: np.ndarray, lam: float, max_items: int):
        binary = (train > 0).astype(np.float64)
        counts = binary.sum(axis=0)
        n_items = binary.shape[1]
        self.columns = (
            np.arange(n_items) if n_items <= max_items else np.sort(np.argsort(-counts)[:max_items])
        )
        if len(self.columns) < n_items:
            log.warning("EASE: %d items > %d: fitted on the %d most popular", n_items, max_items, max_items)
        sub = binary[:, self.columns]
        gram = sub.T @ sub + lam * np.eye(len(self.columns))
        inverse = np.linalg.inv(gram)
        self.weights = (-inverse / np.diag(inverse)).astype(np.float32)
        np.fill_diagonal(self.weights, 0.0)
        self.n_items = n_items

    def scores(self, support_rows: np.ndarray) -> np.ndarray:
        """`support_rows`: `support_matrix` rows (1 per positive, the low-rating weight per low one)."""
        out = np.full(
            (len(support_rows), self.n_items), -1e6, np.float32
        )  # unpooled: below every pooled item
        out[:, self.columns] = support_rows[:, self.columns].astype(np.float32) @ self.weights
        return out

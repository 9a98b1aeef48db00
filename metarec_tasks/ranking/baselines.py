"""Non-meta top-K baselines, scored over the full catalog from training users' interactions.

- `Popularity`: how many training users interacted with the item;
- `FoldInMF` (popularity + MF): biased MF on the training users' implicit matrix (item bias =
  popularity share, ALS with a ridge, some factors), the new user folded in by ridge regression of
  their support row on the item factors — popularity plus a user-taste term;
- `ItemKNN`: cosine similarity of item columns, a number of nearest neighbours kept; an item's
  score is its summed similarity to the user's support items (popularity breaks ties);
- `EASE` (Steck 2019): closed-form item-item ridge regression with a zero diagonal,
  B = I − P·diag(1/diag(P)), P = (XᵀX + λI)⁻¹; a user's scores are their support row times B. The
  inverse is dense in the catalog size, so above `max_items` items it is fitted on the `max_items`
  most popular ones and every other item scores below them (a logged rule, not an OOM). With
  `kappa` > 0 the ridge is λ + κ·diag(XᵀX): the closed form of EASE trained on inputs with dropout
  (Steck 2020, "Autoencoders that don't overfit towards the identity"), popular items shrunk more.
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


GRAM_BLOCK_USERS = 16_384  # users per block of XᵀX: memory O(block × items), not O(users × items)


def item_counts(matrix: np.ndarray) -> np.ndarray:
    """[n_items] users with a positive entry per item (float64), a block of users at a time."""
    counts = np.zeros(matrix.shape[1])
    for start in range(0, len(matrix), GRAM_BLOCK_USERS):
        counts += (matrix[start : start + GRAM_BLOCK_USERS] > 0).sum(axis=0)
    return counts


def pooled_columns(counts: np.ndarray, max_items: int) -> np.ndarray:
    """Every item, or above `max_items` items the `max_items` most popular (EASE's logged rule)."""
    n_items = len(counts)
    if n_items <= max_items:
        return np.arange(n_items)
    log.warning("EASE: %d items > %d: fitted on the %d most popular", n_items, max_items, max_items)
    return np.sort(np.argsort(-counts)[:max_items])


def binary_gram(matrix: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """(X > 0)ᵀ(X > 0) over `columns`, in float64, summed a block of users at a time. Its entries are
    co-occurrence counts, exact in float64, so the blocks give the one-product result bit for bit."""
    gram = np.zeros((len(columns), len(columns)))
    for start in range(0, len(matrix), GRAM_BLOCK_USERS):
        block = (matrix[start : start + GRAM_BLOCK_USERS][:, columns] > 0).astype(np.float64)
        gram += block.T @ block
    return gram


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


class Popularity:
    """How many training users interacted with each item, counted once: a night scores its users a
    chunk at a time, and counting per chunk read the whole users × items matrix each time (at a
    million users, quadratic in users)."""

    def __init__(self, train: np.ndarray):
        self.counts = item_counts(train).astype(np.float32)

    def scores(self, support: list[np.ndarray]) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(support), len(self.counts))).copy()


def sparse_matrix(matrix):
    """`matrix` as a float64 scipy CSR array (itself if it is one). scipy is imported here, not at
    the top: the `train` stage imports this module for the EASE prior and would pay 0.2 s for it."""
    from scipy import sparse

    return sparse.csr_array(matrix, dtype=np.float64)


class FoldInMF:
    """Biased implicit MF fitted by ALS; new users are folded in with a closed-form ridge solve.

    The residual X − 1·biasᵀ is dense, but X is sparse (a user touches a few dozen of the catalog's
    items): every ALS product is taken as a sparse product minus a rank-one term, so a fit costs
    O(interactions × dim), not O(users × items × dim) — at 100,000 users, 300 items the dense fit
    was 45% of `finetune` (py-spy)."""

    def __init__(self, train, dim: int, reg: float, seed: int = 0):
        """`train`: the users × items matrix, dense or `sparse_matrix`'s (convert once for many fits)."""
        rng = np.random.default_rng(seed)
        matrix = sparse_matrix(train)
        n_users, n_items = matrix.shape
        self.bias = np.asarray(matrix.sum(axis=0)).ravel() / max(n_users, 1)
        dim = max(1, min(dim, n_users, n_items))
        self.reg = reg
        self.items = rng.normal(0, 0.1, (n_items, dim)).astype(np.float64)
        eye = np.eye(dim)
        for _ in range(ALS_ITERATIONS):
            users = (matrix @ self.items - self.bias @ self.items) @ np.linalg.inv(
                self.items.T @ self.items + reg * eye
            )
            residual_t_users = matrix.T @ users - np.outer(self.bias, users.sum(axis=0))
            self.items = residual_t_users @ np.linalg.inv(users.T @ users + reg * eye)
        self._solve = np.linalg.inv(self.items.T @ self.items + reg * eye) @ self.items.T

    def scores(self, rows: np.ndarray) -> np.ndarray:
        """[users, n_items] for users given as rows of the implicit matrix (their support)."""
        users = (rows - self.bias) @ self._solve.T
        return self.bias + users @ self.items.T


class ItemKNN:
    """Cosine similarity of the training users' item columns, computed once; any number of
    neighbours (`neighbors`) kept per item at scoring time — the last number's cut kept, since a
    night scores every user chunk by chunk with one number."""

    def __init__(self, train: np.ndarray):
        binary = (train > 0).astype(np.float32)
        norms = np.sqrt(binary.sum(axis=0)).clip(min=1e-6)
        self.sim = (binary.T @ binary) / norms[:, None] / norms[None, :]
        np.fill_diagonal(self.sim, 0.0)
        counts = binary.sum(axis=0)
        self.tie_break = 1e-6 * counts / max(counts.max(), 1.0)
        self._cut: tuple[int, np.ndarray] | None = None

    def neighbours(self, neighbors: int) -> np.ndarray:
        """The similarity matrix with each item's `neighbors` nearest kept, the rest 0."""
        if self._cut is None or self._cut[0] != neighbors:
            sim = self.sim
            if neighbors < sim.shape[1]:
                cut = -np.partition(-sim, neighbors - 1, axis=1)[:, neighbors - 1 : neighbors]
                sim = np.where(sim >= cut, sim, 0.0)
            self._cut = (neighbors, sim)
        return self._cut[1]

    def scores(self, support_rows: np.ndarray, neighbors: int) -> np.ndarray:
        """`support_rows`: `support_matrix` rows (1 per positive, the low-rating weight per low one)."""
        return support_rows.astype(np.float32) @ self.neighbours(neighbors) + self.tie_break


class EASE:
    """Fitted once on the training users' implicit matrix; scores any support rows."""

    def __init__(self, train: np.ndarray, lam: float, max_items: int, kappa: float = 0.0):
        columns = pooled_columns(item_counts(train), max_items)
        self._fit(binary_gram(train, columns), columns, lam, train.shape[1], kappa)

    @classmethod
    def from_gram(
        cls, gram: np.ndarray, columns: np.ndarray, lam: float, n_items: int, kappa: float = 0.0
    ) -> EASE:
        """The fit from a `binary_gram` over `columns`: several λ, or several user subsets (a Gram
        is a sum over users), without rereading the users × items matrix."""
        ease = cls.__new__(cls)
        ease._fit(gram, columns, lam, n_items, kappa)
        return ease

    def _fit(self, gram: np.ndarray, columns: np.ndarray, lam: float, n_items: int, kappa: float) -> None:
        self.columns = columns
        inverse = np.linalg.inv(gram + np.diag(lam + kappa * np.diag(gram)))
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

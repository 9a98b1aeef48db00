"""The item-item fits the item-model probe (`benchmarks/item_models.py`) compares with EASE: closed
forms and small solvers that read a users × items matrix, return weights or scores, and choose no
knob themselves (the probe chooses every knob on validation users)."""

from __future__ import annotations

import numpy as np

ALS_ITERATIONS = 8
REWEIGHT_Z_SCALE = 3.0  # z-scores divided by this before exp: a = ±1 spans weights e^(±5/3) at the clip


def zscore(scores: np.ndarray) -> np.ndarray:
    """Per-user z-scores over the catalog: terms of any scale add up."""
    return (scores - scores.mean(1, keepdims=True)) / (scores.std(1, keepdims=True) + 1e-9)


def watch_to_like(watched: np.ndarray, liked: np.ndarray, lam: float) -> np.ndarray:
    """argmin ‖L − W·B‖² + λ‖B‖² with diag(B) = 0 (Lagrange multipliers per column, as in EASE)."""
    watched64 = watched.astype(np.float64)
    inverse = np.linalg.inv(watched64.T @ watched64 + lam * np.eye(watched.shape[1]))
    weights = inverse @ (watched64.T @ liked)
    weights -= inverse * (np.diag(weights) / np.diag(inverse))[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights.astype(np.float32)


def support_reweighted(inputs: np.ndarray, weights: np.ndarray, a: float, iterations: int) -> np.ndarray:
    """Item-item scores of `inputs` with each support item reweighted by exp(a·z / REWEIGHT_Z_SCALE),
    z its own leave-one-out score (EASE's zero diagonal) z-scored over the catalog, the weights of a user's
    support kept at mean 1; `iterations` rounds, each from the previous round's scores."""
    support = inputs > 0
    scale = np.ones_like(inputs)
    for _ in range(iterations):
        scores = zscore((inputs * scale) @ weights)
        scale = np.where(support, np.exp(a * np.clip(scores, -5, 5) / REWEIGHT_Z_SCALE), 0.0)
        mean = scale.sum(1, keepdims=True) / np.maximum(support.sum(1, keepdims=True), 1)
        scale = scale / np.maximum(mean, 1e-12)
    return (inputs * scale) @ weights


def user_knn(train: np.ndarray, inputs: np.ndarray, k: int) -> np.ndarray:
    """Each row of `inputs` (a user's support) scored by the `k` `train` rows (training users' liked
    items) most cosine-similar to it, summed weighted by that similarity."""
    similarity = (inputs / (np.linalg.norm(inputs, axis=1, keepdims=True) + 1e-9)) @ (
        train / (np.linalg.norm(train, axis=1, keepdims=True) + 1e-9)
    ).T
    nearest = np.argpartition(-similarity, k, axis=1)[:, :k]
    kept = np.zeros_like(similarity)
    np.put_along_axis(kept, nearest, np.take_along_axis(similarity, nearest, 1), 1)
    return kept @ train


def top_pairs(gram: np.ndarray, count: int) -> np.ndarray:
    """The `count` item pairs (i < j) rated together by the most users, as [count, 2] columns; `gram`:
    the co-occurrence counts (`baselines.binary_gram`), which the probe already holds for EASE."""
    upper = np.triu_indices(len(gram), 1)
    best = np.argsort(-gram[upper], kind="stable")[:count]
    return np.stack([upper[0][best], upper[1][best]], 1)


def pair_inputs(inputs: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """A pair's input: the product of its two items' inputs (on only when the user has both)."""
    return inputs[:, pairs[:, 0]] * inputs[:, pairs[:, 1]]


def higher_order_ease(
    watched: np.ndarray, pairs: np.ndarray, lam: float, pair_lam: float
) -> tuple[np.ndarray, np.ndarray]:
    """argmin ‖X − X·B − Z·C‖² + λ‖B‖² + λp‖C‖², Z the `pairs`' inputs, with B's diagonal zero and
    C[(i, j), i] = C[(i, j), j] = 0: per target item, the exact fit with its own constrained inputs
    removed (Lagrange multipliers over them). Returns (B, C)."""
    n_items = watched.shape[1]
    features = np.concatenate([watched, pair_inputs(watched, pairs)], 1).astype(np.float64)
    gram = features.T @ features
    inverse = np.linalg.inv(gram + np.diag(np.r_[np.full(n_items, lam), np.full(len(pairs), pair_lam)]))
    weights = inverse @ gram[:, :n_items]
    constrained: list[list[int]] = [[item] for item in range(n_items)]
    for row, (i, j) in enumerate(pairs):
        constrained[i].append(n_items + row)
        constrained[j].append(n_items + row)
    for item, rows in enumerate(constrained):
        multipliers = np.linalg.solve(inverse[np.ix_(rows, rows)], weights[rows, item])
        weights[:, item] -= inverse[:, rows] @ multipliers
        weights[rows, item] = 0.0
    return weights[:n_items].astype(np.float32), weights[n_items:].astype(np.float32)


def rp3beta(watched: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    user_to_item = watched / np.maximum(watched.sum(1, keepdims=True), 1)
    item_to_user = watched.T / np.maximum(watched.sum(0)[:, None], 1)
    weights = (item_to_user**alpha) @ (user_to_item**alpha)
    weights /= np.maximum(watched.sum(0), 1)[None, :] ** beta
    np.fill_diagonal(weights, 0.0)
    return weights.astype(np.float32)


def rating_mf(ratings: np.ndarray, factors: int, reg: float) -> tuple[float, np.ndarray]:
    """Biased MF of explicit ratings by ALS: (global mean, [items, factors + 1] factors and bias)."""
    rng = np.random.default_rng(0)
    rated = ratings > 0
    mean = float(ratings[rated].mean())
    users = rng.normal(0, 0.1, (len(ratings), factors + 1))
    items = rng.normal(0, 0.1, (ratings.shape[1], factors + 1))
    ridge = reg * np.eye(factors + 1)
    for _ in range(ALS_ITERATIONS):
        design = np.hstack([users[:, :factors], np.ones((len(users), 1))])
        for i in np.flatnonzero(rated.any(0)):
            m = rated[:, i]
            target = ratings[m, i] - mean - users[m, factors]
            items[i] = np.linalg.solve(design[m].T @ design[m] + ridge, design[m].T @ target)
        users = fold_in(mean, items, ratings, reg)  # the ALS user step is the fold-in of every user
    return mean, items


def fold_in(mean: float, items: np.ndarray, ratings: np.ndarray, reg: float) -> np.ndarray:
    """Each user's [factors, bias] by ridge on their ratings' residuals."""
    factors = items.shape[1] - 1
    design = np.hstack([items[:, :factors], np.ones((len(items), 1))])
    ridge = reg * np.eye(factors + 1)
    out = np.zeros((len(ratings), factors + 1))
    for u in range(len(ratings)):
        m = ratings[u] > 0
        target = ratings[u, m] - mean - items[m, factors]
        out[u] = np.linalg.solve(design[m].T @ design[m] + ridge, design[m].T @ target)
    return out


def predicted_ratings(mean: float, items: np.ndarray, ratings: np.ndarray, reg: float) -> np.ndarray:
    users = fold_in(mean, items, ratings, reg)
    factors = items.shape[1] - 1
    return mean + items[:, factors][None, :] + users[:, :factors] @ items[:, :factors].T + users[:, [factors]]

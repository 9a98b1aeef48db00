"""EASE from a Gram summed over blocks of users: the same fit, bit for bit, as from the whole matrix —
which is what lets the prior fit every λ and every fold's complement without copying users × items."""

from __future__ import annotations

import numpy as np

from metarec_tasks.ranking import baselines as bl


def implicit(users: int = 97, items: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(rng.random((users, items)) < 0.3, rng.choice([0.5, 1.0], (users, items)), 0.0).astype(
        np.float32
    )


def test_blocked_gram_is_the_one_product(monkeypatch):
    train = implicit()
    columns = np.array([0, 2, 3, 7, 11])
    whole = (train[:, columns] > 0).astype(np.float64)
    monkeypatch.setattr(bl, "GRAM_BLOCK_USERS", 10)  # 97 users: ten blocks, the last one short
    assert np.array_equal(bl.binary_gram(train, columns), whole.T @ whole)
    assert np.array_equal(bl.item_counts(train), (train > 0).sum(axis=0))


def test_a_fit_without_some_users_is_the_gram_minus_theirs():
    train = implicit()
    fold = np.random.default_rng(1).integers(0, 3, len(train))
    columns = bl.pooled_columns(bl.item_counts(train), max_items=8)  # 12 items: the 8 most popular
    assert len(columns) == 8
    gram = bl.binary_gram(train, columns)
    rest = bl.EASE.from_gram(gram - bl.binary_gram(train[fold == 0], columns), columns, 10.0, train.shape[1])
    direct = bl.EASE(train[fold != 0][:, columns], 10.0, max_items=8)
    assert np.array_equal(rest.weights, direct.weights)
    whole = bl.EASE(train, 10.0, max_items=8)
    assert np.array_equal(bl.EASE.from_gram(gram, columns, 10.0, train.shape[1]).weights, whole.weights)
    assert np.array_equal(whole.columns, columns) and whole.scores(train[:3]).shape == (3, 12)


def test_dropout_ease_is_ease_with_a_ridge_growing_with_the_item_count():
    train = implicit()
    columns = np.arange(train.shape[1])
    gram = bl.binary_gram(train, columns)
    dropout = bl.EASE.from_gram(gram, columns, 10.0, train.shape[1], kappa=0.5)
    folded = bl.EASE.from_gram(gram + np.diag(0.5 * np.diag(gram)), columns, 10.0, train.shape[1])
    assert np.allclose(dropout.weights, folded.weights, atol=1e-6)  # λ + κ·count on the diagonal
    assert not np.allclose(dropout.weights, bl.EASE.from_gram(gram, columns, 10.0, train.shape[1]).weights)
    assert np.array_equal(bl.EASE(train, 10.0, 12, kappa=0.5).weights, dropout.weights)

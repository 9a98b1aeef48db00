"""The item-model probe: its asymmetric EASE is EASE when the target is the input, the episodic
trainer returns its best validated epoch (epoch 0 = the EASE start), and the report's differences
are against EASE, paired over test users."""

from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks.item_fits import (
    higher_order_ease,
    pair_inputs,
    support_reweighted,
    top_pairs,
    user_knn,
    watch_to_like,
)
from benchmarks.item_models import (
    Users,
    build_report,
    closed_form_ease,
    cross_validated_ease,
    ease_fits,
    episodic,
    markdown,
)
from metarec_tasks.logs.contract import USER_KEY
from metarec_tasks.ranking.baselines import EASE


def interactions(users: int = 40, items: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((users, items)) < 0.3).astype(np.float32)


def test_watch_to_like_is_ease_when_the_target_is_the_input():
    watched = interactions()
    ease = EASE(watched, 5.0, max_items=100).weights
    assert np.allclose(watch_to_like(watched, watched, 5.0), ease, atol=1e-5)
    assert np.all(np.diag(watch_to_like(watched, interactions(seed=1), 5.0)) == 0)


def test_the_ridge_variants_are_ease_at_a_constant_ridge():
    watched = interactions()
    ease = EASE(watched, 5.0, max_items=100).weights
    gram = watched.astype(np.float64).T @ watched
    plain, dropout = (weights for _, weights in ease_fits(gram, [5.0], [0.0, 1.0]))
    assert np.allclose(plain, ease, atol=1e-5)
    learned = closed_form_ease(torch.tensor(gram, dtype=torch.float32), torch.full((12,), float(np.log(5.0))))
    assert np.allclose(learned.numpy(), ease, atol=1e-4)
    assert not np.allclose(dropout, ease, atol=1e-3)  # κ shrinks popular items more


def test_higher_order_ease_is_ease_without_pairs_and_each_column_the_ridge_fit_without_its_own_inputs():
    watched = interactions()
    ease = EASE(watched, 5.0, max_items=100).weights
    together = watched.astype(np.float64).T @ watched
    items, pair_weights = higher_order_ease(watched, top_pairs(together, 0), 5.0, 50.0)
    assert np.allclose(items, ease, atol=1e-5) and pair_weights.shape == (0, 12)
    pairs = top_pairs(together, 6)
    assert min(together[i, j] for i, j in pairs) >= np.sort(together[np.triu_indices(12, 1)])[-6]
    items, pair_weights = higher_order_ease(watched, pairs, 5.0, 50.0)
    features = np.concatenate([watched, pair_inputs(watched, pairs)], 1).astype(np.float64)
    ridge = np.r_[np.full(12, 5.0), np.full(len(pairs), 50.0)]
    for item in range(12):  # brute force: the ridge fit of column `item` on every other input
        kept = [f for f in range(12 + len(pairs)) if f != item and (f < 12 or item not in pairs[f - 12])]
        x = features[:, kept]
        fit = np.linalg.solve(x.T @ x + np.diag(ridge[kept]), x.T @ watched[:, item])
        expected = np.zeros(12 + len(pairs))
        expected[kept] = fit
        assert np.allclose(np.r_[items[:, item], pair_weights[:, item]], expected, atol=1e-5)
    assert np.abs(pair_weights).sum() > 0  # the pairs do carry weight on the other items


def test_a_pair_input_is_on_only_when_the_user_has_both_items():
    pairs = np.array([[0, 1], [1, 2], [0, 2]])
    inputs = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 0.5]], np.float32)
    assert np.array_equal(pair_inputs(inputs, pairs), [[1.0, 0.0, 0.0], [0.0, 0.5, 0.0]])


def test_user_knn_scores_by_the_nearest_training_users_only():
    train = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]], np.float32)
    scores = user_knn(train, np.array([[1, 1, 0, 0]], np.float32), k=1)
    assert np.allclose(scores, train[:1])  # its one neighbour is the identical first user
    scores = user_knn(train, np.array([[1, 1, 0, 0]], np.float32), k=2)
    assert scores[0, 2] > 0 and scores[0, 3] == 0  # the second-nearest counts, the unrelated one does not


def as_users(rows: np.ndarray, seed: int) -> Users:
    """Each row a user: a random half of their items the support, the other half the query."""
    rng = np.random.default_rng(seed)
    support = rows * (rng.random(rows.shape) < 0.5)
    return Users(
        users=[f"u{u}" for u in range(len(rows))],
        liked=support,
        low=np.zeros_like(rows),
        ratings=support * 5,
        relevant=[set(np.flatnonzero(row - kept).tolist()) for row, kept in zip(rows, support, strict=True)],
        excluded=support > 0,
    )


def test_cross_validation_scores_each_part_by_the_fit_on_the_other_parts_only():
    watched = interactions(users=60, items=60)  # more items than K: the ranking matters
    halves = [watched[:30], watched[30:]]
    parts = [(rows, as_users(rows, seed)) for seed, rows in enumerate(halves)]
    gram = watched.astype(np.float64).T @ watched
    cv = cross_validated_ease(gram, parts, [5.0, 50.0], [0.0], [0.0])
    for lam in (5.0, 50.0):
        expected = [
            parts[k][1].recall(parts[k][1].inputs(0.0) @ EASE(halves[1 - k], lam, max_items=100).weights)
            for k in (0, 1)
        ]
        recall = np.concatenate(expected)
        assert cv[lam, 0.0, 0.0] == pytest.approx(np.nanmean(recall))


def test_support_reweighting_is_ease_at_slope_zero_and_trusts_the_typical_item_above_it():
    weights = np.zeros((4, 4), np.float32)
    weights[0, 1] = weights[1, 0] = 1.0  # items 0 and 1 predict each other; item 2 predicts nothing
    inputs = np.array([[1.0, 1.0, 1.0, 0.0]], np.float32)
    assert np.allclose(support_reweighted(inputs, weights, 0.0, 2), inputs @ weights)
    weights[2, 3] = 1.0  # the outlier item 2 is the only evidence for item 3
    plain = (inputs @ weights)[0]
    trusting, doubting = (support_reweighted(inputs, weights, a, 1)[0] for a in (1.0, -1.0))
    assert trusting[3] < plain[3] < doubting[3]  # a > 0 shrinks the outlier's say, a < 0 grows it
    assert trusting[0] > plain[0]


def test_episodic_training_returns_its_best_validated_epoch_or_the_ease_start():
    watched = interactions()
    init = EASE(watched, 5.0, max_items=100).weights
    val = Users(
        users=[f"u{u}" for u in range(8)],
        liked=watched[:8],
        low=np.zeros_like(watched[:8]),
        ratings=watched[:8] * 5,
        relevant=[{u % 12} for u in range(8)],
        excluded=np.zeros_like(watched[:8], dtype=bool),
    )
    start = np.nanmean(val.recall(val.inputs(0.0) @ init))
    weights, bias, epoch, value = episodic(init, watched, watched, 0.0, 0.05, val, seed=0)
    assert value >= start
    assert np.nanmean(val.recall(val.inputs(0.0) @ weights + bias)) == pytest.approx(value)
    if epoch == 0:
        assert np.array_equal(weights, init) and not bias.any()
    else:
        assert not np.array_equal(weights, init)


def test_report_compares_every_model_with_ease_paired_over_users():
    recall = {"ease": [0.5, 0.0, 1.0, 0.5] * 3, "better": [1.0, 0.5, 1.0, 1.0] * 3}
    frame = pd.DataFrame(
        [
            {"fold": 0, USER_KEY: f"u{u}", "model": model, "recall@20": value}
            for model, values in recall.items()
            for u, value in enumerate(values)
        ]
    )
    infos = [{"fold": 0, "knobs": {"ease": "λ=1", "better": "x"}, "validation": {"ease": 0.4, "better": 0.6}}]
    report = build_report(frame, infos, None, None, types.SimpleNamespace(argv=[], load_average="0"), 0.0)
    assert report["overall"]["ease"]["minus_ease"] == 0.0 and report["overall"]["ease"]["wilcoxon_p"] == 1.0
    assert report["overall"]["better"]["minus_ease"] == pytest.approx(0.375)
    assert report["overall"]["better"]["wilcoxon_p"] < 0.05
    assert "| better | 0.6000 |" in markdown(report)

"""Selection and fusion on hand-made candidates: the best on validation users wins — a baseline
when it is best, the meta model when it is — and the blend's weights follow the support size."""

from __future__ import annotations

import numpy as np

from metarec_tasks.orchestration.summary import selection_lines
from metarec_tasks.params import load_params
from metarec_tasks.ranking.data import EvalUsers
from metarec_tasks.ranking.episodes import UserItems
from metarec_tasks.selection.candidates import Candidate
from metarec_tasks.selection.fusion import bucket_of, normalise
from metarec_tasks.selection.metrics import mean_recall, recall_per_user
from metarec_tasks.selection.select import BLEND, select
from tests.helpers import REPO

N_ITEMS, K = 60, 5
SP = load_params(REPO / "params.yaml").selection


def users(sizes: list[int], relevant: list[set[int]]) -> EvalUsers:
    """Users with `sizes` support items (items 30.. onwards, never relevant) and `relevant` sets."""
    items = [np.arange(30, 30 + s) for s in sizes]
    support = UserItems(
        [f"u{i}" for i in range(len(sizes))],
        np.arange(len(sizes)),
        items,
        [np.ones(s, np.float32) for s in sizes],
    )
    return EvalUsers(support, relevant)


def oracle(n_users: int, hits: dict[int, set[int]], noise_seed: int) -> np.ndarray:
    """[n_users, N_ITEMS] scores that put `hits[u]` on top for the users listed, noise elsewhere."""
    rng = np.random.default_rng(noise_seed)
    scores = rng.random((n_users, N_ITEMS)).astype(np.float32)
    for u, items in hits.items():
        scores[u, list(items)] += 10.0
    return scores


def candidate(name: str, kind: str, scores: np.ndarray, val: EvalUsers) -> Candidate:
    excluded = np.zeros_like(scores, bool)
    recall = mean_recall(scores, excluded, val.relevant, K)
    return Candidate(name, kind, lambda support: scores[: len(support)], {}, recall, val_scores=scores)


def excluded_for(val: EvalUsers) -> np.ndarray:
    mask = np.zeros((len(val.support), N_ITEMS), bool)
    for u, items in enumerate(val.support.items):
        mask[u, items] = True
    return mask


def test_recall_matches_its_definition():
    scores = np.arange(40, dtype=np.float32)[None, :].repeat(2, axis=0)  # item 39 best
    excluded = np.zeros_like(scores, bool)
    excluded[0, 39] = True
    recall = recall_per_user(scores, excluded, [{38, 0}, set()], 2)
    assert recall[0] == 0.5 and np.isnan(recall[1])  # top 2 of user 0: 38, 37 (39 excluded)


def test_a_baseline_that_is_best_on_validation_users_is_the_challenger_and_says_so():
    relevant = [{0, 1}, {2, 3}, {4, 5}, {6, 7}]
    val = users([2, 2, 2, 2], relevant)
    good = oracle(4, dict(enumerate(relevant)), 0)
    weak = oracle(4, {}, 1)
    pool = [candidate("model", "meta", weak, val), candidate("ease", "baseline", good, val)]
    chosen = select(pool, val, excluded_for(val), K, SP.model_copy(update={"blend": False}))
    assert chosen.challenger == "ease" and chosen.kind("ease") == "baseline"
    assert chosen.producer()["candidate"] == "ease"
    report = {
        "metric": "catalog_recall@5",
        "challenger": "ease",
        "challenger_kind": "baseline",
        "challenger_is_baseline": True,
        "best_single_baseline": "ease",
        "difference": 0.0,
        "wilcoxon_p": 1.0,
        "paired_users": 4,
        "candidates": [
            {"candidate": "ease", "kind": "baseline", "validation": 1.0, "holdout": 1.0, "holdout_ci95": 0.0}
        ],
    }
    assert any("Challenger ease (a baseline)" in line for line in selection_lines(report))


def test_the_meta_model_wins_when_it_is_best_on_validation_users():
    relevant = [{0, 1}, {2, 3}, {4, 5}, {6, 7}]
    val = users([2, 2, 2, 2], relevant)
    pool = [
        candidate("model", "meta", oracle(4, dict(enumerate(relevant)), 0), val),
        candidate("popularity", "baseline", oracle(4, {}, 1), val),
    ]
    assert (
        select(pool, val, excluded_for(val), K, SP.model_copy(update={"blend": False})).challenger == "model"
    )


def test_the_blend_learns_per_bucket_weights_new_users_follow_meta_known_users_follow_item_item():
    sizes = [1] * 40 + [20] * 40  # new users, then well-known ones
    relevant = [{u % 25} for u in range(80)]
    val = users(sizes, relevant)
    meta_hits = {u: relevant[u] for u in range(40)}  # meta knows the new users
    item_hits = {u: relevant[u] for u in range(40, 80)}  # the item-item model the known ones
    pool = [
        candidate("model", "meta", oracle(80, meta_hits, 0), val),
        candidate("item_knn", "baseline", oracle(80, item_hits, 1), val),
    ]
    sp = SP.model_copy(update={"min_bucket_users": 30})
    chosen = select(pool, val, excluded_for(val), K, sp)
    assert chosen.challenger == BLEND and chosen.validation[BLEND] > max(
        chosen.validation["model"], chosen.validation["item_knn"]
    )
    weights = chosen.blend.by_bucket
    assert weights[1].get("model", 0) > weights[1].get("item_knn", 0)
    assert weights[20].get("item_knn", 0) > weights[20].get("model", 0)
    assert bucket_of(np.array([0, 1, 2, 3, 25])).tolist() == [1, 1, 1, 3, 20]


def test_normalised_scores_ignore_excluded_and_unscored_items():
    scores = np.array([[1.0, 2.0, 3.0, -1e6, 100.0]], np.float32)
    excluded = np.array([[False, False, False, False, True]])
    z = normalise(scores, excluded)
    assert np.isclose(z[0, :3].mean(), 0.0, atol=1e-6) and z[0, 3] == z[0, 4] == z.min()


def test_normalised_scores_keep_the_order_of_a_heavy_tail():
    """Item-item scores put a few items far above the rest (EASE: z of 10–40 on ML-100K); the
    normalisation must still rank them as the candidate did, only their weight in a blend shrinks."""
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(size=1000), [20.0, 30.0, 40.0, 80.0]])[None].astype(np.float32)
    z = normalise(scores, np.zeros_like(scores, bool))
    top = np.argsort(-scores[0])[:10]
    assert np.all(np.diff(z[0, top]) < 0)  # strictly decreasing: no ties at a clip
    assert z.max() < 20.0  # ...and an outlier does not swamp the other candidates of a blend

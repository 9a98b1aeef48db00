"""The ranking objective, its engine under every meta-learner, scoring and the top-K baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from metarec_tasks.meta import ALGORITHMS
from metarec_tasks.meta.functional import make_engine
from metarec_tasks.meta.objectives import LOG_Q, bpr, sampled_softmax
from metarec_tasks.meta.tasks import Catalog
from metarec_tasks.models.ranking import RankDims, RankNet, load_rank_model, save_rank_model
from metarec_tasks.params import RankingParams, load_params
from metarec_tasks.ranking import baselines as bl
from metarec_tasks.ranking.data import EvalUsers, RankContext, eval_users
from metarec_tasks.ranking.episodes import (
    NegativeSampler,
    item_features,
    known_mask,
    ranking_set,
    sample_episodes,
    support_size,
    user_items,
)
from metarec_tasks.ranking.scoring import candidate_pool, exclusion_mask, rank_users, top_k
from metarec_tasks.training.checkpoint import Checkpoints
from metarec_tasks.training.ranker import catalog_recall, meta_train, ranking_algorithm, warm_up
from tests.helpers import REPO
from tests.meta_fixtures import meta_params

N_ITEMS, N_USERS = 24, 60
DIMS = RankDims(user_cat_sizes=[3], item_cat_sizes=[4], item_multi_sizes={}, n_item_ids=N_ITEMS, dim=6)
META = meta_params("maml", adapt="head", inner_steps=2, inner_lr=0.5, epochs=1, patience=1)
DEFAULTS = load_params(REPO / "params.yaml")


def rank_params(meta: dict | None = None, **ranking) -> RankingParams:
    """The committed `ranking` block with these changes (`meta`: changes to its meta block)."""
    changed_meta = DEFAULTS.ranking.meta.model_copy(update=meta or {})
    return DEFAULTS.ranking.model_copy(update={**ranking, "meta": changed_meta})


def two_taste_world(seed: int = 0):
    """Users of group g interact with items of their half of the catalog (plus a popular item 0)."""
    rng = np.random.default_rng(seed)
    catalog = Catalog(
        users={"user_cat": torch.zeros((N_USERS, 1), dtype=torch.long)},
        items={
            "item_id": torch.arange(N_ITEMS),
            "item_cat": torch.as_tensor(np.arange(N_ITEMS) % 4)[:, None],
        },
        user_ids=[f"u{u}" for u in range(N_USERS)],
        item_ids=[f"i{i}" for i in range(N_ITEMS)],
    )
    rows = []
    for u in range(N_USERS):
        half = np.arange(1, N_ITEMS // 2) if u % 2 == 0 else np.arange(N_ITEMS // 2, N_ITEMS)
        for i in [0, *rng.choice(half, 6, replace=False)]:
            rows.append({"user_id": f"u{u}", "item_id": f"i{i}", "event_type": "click", "value": 1.0})
    return catalog, pd.DataFrame(rows)


def context(catalog, train, rp):
    counts = np.bincount(np.concatenate(train.items), minlength=N_ITEMS)
    sampler = NegativeSampler(counts, rp.negative_alpha)
    return RankContext(
        catalog,
        item_features(catalog, sampler),
        sampler,
        rp,
        np.random.default_rng(0),
        np.zeros(N_ITEMS, bool),
    )


def test_losses_prefer_positives_above_negatives_and_ignore_padding():
    target = torch.tensor([1.0, 2.0, 0.0, 0.0, 0.0])
    mask = torch.tensor([True, True, True, True, False])
    log_q = torch.zeros(5)
    good, bad = torch.tensor([3.0, 3.0, -3.0, -3.0, 99.0]), torch.tensor([-3.0, -3.0, 3.0, 3.0, -99.0])
    for loss in (sampled_softmax, bpr):
        assert loss(good, target, mask, log_q) < loss(bad, target, mask, log_q)
        # the padded row's score changes nothing
        moved = good.clone()
        moved[4] = -50.0
        assert torch.isclose(loss(good, target, mask, log_q), loss(moved, target, mask, log_q))


def test_the_softmax_second_derivative_stays_finite_far_from_the_negatives():
    """MAML differentiates the inner step's gradient: at a logit gap past float32's exp range (a large
    adapted prior weight did this at 6,000 users) the second derivative must stay finite."""
    base = torch.tensor([-120.0, 0.0, 0.0, 0.0, 3.0])  # a positive far below its negatives; padding
    target = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0])
    mask = torch.tensor([True, True, True, True, False])
    w = torch.tensor(1.0, requires_grad=True)
    loss = sampled_softmax(w * base, target, mask, torch.zeros(5))
    (first,) = torch.autograd.grad(loss, w, create_graph=True)
    (second,) = torch.autograd.grad(first, w)
    assert torch.isfinite(loss) and torch.isfinite(first) and torch.isfinite(second)
    expected = torch.tensor(120.0 + np.log(3.0), dtype=torch.float32)  # -log(e^-120 / (e^-120 + 3))
    assert torch.isclose(loss, expected, rtol=1e-6)


def test_logq_correction_discounts_frequently_sampled_negatives():
    scores = torch.tensor([1.0, 1.0, 1.0])
    target, mask = torch.tensor([1.0, 0.0, 0.0]), torch.ones(3, dtype=torch.bool)
    uniform = sampled_softmax(scores, target, mask, torch.log(torch.full((3,), 1 / 3)))
    popular_negative = sampled_softmax(scores, target, mask, torch.log(torch.tensor([0.1, 0.8, 0.1])))
    assert popular_negative < uniform


@pytest.mark.parametrize(
    ("counts", "alpha"),
    [
        (np.ones(50), 0.0),  # uniform: the default
        (np.random.default_rng(1).zipf(1.3, 3000) - 1, 1.0),  # a long tail of rare items
        (np.r_[np.zeros(500), 1e6], 1.0),  # 500 rare items crowd the first guide cells: binary search
        (np.r_[1e6, np.zeros(500)], 1.0),
    ],
)
def test_negative_draws_are_rng_choice_draws(counts, alpha):
    sampler = NegativeSampler(counts, alpha)
    expected = np.random.default_rng(7).choice(len(counts), size=(40, 300), p=sampler.prob)
    drawn = sampler.draw(40, 300, np.random.default_rng(7))
    np.testing.assert_array_equal(drawn, expected)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_algorithm_meta_learns_the_ranking_objective_vectorized(name):
    catalog, events = two_taste_world()
    rp = rank_params({"meta_batch_size": 8}, negatives=5)
    train = user_items(events, catalog, rp.event_weights)
    ctx = context(catalog, train, rp)
    torch.manual_seed(0)
    model = RankNet(DIMS, catalog.items)
    algorithm = ranking_algorithm(rp, model, name)
    users, support, query = sample_episodes(train.subset(np.arange(8)), 3, 3, ctx.rng)
    batch = ctx.batch(users, support, query)
    loss = algorithm.meta_loss(model, batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.encoder.item_id.weight.grad.abs().sum() > 0  # the item table learns through the query loss
    adapted, _ = algorithm.adapt(model, batch, 2)
    assert adapted["head.user"].shape == (8, DIMS.dim)
    assert not torch.allclose(adapted["head.user"][0], adapted["head.user"][1])  # per-user adaptation


def test_task_rows_read_the_item_tower_at_their_catalog_rows_and_broadcast_the_user():
    """Training rows carry catalog rows and one user row per task; the scores must be those of the
    tower run on every row's own features with the user repeated per row (the layout before)."""
    catalog, events = two_taste_world()
    rp = rank_params(negatives=5)
    train = user_items(events, catalog, rp.event_weights)
    ctx = context(catalog, train, rp)
    users, support, query = sample_episodes(train.subset(np.arange(6)), 4, 3, ctx.rng)
    rows = ctx.batch(users, support, query).support
    torch.manual_seed(0)
    model = RankNet(DIMS, catalog.items)
    torch.nn.init.normal_(model.mlp.weight)  # a user tower that is not zero
    assert rows.user["user_cat"].shape[1] == 1  # one user row per task
    vectors, bias = model.encoder.items({k: v[rows.item["item_row"]] for k, v in catalog.items.items()})
    users_per_row = {k: v.expand(*rows.mask.shape, -1) for k, v in rows.user.items()}
    expected = (model.user_vector(users_per_row) * vectors).sum(-1) + bias
    torch.testing.assert_close(model(rows.user, rows.item), expected)
    with pytest.raises(RuntimeError, match="without the catalog"):
        RankNet(DIMS)(rows.user, rows.item)


@pytest.mark.parametrize("loss", ["softmax", "bpr"])
def test_vectorized_ranking_engine_matches_the_naive_loop(loss):

    from metarec_tasks.meta import build_algorithm

    catalog, events = two_taste_world()
    rp = rank_params(negatives=5, loss=loss)
    train = user_items(events, catalog, rp.event_weights)
    ctx = context(catalog, train, rp)
    users, support, query = sample_episodes(train.subset(np.arange(6)), 4, 3, ctx.rng)
    batch = ctx.batch(users, support, query)
    grads = []
    for reference in (False, True):
        torch.manual_seed(0)
        model = RankNet(DIMS, catalog.items).double()
        batch.support.item[LOG_Q] = batch.support.item[LOG_Q].double()
        batch.query.item[LOG_Q] = batch.query.item[LOG_Q].double()
        algorithm = build_algorithm(
            META.model_copy(update={"adapt": "mlp"}), model, make_engine(loss, reference)
        )
        algorithm.meta_loss(model, batch).backward()
        grads.append({k: v.grad.clone() for k, v in model.named_parameters() if v.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], rtol=1e-8, atol=1e-10)


def test_meta_trained_ranker_beats_popularity_on_a_two_taste_world(tmp_path):
    catalog, events = two_taste_world()
    rp = rank_params(
        {"epochs": 15, "pretrain_epochs": 2, "meta_batch_size": 16, "patience": 15}, negatives=8, dim=6
    )
    train_events = events[events["user_id"].isin([f"u{u}" for u in range(40)])]
    test_events = events[~events["user_id"].isin(train_events["user_id"])]
    train = user_items(train_events, catalog, rp.event_weights)
    ctx = context(catalog, train, rp)
    # test users: support = 2 of their items, relevant = the rest
    support_frame = test_events.groupby("user_id").nth([1, 2])
    rest = test_events.drop(support_frame.index)
    users = sorted(test_events["user_id"].unique())
    support = user_items(support_frame, catalog, rp.event_weights, users)
    relevant = [set(catalog.item_rows(rest[rest["user_id"] == u]["item_id"]).tolist()) - {0} for u in users]
    test = EvalUsers(support, relevant)
    torch.manual_seed(0)
    model = warm_up(RankNet(DIMS, catalog.items), ctx, train)
    algorithm = ranking_algorithm(rp, model)
    checkpoints = Checkpoints(tmp_path / "checkpoints", "two-taste")
    meta_train(model, algorithm, ctx, train, test, 5, checkpoints, torch.Generator().manual_seed(0))
    recall = catalog_recall(model, algorithm, rp.meta.inner_steps, ctx, test, 5)
    matrix = bl.interaction_matrix(train.items, train.weights, N_ITEMS)
    pop = top_k(
        torch.as_tensor(bl.Popularity(matrix).scores(support.items)),
        exclusion_mask(support.items, ctx.unavailable),
        5,
    )[1]
    pop_recall = np.mean([len(set(r) & rel) / len(rel) for r, rel in zip(pop, relevant, strict=True)])
    assert recall > pop_recall + 0.2

    save_rank_model(tmp_path / "rank.pt", model, {"algorithm": "maml"}, algorithm.state_dict())
    loaded, meta, _ = load_rank_model(tmp_path / "rank.pt", catalog.items)
    assert meta == {"algorithm": "maml"}
    again = rank_users(loaded, algorithm, rp.meta.inner_steps, ctx, support, 5, 4)
    np.testing.assert_array_equal(
        again, rank_users(model, algorithm, rp.meta.inner_steps, ctx, support, 5, 4)
    )


def test_seen_and_unavailable_items_are_never_ranked_and_pools_cap_big_catalogs():
    scores = torch.arange(6, dtype=torch.float32).repeat(2, 1)
    unavailable = np.array([False, False, False, False, False, True])
    excluded = exclusion_mask([np.array([4]), np.array([0, 1])], unavailable)
    _, rows = top_k(scores, excluded, 3)
    assert rows[0].tolist() == [3, 2, 1] and rows[1].tolist() == [4, 3, 2]
    values, rows = top_k(scores, excluded, 6)
    allowed = rows[0][np.isfinite(values[0])].tolist()
    assert sorted(allowed) == [0, 1, 2, 3]
    rp = rank_params(max_catalog_items=4, pool_popular=2, pool_recent=1)
    pool = candidate_pool(np.array([9, 1, 8, 0, 0, 0]), np.array([0, 0, 0, 0, 0, 7]), rp)
    assert pool.tolist() == [0, 2, 5]
    assert candidate_pool(np.zeros(3), np.zeros(3), rp) is None


def test_baselines_rank_what_they_should():
    train = np.zeros((6, 5), np.float32)
    train[:3, [0, 1]] = 1  # group A: items 0, 1
    train[3:, [2, 3]] = 1  # group B: items 2, 3
    train[:, 4] = 1  # everyone: item 4
    user_b = np.zeros((1, 5), np.float32)
    user_b[0, 2] = 1
    assert np.argmax(bl.Popularity(train).scores([np.array([2])])[0]) == 4
    item_knn = bl.ItemKNN(train)
    knn = item_knn.scores(user_b, neighbors=2)[0]
    assert np.argmax(np.where(user_b[0] > 0, -np.inf, knn)) == 3
    # the kept cut follows the number asked for: one neighbour of item 2 (item 3) drops item 4
    one = item_knn.scores(user_b, 1)[0]
    assert one[4] < knn[4]
    np.testing.assert_array_equal(one, bl.ItemKNN(train).scores(user_b, 1)[0])
    np.testing.assert_array_equal(item_knn.scores(user_b, 2)[0], knn)
    mf = bl.FoldInMF(train, dim=2, reg=0.1).scores(user_b)[0]
    assert mf[3] > mf[0] and mf[3] > mf[1]


def test_mf_fit_on_the_sparse_matrix_is_the_dense_als():
    """The fit never forms the dense residual X − 1·biasᵀ; it must still be that ALS."""
    rng = np.random.default_rng(3)
    train = ((rng.random((40, 12)) < 0.3) * rng.choice([0.5, 1.0, 2.0], (40, 12))).astype(np.float32)
    dim, reg = 3, 0.5
    bias = train.astype(np.float64).mean(axis=0)
    residual, eye = train - bias, np.eye(dim)
    items = np.random.default_rng(0).normal(0, 0.1, (12, dim))
    for _ in range(bl.ALS_ITERATIONS):
        users = residual @ items @ np.linalg.inv(items.T @ items + reg * eye)
        items = residual.T @ users @ np.linalg.inv(users.T @ users + reg * eye)
    mf = bl.FoldInMF(train, dim, reg, seed=0)
    np.testing.assert_allclose(mf.bias, bias, rtol=1e-12)
    np.testing.assert_allclose(mf.items, items, rtol=1e-9, atol=1e-12)


def test_catalog_gate_requires_beating_every_topk_baseline():
    from metarec_tasks.evaluation.gate import catalog_gate

    ep = DEFAULTS.evaluate.model_copy(
        update={"gate_baselines": ["global_mean"], "catalog_gate_baselines": ["popularity"]}
    )
    decision = {"passed": True, "reason": "rating gate ok"}
    results = {"model": {"catalog_recall@20": 0.3}, "popularity": {"catalog_recall@20": 0.25}}
    assert catalog_gate(decision, results, ep)["passed"]
    results["popularity"]["catalog_recall@20"] = 0.31
    assert not catalog_gate(decision, results, ep)["passed"]
    del results["popularity"]  # a missing top-K baseline fails the gate, never passes it silently
    assert not catalog_gate(decision, results, ep)["passed"]


def test_rating_term_of_objective_both_is_the_adapted_rating_minus_the_mean():
    from metarec_tasks.meta import build_algorithm
    from metarec_tasks.personalization.ranking import rating_term
    from tests.meta_fixtures import DIMS as RATING_DIMS
    from tests.meta_fixtures import tiny_model

    params = DEFAULTS
    n = RATING_DIMS.n_item_ids
    catalog = Catalog(
        users={"user_cat": torch.zeros((2, 2), dtype=torch.long)},
        items={
            "item_cat": torch.zeros((n, 1), dtype=torch.long),
            "item_multi.tags": torch.zeros((n, 6)),
            "item_id": torch.arange(n),
        },
        user_ids=["a", "b"],
        item_ids=[f"i{i}" for i in range(n)],
    )
    model = tiny_model(torch.float32, items=catalog.items)
    algorithm = build_algorithm(META, model)
    ratings = pd.DataFrame(
        {"user_id": ["a", "a"], "item_id": ["i1", "i2"], "value": [5.0, 4.0], "timestamp": [1, 2]}
    )
    term = rating_term(model, algorithm, ratings, catalog, 3.5, params)
    out = term(["b", "a"], np.array(["i3", "unknown-item", "i1"], dtype=object))
    assert out.shape == (2, 3)
    assert torch.all(out[0] == 0)  # b has no ratings: no rating term
    assert out[1, 1] == 0  # an item the rating network does not know
    assert out[1, 0] != 0 and out[1, 2] != 0


def test_a_low_rating_is_no_positive_but_is_never_recommended_back():
    """Explicit feedback: i1 rated 1 star is not in the support positives, yet is excluded from the list."""
    catalog, _ = two_taste_world()
    tasks = pd.DataFrame(
        {
            "user_id": ["u0", "u0", "u0"],
            "item_id": ["i1", "i2", "i3"],
            "value": [1.0, 5.0, 4.0],
            "role": ["support", "support", "query"],
        }
    )
    users = eval_users(tasks, catalog, DEFAULTS)
    assert users.support.items[0].tolist() == [2]
    assert users.support.low[0].tolist() == [1]  # kept apart: input of the item-item models only
    assert sorted(users.seen[0].tolist()) == [1, 2]
    assert users.relevant == [{3}]
    excluded = exclusion_mask(users.seen, np.zeros(N_ITEMS, bool))
    _, rows = top_k(torch.arange(N_ITEMS, 0, -1, dtype=torch.float32)[None], excluded, 3)
    assert rows[0].tolist() == [0, 3, 4]


def test_a_task_set_holds_its_positives_first_and_never_its_own_items_as_negatives():
    catalog, _ = two_taste_world()
    positives = [np.asarray([3, 5]), np.zeros(0, np.int64), np.asarray([7])]
    weights = [np.asarray([1.0, 2.0], np.float32), np.zeros(0, np.float32), np.asarray([0.5], np.float32)]
    known = known_mask(
        N_ITEMS,
        [np.asarray([3, 5]), np.asarray([1]), np.zeros(0, np.int64)],
        [np.asarray([9]), np.zeros(0, np.int64), np.asarray([7])],
    )
    negatives = np.asarray([[9, 3, 4], [1, 2, 1], [8, 7, 0]])
    sampler = NegativeSampler(np.ones(N_ITEMS), 0.0)
    s = ranking_set(
        catalog, item_features(catalog, sampler), np.arange(3), positives, weights, negatives, known
    )
    assert s.item_rows.tolist() == [[3, 5, -1, -1, 4], [-1, -1, -1, 2, -1], [7, -1, 8, -1, 0]]
    assert s.target.tolist() == [[1.0, 2.0, 0, 0, 0], [0, 0, 0, 0, 0], [0.5, 0, 0, 0, 0]]
    assert s.mask.tolist() == (s.item_rows >= 0).tolist()


def test_a_low_rated_support_item_enters_the_item_item_input_at_its_own_weight():
    rows = bl.support_matrix(
        [np.asarray([2]), np.asarray([0])], 5, [np.asarray([1, 2]), np.zeros(0, np.int64)], 0.25
    )
    assert rows.tolist() == [[0, 0.25, 1, 0, 0], [1, 0, 0, 0, 0]]  # a positive wins over a low rating
    assert bl.support_matrix([np.asarray([2])], 5, [np.asarray([1])], 0.0).tolist() == [[0, 0, 1, 0, 0]]
    train = np.zeros((6, 5), np.float32)
    train[:3, [0, 1]] = 1
    train[3:, [2, 3]] = 1
    ease = bl.EASE(train, 1.0, 5)
    watched_low = bl.support_matrix([np.zeros(0, np.int64)], 5, [np.asarray([2])], 0.5)
    assert np.argmax(np.where(watched_low[0] > 0, -np.inf, ease.scores(watched_low)[0])) == 3


def test_log_uniform_support_sizes_give_few_shot_episodes_their_share():
    rng = np.random.default_rng(0)
    uniform = np.asarray([support_size(30, "uniform", rng) for _ in range(4000)])
    log_uniform = np.asarray([support_size(30, "log_uniform", rng) for _ in range(4000)])
    for sizes in (uniform, log_uniform):
        assert sizes.min() == 1 and sizes.max() == 30
    assert (log_uniform <= 3).mean() > 3 * (uniform <= 3).mean()
    assert abs((log_uniform <= 3).mean() - (log_uniform >= 8).mean()) < 0.1  # 1–3 as often as 8–30
    assert support_size(1, "log_uniform", rng) == 1

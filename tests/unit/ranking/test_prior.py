"""The ranker's item-item prior: cross-fitted for training users, one score on every path."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.func import functional_call, vmap

from metarec_tasks.meta import ALGORITHMS
from metarec_tasks.models.ranking import RankNet
from metarec_tasks.ranking import baselines as bl
from metarec_tasks.ranking.episodes import sample_episodes, user_items
from metarec_tasks.ranking.prior import PRIOR_KEY, fit_prior
from metarec_tasks.ranking.scoring import adapted_users, score_items
from metarec_tasks.training.ranker import ranking_algorithm
from tests.unit.ranking.test_ranking import DIMS, N_ITEMS, N_USERS, context, rank_params, two_taste_world

PRIOR_DIMS = dataclasses.replace(DIMS, prior=True, prior_weight=1.0, support_buckets=3)
TRAIN_USERS = np.arange(40)  # catalog rows of the training users; the rest are "validation" users


def prior_of(matrix: np.ndarray, lambdas: tuple[float, ...] = (1.0, 10.0), folds: int = 4):
    val = np.arange(40, N_USERS)
    relevant = [set(np.flatnonzero(matrix[u]).tolist()) for u in val]
    return fit_prior(
        matrix[TRAIN_USERS],
        TRAIN_USERS,
        N_USERS,
        lambda low_weight: np.where(matrix[val] > 0, 1.0, 0.0)[:, ::-1].copy(),  # any rows: λ choice only
        np.zeros((len(val), N_ITEMS), bool),
        relevant,
        list(lambdas),
        [0.0],
        max_items=N_ITEMS,
        folds=folds,
        k=5,
        seed=0,
        buckets=3,
    )


def prior_world():
    """(ranking params, training positives, a context with the prior) of the two-taste world."""
    catalog, events = two_taste_world()
    rp = rank_params({"meta_batch_size": 8}, negatives=5)
    train = user_items(events, catalog, rp.event_weights)
    matrix = bl.interaction_matrix(train.items, train.weights, N_ITEMS)
    return rp, train, dataclasses.replace(context(catalog, train, rp), prior=prior_of(matrix))


def test_a_training_users_own_interactions_never_reach_their_own_prior():
    catalog, events = two_taste_world()
    interactions = user_items(events, catalog, {"click": 1.0})
    matrix = bl.interaction_matrix(interactions.items, interactions.weights, N_ITEMS)
    prior = prior_of(matrix, lambdas=(10.0,))
    user, outsider = 3, 45  # a training user; a user the prior was not fitted on
    changed = matrix.copy()
    other_half = np.flatnonzero(changed[user] == 0)[-3:]
    changed[user, other_half] = 1.0  # what this user will be asked to find, now in "their" training data
    refit = prior_of(changed, lambdas=(10.0,))
    support = [np.asarray([1, 2])]
    mine = prior.scores(np.asarray([user]), support), refit.scores(np.asarray([user]), support)
    theirs = prior.scores(np.asarray([outsider]), support), refit.scores(np.asarray([outsider]), support)
    # cross-fitted: the user's fold is fitted without the user (up to the one global scale factor)
    assert torch.allclose(mine[0] / mine[0].norm(), mine[1] / mine[1].norm(), atol=1e-6)
    assert not torch.allclose(*theirs)  # everyone else reads the prior of every training user
    assert prior.scores(np.asarray([user]), [np.zeros(0, np.int64)]).abs().sum() == 0  # no support, no prior


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_the_catalog_scores_are_the_per_row_scores_of_the_prior_model(name):
    """Serving scores the whole catalog with the prior added outside the model; training scores
    rows with the prior as an item feature — both must give every row the same score."""
    rp, train, ctx = prior_world()
    torch.manual_seed(0)
    model = RankNet(PRIOR_DIMS, ctx.catalog.items)
    algorithm = ranking_algorithm(rp, model, name)
    users, support, query = sample_episodes(train.subset(np.arange(8)), 3, 3, ctx.rng)
    algorithm.meta_loss(model, ctx.batch(users, support, query)).backward()  # the prior is differentiable
    assert model.head.prior.grad is not None and model.head.prior.grad.abs() > 0
    batch = ctx.support_batch(users)
    adapted, shared = adapted_users(model, algorithm, batch, 2)
    assert adapted["head.prior"].shape == (8,)  # the prior weight is adapted per user

    def rows(params, user, item):
        return functional_call(model, {**shared, **params}, (user, item))

    with torch.no_grad():
        per_row = vmap(rows)(adapted, batch.support.user, batch.support.item)
    catalog_scores = score_items(model, algorithm, batch, 2, ctx.prior_scores(users))
    mask = batch.support.mask
    at_rows = torch.gather(catalog_scores, 1, batch.support.item_rows.clamp(min=0))
    assert torch.allclose(per_row[mask], at_rows[mask], atol=1e-5)
    assert (batch.support.item[PRIOR_KEY][mask] != 0).any()


def test_the_prior_reads_low_rated_support_items_at_its_low_weight():
    catalog, events = two_taste_world()
    interactions = user_items(events, catalog, {"click": 1.0})
    matrix = bl.interaction_matrix(interactions.items, interactions.weights, N_ITEMS)
    prior = dataclasses.replace(prior_of(matrix, lambdas=(10.0,)), low_weight=0.5)
    outsider, support = np.asarray([45]), [np.asarray([1])]
    low = [np.asarray([2, 1])]  # item 1 is also a positive: the positive wins
    both = prior.scores(outsider, support, low)
    expected = prior.scores(outsider, support) + 0.5 * prior.scores(outsider, [np.asarray([2])])
    assert torch.allclose(both, expected, atol=1e-6)
    assert torch.equal(
        dataclasses.replace(prior, low_weight=0.0).scores(outsider, support, low),
        prior.scores(outsider, support),
    )


def test_a_batch_of_users_reads_its_own_folds_weights_summed_over_its_support():
    """Each task's prior is the sum of its support items' weight rows (low items at `low_weight`) of
    the weights its user may read: its fold's for a training user, every training user's otherwise."""
    catalog, events = two_taste_world()
    interactions = user_items(events, catalog, {"click": 1.0})
    matrix = bl.interaction_matrix(interactions.items, interactions.weights, N_ITEMS)
    prior = dataclasses.replace(prior_of(matrix, lambdas=(10.0,)), low_weight=0.5)
    users = np.asarray([3, 45, 8, 3])  # training users of two folds, an outsider, a repeat
    support = [np.asarray([1, 2]), np.asarray([5]), np.zeros(0, np.int64), np.asarray([13, 14, 20])]
    low = [np.asarray([7]), np.zeros(0, np.int64), np.asarray([4]), np.asarray([14])]
    got = prior.scores(users, support, low)
    for t, user in enumerate(users):
        x = torch.zeros(N_ITEMS)
        x[torch.as_tensor(low[t])] = 0.5
        x[torch.as_tensor(support[t])] = 1.0
        fold = prior.fold_of[user]
        weights = prior.full if fold < 0 else prior.folds[fold]
        torch.testing.assert_close(got[t], x @ weights)


def test_the_prior_scale_multiplies_the_prior_term_alone():
    from metarec_tasks.selection.candidates import ranker_scorer

    rp, train, ctx = prior_world()
    torch.manual_seed(0)
    model = RankNet(PRIOR_DIMS, ctx.catalog.items)
    algorithm = ranking_algorithm(rp, model, "metasgd")
    users = train.subset(np.arange(40, 46))
    cpu = torch.device("cpu")
    one, two = (ranker_scorer(model, algorithm, ctx, 2, 4, cpu, s)(users) for s in (1.0, 2.0))
    without = ranker_scorer(model, algorithm, ctx, 2, 4, cpu, 0.0)(users)
    assert np.allclose(two - without, 2 * (one - without), atol=1e-4)
    assert not np.allclose(one, without)


def test_the_closed_form_head_jacobian_is_autodiffs_for_both_networks():
    """Ridge solves for the head with the models' own ∂score/∂head (`part="head_jacobian"`); it must be
    what forward-mode autodiff gives, for the ranker with the prior and for the rating network."""
    from tests.meta_fixtures import random_batch, tiny_model

    _, train, ctx = prior_world()
    users, support, query = sample_episodes(train.subset(np.arange(8)), 3, 3, ctx.rng)
    torch.manual_seed(0)
    assert_head_jacobian(RankNet(PRIOR_DIMS, ctx.catalog.items), ctx.batch(users, support, query).support)
    assert_head_jacobian(tiny_model(), random_batch().support)


def assert_head_jacobian(model, rows) -> None:
    from metarec_tasks.meta.functional import encode, head_jacobian, predict
    from metarec_tasks.models.rating import split_params

    with torch.no_grad():  # a head away from its zero start
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    head, shared = split_params(model, "head")
    for t in range(len(rows.target)):
        user = {k: v[t] for k, v in rows.user.items()}
        item = {k: v[t] for k, v in rows.item.items()}
        encoded = encode(model, shared, user, item)

        def scores(h, user=user, item=item, encoded=encoded):
            return predict(model, {**shared, **h}, user, item, encoded)

        closed = head_jacobian(model, {**shared, **head}, user, item, encoded)
        autodiff = torch.func.jacfwd(scores)(head)
        assert closed.keys() == autodiff.keys() == head.keys()
        for name in head:
            torch.testing.assert_close(closed[name].expand_as(autodiff[name]), autodiff[name])

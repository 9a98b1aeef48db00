"""The ranker's view of one run's data, built once per stage from the episode data already loaded.

Positives are every event of the window (each event type weighted by `ranking.event_weights`),
except items a user rated below `evaluate.relevance_threshold`; the
user split is the episodes stage's stable hash, so holdout users never train; validation and holdout
users adapt on their support rows and count query items rated at least
`evaluate.relevance_threshold` as relevant. The negative sampler and the item features (with their
sampling log-probability `log_q`) are shared by training, evaluation and serving.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from metarec_tasks.data.episodes import QUERY, SUPPORT, TRAIN, VALIDATION, user_split
from metarec_tasks.data.loader import EpisodeData
from metarec_tasks.logs.contract import AVAILABLE_COLUMN, FALSE_VALUES, ITEM_KEY, RATING_EVENT, USER_KEY
from metarec_tasks.meta.tasks import Catalog, TaskBatch
from metarec_tasks.models.rating import Features
from metarec_tasks.params import Params, RankingParams
from metarec_tasks.ranking.baselines import interaction_matrix, support_matrix
from metarec_tasks.ranking.episodes import (
    NegativeSampler,
    UserItems,
    item_features,
    ranking_batch,
    user_items,
)
from metarec_tasks.ranking.prior import ItemPrior, bucket_count, fit_prior

SERVING_NEGATIVES_SEED = 0  # adaptation for scoring draws its negatives from this fixed seed


@dataclass
class RankContext:
    """Everything the ranking loops share: the catalog, encoded items (+ log_q) and the sampler."""

    catalog: Catalog
    items: Features
    sampler: NegativeSampler
    rp: RankingParams
    rng: np.random.Generator
    unavailable: np.ndarray  # [n_items] bool
    prior: ItemPrior | None = None  # the item-item prior in the ranker's score (`ranking.prior`)

    def batch(self, users: UserItems, support, query, rng: np.random.Generator | None = None) -> TaskBatch:
        return ranking_batch(
            self.catalog,
            self.items,
            self.sampler,
            self.rp.negatives,
            users.users,
            users.user_rows,
            support,
            query,
            rng or self.rng,
            shared_negatives=rng is not None,
            prior=self.prior,
            low=users.low,
        )

    def prior_scores(self, support: UserItems) -> torch.Tensor | None:
        """[users, n_items] the prior of each support set (None without a prior)."""
        if self.prior is None:
            return None
        return self.prior.scores(support.user_rows, support.items, support.low)

    def support_batch(self, support: UserItems) -> TaskBatch:
        """Tasks whose support is given (evaluation, serving); the query set is a dummy copy.

        Adaptation must be reproducible: every user adapts against the same fixed negatives."""
        sets = (support.items, support.weights)
        return self.batch(support, sets, sets, np.random.default_rng(SERVING_NEGATIVES_SEED))


@dataclass
class EvalUsers:
    support: UserItems  # what each user adapts on: their support positives
    relevant: list[set[int]]  # catalog rows of each user's relevant held-out items
    seen: list[np.ndarray] | None = None  # every support item, low ratings too: never recommended

    def __post_init__(self) -> None:
        if self.seen is None:
            self.seen = list(self.support.items)

    def subset(self, index: np.ndarray) -> EvalUsers:
        return EvalUsers(
            self.support.subset(index), [self.relevant[i] for i in index], [self.seen[i] for i in index]
        )


@dataclass
class RankData:
    """One run's ranking data: the window's events, training positives, the context, item statistics."""

    data: EpisodeData
    events: pd.DataFrame
    train: UserItems  # the ranker's positives: no item a user rated low
    interactions: UserItems  # every training interaction: the baselines' co-occurrence statistics
    ctx: RankContext
    counts: np.ndarray  # [n_items] training positives per item
    first_seen: np.ndarray  # [n_items] first event time (ns), for the candidate pool
    validation: EvalUsers  # the validation users: every choice of the night is made on them

    def eval_users(self, tasks: pd.DataFrame, params: Params) -> EvalUsers:
        return eval_users(tasks, self.data.catalog, params)


def eval_users(tasks: pd.DataFrame, catalog: Catalog, params: Params) -> EvalUsers:
    """Users of `tasks`: support = their support positives, seen = every support item (a low-rated
    one is no positive, but is never recommended back), relevant = query items rated ≥ the threshold."""
    users = sorted(tasks[USER_KEY].astype(str).unique())
    rated = tasks[tasks["role"] == SUPPORT].assign(event_type=RATING_EVENT)
    support = positives(rated, catalog, params, users)
    seen = user_items(rated, catalog, {RATING_EVENT: 1.0}, users).items
    query = tasks[(tasks["role"] == QUERY) & (tasks["value"] >= params.evaluate.relevance_threshold)]
    rel = query.groupby(USER_KEY)[ITEM_KEY].agg(lambda s: set(catalog.item_rows(s).tolist()))
    return EvalUsers(support, [set(rel.get(u, ())) for u in users], seen)


def rank_data(params: Params, data: EpisodeData, events: pd.DataFrame, items: pd.DataFrame) -> RankData:
    """Training positives, the negative sampler and item statistics over `data`'s catalog."""
    catalog = data.catalog
    split = (
        events[USER_KEY]
        .astype(str)
        .map({u: user_split(u, params.episodes) for u in events[USER_KEY].unique()})
    )
    validation = eval_users(data.split(VALIDATION), catalog, params)
    unavailable = unavailable_items(items, catalog)
    rng = np.random.default_rng(params.run.seed)
    ctx, train, interactions, counts = rank_context(
        params, catalog, events[split == TRAIN], validation, unavailable, rng
    )
    first = events.groupby(ITEM_KEY)["timestamp"].min()
    first_seen = np.zeros(len(catalog.item_ids))
    first_seen[catalog.item_rows(first.index)] = first.astype("int64").to_numpy(float)
    return RankData(data, events, train, interactions, ctx, counts, first_seen, validation)


def rank_context(
    params: Params,
    catalog: Catalog,
    train_events: pd.DataFrame,
    val: EvalUsers,
    unavailable: np.ndarray,
    rng: np.random.Generator,
) -> tuple[RankContext, UserItems, UserItems, np.ndarray]:
    """(context, the ranker's positives, every interaction, positives per item) of `train_events`:
    one rule for the pipeline and the benchmarks. `val` (validation users) chooses the prior's λ."""
    rp = params.ranking
    train = positives(train_events, catalog, params)
    interactions = user_items(train_events, catalog, rp.event_weights)
    n_items = len(catalog.item_ids)
    counts = np.bincount(np.concatenate([np.zeros(0, np.int64), *train.items]), minlength=n_items)
    sampler = NegativeSampler(counts, rp.negative_alpha)
    prior = None if rp.prior == "none" else ranking_prior(params, catalog, interactions, val, unavailable)
    ctx = RankContext(catalog, item_features(catalog, sampler), sampler, rp, rng, unavailable, prior)
    return ctx, train, interactions, counts


def ranking_prior(
    params: Params, catalog: Catalog, interactions: UserItems, val: EvalUsers, unavailable: np.ndarray
) -> ItemPrior:
    """The EASE prior of every training interaction, λ chosen on `val` (validation users; see
    `ranking/prior.py`)."""
    n_items = len(catalog.item_ids)
    support = val.support
    return fit_prior(
        interaction_matrix(interactions.items, interactions.weights, n_items),
        interactions.user_rows,
        len(catalog.user_ids),
        lambda low_weight: support_matrix(support.items, n_items, support.low, low_weight),
        exclusion_mask(val.seen, unavailable).numpy(),
        val.relevant,
        params.selection.ease_lambdas,
        params.selection.low_rating_weights,
        params.selection.ease_max_items,
        params.ranking.prior_folds,
        params.evaluate.catalog_k,
        params.run.seed,
        bucket_count(max(params.ranking.max_support, params.episodes.max_support)),
    )


def positives(events: pd.DataFrame, catalog: Catalog, params: Params, users=None) -> UserItems:
    """What the ranker learns from and adapts on: events weighted by `ranking.event_weights`, minus
    the items a user rated below `evaluate.relevance_threshold` (a 0.5-star rating is no like)."""
    return user_items(
        events, catalog, params.ranking.event_weights, users, params.evaluate.relevance_threshold
    )


def unavailable_items(items: pd.DataFrame, catalog: Catalog) -> np.ndarray:
    """[n_items] True where the item side table marks the item unavailable (missing column: none)."""
    mask = np.zeros(len(catalog.item_ids), bool)
    if AVAILABLE_COLUMN in items:
        flags = items[AVAILABLE_COLUMN].astype("string").fillna("")
        off = items.loc[flags.isin(FALSE_VALUES).to_numpy(), ITEM_KEY].astype(str)
        known = set(catalog.item_ids)
        mask[catalog.item_rows([i for i in off if i in known])] = True
    return mask


def exclusion_mask(seen: list[np.ndarray], unavailable: np.ndarray) -> torch.Tensor:
    """[T, n_items] True where an item may not be recommended: already seen, or unavailable."""
    mask = torch.as_tensor(np.asarray(unavailable, bool)).repeat(len(seen), 1)
    for t, rows in enumerate(seen):
        mask[t, torch.as_tensor(rows, dtype=torch.long)] = True
    return mask


def items_on(items: Features, device: torch.device) -> Features:
    return {name: value.to(device) for name, value in items.items()}

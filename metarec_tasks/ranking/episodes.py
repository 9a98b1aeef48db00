"""Ranking tasks: a user's positives (weighted by event type) against sampled negatives, padded.

Support = the user's few interactions, query = held-out interactions; both sets get their own sampled
negatives. Rows are encoded in the existing `InteractionSet` (target > 0: a positive and its weight;
target = 0: a negative), so the padded-task machinery and every meta-learner apply unchanged.
A sampled negative that is one of the user's own positives is masked out, never taught as negative.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from metarec_tasks.logs.contract import ITEM_KEY, RATING_EVENT, USER_KEY
from metarec_tasks.meta.objectives import LOG_Q
from metarec_tasks.meta.tasks import Catalog, InteractionSet, TaskBatch, per_user
from metarec_tasks.models.catalog import ITEM_ROW
from metarec_tasks.models.rating import Features
from metarec_tasks.params import SupportSizes
from metarec_tasks.ranking.prior import PRIOR_KEY, SUPPORT_BUCKET, ItemPrior, support_buckets


@dataclass
class UserItems:
    """Per-user item rows (catalog rows) and weights, in a stable user order; `low`, where known, the
    items each user rated below the relevance threshold — seen, no positive, yet what someone watched
    is co-occurrence signal for the item-item models (`selection.low_rating_weights`)."""

    users: list[str]
    user_rows: np.ndarray
    items: list[np.ndarray]
    weights: list[np.ndarray]
    low: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, index: np.ndarray) -> UserItems:
        return UserItems(
            [self.users[i] for i in index],
            self.user_rows[index],
            [self.items[i] for i in index],
            [self.weights[i] for i in index],
            None if self.low is None else [self.low[i] for i in index],
        )

    def low_items(self) -> list[np.ndarray]:
        """`low`, or no item per user where it is not known."""
        return self.low if self.low is not None else [np.zeros(0, np.int64)] * len(self)


def event_weights(events: pd.DataFrame, weights: dict[str, float]) -> pd.Series:
    """Weight of each event by its type; types not listed count 0 (ignored)."""
    return events["event_type"].map(weights).fillna(0.0).astype(float)


def user_items(
    events: pd.DataFrame,
    catalog: Catalog,
    weights: dict[str, float],
    users=None,
    min_rating: float | None = None,
) -> UserItems:
    """Positives per user: each (user, item) once, with the largest weight of its events. With
    `min_rating`, an item the user rated below it is no positive at all (explicit feedback wins over
    any view or click of the same item); it is kept in `low`."""
    frame = events.assign(_w=event_weights(events, weights))
    disliked_rows = None
    if min_rating is not None and "value" in frame:
        low = (frame["event_type"] == RATING_EVENT) & (frame["value"] < min_rating)
        disliked_rows = frame.loc[low, [USER_KEY, ITEM_KEY]].drop_duplicates()
        disliked = pd.MultiIndex.from_frame(disliked_rows)
        frame = frame[~pd.MultiIndex.from_frame(frame[[USER_KEY, ITEM_KEY]]).isin(disliked)]
    frame = frame[frame["_w"] > 0]
    best = frame.groupby([USER_KEY, ITEM_KEY], sort=False)["_w"].max().reset_index()
    order = [str(u) for u in users] if users is not None else pd.unique(best[USER_KEY].astype(str)).tolist()
    if not order:
        return UserItems([], catalog.user_rows([]), [], [], None if disliked_rows is None else [])
    rows, bounds = per_user(order, best)
    items = np.split(catalog.item_rows(rows[ITEM_KEY]), bounds)
    ws = np.split(rows["_w"].to_numpy(np.float32), bounds)
    low_items = None
    if disliked_rows is not None:
        low_rows, low_bounds = per_user(order, disliked_rows)
        low_items = np.split(catalog.item_rows(low_rows[ITEM_KEY]), low_bounds)
    return UserItems(order, catalog.user_rows(order), items, ws, low_items)


GUIDE_WALK = 4  # steps a sample walks right from its guide cell before it is binary-searched


class NegativeSampler:
    """Items drawn with probability ∝ (count + 1)^alpha; `log_q` is what the softmax correction needs.

    `draw` gives exactly `rng.choice(n_items, size, p=prob)`'s items from the same uniforms, without
    its binary search per sample (4% of the train stage on the default world, by cProfile): a guide table
    (`guide[j]`: the first item whose cumulative probability exceeds j / n_items) starts each sample
    at most a few items left of its answer, and a vectorized walk finishes."""

    def __init__(self, counts: np.ndarray, alpha: float):
        weight = (np.asarray(counts, float) + 1.0) ** alpha
        self.prob = weight / weight.sum()
        self.log_q = torch.as_tensor(np.log(self.prob), dtype=torch.float32)
        self.cdf = self.prob.cumsum()
        self.cdf /= self.cdf[-1]  # as rng.choice normalises it, so the draws are the same
        cells = len(self.cdf)
        self.guide = np.searchsorted(self.cdf, np.arange(cells) / cells, side="right")

    def draw(self, tasks: int, n: int, rng: np.random.Generator) -> np.ndarray:
        uniform = rng.random((tasks, n))
        item = self.guide[(uniform * len(self.guide)).astype(np.int64)]
        for _ in range(GUIDE_WALK):
            behind = self.cdf[item] <= uniform  # searchsorted(side="right")'s answer is further right
            if not behind.any():
                return item
            item += behind
        far = self.cdf[item] <= uniform  # cells crowded with rare items: binary search the few left
        item[far] = self.cdf.searchsorted(uniform[far], side="right")
        return item


def item_features(catalog: Catalog, sampler: NegativeSampler) -> Features:
    return {**catalog.items, LOG_Q: sampler.log_q}


def ragged_index(lists: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(task, position) of every element of a list of per-task arrays — the padded layout's indices,
    computed once instead of a Python loop over tasks."""
    lengths = np.fromiter((len(x) for x in lists), np.int64, len(lists))
    task = np.repeat(np.arange(len(lists)), lengths)
    return task, np.arange(len(task)) - np.repeat(np.cumsum(lengths) - lengths, lengths)


def known_mask(n_items: int, *per_task: list[np.ndarray]) -> np.ndarray:
    """[T, n_items]: True at every item of each task's arrays (its support and query items)."""
    mask = np.zeros((len(per_task[0]), n_items), bool)
    for lists in per_task:
        task, _ = ragged_index(lists)
        if len(task):
            mask[task, np.concatenate(lists)] = True
    return mask


def ranking_set(
    catalog: Catalog,
    items: Features,
    user_rows: np.ndarray,
    positives: list[np.ndarray],
    weights: list[np.ndarray],
    negatives: np.ndarray,
    known: np.ndarray,
    prior: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> InteractionSet:
    """[T, max positives + negatives] rows (catalog rows, read by the model's item tower, and their
    sampling log-probability) of T tasks ([T, 1] user features); positives first, then the sampled
    negatives, less those `known` ([T, n_items] `known_mask`) to be the task's own; `prior`
    ([T, n_items] item-item prior of each task's support, [T] its support-size bucket) becomes a
    per-row item feature and a per-task one."""
    tasks, n_neg = negatives.shape
    task, column = ragged_index(positives)
    width = (int(column.max()) + 1 if len(column) else 0) + n_neg
    rows = np.full((tasks, width), -1, np.int64)
    target = np.zeros((tasks, width), np.float32)
    if len(task):
        rows[task, column] = np.concatenate(positives)
        target[task, column] = np.concatenate(weights)
    rows[:, width - n_neg :] = np.where(np.take_along_axis(known, negatives, 1), -1, negatives)
    mask = rows >= 0
    safe = torch.as_tensor(np.where(mask, rows, 0))
    users = torch.as_tensor(user_rows)[:, None]  # [T, 1]: a task's user (and bucket) once, not per
    # row: the model broadcasts them over the task's rows (per row, their embeddings' backward was
    # a third of a meta-step)
    row_items = {ITEM_ROW: safe, LOG_Q: items[LOG_Q][safe]}  # the tower reads its catalog there
    if prior is not None:
        scores, buckets = prior
        row_items[PRIOR_KEY] = torch.gather(scores, 1, safe) * torch.as_tensor(mask)
        row_items[SUPPORT_BUCKET] = buckets[:, None]
    return InteractionSet(
        user={k: v[users] for k, v in catalog.users.items()},
        item=row_items,
        target=torch.as_tensor(target),
        mask=torch.as_tensor(mask),
        item_rows=torch.as_tensor(rows),
    )


def ranking_batch(
    catalog: Catalog,
    items: Features,
    sampler: NegativeSampler,
    n_neg: int,
    users: list[str],
    user_rows: np.ndarray,
    support: tuple[list[np.ndarray], list[np.ndarray]],
    query: tuple[list[np.ndarray], list[np.ndarray]],
    rng: np.random.Generator,
    shared_negatives: bool = False,
    prior: ItemPrior | None = None,
    low: list[np.ndarray] | None = None,
) -> TaskBatch:
    """Support and query sets of `users`; `shared_negatives` gives every task the same negatives (serving:
    a user's adapted vector then never depends on which other users share the chunk); with `prior`,
    both sets' rows carry the item-item prior of the support positives (and of `low`, the support's
    low-rated items, at the prior's `low_weight`)."""
    known = known_mask(len(catalog.item_ids), support[0], query[0])

    def negatives() -> np.ndarray:
        if shared_negatives:
            return np.broadcast_to(sampler.draw(1, n_neg, rng), (len(users), n_neg))
        return sampler.draw(len(users), n_neg, rng)

    scores = None
    if prior is not None:
        sizes = np.asarray([len(s) for s in support[0]])
        scores = (prior.scores(user_rows, support[0], low), support_buckets(sizes, prior.buckets))
    sets = [
        ranking_set(catalog, items, user_rows, pos, w, negatives(), known, scores)
        for pos, w in (support, query)
    ]
    return TaskBatch(list(users), torch.as_tensor(user_rows), sets[0], sets[1])


def support_size(most: int, sizes: SupportSizes, rng: np.random.Generator) -> int:
    """An episode's support size in 1..most: uniform, or log-uniform (as many 1–3 as 8–30)."""
    if sizes == "log_uniform":
        return min(most, int(np.exp(rng.uniform(0.0, np.log(most + 1)))))
    return int(rng.integers(1, most + 1))


def sample_episodes(
    data: UserItems,
    max_support: int,
    max_query: int,
    rng: np.random.Generator,
    sizes: SupportSizes = "uniform",
) -> tuple[UserItems, tuple[list, list], tuple[list, list]]:
    """Meta-training episodes: per user (≥ 2 positives) a random support of 1..max_support items and a
    query of up to max_query of the rest — support sizes spread over the cold-start range. The users
    come back with `low` cut to the episode's share (each low-rated item kept with the support's
    share of the positives), as a new user's support holds a few of their low ratings too."""
    keep = np.asarray([i for i, items in enumerate(data.items) if len(items) >= 2], dtype=np.int64)
    data = data.subset(keep)
    s_items, s_w, q_items, q_w, seen_low = [], [], [], [], []
    for items, weights, low in zip(data.items, data.weights, data.low_items(), strict=True):
        order = rng.permutation(len(items))
        size = support_size(min(max_support, len(items) - 1), sizes, rng)
        s, q = order[:size], order[size : size + max_query]
        s_items.append(items[s])
        s_w.append(weights[s])
        q_items.append(items[q])
        q_w.append(weights[q])
        seen_low.append(low[rng.random(len(low)) < size / len(items)] if len(low) else low)
    episode_users = UserItems(data.users, data.user_rows, data.items, data.weights, seen_low)
    return episode_users, (s_items, s_w), (q_items, q_w)

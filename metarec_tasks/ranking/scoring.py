"""Scoring for top-K: adapt each user's vector, then one matmul against the item table.

When the catalog is larger than `ranking.max_catalog_items`, only a candidate pool (the most popular
plus the most recently first-seen items) is scored. Items the user already interacted with, and items
marked unavailable, get -inf and can never enter a top-K.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.func import vmap

from metarec_tasks.meta.base import MetaAlgorithm
from metarec_tasks.meta.functional import stateless_call
from metarec_tasks.meta.tasks import TaskBatch
from metarec_tasks.models.rating import Features, ParamDict, split_params
from metarec_tasks.params import RankingParams
from metarec_tasks.ranking.data import RankContext, exclusion_mask
from metarec_tasks.ranking.episodes import UserItems
from metarec_tasks.ranking.prior import SUPPORT_BUCKET
from metarec_tasks.training.runtime import to_device


def adapted_users(model, algorithm: MetaAlgorithm, batch: TaskBatch, steps: int):
    """(per-task adapted parameters, shared parameters); 0 steps = the unadapted initialization."""
    if steps > 0:
        return algorithm.adapt(model, batch, steps)
    fast, shared = split_params(model, algorithm.inner.adapt)
    tasks = len(batch)
    return (
        {k: v.detach().expand(tasks, *v.shape) for k, v in fast.items()},
        {k: v.detach() for k, v in shared.items()},
    )


def user_vectors(model, adapted: ParamDict, shared: ParamDict, user: Features) -> torch.Tensor:
    """[T, dim] adapted user vectors; `user` holds one feature row per task."""

    def one_task(params, u):
        return stateless_call(model, {**shared, **params}, (u, None), {"part": "user"})

    return vmap(one_task)(adapted, user)


def item_table(model, shared: ParamDict) -> tuple[torch.Tensor, torch.Tensor]:
    """([n_items, dim] catalog item vectors, [n_items] biases) under the shared (never adapted) item
    tower."""
    return stateless_call(model, shared, (None, None), {"part": "table"})


def score_items(
    model,
    algorithm: MetaAlgorithm,
    batch: TaskBatch,
    steps: int,
    prior: torch.Tensor | None = None,
) -> torch.Tensor:
    """[T, n_items] scores of every catalog item for every task of `batch` (adapted on its support);
    `prior` ([T, n_items], `RankContext.prior_scores`) is the item-item prior of a model that has one."""
    adapted, shared = adapted_users(model, algorithm, batch, steps)
    with torch.no_grad():
        user = {k: v[:, 0] for k, v in batch.support.user.items()}
        vectors = user_vectors(model, adapted, shared, user)
        table, bias = item_table(model, shared)
        if not model.dims.prior:
            return vectors @ table.T + bias
        bucket = batch.support.item[SUPPORT_BUCKET][:, 0]
        bias_scale, weight = vmap(
            lambda p, b: stateless_call(
                model, {**shared, **p}, (None, {SUPPORT_BUCKET: b}), {"part": "weights"}
            )
        )(adapted, bucket)
        return vectors @ table.T + bias_scale[:, None] * bias + weight[:, None] * prior.to(vectors.device)


def rank_users(
    model,
    algorithm: MetaAlgorithm,
    steps: int,
    ctx: RankContext,
    support: UserItems,
    k: int,
    chunk: int,
    require_finite: bool = False,
    seen: list[np.ndarray] | None = None,
) -> np.ndarray | None:
    """[users, k] catalog rows of each user's top-k (`seen` items — default: the support items — and
    unavailable items excluded), adapted in chunks on the model's device; None if `require_finite`
    and a score is not finite."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(support), chunk):
        part = support.subset(np.arange(start, min(start + chunk, len(support))))
        batch = to_device(ctx.support_batch(part), device)
        scores = score_items(model, algorithm, batch, steps, ctx.prior_scores(part))
        if require_finite and not bool(torch.isfinite(scores).all()):
            return None
        part_seen = part.items if seen is None else seen[start : start + len(part)]
        _, rows = top_k(scores, exclusion_mask(part_seen, ctx.unavailable), k)
        out.append(rows)
    return np.concatenate(out) if out else np.zeros((0, k), np.int64)


def candidate_pool(counts: np.ndarray, first_seen: np.ndarray, rp: RankingParams) -> np.ndarray | None:
    """Catalog rows to score, or None when the whole catalog fits (`ranking.max_catalog_items`)."""
    n = len(counts)
    if n <= rp.max_catalog_items:
        return None
    popular = np.argsort(-np.asarray(counts), kind="stable")[: rp.pool_popular]
    recent = np.argsort(-np.asarray(first_seen), kind="stable")[: rp.pool_recent]
    return np.union1d(popular, recent).astype(np.int64)


def top_k(scores: torch.Tensor, excluded: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(values, column indices) of the k best allowed items per row; -inf values mark no item."""
    scores = scores.masked_fill(excluded.to(scores.device), -torch.inf)
    top = torch.topk(scores, min(k, scores.shape[1]), dim=1)
    return top.values.cpu().numpy(), top.indices.cpu().numpy()

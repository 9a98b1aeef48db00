"""The top-K ranker: a non-meta warm-up, then meta-training on ranking episodes with the one loop.

Warm-up (`ranking.meta.pretrain_epochs`): the unadapted model scores each training user's positives
against sampled negatives — item embeddings, biases and the user tower learn the catalog's
structure; this model, fine-tuned per user with plain SGD, is also the "pretrain + fine-tune"
baseline. Meta-training then starts from it (`training/loop.py`: resume, device/AMP, NaN rules,
patience): every epoch draws fresh episodes (random support sizes 1..`ranking.max_support`, fresh
negatives); validation users are adapted on their support and scored on full-catalog Recall@K.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from metarec_tasks.evaluation.metrics import catalog_metrics
from metarec_tasks.meta import TRANSFER_ALGORITHM, build_algorithm
from metarec_tasks.meta.base import MetaAlgorithm
from metarec_tasks.meta.functional import make_engine
from metarec_tasks.meta.tasks import TaskBatch
from metarec_tasks.models.ranking import RankDims, RankNet, save_rank_model
from metarec_tasks.models.rating import split_params
from metarec_tasks.params import Params, RankingParams
from metarec_tasks.paths import Workspace
from metarec_tasks.ranking.data import EvalUsers, RankContext, RankData
from metarec_tasks.ranking.episodes import UserItems, sample_episodes
from metarec_tasks.ranking.scoring import rank_users
from metarec_tasks.training.adam import adam
from metarec_tasks.training.checkpoint import Checkpoints, fingerprint
from metarec_tasks.training.loop import (
    FitResult,
    Randomness,
    Validation,
    check_finite,
    check_finite_gradients,
    fit,
    write_history,
)
from metarec_tasks.training.runtime import autocast, pick_device, seed_everything, to_device

log = logging.getLogger(__name__)

VALIDATION_CHUNK = 256  # validation users scored at once


@dataclass
class Rankers:
    """The pretrained ranker (fine-tuned per user by plain SGD: the transfer baseline) and the meta one."""

    pretrained: RankNet
    model: RankNet
    algorithm: MetaAlgorithm
    fit: FitResult
    prior_lambda: float | None  # the item-item prior's EASE λ (None: no prior)


def ranking_algorithm(rp: RankingParams, model: RankNet, name: str | None = None) -> MetaAlgorithm:
    """An algorithm of `metarec_tasks.meta` whose inner loop runs the ranking objective (`ranking.loss`)."""
    meta = rp.meta if name is None else rp.meta.model_copy(update={"algorithm": name})
    return build_algorithm(meta, model, make_engine(rp.loss))


def train_ranker(params: Params, ws: Workspace, rd: RankData) -> Rankers:
    """Warm-up, then meta-training from the warmed-up weights (resumed if this run was killed)."""
    generator = seed_everything(params.run.seed)
    device = pick_device(params.run.device)
    val = rd.validation
    log.info(
        "ranking: %d training users, %d validation users, device %s", len(rd.train), len(val.support), device
    )
    rp = params.ranking
    dims = RankDims.from_vocab(rd.data.vocab, rp.dim, rd.ctx.prior, rp.prior_weight)
    pretrained = warm_up(RankNet(dims, rd.ctx.catalog.items).to(device), rd.ctx, rd.train)
    model = copy.deepcopy(pretrained)
    algorithm = ranking_algorithm(params.ranking, model)
    checkpoints = Checkpoints(ws.checkpoints_for("ranking"), run_fingerprint(params, ws))
    k = params.evaluate.catalog_k
    result = meta_train(model, algorithm, rd.ctx, rd.train, val, k, checkpoints, generator)
    log.info(
        "ranker: best epoch %d, validation recall@%d %s",
        result.best_epoch,
        params.evaluate.catalog_k,
        result.best_value,
    )
    return Rankers(pretrained, model, algorithm, result, rd.ctx.prior.lam if rd.ctx.prior else None)


def meta_train(
    model: RankNet,
    algorithm: MetaAlgorithm,
    ctx: RankContext,
    train: UserItems,
    val: EvalUsers,
    k: int,
    checkpoints: Checkpoints,
    generator: torch.Generator,
) -> FitResult:
    """Meta-train `model` on fresh ranking episodes of `train` each epoch, validated on Recall@k."""
    mp = ctx.rp.meta
    device = next(model.parameters()).device

    def batches(epoch: int) -> Iterator[TaskBatch]:
        users, support, query = sample_episodes(
            epoch_users(train, mp.tasks_per_epoch, ctx.rng),
            ctx.rp.max_support,
            ctx.rp.max_query,
            ctx.rng,
            ctx.rp.support_sizes,
        )
        for index in _shuffled_batches(len(users), mp.meta_batch_size, ctx.rng):
            batch = ctx.batch(
                users.subset(index),
                ([support[0][i] for i in index], [support[1][i] for i in index]),
                ([query[0][i] for i in index], [query[1][i] for i in index]),
            )
            yield to_device(batch, device)

    def recall() -> float | None:
        return catalog_recall(model, algorithm, mp.inner_steps, ctx, val, k)

    validation = Validation(f"val_recall@{k}", False, recall)
    return fit(model, algorithm, batches, validation, mp, checkpoints, Randomness(generator, ctx.rng))


def epoch_users(train: UserItems, tasks: int, rng: np.random.Generator) -> UserItems:
    """A meta-epoch's users: all of them (`tasks` 0 or not fewer than the users), or a fresh random
    sample of `tasks` of them, so an epoch's cost stops growing with the user base."""
    if not tasks or tasks >= len(train):
        return train
    return train.subset(np.sort(rng.choice(len(train), tasks, replace=False)))


def save_rankers(params: Params, ws: Workspace, rankers: Rankers) -> None:
    rp = params.ranking
    meta = {
        "algorithm": rankers.algorithm.name,
        "adapt": rp.meta.adapt,
        "loss": rp.loss,
        "prior": rp.prior,
        "prior_lambda": rankers.prior_lambda,
    }
    best = {
        "best_epoch": rankers.fit.best_epoch,
        "best_val_recall": rankers.fit.best_value,
        "weights_averaged": rankers.fit.best_averaged,
    }
    save_rank_model(ws.rank_model_file, rankers.model, {**meta, **best}, rankers.algorithm.state_dict())
    save_rank_model(
        ws.rank_pretrained_file, rankers.pretrained, {**meta, "algorithm": TRANSFER_ALGORITHM}, {}
    )
    write_history(ws.rank_train_log, rankers.fit.history, f"val_recall@{params.evaluate.catalog_k}")


def run_fingerprint(params: Params, ws: Workspace) -> str:
    """What makes two ranker runs the same run: its parameters, the seed and the window's data."""
    rp = params.ranking.model_dump(mode="json", exclude={"meta": {"checkpoint_every"}})
    data = [hashlib.md5(path.read_bytes()).hexdigest() for path in (ws.tasks_file, ws.validated_events)]
    evaluation = [params.evaluate.catalog_k, params.evaluate.relevance_threshold]
    sp = params.selection  # the prior's λ and low-rating weight
    evaluation += [sp.ease_lambdas, sp.ease_max_items, sp.low_rating_weights]
    return fingerprint(params.run.seed, rp, params.episodes.model_dump(mode="json"), evaluation, data)


def catalog_recall(
    model: RankNet, algorithm: MetaAlgorithm, steps: int, ctx: RankContext, users: EvalUsers, k: int
) -> float | None:
    """Mean full-catalog Recall@k of the users with a relevant item (None: there are none; NaN: the
    model's scores are not finite)."""
    keep = np.asarray([i for i, rel in enumerate(users.relevant) if rel], dtype=np.int64)
    if not len(keep):
        return None
    part = users.subset(keep)
    ranked = rank_users(
        model, algorithm, steps, ctx, part.support, k, VALIDATION_CHUNK, require_finite=True, seen=part.seen
    )
    if ranked is None:
        return float("nan")
    scores = [
        catalog_metrics(list(rows), users.relevant[i], k)[f"recall@{k}"]
        for rows, i in zip(ranked, keep, strict=True)
    ]
    return float(np.mean(scores))


def warm_up(model: RankNet, ctx: RankContext, train: UserItems) -> RankNet:
    """Non-meta warm-up: the unadapted model ranks each user's positives above sampled negatives."""
    mp = ctx.rp.meta
    transfer = ranking_algorithm(ctx.rp, model, TRANSFER_ALGORITHM)
    optimizer = adam(model.parameters(), mp.meta_lr)
    device = next(model.parameters()).device
    for epoch in tqdm(range(mp.pretrain_epochs), desc="rank warm-up", unit="epoch", disable=None):
        users, support, query = sample_episodes(
            train, ctx.rp.max_support, ctx.rp.max_query, ctx.rng, ctx.rp.support_sizes
        )
        total = 0.0
        for index in _shuffled_batches(len(users), mp.pretrain_batch_size, ctx.rng):
            part = users.subset(index)
            pos = (
                [np.concatenate([support[0][i], query[0][i]]) for i in index],
                [np.concatenate([support[1][i], query[1][i]]) for i in index],
            )
            batch = to_device(ctx.batch(part, pos, pos), device)
            fast, shared = split_params(model, transfer.inner.adapt)
            expanded = {name: v.expand(len(part), *v.shape) for name, v in fast.items()}
            with autocast(device, mp.amp):
                loss = transfer.engine.losses(model, expanded, shared, batch.query).mean()
            check_finite(loss, f"rank warm-up epoch {epoch}")
            optimizer.zero_grad()
            loss.backward()
            check_finite_gradients(optimizer, f"rank warm-up epoch {epoch}")
            optimizer.step()
            total += loss.item() * len(part)
        log.info(
            "rank warm-up epoch %d/%d: loss %.4f", epoch + 1, mp.pretrain_epochs, total / max(len(users), 1)
        )
    return model


def _shuffled_batches(n: int, size: int, rng: np.random.Generator):
    order = rng.permutation(n)
    for start in range(0, n, size):
        yield order[start : start + size]

"""Training the ranking model: a non-meta warm-up, then meta-training on ranking episodes.

Warm-up (`ranking.pretrain_epochs`): the unadapted model scores each training user's positives against
sampled negatives — item embeddings, biases and the user tower learn the catalog's structure; this
model, fine-tuned per user with plain SGD, is also the "pretrain + fine-tune" baseline. Meta-training
then starts from it: every epoch draws fresh episodes (random support sizes 1..`ranking.max_support`,
fresh negatives), the algorithm's `meta_loss` is minimized, and validation users are adapted on their
support and scored on full-catalog Recall@K; the best epoch is kept, patience stops early.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from metarec_tasks.errors import NonFiniteLossError
from metarec_tasks.meta import build_algorithm
from metarec_tasks.meta.base import MetaAlgorithm
from metarec_tasks.meta.tasks import Catalog, TaskBatch
from metarec_tasks.metrics import catalog_metrics
from metarec_tasks.model import Features, split_params
from metarec_tasks.params import MetaParams, RankingParams
from metarec_tasks.ranking.engine import ranking_engine
from metarec_tasks.ranking.episodes import NegativeSampler, UserItems, ranking_batch, sample_episodes
from metarec_tasks.ranking.model import RankDims, RankNet
from metarec_tasks.ranking.scoring import exclusion_mask, score_items, top_k

log = logging.getLogger(__name__)
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
        )

    def support_batch(self, support: UserItems) -> TaskBatch:
        """Tasks whose support is given (evaluation, serving); the query set is a dummy copy.

        Adaptation must be reproducible: every user adapts against the same fixed negatives."""
        sets = (support.items, support.weights)
        return self.batch(support, sets, sets, np.random.default_rng(SERVING_NEGATIVES_SEED))


@dataclass
class EvalUsers:
    support: UserItems
    relevant: list[set[int]]  # catalog rows of each user's relevant held-out items


@dataclass
class FitResult:
    best_epoch: int = -1
    best_val_recall: float = -1.0
    history: list[dict] = field(default_factory=list)


def check_ranking_adapt(rp: RankingParams) -> None:
    if rp.adapt == "all":
        raise ValueError("ranking.adapt must be head or mlp: the item table is shared by every user")


def rank_users(
    model, algorithm: MetaAlgorithm, steps: int, ctx: RankContext, support: UserItems, k: int, chunk: int
) -> np.ndarray:
    """[users, k] catalog rows of each user's top-k (support items and unavailable items excluded)."""
    out = []
    for start in range(0, len(support), chunk):
        part = support.subset(np.arange(start, min(start + chunk, len(support))))
        scores = score_items(model, algorithm, ctx.support_batch(part), steps, ctx.items)
        _, rows = top_k(scores, exclusion_mask(part.items, ctx.unavailable), k)
        out.append(rows)
    return np.concatenate(out) if out else np.zeros((0, k), np.int64)


def catalog_recall(model, algorithm, steps: int, ctx: RankContext, users: EvalUsers, k: int) -> float:
    ranked = rank_users(model, algorithm, steps, ctx, users.support, k, 256)
    scores = [
        catalog_metrics(list(rows), rel, k)[f"recall@{k}"]
        for rows, rel in zip(ranked, users.relevant, strict=True)
        if rel
    ]
    return float(np.mean(scores)) if scores else float("nan")


def _shuffled_batches(n: int, size: int, rng: np.random.Generator):
    order = rng.permutation(n)
    for start in range(0, n, size):
        yield order[start : start + size]


def pretrain(model, algorithm: MetaAlgorithm, ctx: RankContext, train: UserItems, epochs: int, lr: float):
    """Non-meta warm-up: the unadapted model ranks each user's positives above sampled negatives."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for epoch in tqdm(range(epochs), desc="rank pretrain", unit="epoch", disable=None):
        users, support, query = sample_episodes(train, ctx.rp.max_support, ctx.rp.max_query, ctx.rng)
        total = 0.0
        for index in _shuffled_batches(len(users), ctx.rp.meta_batch_size, ctx.rng):
            part = users.subset(index)
            pos = (
                [np.concatenate([support[0][i], query[0][i]]) for i in index],
                [np.concatenate([support[1][i], query[1][i]]) for i in index],
            )
            batch = ctx.batch(part, pos, pos)
            fast, shared = split_params(model, algorithm.inner.adapt)
            tasks = len(part)
            expanded = {k: v.expand(tasks, *v.shape) for k, v in fast.items()}
            loss = algorithm.engine.losses(model, expanded, shared, batch.query).mean()
            _check(loss, f"rank pretrain epoch {epoch}")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * tasks
        log.info("rank pretrain epoch %d: loss %.4f", epoch, total / max(len(users), 1))


def meta_fit(
    model, algorithm: MetaAlgorithm, ctx: RankContext, train: UserItems, val: EvalUsers, k: int
) -> FitResult:
    rp = ctx.rp
    optimizer = torch.optim.Adam([*model.parameters(), *algorithm.parameters()], lr=rp.meta_lr)
    result = FitResult()
    best_model = {n: v.detach().clone() for n, v in model.state_dict().items()}
    best_alg = {n: v.detach().clone() for n, v in algorithm.state_dict().items()}
    # The warm-up itself is never "best": the first meta epoch is the starting point, so a noisy dip of
    # validation recall in the first epochs cannot leave an un-meta-trained model behind.
    stale = 0
    for epoch in tqdm(
        range(rp.epochs), desc=f"rank meta-train ({algorithm.name})", unit="epoch", disable=None
    ):
        started = time.perf_counter()
        algorithm.start_epoch(epoch)
        users, support, query = sample_episodes(train, rp.max_support, rp.max_query, ctx.rng)
        total = 0.0
        for index in _shuffled_batches(len(users), rp.meta_batch_size, ctx.rng):
            part = users.subset(index)
            batch = ctx.batch(
                part,
                ([support[0][i] for i in index], [support[1][i] for i in index]),
                ([query[0][i] for i in index], [query[1][i] for i in index]),
            )
            loss = algorithm.meta_loss(model, batch)
            _check(loss, f"rank meta epoch {epoch}")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(part)
        recall = catalog_recall(model, algorithm, rp.inner_steps, ctx, val, k) if val.support.users else 0.0
        result.history.append(
            {
                "epoch": epoch,
                "meta_loss": total / max(len(users), 1),
                f"val_recall@{k}": recall,
                "seconds": time.perf_counter() - started,
            }
        )
        log.info(
            "rank epoch %d: meta loss %.4f, validation recall@%d %.4f",
            epoch,
            total / max(len(users), 1),
            k,
            recall,
        )
        if recall > result.best_val_recall:
            result.best_val_recall, result.best_epoch, stale = recall, epoch, 0
            best_model = {n: v.detach().clone() for n, v in model.state_dict().items()}
            best_alg = {n: v.detach().clone() for n, v in algorithm.state_dict().items()}
        else:
            stale += 1
            if stale >= rp.patience:
                log.info("rank meta-training: early stop after epoch %d", epoch)
                break
    model.load_state_dict(best_model)
    algorithm.load_state_dict(best_alg)
    return result


def _check(loss: torch.Tensor, where: str) -> None:
    if not torch.isfinite(loss):
        raise NonFiniteLossError(f"ranking loss became {loss.item()} in {where}; no model was written")


def ranking_algorithm(rp: RankingParams, meta: MetaParams, model, name: str | None = None) -> MetaAlgorithm:
    """An algorithm of `metarec_tasks.meta` set up for ranking: its inner loop runs the ranking engine."""
    check_ranking_adapt(rp)
    settings = {
        "algorithm": name or rp.algorithm,
        "adapt": rp.adapt,
        "inner_steps": rp.inner_steps,
        "inner_lr": rp.inner_lr,
    }
    return build_algorithm(meta.model_copy(update=settings), model, ranking_engine(rp.loss))


@dataclass
class Rankers:
    """The pretrained ranker (fine-tuned per user by plain SGD: the transfer baseline) and the meta one."""

    pretrained: RankNet
    transfer: MetaAlgorithm
    model: RankNet
    algorithm: MetaAlgorithm
    fit: FitResult


def warm_up(
    dims: RankDims, ctx: RankContext, train: UserItems, meta: MetaParams
) -> tuple[RankNet, MetaAlgorithm]:
    """The pretrained ranker and the plain-SGD (first-order, fixed-rate) algorithm that fine-tunes it."""
    pretrained = RankNet(dims)
    transfer = ranking_algorithm(ctx.rp, meta, pretrained, "fomaml")
    pretrain(pretrained, transfer, ctx, train, ctx.rp.pretrain_epochs, ctx.rp.meta_lr)
    return pretrained, transfer


def meta_train_from(
    start: RankNet, ctx: RankContext, train: UserItems, val: EvalUsers, meta: MetaParams, k: int, name=None
) -> tuple[RankNet, MetaAlgorithm, FitResult]:
    """Meta-train a copy of `start` with algorithm `name` (default `ranking.algorithm`)."""
    model = copy.deepcopy(start)
    algorithm = ranking_algorithm(ctx.rp, meta, model, name)
    return model, algorithm, meta_fit(model, algorithm, ctx, train, val, k)


def train_rankers(
    dims: RankDims, ctx: RankContext, train: UserItems, val: EvalUsers, meta: MetaParams, k: int
) -> Rankers:
    """Warm-up, then meta-training from the warmed-up weights; both models are returned."""
    pretrained, transfer = warm_up(dims, ctx, train, meta)
    model, algorithm, fit = meta_train_from(pretrained, ctx, train, val, meta, k)
    return Rankers(pretrained, transfer, model, algorithm, fit)

"""The night's top-K candidates, each a scorer of support sets, each baseline's knobs tuned on
validation users from the grids in `selection` (the same budget of choice as the meta models get:
their inner learning rate and epochs are chosen on validation users too).

| candidate | kind | knobs chosen on validation users |
|---|---|---|
| `model` | meta | meta-training's best epoch; the scale of its prior (`selection.prior_scales`) |
| `rank_pretrained_finetuned` | transfer | inner learning rate (`selection.transfer_inner_lrs`), prior scale |
| `ease` | baseline | λ (`selection.ease_lambdas`) |
| `ease_dropout` | baseline | λ × κ (`selection.ease_dropout_kappas`; none: no such candidate) |
| `popularity_mf` | baseline | factors × ridge (`selection.mf_dims`, `selection.mf_regs`) |
| `item_knn` | baseline | neighbours (`selection.knn_neighbors`) |
| `popularity` | baseline | — |
| `student` | student | temperature (`distill.temperatures`), epochs (`selection/distill.py`) |

Every item-item or MF baseline also chooses the input weight of a support item its user rated low
(`selection.low_rating_weights`): seen but not liked, it still says what the user watches.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from metarec_tasks.meta import TRANSFER_ALGORITHM
from metarec_tasks.meta.base import MetaAlgorithm
from metarec_tasks.models.ranking import RankNet
from metarec_tasks.params import Params
from metarec_tasks.ranking import baselines as bl
from metarec_tasks.ranking.data import EvalUsers, RankContext
from metarec_tasks.ranking.episodes import UserItems
from metarec_tasks.ranking.scoring import exclusion_mask, score_items
from metarec_tasks.selection.metrics import mean_recall
from metarec_tasks.training.ranker import ranking_algorithm
from metarec_tasks.training.runtime import to_device

log = logging.getLogger(__name__)

MODEL, TRANSFER = "model", "rank_pretrained_finetuned"
Scorer = Callable[[UserItems], np.ndarray]  # support sets → [users, n_items] scores, higher is better


@dataclass
class Candidate:
    name: str
    kind: str  # meta | transfer | baseline | blend | student
    score: Scorer
    knobs: dict[str, Any] = field(default_factory=dict)
    validation: float = float("nan")  # mean validation Recall@K
    tried: list[dict[str, Any]] = field(default_factory=list)  # every knob setting and its recall
    val_scores: np.ndarray | None = None  # its scores of the validation users (the blend learns on them)
    network: torch.nn.Module | None = None  # a network trained tonight (the student), saved with the run


def support_rows(support: UserItems, n_items: int, low_weight: float, weighted: bool = False) -> np.ndarray:
    """A baseline's input rows: positives at 1 (`weighted`: at their event weight), low ratings at
    `low_weight`."""
    weights = support.weights if weighted else None
    return bl.support_matrix(support.items, n_items, support.low, low_weight, weights)


def ranker_scorer(
    model, algorithm, ctx: RankContext, steps: int, chunk: int, device: torch.device, prior_scale: float = 1.0
) -> Scorer:
    """A ranker adapted on each support set, scored over the whole catalog, in chunks; `prior_scale`
    multiplies its item-item prior term (a model with a prior)."""

    def score(support: UserItems) -> np.ndarray:
        out = []
        for start in range(0, len(support), chunk):
            part = support.subset(np.arange(start, min(start + chunk, len(support))))
            batch = to_device(ctx.support_batch(part), device)
            prior = ctx.prior_scores(part)
            prior = None if prior is None else prior * prior_scale
            scores = score_items(model, algorithm, batch, steps, prior)
            out.append(scores.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(ctx.unavailable)), np.float32)

    return score


def tuned(
    name: str,
    kind: str,
    build: Callable[..., Scorer],
    grid: dict[str, list],
    val: EvalUsers,
    excluded: np.ndarray,
    k: int,
) -> Candidate:
    """`build(**knobs)` for every combination of `grid`, the best on validation Recall@k kept."""
    best: Candidate | None = None
    tried = []
    for values in itertools.product(*grid.values()):
        knobs = dict(zip(grid, values, strict=True))
        scorer = build(**knobs)
        scores = scorer(val.support)
        recall = mean_recall(scores, excluded, val.relevant, k) if len(val.support) else float("nan")
        tried.append({**knobs, "recall": recall})
        if best is None or (np.isfinite(recall) and not recall <= best.validation):  # NaN best: replaced
            best = Candidate(name, kind, scorer, knobs, recall, val_scores=scores)
    assert best is not None
    best.tried = tried
    log.info(
        "%s: %s chosen on validation users (Recall@%d %.4f)",
        name,
        best.knobs or "no knobs",
        k,
        best.validation,
    )
    return best


def night_candidates(
    params: Params,
    ctx: RankContext,
    train_users: UserItems,
    val: EvalUsers,
    device: torch.device,
    rankers: dict[str, tuple[RankNet, MetaAlgorithm]],
    pretrained: RankNet,
) -> list[Candidate]:
    """Every single candidate — the meta-learned `rankers`, the fine-tuned `pretrained` warm-up and
    the baselines fitted on every interaction of `train_users` (what people watched together is
    co-occurrence signal even when they rated it low; a user's own low ratings are no positives of
    their support set, only an input at a validated weight) — tuned on `val` (validation users) only."""
    sp, k = params.selection, params.evaluate.catalog_k
    n_items = len(ctx.unavailable)
    train = bl.interaction_matrix(train_users.items, train_users.weights, n_items)
    chunk, steps = params.finetune.chunk_size, params.ranking.meta.inner_steps
    knn, popular = bl.ItemKNN(train), bl.Popularity(train)
    train_sparse = bl.sparse_matrix(train)  # what every MF fit reads
    excluded = exclusion_mask(val.seen, ctx.unavailable).numpy()
    low = sp.low_rating_weights

    def transfer(inner_lr: float, prior_scale: float = 1.0) -> Scorer:
        meta = params.ranking.meta.model_copy(update={"inner_lr": inner_lr})
        algorithm = ranking_algorithm(
            params.ranking.model_copy(update={"meta": meta}), pretrained, TRANSFER_ALGORITHM
        )
        return ranker_scorer(pretrained, algorithm, ctx, steps, chunk, device, prior_scale)

    @functools.cache  # each fit once, whatever low-rating weight reads it
    def fit_mf(dim: int, reg: float) -> bl.FoldInMF:
        return bl.FoldInMF(train_sparse, dim, reg, seed=params.run.seed)

    @functools.cache
    def ease_gram() -> tuple[np.ndarray, np.ndarray]:
        """(pooled columns, their binary Gram): one pass over the users for every EASE fit."""
        columns = bl.pooled_columns(bl.item_counts(train), sp.ease_max_items)
        return columns, bl.binary_gram(train, columns)

    @functools.lru_cache(maxsize=1)  # the grids vary the low-rating weight innermost: one dense fit held
    def fit_ease(lam: float, kappa: float = 0.0) -> bl.EASE:
        columns, gram = ease_gram()
        return bl.EASE.from_gram(gram, columns, lam, n_items, kappa)

    def mf(dim: int, reg: float, low_weight: float) -> Scorer:
        model = fit_mf(dim, reg)
        return lambda support: model.scores(support_rows(support, n_items, low_weight, weighted=True))

    def ease(lam: float, low_weight: float, kappa: float = 0.0) -> Scorer:
        model = fit_ease(lam, kappa)
        return lambda support: model.scores(support_rows(support, n_items, low_weight))

    def item_knn(neighbors: int, low_weight: float) -> Scorer:
        return lambda support: knn.scores(support_rows(support, n_items, low_weight), neighbors)

    def popularity() -> Scorer:
        return lambda support: popular.scores(support.items)

    def meta(model: RankNet, algorithm: MetaAlgorithm) -> Callable[..., Scorer]:
        return lambda prior_scale=1.0: ranker_scorer(model, algorithm, ctx, steps, chunk, device, prior_scale)

    scales = {"prior_scale": sp.prior_scales} if ctx.prior is not None else {}
    metas = [
        tuned(name, "meta", meta(model, alg), scales, val, excluded, k)
        for name, (model, alg) in rankers.items()
    ]
    out = [
        *metas,
        tuned(
            TRANSFER, "transfer", transfer, {"inner_lr": sp.transfer_inner_lrs, **scales}, val, excluded, k
        ),
        tuned("ease", "baseline", ease, {"lam": sp.ease_lambdas, "low_weight": low}, val, excluded, k),
    ]
    if sp.ease_dropout_kappas:
        dropout = {"lam": sp.ease_lambdas, "kappa": sp.ease_dropout_kappas, "low_weight": low}
        out.append(tuned("ease_dropout", "baseline", ease, dropout, val, excluded, k))
    return [
        *out,
        tuned(
            "popularity_mf",
            "baseline",
            mf,
            {"dim": sp.mf_dims, "reg": sp.mf_regs, "low_weight": low},
            val,
            excluded,
            k,
        ),
        tuned(
            "item_knn",
            "baseline",
            item_knn,
            {"neighbors": sp.knn_neighbors, "low_weight": low},
            val,
            excluded,
            k,
        ),
        tuned("popularity", "baseline", popularity, {}, val, excluded, k),
    ]

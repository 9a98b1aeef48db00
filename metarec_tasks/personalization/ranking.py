"""The ranker's part of `finetune`: holdout top-K lists for evaluation, and the published top-K.

- `holdout_topk`: holdout users adapted on their support set only; the meta-learned ranker, its
  fine-tuned warm-up (transfer baseline) and every top-K baseline ranked over the whole catalog
  (support items and unavailable items excluded).
- `recommend_ranked`: every user active in the window, their latest interactions (any event type) as
  the support set, seen and unavailable items excluded, scored over the whole catalog or the
  candidate pool. Published score by `ranking.objective` — ranking: the RankNet score; both: RankNet
  score + `ranking.rating_weight` × (predicted rating − global mean).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from metarec_tasks.data.episodes import TEST, latest_support
from metarec_tasks.logs.contract import ITEM_KEY, USER_KEY
from metarec_tasks.meta.base import MetaAlgorithm
from metarec_tasks.meta.functional import score_catalog
from metarec_tasks.meta.tasks import Catalog, build_task_batch
from metarec_tasks.params import Params
from metarec_tasks.paths import Workspace
from metarec_tasks.personalization.frames import rows_frame
from metarec_tasks.personalization.loading import load_adapting_ranker
from metarec_tasks.ranking import baselines as bl
from metarec_tasks.ranking.data import RankData, items_on
from metarec_tasks.ranking.episodes import user_items
from metarec_tasks.ranking.scoring import candidate_pool, exclusion_mask, score_items, top_k
from metarec_tasks.training.ranker import TRANSFER_ALGORITHM
from metarec_tasks.training.runtime import to_device

MODEL, TRANSFER = "model", "rank_pretrained_finetuned"
TOPK_COLUMNS = [USER_KEY, "predictor", "rank", ITEM_KEY, "score"]
RatingScores = Callable[[list[str], np.ndarray], torch.Tensor]


def ranked_frame(users: list[str], rows: np.ndarray, values: np.ndarray, item_ids) -> pd.DataFrame:
    """[users, k] top-k catalog rows and scores → (user, rank, item, score) rows; -inf marks no item."""
    item_ids = np.asarray(item_ids, dtype=object)
    return rows_frame(
        np.isfinite(values),
        {USER_KEY: np.asarray(users)},
        {ITEM_KEY: item_ids[rows], "score": values.astype(float)},
        rank=True,
    )


def holdout_topk(params: Params, ws: Workspace, rd: RankData, device: torch.device) -> pd.DataFrame:
    """Full-catalog top-K of holdout users (adapted on support only) for the model and every baseline."""
    test = rd.eval_users(rd.data.split(TEST), params)
    k, rp, ctx = params.evaluate.catalog_k, params.ranking, rd.ctx
    item_ids, n_items = rd.data.catalog.item_ids, len(rd.data.catalog.item_ids)
    users, support = test.support.users, test.support
    if not users:
        return pd.DataFrame(columns=TOPK_COLUMNS)
    excluded = exclusion_mask(support.items, ctx.unavailable)
    matrix = bl.interaction_matrix(rd.train.items, rd.train.weights, n_items)
    support_rows = bl.interaction_matrix(support.items, support.weights, n_items)
    scored = {
        "popularity": bl.popularity(matrix, support.items),
        "popularity_mf": bl.popularity_mf(matrix, support_rows, rp),
        "item_knn": bl.item_knn(matrix, support_rows, rp.knn_neighbors),
    }
    batch = to_device(ctx.support_batch(support), device)
    for name, (path, algorithm) in {
        MODEL: (ws.rank_model_file, None),
        TRANSFER: (ws.rank_pretrained_file, TRANSFER_ALGORITHM),
    }.items():
        model, alg = load_adapting_ranker(path, params, device, algorithm)
        scored[name] = score_items(model, alg, batch, rp.meta.inner_steps, items_on(ctx.items, device)).cpu()
    frames = []
    for name, scores in scored.items():
        values, rows = top_k(torch.as_tensor(scores, dtype=torch.float32), excluded, k)
        frames.append(ranked_frame(users, rows, values, item_ids).assign(predictor=name))
    return pd.concat(frames, ignore_index=True)[TOPK_COLUMNS]


def recommend_ranked(
    params: Params,
    ws: Workspace,
    rd: RankData,
    device: torch.device,
    rating_scores: RatingScores | None = None,
) -> pd.DataFrame:
    """Top-K unseen, available items for every user active in the window, from the ranking model.

    `rating_scores(users, candidate item ids) -> [users, candidates]` adds the rating term (objective
    both)."""
    rp, ctx, catalog = params.ranking, rd.ctx, rd.data.catalog
    everyone = user_items(rd.events, catalog, rp.event_weights)
    support = user_items(
        latest_support(rd.events, params.episodes.max_support), catalog, rp.event_weights, everyone.users
    )
    pool = candidate_pool(rd.counts, rd.first_seen, rp)
    columns = np.arange(len(ctx.unavailable)) if pool is None else pool
    items = items_on({n: v[torch.as_tensor(columns)] for n, v in ctx.items.items()}, device)
    item_ids = np.asarray(catalog.item_ids, dtype=object)
    model, algorithm = load_adapting_ranker(ws.rank_model_file, params, device)
    frames = []
    chunk = params.finetune.chunk_size
    for start in range(0, len(everyone), chunk):
        index = np.arange(start, min(start + chunk, len(everyone)))
        part, seen = support.subset(index), everyone.subset(index)
        batch = to_device(ctx.support_batch(part), device)
        scores = score_items(model, algorithm, batch, rp.meta.inner_steps, items).cpu()
        if rating_scores is not None and rp.rating_weight > 0:
            scores = scores + rp.rating_weight * rating_scores(part.users, item_ids[columns])
        excluded = exclusion_mask(seen.items, ctx.unavailable)[:, torch.as_tensor(columns)]
        values, rows = top_k(scores, excluded, params.finetune.top_k)
        frames.append(ranked_frame(part.users, columns[rows], values, item_ids))
    if not frames:
        return pd.DataFrame(columns=[USER_KEY, "rank", ITEM_KEY, "score"])
    return pd.concat(frames, ignore_index=True)


def rating_term(
    model,
    algorithm: MetaAlgorithm,
    ratings: pd.DataFrame,
    catalog: Catalog,
    global_mean: float,
    params: Params,
) -> RatingScores:
    """`rating_scores` for `recommend_ranked` (objective both): the rating network, adapted on each
    user's recent ratings, predicts every candidate; the term is the prediction minus the global mean
    (0 for users without ratings and for items the rating network's catalog lacks)."""
    history = latest_support(ratings, params.episodes.max_support)
    rated = set(history[USER_KEY].astype(str))
    lookup = {item: row for row, item in enumerate(catalog.item_ids)}
    device = next(model.parameters()).device

    def scores(users: list[str], rank_item_ids: np.ndarray) -> torch.Tensor:
        out = torch.zeros((len(users), len(rank_item_ids)))
        mine = [u for u in users if u in rated]
        if not mine:
            return out
        batch = to_device(build_task_batch(history, catalog, mine), device)
        adapted, shared = algorithm.adapt(model, batch, params.finetune.inner_steps)
        with torch.no_grad():
            user = {n: v[:, 0] for n, v in batch.support.user.items()}
            items = items_on(catalog.items, device)
            predicted = score_catalog(model, adapted, shared, user, items).float().cpu() - global_mean
        cols = np.asarray([lookup.get(str(i), -1) for i in rank_item_ids])
        rows = torch.as_tensor([users.index(u) for u in mine])
        known = np.nonzero(cols >= 0)[0]
        out[rows[:, None], torch.as_tensor(known)[None, :]] = predicted[:, torch.as_tensor(cols[known])]
        return out

    return scores

"""The ranker's part of `finetune`: holdout top-K lists for evaluation, and the published top-K.

- `night_selection`: every top-K candidate tuned and the challenger chosen on validation users
  (`metarec_tasks/selection`), the challenger distilled into the student, which competes too;
- `distill_timing`: scoring time of the student and its teacher on the holdout users;
- `holdout_topk`: holdout users adapted on their support set only; every candidate, the blend and
  the selected one ranked over the whole catalog (support items and unavailable items excluded);
- `recommend_ranked`: every user active in the window, their latest interactions (any event type;
  what they rated low is no positive, only an input of the item-item models) as the support set,
  seen and unavailable items excluded, ranked by the challenger over the whole catalog or the
  candidate pool; with `ranking.objective` both, plus `ranking.rating_weight` × (predicted rating −
  global mean).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from metarec_tasks.data.episodes import TEST, latest_support
from metarec_tasks.evaluation.selection import SELECTED
from metarec_tasks.logs.contract import ITEM_KEY, USER_KEY
from metarec_tasks.meta import TRANSFER_ALGORITHM
from metarec_tasks.meta.base import MetaAlgorithm
from metarec_tasks.meta.functional import score_catalog
from metarec_tasks.meta.tasks import Catalog, build_task_batch
from metarec_tasks.meta.tasks import select as select_tasks
from metarec_tasks.models.ranking import RankDims
from metarec_tasks.params import Params
from metarec_tasks.paths import Workspace
from metarec_tasks.personalization.frames import rows_frame
from metarec_tasks.personalization.loading import load_adapting_ranker
from metarec_tasks.personalization.shards import Shard
from metarec_tasks.ranking.data import RankData, positives
from metarec_tasks.ranking.episodes import user_items
from metarec_tasks.ranking.scoring import candidate_pool, exclusion_mask, top_k
from metarec_tasks.selection.candidates import MODEL, night_candidates
from metarec_tasks.selection.distill import STUDENT, student_candidate, timed_scores
from metarec_tasks.selection.select import Selection, select, with_candidate
from metarec_tasks.training.runtime import to_device

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


def night_selection(params: Params, ws: Workspace, rd: RankData, device: torch.device) -> Selection:
    """Every candidate tuned, the blend learned, the challenger chosen — on validation users only;
    then (`distill.enabled`) the challenger distilled into the student, which competes too."""
    val, k = rd.validation, params.evaluate.catalog_k
    excluded = exclusion_mask(val.seen, rd.ctx.unavailable).numpy()
    catalog = rd.ctx.catalog.items
    model, algorithm = load_adapting_ranker(ws.rank_model_file, catalog, params, device)
    pretrained, _ = load_adapting_ranker(ws.rank_pretrained_file, catalog, params, device, TRANSFER_ALGORITHM)
    candidates = night_candidates(
        params, rd.ctx, rd.interactions, val, device, {MODEL: (model, algorithm)}, pretrained
    )
    selection = select(candidates, val, excluded, k, params.selection)
    if not params.distill.enabled:
        return selection
    dims = RankDims.from_vocab(rd.data.vocab, params.distill.dim)
    student = student_candidate(params, rd.ctx, dims, rd.train, val, selection, device)
    return with_candidate(selection, student, len(val.support), k)


def distill_timing(params: Params, rd: RankData, selection: Selection) -> dict:
    """The student and its teacher scoring the holdout users' support sets: ms per 1,000 users each
    ({} without a student)."""
    student = selection.candidates.get(STUDENT)
    if student is None:
        return {}
    test = rd.eval_users(rd.data.split(TEST), params)
    excluded = exclusion_mask(test.seen, rd.ctx.unavailable).numpy()
    names = [student.knobs["teacher"], STUDENT]
    return {
        "teacher": names[0],
        "student": STUDENT,
        "users": len(test.support),
        "ms_per_1000_users": timed_scores(selection, names, test.support, excluded)[1],
    }


def holdout_topk(params: Params, rd: RankData, selection: Selection) -> pd.DataFrame:
    """Full-catalog top-K of holdout users (adapted on support only) for every candidate, the blend,
    and `selected` — the challenger's lists, under its own name too."""
    test = rd.eval_users(rd.data.split(TEST), params)
    users, support = test.support.users, test.support
    if not users:
        return pd.DataFrame(columns=TOPK_COLUMNS)
    excluded = exclusion_mask(test.seen, rd.ctx.unavailable)
    frames = []
    for name, scores in selection.score_all(support, excluded.numpy()).items():
        values, rows = top_k(
            torch.as_tensor(scores, dtype=torch.float32), excluded, params.evaluate.catalog_k
        )
        frame = ranked_frame(users, rows, values, rd.data.catalog.item_ids)
        frames.append(frame.assign(predictor=name))
        if name == selection.challenger:
            frames.append(frame.assign(predictor=SELECTED))
    return pd.concat(frames, ignore_index=True)[TOPK_COLUMNS]


def recommend_ranked(
    params: Params,
    rd: RankData,
    selection: Selection,
    shard: Shard,
    rating_scores: RatingScores | None = None,
) -> pd.DataFrame:
    """Top-K unseen, available items for the `shard` of the users active in the window, from the
    challenger.

    `rating_scores(users, candidate item ids) -> [users, candidates]` adds the rating term (objective
    both)."""
    rp, ctx, catalog = params.ranking, rd.ctx, rd.data.catalog
    everyone = user_items(rd.events, catalog, rp.event_weights)
    latest = latest_support(rd.events, params.episodes.max_support)
    support = positives(latest, catalog, params, everyone.users)
    pool = candidate_pool(rd.counts, rd.first_seen, rp)
    columns = np.arange(len(ctx.unavailable)) if pool is None else pool
    item_ids = np.asarray(catalog.item_ids, dtype=object)
    frames = []
    chunk = params.finetune.chunk_size
    mine = shard.span(len(everyone), chunk)
    for start in range(mine.start, mine.stop, chunk):
        index = np.arange(start, min(start + chunk, mine.stop))
        part, seen = support.subset(index), everyone.subset(index)
        excluded = exclusion_mask(seen.items, ctx.unavailable)
        scores = torch.as_tensor(
            selection.score(selection.challenger, part, excluded.numpy()), dtype=torch.float32
        )
        scores = scores[:, torch.as_tensor(columns)]
        if rating_scores is not None and rp.rating_weight > 0:
            scores = scores + rp.rating_weight * rating_scores(part.users, item_ids[columns])
        values, rows = top_k(scores, excluded[:, torch.as_tensor(columns)], params.finetune.top_k)
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
    rated = list(dict.fromkeys(history[USER_KEY].astype(str)))
    everyone = build_task_batch(history, catalog, rated)  # padded once; a call selects its users
    position = {user: t for t, user in enumerate(rated)}
    lookup = {item: row for row, item in enumerate(catalog.item_ids)}
    device = next(model.parameters()).device

    def scores(users: list[str], rank_item_ids: np.ndarray) -> torch.Tensor:
        out = torch.zeros((len(users), len(rank_item_ids)))
        mine = [u for u in users if u in position]
        if not mine:
            return out
        batch = to_device(select_tasks(everyone, torch.as_tensor([position[u] for u in mine])), device)
        adapted, shared = algorithm.adapt(model, batch, params.finetune.inner_steps)
        with torch.no_grad():
            user = {n: v[:, 0] for n, v in batch.support.user.items()}
            items = catalog.every_item(device)
            predicted = score_catalog(model, adapted, shared, user, items).float().cpu() - global_mean
        cols = np.asarray([lookup.get(str(i), -1) for i in rank_item_ids])
        rows = torch.as_tensor([users.index(u) for u in mine])
        known = np.nonzero(cols >= 0)[0]
        out[rows[:, None], torch.as_tensor(known)[None, :]] = predicted[:, torch.as_tensor(cols[known])]
        return out

    return scores

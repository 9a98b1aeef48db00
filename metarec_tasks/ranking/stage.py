"""The ranking parts of the `train` and `finetune` stages (train.py/finetune.py call these).

Train: positives are every event of training users in the run window (each event type weighted by
`ranking.event_weights`; the user split is the episodes stage's stable hash, so holdout users never
train); validation users (adapted on their support set, scored on full-catalog Recall@K) pick the best
epoch. Writes `models/rank_model.pt` (meta-learned) and `models/rank_pretrained.pt` (warm-up).

Finetune writes `holdout_topk.parquet`: holdout users adapted on their support set only, the model and
every baseline ranked over the whole catalog (support items excluded), and returns the published
top-K of every active user: their recent interactions (any event type) as the support set, seen and
unavailable items excluded, scored over the whole catalog or the candidate pool.
Published score by `ranking.objective` — ranking: the RankNet score; both: RankNet score +
`ranking.rating_weight` × (predicted rating − global mean); rating: the rating network alone.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from metarec_tasks.dataset import EpisodeData, load_episode_data
from metarec_tasks.episodes import QUERY, SUPPORT, TEST, TRAIN, VALIDATION, user_split
from metarec_tasks.logs.contract import AVAILABLE_COLUMN, FALSE_VALUES, ITEM_KEY, USER_KEY
from metarec_tasks.params import Params
from metarec_tasks.paths import Workspace
from metarec_tasks.ranking import baselines as bl
from metarec_tasks.ranking.episodes import NegativeSampler, UserItems, item_features, user_items
from metarec_tasks.ranking.fit import EvalUsers, RankContext, ranking_algorithm, train_rankers
from metarec_tasks.ranking.model import RankDims, load_rank_model, save_rank_model
from metarec_tasks.ranking.scoring import candidate_pool, exclusion_mask, score_items, top_k

log = logging.getLogger(__name__)

MODEL, TRANSFER = "model", "rank_pretrained_finetuned"
TOPK_COLUMNS = [USER_KEY, "predictor", "rank", ITEM_KEY]


@dataclass
class RankData:
    data: EpisodeData
    events: pd.DataFrame
    train: UserItems
    ctx: RankContext
    counts: np.ndarray
    first_seen: np.ndarray


def load_rank_data(params: Params, ws: Workspace) -> RankData:
    """Validated events, the catalog covering them, training positives and the negative sampler."""
    events = pd.read_parquet(ws.validated / "events.parquet")
    data = load_episode_data(ws, extra_events=events)
    catalog, rp = data.catalog, params.ranking
    split = (
        events[USER_KEY]
        .astype(str)
        .map({u: user_split(u, params.episodes) for u in events[USER_KEY].unique()})
    )
    train = user_items(events[split == TRAIN], catalog, rp.event_weights)
    n_items = len(catalog.item_ids)
    counts = np.bincount(np.concatenate([np.zeros(0, np.int64), *train.items]), minlength=n_items)
    first = events.groupby(ITEM_KEY)["timestamp"].min()
    first_seen = np.zeros(n_items)
    first_seen[catalog.item_rows(first.index)] = first.astype("int64").to_numpy(float)
    sampler = NegativeSampler(counts, rp.negative_alpha)
    rng = np.random.default_rng(params.run.seed)
    ctx = RankContext(catalog, item_features(catalog, sampler), sampler, rp, rng, unavailable_items(ws, data))
    return RankData(data, events, train, ctx, counts, first_seen)


def unavailable_items(ws: Workspace, data: EpisodeData) -> np.ndarray:
    """[n_items] True where the item side table marks the item unavailable (missing column: none)."""
    items = pd.read_parquet(ws.validated / "items.parquet")
    mask = np.zeros(len(data.catalog.item_ids), bool)
    if AVAILABLE_COLUMN in items:
        flags = items[AVAILABLE_COLUMN].astype("string").fillna("")
        off = items.loc[flags.isin(FALSE_VALUES).to_numpy(), ITEM_KEY].astype(str)
        known = set(data.catalog.item_ids)
        mask[data.catalog.item_rows([i for i in off.astype(str) if i in known])] = True
    return mask


def eval_users(tasks: pd.DataFrame, rd: RankData, params: Params) -> EvalUsers:
    """Users of `tasks`: support = their support rows, relevant = query items rated ≥ the threshold."""
    catalog = rd.data.catalog
    users = sorted(tasks[USER_KEY].astype(str).unique())
    support = user_items(
        tasks[tasks["role"] == SUPPORT].assign(event_type="rating"),
        catalog,
        params.ranking.event_weights,
        users,
    )
    query = tasks[(tasks["role"] == QUERY) & (tasks["value"] >= params.evaluate.relevance_threshold)]
    rel = query.groupby(USER_KEY)[ITEM_KEY].agg(lambda s: set(catalog.item_rows(s).tolist()))
    return EvalUsers(support, [rel.get(u, set()) for u in users])


def run_rank_train(params: Params, root: Path) -> dict[str, float]:
    ws = Workspace(root)
    torch.manual_seed(params.run.seed)
    rd = load_rank_data(params, ws)
    val = eval_users(rd.data.split(VALIDATION), rd, params)
    dims = RankDims.from_vocab(rd.data.vocab, params.ranking.dim)
    log.info("ranking: %d training users, %d validation users", len(rd.train), len(val.support))
    rankers = train_rankers(dims, rd.ctx, rd.train, val, params.meta, params.evaluate.catalog_k)
    rp = params.ranking
    meta = {"algorithm": rankers.algorithm.name, "adapt": rp.adapt, "loss": rp.loss}
    save_rank_model(
        ws.rank_model_file,
        rankers.model,
        {**meta, "best_epoch": rankers.fit.best_epoch, "best_val_recall": rankers.fit.best_val_recall},
        rankers.algorithm.state_dict(),
    )
    save_rank_model(ws.rank_pretrained_file, rankers.pretrained, {**meta, "algorithm": "fomaml"}, {})
    _write_log(ws.reports / "rank_train_log.csv", rankers.fit.history)
    return {"best_epoch": rankers.fit.best_epoch, "best_val_recall": rankers.fit.best_val_recall}


def _load(path: Path, params: Params, name: str | None):
    model, meta, state = load_rank_model(path)
    model.eval()
    algorithm = ranking_algorithm(params.ranking, params.meta, model, name or meta["algorithm"])
    if name is None:
        algorithm.load_state_dict(state)
    return model, algorithm


def _ranked_frame(
    users: list[str], predictor: str, rows: np.ndarray, values: np.ndarray, item_ids
) -> pd.DataFrame:
    t_idx, r_idx = np.nonzero(np.isfinite(values))
    return pd.DataFrame(
        {
            USER_KEY: np.asarray(users, dtype=object)[t_idx],
            "predictor": predictor,
            "rank": r_idx + 1,
            ITEM_KEY: np.asarray(item_ids, dtype=object)[rows[t_idx, r_idx]],
            "score": values[t_idx, r_idx].astype(float),
        }
    )


def holdout_topk(params: Params, root: Path) -> pd.DataFrame:
    """Full-catalog top-K of holdout users (adapted on support only) for the model and every baseline."""
    ws = Workspace(root)
    rd = load_rank_data(params, ws)
    test = eval_users(rd.data.split(TEST), rd, params)
    k, rp, ctx = params.evaluate.catalog_k, params.ranking, rd.ctx
    item_ids, n_items = rd.data.catalog.item_ids, len(rd.data.catalog.item_ids)
    users, support = test.support.users, test.support
    if not users:
        return pd.DataFrame(columns=[*TOPK_COLUMNS, "score"])
    excluded = exclusion_mask(support.items, ctx.unavailable)
    matrix = bl.interaction_matrix(rd.train.items, rd.train.weights, n_items)
    support_rows = bl.interaction_matrix(support.items, support.weights, n_items)
    scored = {
        "popularity": bl.popularity(matrix, support.items),
        "popularity_mf": bl.popularity_mf(matrix, support_rows, rp),
        "item_knn": bl.item_knn(matrix, support_rows, rp.knn_neighbors),
    }
    for name, (path, algorithm) in {
        MODEL: (ws.rank_model_file, None),
        TRANSFER: (ws.rank_pretrained_file, "fomaml"),
    }.items():
        model, alg = _load(path, params, algorithm)
        scored[name] = score_items(model, alg, ctx.support_batch(support), rp.inner_steps, ctx.items).numpy()
    frames = []
    for name, scores in scored.items():
        values, rows = top_k(torch.as_tensor(scores, dtype=torch.float32), excluded, k)
        frames.append(_ranked_frame(users, name, rows, values, item_ids))
    return pd.concat(frames, ignore_index=True)


def recommend_ranked(params: Params, root: Path, rating_scores=None) -> pd.DataFrame:
    """Top-K unseen, available items for every user active in the window, from the ranking model.

    `rating_scores(users, candidate rows) -> [users, candidates]` adds the rating term (objective both).
    """
    ws = Workspace(root)
    rd = load_rank_data(params, ws)
    rp, ctx = params.ranking, rd.ctx
    everyone = user_items(rd.events, rd.data.catalog, rp.event_weights)
    latest = rd.events.sort_values("timestamp").groupby(USER_KEY).tail(params.episodes.max_support)
    support = user_items(latest, rd.data.catalog, rp.event_weights, everyone.users)
    pool = candidate_pool(rd.counts, rd.first_seen, rp)
    items = ctx.items if pool is None else {n: v[torch.as_tensor(pool)] for n, v in ctx.items.items()}
    columns = np.arange(len(ctx.unavailable)) if pool is None else pool
    model, algorithm = _load(ws.rank_model_file, params, None)
    frames = []
    chunk = params.finetune.chunk_size
    for start in range(0, len(everyone), chunk):
        index = np.arange(start, min(start + chunk, len(everyone)))
        part, seen = support.subset(index), everyone.subset(index)
        scores = score_items(model, algorithm, ctx.support_batch(part), rp.inner_steps, items)
        if rating_scores is not None and rp.rating_weight > 0:
            item_ids = np.asarray(rd.data.catalog.item_ids, dtype=object)[columns]
            scores = scores + rp.rating_weight * rating_scores(part.users, item_ids)
        excluded = exclusion_mask(seen.items, ctx.unavailable)[:, torch.as_tensor(columns)]
        values, rows = top_k(scores, excluded, params.finetune.top_k)
        frame = _ranked_frame(part.users, MODEL, columns[rows], values, rd.data.catalog.item_ids)
        frames.append(frame.drop(columns="predictor"))
    if not frames:
        return pd.DataFrame(columns=[USER_KEY, "rank", ITEM_KEY, "score"])
    return pd.concat(frames, ignore_index=True)


def _write_log(path: Path, history: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        fields = list(history[0]) if history else ["epoch"]
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(history)


def rating_term(model, algorithm, ratings: pd.DataFrame, catalog, global_mean: float, params: Params):
    """`rating_scores` for `recommend_ranked` (objective both): the rating network, adapted on each
    user's recent ratings, predicts every candidate; the term is the prediction minus the global mean
    (0 for users without ratings and for items the rating network's catalog lacks)."""
    from metarec_tasks.meta.functional import score_catalog
    from metarec_tasks.meta.tasks import build_task_batch

    history = (
        ratings.sort_values("timestamp")
        .groupby(USER_KEY)
        .tail(params.episodes.max_support)
        .assign(role=SUPPORT)
    )
    rated = set(history[USER_KEY].astype(str))
    lookup = {item: row for row, item in enumerate(catalog.item_ids)}

    def scores(users: list[str], rank_item_ids: np.ndarray) -> torch.Tensor:
        out = torch.zeros((len(users), len(rank_item_ids)))
        mine = [u for u in users if u in rated]
        if not mine:
            return out
        batch = build_task_batch(history, catalog, mine)
        adapted, shared = algorithm.adapt(model, batch, params.finetune.inner_steps)
        with torch.no_grad():
            user = {n: v[:, 0] for n, v in batch.support.user.items()}
            predicted = score_catalog(model, adapted, shared, user, catalog.items).float() - global_mean
        cols = np.asarray([lookup.get(str(i), -1) for i in rank_item_ids])
        rows = torch.as_tensor([users.index(u) for u in mine])
        known = np.nonzero(cols >= 0)[0]
        out[rows[:, None], torch.as_tensor(known)[None, :]] = predicted[:, torch.as_tensor(cols[known])]
        return out

    return scores

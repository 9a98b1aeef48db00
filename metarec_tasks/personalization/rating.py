"""The rating model's part of `finetune`: adapt each user's initialization, predict, rank.

- `predict_holdout`: holdout users adapted on their support set only, scored on their query set —
  adapted and unadapted predictions side by side;
- `recommend`: every active user adapted on their recent ratings, the whole catalog scored at once,
  already-seen items excluded, top-K kept (the published list when `ranking.objective` is rating).
Users are adapted in vectorized chunks (`finetune.chunk_size`), never one by one; their rows are
padded (and their seen items indexed) once for all of them, and each chunk is a slice: rebuilt from
the whole frame per chunk, the cost grew with users² (100,000 users: finetune stuck in it for minutes).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from metarec_tasks.data.episodes import QUERY, SUPPORT, latest_support
from metarec_tasks.logs.contract import ITEM_KEY, USER_KEY
from metarec_tasks.meta.base import MetaAlgorithm
from metarec_tasks.meta.functional import predict_batch, score_catalog
from metarec_tasks.meta.tasks import Catalog, build_task_batch, select
from metarec_tasks.models.rating import RatingNet
from metarec_tasks.params import Params
from metarec_tasks.personalization.frames import rows_frame
from metarec_tasks.personalization.ranking import ranked_frame
from metarec_tasks.personalization.shards import Shard
from metarec_tasks.training.runtime import autocast, to_device

MODEL_COLUMN = "pred_model"
NO_ADAPT_COLUMN = "pred_model_no_adaptation"


def predict_holdout(
    model: RatingNet,
    algorithm: MetaAlgorithm,
    tasks: pd.DataFrame,
    catalog: Catalog,
    params: Params,
    device: torch.device,
) -> pd.DataFrame:
    """Query rows of holdout users with the adapted and the unadapted model's predictions."""
    users = list(dict.fromkeys(tasks[USER_KEY].astype(str)))
    everyone = build_task_batch(tasks, catalog, users)
    frames = []
    for chunk, index in _chunks(users, params.finetune.chunk_size, "adapt holdout users"):
        batch = to_device(select(everyone, index), device)
        with autocast(device, params.meta.amp):
            adapted, shared = algorithm.adapt(model, batch, params.finetune.inner_steps)
            with torch.no_grad():
                pred = predict_batch(model, adapted, shared, batch.query.user, batch.query.item).float()
                base = model(batch.query.user, batch.query.item).float()
        rows = batch.query.item_rows.cpu().numpy()
        frames.append(
            rows_frame(
                batch.query.mask.cpu().numpy(),
                {USER_KEY: np.asarray(chunk)},
                {
                    ITEM_KEY: np.asarray(catalog.item_ids, dtype=object)[rows],
                    MODEL_COLUMN: pred.cpu().numpy(),
                    NO_ADAPT_COLUMN: base.cpu().numpy(),
                },
            )
        )
    predicted = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=[USER_KEY, ITEM_KEY, MODEL_COLUMN, NO_ADAPT_COLUMN])
    )
    query = tasks[tasks["role"] == QUERY]
    support_size = tasks[tasks["role"] == SUPPORT].groupby(USER_KEY).size().rename("support_size")
    truth = query[[USER_KEY, ITEM_KEY, "value", "user_new", "item_new"]].join(support_size, on=USER_KEY)
    return truth.merge(predicted, on=[USER_KEY, ITEM_KEY], how="left", validate="one_to_one")


def recommend(
    model: RatingNet,
    algorithm: MetaAlgorithm,
    ratings: pd.DataFrame,
    catalog: Catalog,
    params: Params,
    device: torch.device,
    shard: Shard,
) -> pd.DataFrame:
    """Top-K unseen items for the `shard` of the users with a rating in the run window."""
    history = latest_support(ratings, params.episodes.max_support)
    users = sorted(history[USER_KEY].astype(str).unique())
    mine = shard.span(len(users), params.finetune.chunk_size)
    users = users[mine.start : mine.stop]
    k = min(params.finetune.top_k, len(catalog.item_ids))
    items = catalog.every_item(device)
    item_ids = np.asarray(catalog.item_ids)
    everyone = build_task_batch(history, catalog, users)
    seen = SeenItems(ratings, users, catalog)
    frames = []
    for chunk, index in _chunks(users, params.finetune.chunk_size, "recommend"):
        batch = to_device(select(everyone, index), device)
        user_features = {name: v[:, 0] for name, v in batch.support.user.items()}
        with autocast(device, params.meta.amp):
            adapted, shared = algorithm.adapt(model, batch, params.finetune.inner_steps)
            with torch.no_grad():
                scores = score_catalog(model, adapted, shared, user_features, items).float()
        with torch.no_grad():
            scores[seen.mask(index, len(catalog.item_ids)).to(device)] = -torch.inf
            top = torch.topk(scores, k, dim=1)
        frames.append(ranked_frame(chunk, top.indices.cpu().numpy(), top.values.cpu().numpy(), item_ids))
    if not frames:
        return pd.DataFrame(columns=[USER_KEY, "rank", ITEM_KEY, "score"])
    return pd.concat(frames, ignore_index=True)


class SeenItems:
    """The catalog rows each of `users` interacted with, indexed once: `mask` of a chunk is a slice."""

    def __init__(self, ratings: pd.DataFrame, users: list[str], catalog: Catalog):
        position = pd.Series(np.arange(len(users)), index=pd.Index(users, dtype=object))
        where = ratings[USER_KEY].astype(str).map(position)
        mine = where.notna().to_numpy()
        order = np.argsort(where[mine].to_numpy(np.int64), kind="stable")
        self.position = where[mine].to_numpy(np.int64)[order]
        self.rows = np.asarray(catalog.item_rows(ratings.loc[mine, ITEM_KEY]), np.int64)[order]

    def mask(self, index: torch.Tensor, n_items: int) -> torch.Tensor:
        """[len(index), n_items] True where the user already interacted with the item (`index`: a
        contiguous range of user positions, as `_chunks` yields)."""
        first, stop = int(index[0]), int(index[-1]) + 1
        lo, hi = np.searchsorted(self.position, [first, stop])
        mask = torch.zeros((stop - first, n_items), dtype=torch.bool)
        mask[torch.as_tensor(self.position[lo:hi] - first), torch.as_tensor(self.rows[lo:hi])] = True
        return mask


def _chunks(values: list[str], size: int, desc: str):
    """(values, their positions) of consecutive chunks of `size`."""
    starts = range(0, len(values), size)
    for start in tqdm(starts, desc=desc, unit="chunk", disable=None):
        stop = min(start + size, len(values))
        yield values[start:stop], torch.arange(start, stop)

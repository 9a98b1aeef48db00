"""The rating model's part of `finetune`: adapt each user's initialization, predict, rank.

- `predict_holdout`: holdout users adapted on their support set only, scored on their query set —
  adapted and unadapted predictions side by side;
- `recommend`: every active user adapted on their recent ratings, the whole catalog scored at once,
  already-seen items excluded, top-K kept (the published list when `ranking.objective` is rating).
Users are adapted in vectorized chunks (`finetune.chunk_size`), never one by one.
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
from metarec_tasks.meta.tasks import Catalog, build_task_batch
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
    frames = []
    for chunk in _chunks(users, params.finetune.chunk_size, "adapt holdout users"):
        batch = to_device(build_task_batch(tasks, catalog, chunk), device)
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
    frames = []
    for chunk in _chunks(users, params.finetune.chunk_size, "recommend"):
        batch = to_device(build_task_batch(history, catalog, chunk), device)
        user_features = {name: v[:, 0] for name, v in batch.support.user.items()}
        with autocast(device, params.meta.amp):
            adapted, shared = algorithm.adapt(model, batch, params.finetune.inner_steps)
            with torch.no_grad():
                scores = score_catalog(model, adapted, shared, user_features, items).float()
        with torch.no_grad():
            scores[_seen_mask(ratings, chunk, catalog, device)] = -torch.inf
            top = torch.topk(scores, k, dim=1)
        frames.append(ranked_frame(chunk, top.indices.cpu().numpy(), top.values.cpu().numpy(), item_ids))
    if not frames:
        return pd.DataFrame(columns=[USER_KEY, "rank", ITEM_KEY, "score"])
    return pd.concat(frames, ignore_index=True)


def _seen_mask(
    ratings: pd.DataFrame, chunk: list[str], catalog: Catalog, device: torch.device
) -> torch.Tensor:
    """[len(chunk), n_items] True where the user already interacted with the item."""
    position = {user: t for t, user in enumerate(chunk)}
    mine = ratings[ratings[USER_KEY].isin(position)]
    mask = torch.zeros((len(chunk), len(catalog.item_ids)), dtype=torch.bool)
    rows = torch.from_numpy(mine[USER_KEY].map(position).to_numpy(dtype=np.int64).copy())
    mask[rows, torch.as_tensor(catalog.item_rows(mine[ITEM_KEY]))] = True
    return mask.to(device)


def _chunks(values: list[str], size: int, desc: str):
    starts = range(0, len(values), size)
    for start in tqdm(starts, desc=desc, unit="chunk", disable=None):
        yield values[start : start + size]

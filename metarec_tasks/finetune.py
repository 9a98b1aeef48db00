"""The `finetune` stage: personalize the meta-learned initialization for every user, then rank.

Two outputs, from the same adaptation code:
- `holdout.parquet`: holdout users adapted on their support set only, scored on their query set — with
  the non-meta baselines as extra columns, so `evaluate` compares every predictor on identical rows
  (the statistical baselines of `meta.baselines`, and the pretrained network of the `train` stage, as
  it is and fine-tuned per user on the support set with the same SGD steps: plain transfer learning);
- `recommendations.parquet`: every active user adapted on all their recent ratings, the whole catalog
  scored at once, already-seen items excluded, top-K kept.
Users are adapted in vectorized chunks (`finetune.chunk_size`), never one by one.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from metarec_tasks.dataset import load_episode_data
from metarec_tasks.episodes import QUERY, SUPPORT, TEST, TRAIN, latest_ratings
from metarec_tasks.logs.contract import ITEM_KEY, USER_KEY
from metarec_tasks.meta import build_algorithm
from metarec_tasks.meta.base import MetaAlgorithm
from metarec_tasks.meta.baselines import BASELINES
from metarec_tasks.meta.functional import predict_batch, score_catalog
from metarec_tasks.meta.tasks import Catalog, build_task_batch
from metarec_tasks.model import RatingNet
from metarec_tasks.model_io import load_bundle
from metarec_tasks.params import Params
from metarec_tasks.paths import Workspace
from metarec_tasks.ranking import stage as rank_stage
from metarec_tasks.runtime import autocast, pick_device, to_device

log = logging.getLogger(__name__)

MODEL_COLUMN = "pred_model"
NO_ADAPT_COLUMN = "pred_model_no_adaptation"
PRETRAINED_COLUMN = "pred_pretrained"
TRANSFER_COLUMN = "pred_pretrained_finetuned"


def run_finetune(params: Params, root: Path) -> dict[str, int]:
    ws = Workspace(root)
    device = pick_device(params.run.device)
    ratings = latest_ratings(pd.read_parquet(ws.validated / "events.parquet"))
    data = load_episode_data(ws, extra_events=ratings)
    model, algorithm = load_adapting_model(ws.model_file, params, device)
    pretrained, transfer = load_adapting_model(ws.pretrained_model_file, params, device, algorithm="fomaml")

    holdout = predict_holdout(model, algorithm, data.split(TEST), data.catalog, params, device)
    transferred = predict_holdout(pretrained, transfer, data.split(TEST), data.catalog, params, device)
    holdout = holdout.merge(
        transferred[[USER_KEY, ITEM_KEY, MODEL_COLUMN, NO_ADAPT_COLUMN]].rename(
            columns={MODEL_COLUMN: TRANSFER_COLUMN, NO_ADAPT_COLUMN: PRETRAINED_COLUMN}
        ),
        on=[USER_KEY, ITEM_KEY],
        how="left",
        validate="one_to_one",
    )
    test_support = data.split(TEST)[lambda t: t["role"] == SUPPORT]
    for name, baseline in BASELINES.items():
        holdout[f"pred_{name}"] = baseline(data.split(TRAIN), test_support, holdout, params.evaluate)
    if params.ranking.objective == "rating":
        recommendations = recommend(model, algorithm, ratings, data.catalog, params, device)
    else:  # the published top-K comes from the ranking model (metarec_tasks/ranking/stage.py)
        term = None
        if params.ranking.objective == "both":
            term = rank_stage.rating_term(model, algorithm, ratings, data.catalog, data.global_mean, params)
        recommendations = rank_stage.recommend_ranked(params, root, term)
    topk = rank_stage.holdout_topk(params, root)

    ws.predictions.mkdir(parents=True, exist_ok=True)
    holdout.to_parquet(ws.predictions / "holdout.parquet", index=False)
    recommendations.to_parquet(ws.predictions / "recommendations.parquet", index=False)
    topk.to_parquet(ws.predictions / "holdout_topk.parquet", index=False)
    counts = {
        "holdout_rows": len(holdout),
        "holdout_users": int(holdout[USER_KEY].nunique()),
        "recommended_users": int(recommendations[USER_KEY].nunique()),
    }
    log.info("finetune: %s", counts)
    return counts


def load_adapting_model(
    path: Path, params: Params, device: torch.device, algorithm: str | None = None
) -> tuple[RatingNet, MetaAlgorithm]:
    """A saved network and the algorithm that adapts it, with the learned state training left.

    The meta-model adapts the way it was meta-trained (its file names the algorithm, adapt group and
    inner learning rate); the pretrained baseline adapts with plain SGD (`algorithm="fomaml"`).
    """
    bundle = load_bundle(path, device)
    bundle.model.eval()
    meta = bundle.metadata
    settings = {"algorithm": algorithm or meta["algorithm"], "adapt": meta["adapt"]}
    if "inner_lr" in meta:
        settings["inner_lr"] = meta["inner_lr"]
    if "inner_steps" in meta:
        settings["inner_steps"] = meta["inner_steps"]
    adapting = build_algorithm(params.meta.model_copy(update=settings), bundle.model)
    if algorithm is None:
        adapting.load_state_dict(bundle.algorithm_state)
    return bundle.model, adapting


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
        mask = batch.query.mask.cpu().numpy()
        rows = batch.query.item_rows.cpu().numpy()
        t_idx, r_idx = np.nonzero(mask)
        frames.append(
            pd.DataFrame(
                {
                    USER_KEY: np.asarray(chunk)[t_idx],
                    ITEM_KEY: np.asarray(catalog.item_ids)[rows[t_idx, r_idx]],
                    MODEL_COLUMN: pred.cpu().numpy()[t_idx, r_idx],
                    NO_ADAPT_COLUMN: base.cpu().numpy()[t_idx, r_idx],
                }
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
) -> pd.DataFrame:
    """Top-K unseen items for every user with a rating in the run window."""
    history = (
        ratings.sort_values("timestamp")
        .groupby(USER_KEY, sort=False)
        .tail(params.episodes.max_support)
        .assign(role=SUPPORT)
    )
    users = sorted(history[USER_KEY].astype(str).unique())
    k = min(params.finetune.top_k, len(catalog.item_ids))
    items = {name: t.to(device) for name, t in catalog.items.items()}
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
        values, rows = top.values.cpu().numpy(), top.indices.cpu().numpy()
        valid = np.isfinite(values)
        t_idx, r_idx = np.nonzero(valid)
        frames.append(
            pd.DataFrame(
                {
                    USER_KEY: np.asarray(chunk)[t_idx],
                    "rank": r_idx + 1,
                    ITEM_KEY: item_ids[rows[t_idx, r_idx]],
                    "score": values[t_idx, r_idx].astype(float),
                }
            )
        )
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

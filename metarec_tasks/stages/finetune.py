"""The `finetune` stage: personalize the trained initializations for every user, then rank.

Data is loaded once and passed down. Its outputs:
- `holdout.parquet`: holdout users adapted on their support set only, scored on their query set —
  the meta-model, the pretrained network as it is and fine-tuned per user with plain SGD (transfer
  learning), and the statistical baselines of `meta.baselines` as extra columns, so `evaluate`
  compares every rating predictor on identical rows;
- `selection.json`: the night's top-K candidates (the meta-learned ranker, its fine-tuned warm-up,
  EASE, popularity + MF, item-kNN, popularity, their blend, and the student distilled from the
  challenger), every knob and the blend's weights chosen on validation users, and the challenger
  (`metarec_tasks/selection`); `student.pt`: the student network; `distill_timing.json`: student and
  teacher scoring time;
- `holdout_topk.parquet`: the holdout users' full-catalog top-K of every candidate and of the
  selected one (`personalization/ranking.py`) — holdout users only report, they never choose;
- `recommendations.parquet`: every active user's top-K — from the challenger (`ranking.objective`
  ranking, or both with the rating term), or from the rating model (rating) — in `finetune.shards`
  user shards: those the DAG's `recommend_shard` tasks computed (`run_shard`) are read back when
  current, the rest computed here (`personalization/shards.py` says why and how).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd
import torch

from metarec_tasks.data.episodes import SUPPORT, TEST, TRAIN, latest_ratings
from metarec_tasks.data.events import load_events
from metarec_tasks.data.loader import EpisodeData, load_episode_data
from metarec_tasks.files import write_json, write_parquet
from metarec_tasks.logs.contract import ITEM_KEY, USER_KEY
from metarec_tasks.meta import TRANSFER_ALGORITHM
from metarec_tasks.meta.base import MetaAlgorithm
from metarec_tasks.meta.baselines import BASELINES
from metarec_tasks.models.rating import RatingNet
from metarec_tasks.params import Params
from metarec_tasks.paths import Workspace
from metarec_tasks.personalization import ranking, shards
from metarec_tasks.personalization.loading import load_adapting_model
from metarec_tasks.personalization.rating import MODEL_COLUMN, NO_ADAPT_COLUMN, predict_holdout, recommend
from metarec_tasks.personalization.shards import Shard
from metarec_tasks.ranking.data import RankData, rank_data
from metarec_tasks.selection.distill import save_student_of
from metarec_tasks.selection.select import Selection
from metarec_tasks.training.runtime import pick_device

log = logging.getLogger(__name__)

PRETRAINED_COLUMN = "pred_pretrained"
TRANSFER_COLUMN = "pred_pretrained_finetuned"


def producer(params: Params, selection) -> dict:
    """What makes the published rows: the challenger, or the rating model (`ranking.objective` rating)."""
    if params.ranking.objective == "rating":
        return {"candidate": "rating_model", "kind": "meta", "parts": {"rating_model": {"kind": "meta"}}}
    return selection.producer()


@dataclass(frozen=True)
class Inputs:
    """What the stage and each shard read, loaded once per process."""

    device: torch.device
    events: pd.DataFrame
    data: EpisodeData
    rd: RankData
    model: RatingNet
    algorithm: MetaAlgorithm


def load_inputs(params: Params, ws: Workspace) -> Inputs:
    device = pick_device(params.run.device)
    events = load_events(ws)
    data = load_episode_data(ws, extra_events=events)
    rd = rank_data(params, data, events, pd.read_parquet(ws.validated_table("items")))
    model, algorithm = load_adapting_model(ws.model_file, data.catalog.items, params, device)
    return Inputs(device, events, data, rd, model, algorithm)


def recommend_shard(params: Params, night: Inputs, selection: Selection, shard: Shard) -> pd.DataFrame:
    """The published top-K of one user shard."""
    ratings = latest_ratings(night.events)
    model, algorithm, data = night.model, night.algorithm, night.data
    objective = params.ranking.objective
    if objective == "rating":
        return recommend(model, algorithm, ratings, data.catalog, params, night.device, shard)
    term = None
    if objective == "both":
        term = ranking.rating_term(model, algorithm, ratings, data.catalog, data.global_mean, params)
    return ranking.recommend_ranked(params, night.rd, selection, shard, term)


def run_shard(params: Params, ws: Workspace, index: int) -> int:
    """One shard, on its own (`metarec finetune-shard INDEX`, the DAG's `recommend_shard`): the
    night's selection, then the shard's users; written with its stamp. Returns its row count."""
    shard = Shard(index, params.finetune.shards)
    night = load_inputs(params, ws)
    selection = ranking.night_selection(params, ws, night.rd, night.device)
    rows = recommend_shard(params, night, selection, shard)
    path = shards.write_shard(ws, shard, rows, shards.stamp(ws, params, selection.to_json()))
    log.info("finetune: shard %d of %d, %d rows, in %s", index, shard.count, len(rows), path)
    return len(rows)


def run(params: Params, ws: Workspace) -> dict[str, int]:
    night = load_inputs(params, ws)
    device, data, rd = night.device, night.data, night.rd
    model, algorithm = night.model, night.algorithm
    pretrained, transfer = load_adapting_model(
        ws.pretrained_model_file, data.catalog.items, params, device, TRANSFER_ALGORITHM
    )

    test = data.split(TEST)
    holdout = predict_holdout(model, algorithm, test, data.catalog, params, device)
    transferred = predict_holdout(pretrained, transfer, test, data.catalog, params, device)
    holdout = holdout.merge(
        transferred[[USER_KEY, ITEM_KEY, MODEL_COLUMN, NO_ADAPT_COLUMN]].rename(
            columns={MODEL_COLUMN: TRANSFER_COLUMN, NO_ADAPT_COLUMN: PRETRAINED_COLUMN}
        ),
        on=[USER_KEY, ITEM_KEY],
        how="left",
        validate="one_to_one",
    )
    test_support = test[test["role"] == SUPPORT]
    for name, baseline in BASELINES.items():
        holdout[f"pred_{name}"] = baseline(data.split(TRAIN), test_support, holdout, params.evaluate)
    selection = ranking.night_selection(params, ws, rd, device)  # validation users only
    topk = ranking.holdout_topk(params, rd, selection)
    timing = ranking.distill_timing(params, rd, selection)

    stamped = shards.stamp(ws, params, selection.to_json())
    recommendations = shards.gather(
        ws, params.finetune.shards, stamped, lambda shard: recommend_shard(params, night, selection, shard)
    )

    ws.predictions.mkdir(parents=True, exist_ok=True)
    write_parquet(holdout, ws.holdout_predictions)
    write_parquet(recommendations, ws.recommendations)
    write_parquet(topk, ws.holdout_topk)
    write_json(ws.selection, {**selection.to_json(), "producer": producer(params, selection)})
    write_json(ws.distill_timing, timing)
    save_student_of(selection, ws.student_model_file)
    counts = {
        "holdout_rows": len(holdout),
        "holdout_users": int(holdout[USER_KEY].nunique()),
        "recommended_users": int(recommendations[USER_KEY].nunique()),
    }
    log.info("finetune: %s", counts)
    return counts

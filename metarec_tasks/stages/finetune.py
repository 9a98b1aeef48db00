"""The `finetune` stage: personalize the trained initializations for every user, then rank.

Data is loaded once and passed down. Three outputs:
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
  ranking, or both with the rating term), or from the rating model (rating).
"""

from __future__ import annotations

import logging

import pandas as pd

from metarec_tasks.data.episodes import SUPPORT, TEST, TRAIN, latest_ratings
from metarec_tasks.data.loader import load_episode_data
from metarec_tasks.files import write_json, write_parquet
from metarec_tasks.logs.contract import ITEM_KEY, USER_KEY
from metarec_tasks.meta import TRANSFER_ALGORITHM
from metarec_tasks.meta.baselines import BASELINES
from metarec_tasks.params import Params
from metarec_tasks.paths import Workspace
from metarec_tasks.personalization import ranking
from metarec_tasks.personalization.loading import load_adapting_model
from metarec_tasks.personalization.rating import MODEL_COLUMN, NO_ADAPT_COLUMN, predict_holdout, recommend
from metarec_tasks.ranking.data import rank_data
from metarec_tasks.selection.distill import save_student_of
from metarec_tasks.training.runtime import pick_device

log = logging.getLogger(__name__)

PRETRAINED_COLUMN = "pred_pretrained"
TRANSFER_COLUMN = "pred_pretrained_finetuned"


def producer(params: Params, selection) -> dict:
    """What makes the published rows: the challenger, or the rating model (`ranking.objective` rating)."""
    if params.ranking.objective == "rating":
        return {"candidate": "rating_model", "kind": "meta", "parts": {"rating_model": {"kind": "meta"}}}
    return selection.producer()


def run(params: Params, ws: Workspace) -> dict[str, int]:
    device = pick_device(params.run.device)
    events = pd.read_parquet(ws.validated_events)
    ratings = latest_ratings(events)
    data = load_episode_data(ws, extra_events=events)
    rd = rank_data(params, data, events, pd.read_parquet(ws.validated_table("items")))
    model, algorithm = load_adapting_model(ws.model_file, params, device)
    pretrained, transfer = load_adapting_model(ws.pretrained_model_file, params, device, TRANSFER_ALGORITHM)

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

    objective = params.ranking.objective
    if objective == "rating":
        recommendations = recommend(model, algorithm, ratings, data.catalog, params, device)
    else:
        term = None
        if objective == "both":
            term = ranking.rating_term(model, algorithm, ratings, data.catalog, data.global_mean, params)
        recommendations = ranking.recommend_ranked(params, rd, selection, term)

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

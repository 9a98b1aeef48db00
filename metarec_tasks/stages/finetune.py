"""The `finetune` stage: personalize the trained initializations for every user, then rank.

Data is loaded once and passed down. Three outputs:
- `holdout.parquet`: holdout users adapted on their support set only, scored on their query set —
  the meta-model, the pretrained network as it is and fine-tuned per user with plain SGD (transfer
  learning), and the statistical baselines of `meta.baselines` as extra columns, so `evaluate`
  compares every rating predictor on identical rows;
- `holdout_topk.parquet`: the holdout users' full-catalog top-K from the ranker and every top-K
  baseline (`personalization/ranking.py`);
- `recommendations.parquet`: every active user's top-K — from the ranker (`ranking.objective`
  ranking, or both with the rating term), or from the rating model (rating).
"""

from __future__ import annotations

import logging

import pandas as pd

from metarec_tasks.data.episodes import SUPPORT, TEST, TRAIN, latest_ratings
from metarec_tasks.data.loader import load_episode_data
from metarec_tasks.files import write_parquet
from metarec_tasks.logs.contract import ITEM_KEY, USER_KEY
from metarec_tasks.meta.baselines import BASELINES
from metarec_tasks.params import Params
from metarec_tasks.paths import Workspace
from metarec_tasks.personalization import ranking
from metarec_tasks.personalization.loading import load_adapting_model
from metarec_tasks.personalization.rating import MODEL_COLUMN, NO_ADAPT_COLUMN, predict_holdout, recommend
from metarec_tasks.ranking.data import rank_data
from metarec_tasks.training.ranker import TRANSFER_ALGORITHM
from metarec_tasks.training.runtime import pick_device

log = logging.getLogger(__name__)

PRETRAINED_COLUMN = "pred_pretrained"
TRANSFER_COLUMN = "pred_pretrained_finetuned"


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
    topk = ranking.holdout_topk(params, ws, rd, device)

    objective = params.ranking.objective
    if objective == "rating":
        recommendations = recommend(model, algorithm, ratings, data.catalog, params, device)
    else:
        term = None
        if objective == "both":
            term = ranking.rating_term(model, algorithm, ratings, data.catalog, data.global_mean, params)
        recommendations = ranking.recommend_ranked(params, ws, rd, device, term)

    ws.predictions.mkdir(parents=True, exist_ok=True)
    write_parquet(holdout, ws.holdout_predictions)
    write_parquet(recommendations, ws.recommendations)
    write_parquet(topk, ws.holdout_topk)
    counts = {
        "holdout_rows": len(holdout),
        "holdout_users": int(holdout[USER_KEY].nunique()),
        "recommended_users": int(recommendations[USER_KEY].nunique()),
    }
    log.info("finetune: %s", counts)
    return counts

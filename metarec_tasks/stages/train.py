"""The `train` stage: the meta-learned rating model, then the meta-learned top-K ranker.

Both are trained by the one loop (`training/loop.py`: resume after a kill, device and AMP, NaN
rules); files are written only once both have succeeded, so a run that stops on a NaN leaves every
model of the previous run in place. Under torchrun the rating model trains data-parallel on every
rank and rank 0 alone trains the (single-process) ranker and writes the files.
"""

from __future__ import annotations

import pandas as pd

from metarec_tasks.data.events import load_events
from metarec_tasks.data.loader import load_episode_data
from metarec_tasks.params import Params
from metarec_tasks.paths import Workspace
from metarec_tasks.ranking.data import rank_data
from metarec_tasks.training.ranker import save_rankers, train_ranker
from metarec_tasks.training.rating import RatingModels, save_rating_models, train_rating_model


def run(params: Params, ws: Workspace) -> RatingModels:
    events = load_events(ws)
    data = load_episode_data(ws, extra_events=events)  # once, for both models
    rating = train_rating_model(params, ws, data)
    if not rating.world.is_main:
        return rating
    rankers = train_ranker(
        params, ws, rank_data(params, data, events, pd.read_parquet(ws.validated_table("items")))
    )
    save_rating_models(params, ws, rating)
    save_rankers(params, ws, rankers)
    return rating

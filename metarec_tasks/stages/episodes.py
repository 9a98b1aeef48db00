"""The `episodes` stage: validated events → one few-shot task per user, the vocabulary, the stats.

Reads the validated events and side tables; keeps each user's latest rating per item; splits users
by a stable hash (train / validation / holdout); tags new users and items; builds the feature
vocabulary from what meta-training can see; embeds the items' text features with the pretrained
sentence encoder; writes `data/episodes/{tasks.parquet,vocab.json,stats.json,item_text.parquet}`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, time, timedelta

import pandas as pd

from metarec_tasks.data.episodes import TEST, TRAIN, VALIDATION, EpisodeSummary, build_tasks, latest_ratings
from metarec_tasks.data.events import load_events
from metarec_tasks.data.features import build_vocabulary
from metarec_tasks.data.text import item_text_table
from metarec_tasks.files import write_json, write_parquet
from metarec_tasks.logs.contract import ITEM_KEY, USER_KEY
from metarec_tasks.params import Params
from metarec_tasks.paths import Workspace
from metarec_tasks.training.runtime import pick_device

log = logging.getLogger(__name__)


def run(params: Params, ws: Workspace) -> EpisodeSummary:
    ep = params.episodes
    events = load_events(ws)
    users = pd.read_parquet(ws.validated_table("users"))
    items = pd.read_parquet(ws.validated_table("items"))

    ratings = latest_ratings(events)
    day_after = datetime.combine(params.run.run_date + timedelta(days=1), time(0), tzinfo=UTC)
    new_since = pd.Timestamp(day_after - timedelta(days=ep.new_entity_days))
    tasks = build_tasks(ratings, ep, new_since)

    # Item ids the model may learn an embedding for: only what meta-training can see.
    training_items = tasks.loc[tasks["split"] == TRAIN, ITEM_KEY].unique().tolist()
    vocab = build_vocabulary(params.active_features, users, items, training_items)
    train_ratings = tasks.loc[tasks["split"] == TRAIN, "value"]

    # Item text → frozen embeddings (only new or changed texts are encoded; data/text.py).
    text_features = vocab.item_features("text")
    device = str(pick_device(params.run.device))
    text = item_text_table(items, text_features, ws.text_cache, device, ep.text_batch_size)

    ws.episodes.mkdir(parents=True, exist_ok=True)
    write_parquet(tasks, ws.tasks_file)
    write_json(ws.vocab_file, vocab.to_json())
    write_parquet(text, ws.item_text_file)
    stats = {
        "global_mean": float(train_ratings.mean()) if len(train_ratings) else 0.0,
        "tasks": {
            split: int(tasks.loc[tasks["split"] == split, USER_KEY].nunique())
            for split in (TRAIN, VALIDATION, TEST)
        },
        "interactions": len(tasks),
        "new_since": new_since.isoformat(),
    }
    write_json(ws.episode_stats, stats)
    log.info(
        "built tasks %s from %d ratings (%d known items)",
        stats["tasks"],
        len(ratings),
        len(vocab.item_ids) - 1,
    )
    return EpisodeSummary(stats["tasks"], stats["interactions"], len(vocab.item_ids) - 1)

"""The `episodes` stage: one few-shot task per user — a support set to adapt on, a query set to score.

Why these choices:
- Query = the user's *latest* interactions, support = the ones before: the model is always asked to
  predict the future from the past, as it is when serving.
- The train/validation/holdout split hashes the user id, so a user keeps their split night after night
  and holdout users never leak into meta-training, even when a run warm-starts from yesterday's model.
- MeLU's cold-start scenarios (existing/new users × existing/new items) are tagged per query row.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pandas as pd

from metarec_tasks.features import build_vocabulary
from metarec_tasks.logs.contract import ITEM_KEY, RATING_EVENT, USER_KEY
from metarec_tasks.params import EpisodeParams, Params
from metarec_tasks.paths import Workspace

log = logging.getLogger(__name__)

TRAIN, VALIDATION, TEST = "train", "val", "test"
SUPPORT, QUERY = "support", "query"


@dataclass(frozen=True)
class EpisodeSummary:
    tasks: dict[str, int]
    interactions: int
    items_known: int


def user_split(user_id: str, ep: EpisodeParams) -> str:
    """Stable split from a hash of the id: the same user lands in the same split every night."""
    bucket = int(hashlib.sha256(user_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    if bucket < ep.holdout_share:
        return TEST
    if bucket < ep.holdout_share + ep.validation_share:
        return VALIDATION
    return TRAIN


def latest_ratings(events: pd.DataFrame) -> pd.DataFrame:
    """Rating events, one per (user, item): a re-rating replaces the earlier one."""
    ratings = events[events["event_type"] == RATING_EVENT]
    ratings = ratings.sort_values(["timestamp", USER_KEY, ITEM_KEY], kind="stable")
    ratings = ratings.drop_duplicates(subset=[USER_KEY, ITEM_KEY], keep="last")
    return ratings[[USER_KEY, ITEM_KEY, "value", "timestamp"]].reset_index(drop=True)


def build_tasks(ratings: pd.DataFrame, ep: EpisodeParams, new_since: datetime) -> pd.DataFrame:
    """Assign every rating of an eligible user a role (support/query) and a split."""
    ordered = ratings.sort_values([USER_KEY, "timestamp", ITEM_KEY], kind="stable")
    grouped = ordered.groupby(USER_KEY, sort=False)
    from_end = grouped.cumcount(ascending=False)  # 0 = the user's latest interaction
    size = grouped[ITEM_KEY].transform("size")
    eligible = size >= ep.query_size + ep.min_support
    role = pd.Series(SUPPORT, index=ordered.index).where(from_end >= ep.query_size, QUERY)
    in_support_window = from_end < ep.query_size + ep.max_support
    tasks = ordered.assign(role=role)[eligible & in_support_window].copy()

    first_seen_user = ratings.groupby(USER_KEY)["timestamp"].min()
    first_seen_item = ratings.groupby(ITEM_KEY)["timestamp"].min()
    tasks["user_new"] = tasks[USER_KEY].map(first_seen_user).ge(new_since).to_numpy()
    tasks["item_new"] = tasks[ITEM_KEY].map(first_seen_item).ge(new_since).to_numpy()
    split_of = {u: user_split(u, ep) for u in tasks[USER_KEY].unique()}
    tasks["split"] = tasks[USER_KEY].map(split_of)
    return tasks.reset_index(drop=True)


def run_episodes(params: Params, root: Path) -> EpisodeSummary:
    ws = Workspace(root)
    ep = params.episodes
    events = pd.read_parquet(ws.validated / "events.parquet")
    users = pd.read_parquet(ws.validated / "users.parquet")
    items = pd.read_parquet(ws.validated / "items.parquet")

    ratings = latest_ratings(events)
    day_after = datetime.combine(params.run.run_date + timedelta(days=1), time(0), tzinfo=UTC)
    new_since = pd.Timestamp(day_after - timedelta(days=ep.new_entity_days))
    tasks = build_tasks(ratings, ep, new_since)

    # Item ids the model may learn an embedding for: only what meta-training can see.
    training_items = tasks.loc[tasks["split"] == TRAIN, ITEM_KEY].unique().tolist()
    vocab = build_vocabulary(params.active_features, users, items, training_items)
    train_ratings = tasks.loc[tasks["split"] == TRAIN, "value"]

    ws.episodes.mkdir(parents=True, exist_ok=True)
    tasks.to_parquet(ws.episodes / "tasks.parquet", index=False)
    (ws.episodes / "vocab.json").write_text(json.dumps(vocab.to_json(), indent=1))
    stats = {
        "global_mean": float(train_ratings.mean()) if len(train_ratings) else 0.0,
        "tasks": {
            split: int(tasks.loc[tasks["split"] == split, USER_KEY].nunique())
            for split in (TRAIN, VALIDATION, TEST)
        },
        "interactions": len(tasks),
        "new_since": new_since.isoformat(),
    }
    (ws.episodes / "stats.json").write_text(json.dumps(stats, indent=2))
    log.info(
        "built tasks %s from %d ratings (%d known items)",
        stats["tasks"],
        len(ratings),
        len(vocab.item_ids) - 1,
    )
    return EpisodeSummary(stats["tasks"], stats["interactions"], len(vocab.item_ids) - 1)

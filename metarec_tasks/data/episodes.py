"""Few-shot task episodes: one task per user — a support set to adapt on, a query set to score.

Why these choices:
- Query = the user's *latest* interactions, support = the ones before: the model is always asked to
  predict the future from the past, as it is when serving.
- The train/validation/holdout split hashes the user id, so a user keeps their split night after night
  and holdout users never leak into meta-training, even when a run warm-starts from yesterday's model.
- MeLU's cold-start scenarios (existing/new users × existing/new items) are tagged per query row.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from metarec_tasks.logs.contract import ITEM_KEY, RATING_EVENT, USER_KEY
from metarec_tasks.params import EpisodeParams

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


def latest_support(events: pd.DataFrame, max_support: int) -> pd.DataFrame:
    """Each user's latest `max_support` events as a support set: how a user is adapted for serving."""
    latest = events.sort_values("timestamp").groupby(USER_KEY, sort=False).tail(max_support)
    return latest.assign(role=SUPPORT)


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

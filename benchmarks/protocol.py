"""The cold-start benchmark protocol (RecBole-MetaRec's, with cross-validation over users).

RecBole-MetaRec keeps users with 13–100 ratings and scores each on 10 random held-out ratings, the rest
being the support set. A single 8:1:1 user split leaves ~60 test users on ML-100K — too few to tell
models apart — so every eligible user is a test user exactly once across K folds, with validation users
carved out of each fold's training users for early stopping and hyperparameter choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from metarec_tasks.data.episodes import QUERY, SUPPORT, TEST, TRAIN, VALIDATION
from metarec_tasks.logs.contract import ITEM_KEY, USER_KEY


@dataclass(frozen=True)
class Protocol:
    min_ratings: int = 13
    max_ratings: int = 100
    query_size: int = 10
    folds: int = 5
    validation_share: float = 0.1
    seed: int = 0


def eligible_ratings(ratings: pd.DataFrame, protocol: Protocol) -> pd.DataFrame:
    counts = ratings.groupby(USER_KEY)[ITEM_KEY].transform("size")
    keep = counts.between(protocol.min_ratings, protocol.max_ratings)
    return ratings[keep].reset_index(drop=True)


def assign_roles(ratings: pd.DataFrame, protocol: Protocol) -> pd.DataFrame:
    """`query_size` random ratings per user are the query set; the rest are the support set."""
    rng = np.random.default_rng([protocol.seed, 1])
    shuffled = ratings.assign(_key=rng.random(len(ratings))).sort_values([USER_KEY, "_key"])
    position = shuffled.groupby(USER_KEY).cumcount()
    roles = np.where(position < protocol.query_size, QUERY, SUPPORT)
    return shuffled.assign(role=roles).drop(columns="_key").sort_index()


def user_folds(users: list[str], protocol: Protocol) -> list[list[str]]:
    """Every user in exactly one of `folds` test folds (seeded shuffle)."""
    rng = np.random.default_rng([protocol.seed, 2])
    order = np.asarray(sorted(users))[rng.permutation(len(users))]
    return [sorted(part.tolist()) for part in np.array_split(order, protocol.folds)]


def fold_tasks(tasks: pd.DataFrame, folds: list[list[str]], fold: int, protocol: Protocol) -> pd.DataFrame:
    """Tasks with `split` set for one fold: its users are test users, the others train/validation."""
    test = set(folds[fold])
    rest = sorted(set(tasks[USER_KEY]) - test)
    rng = np.random.default_rng([protocol.seed, 3, fold])
    n_val = round(protocol.validation_share * len(rest))
    validation = set(np.asarray(rest)[rng.permutation(len(rest))[:n_val]].tolist())
    split = np.where(
        tasks[USER_KEY].isin(test), TEST, np.where(tasks[USER_KEY].isin(validation), VALIDATION, TRAIN)
    )
    return tasks.assign(split=split)


def truncate_support(tasks: pd.DataFrame, users: set[str], size: int, seed: int) -> pd.DataFrame:
    """Keep `size` random support ratings of each user in `users` (the cold-start curve's x)."""
    rng = np.random.default_rng([seed, 4, size])
    mine = tasks[USER_KEY].isin(users)
    support = tasks[mine & (tasks["role"] == SUPPORT)]
    kept = (
        support.assign(_key=rng.random(len(support)))
        .sort_values([USER_KEY, "_key"])
        .groupby(USER_KEY)
        .head(size)
        .drop(columns="_key")
    )
    return pd.concat([tasks[~(mine & (tasks["role"] == SUPPORT))], kept]).sort_index()

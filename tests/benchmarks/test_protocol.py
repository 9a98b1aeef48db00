import numpy as np
import pandas as pd

from benchmarks.protocol import (
    Protocol,
    assign_roles,
    eligible_ratings,
    fold_tasks,
    truncate_support,
    user_folds,
)
from metarec_tasks.data.episodes import QUERY, SUPPORT, TEST, TRAIN, VALIDATION


def _ratings(seed=0, users=60):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        for i in rng.choice(300, int(rng.integers(5, 120)), replace=False):
            rows.append({"user_id": f"u{u}", "item_id": f"i{i}", "value": float(rng.integers(1, 6))})
    return pd.DataFrame(rows)


def test_eligibility_roles_and_folds_follow_the_protocol():
    protocol = Protocol()
    ratings = eligible_ratings(_ratings(), protocol)
    counts = ratings.groupby("user_id").size()
    assert counts.between(13, 100).all()
    tasks = assign_roles(ratings, protocol)
    assert (tasks[tasks["role"] == QUERY].groupby("user_id").size() == 10).all()
    assert (tasks[tasks["role"] == SUPPORT].groupby("user_id").size() == counts - 10).all()

    folds = user_folds(sorted(counts.index), protocol)
    assert sorted(u for f in folds for u in f) == sorted(counts.index)  # every user tested exactly once
    for k in range(protocol.folds):
        split = fold_tasks(tasks, folds, k, protocol).drop_duplicates("user_id").set_index("user_id")["split"]
        assert set(split[split == TEST].index) == set(folds[k])
        assert (split == VALIDATION).sum() == round(0.1 * (len(counts) - len(folds[k])))
        assert (split == TRAIN).sum() > 0


def test_protocol_is_deterministic_and_truncation_keeps_queries():
    protocol = Protocol(seed=3)
    tasks = assign_roles(eligible_ratings(_ratings(1), protocol), protocol)
    pd.testing.assert_frame_equal(tasks, assign_roles(eligible_ratings(_ratings(1), protocol), protocol))
    users = set(tasks["user_id"].unique()[:5])
    short = truncate_support(tasks, users, 3, seed=0)
    mine = short[short["user_id"].isin(users)]
    assert (mine[mine["role"] == SUPPORT].groupby("user_id").size() == 3).all()
    assert (mine[mine["role"] == QUERY].groupby("user_id").size() == 10).all()
    others = short[~short["user_id"].isin(users)]
    pd.testing.assert_frame_equal(others, tasks[~tasks["user_id"].isin(users)])

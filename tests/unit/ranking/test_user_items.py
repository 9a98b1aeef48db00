"""`user_items` splits a log into per-user arrays with one sort; the answer must be what grouping
user by user gives (the implementation it replaced), order, weights and low ratings included."""

from __future__ import annotations

import numpy as np
import pandas as pd

from metarec_tasks.logs.contract import ITEM_KEY, RATING_EVENT, USER_KEY
from metarec_tasks.ranking.episodes import event_weights, user_items
from tests.unit.ranking.test_ranking import N_ITEMS, N_USERS, two_taste_world

WEIGHTS = {"click": 0.5, RATING_EVENT: 1.0, "view": 0.0}


def grouped_one_by_one(events, catalog, users, min_rating):
    """The per-user reference: a DataFrame per user, as `user_items` did before."""
    frame = events.assign(_w=event_weights(events, WEIGHTS))
    low = (frame["event_type"] == RATING_EVENT) & (frame["value"] < min_rating)
    disliked = frame.loc[low, [USER_KEY, ITEM_KEY]].drop_duplicates()
    pairs = pd.MultiIndex.from_frame(frame[[USER_KEY, ITEM_KEY]])
    frame = frame[~pairs.isin(pd.MultiIndex.from_frame(disliked))]
    frame = frame[frame["_w"] > 0]
    best = frame.groupby([USER_KEY, ITEM_KEY], sort=False)["_w"].max().reset_index()
    groups = {str(u): g for u, g in best.groupby(USER_KEY, sort=False)}
    lows = {str(u): g[ITEM_KEY] for u, g in disliked.groupby(USER_KEY, sort=False)}
    order = [str(u) for u in (users if users is not None else groups)]
    items = [catalog.item_rows(groups[u][ITEM_KEY]) if u in groups else np.zeros(0, np.int64) for u in order]
    ws = [groups[u]["_w"].to_numpy(np.float32) if u in groups else np.zeros(0, np.float32) for u in order]
    low_items = [catalog.item_rows(lows[u]) if u in lows else np.zeros(0, np.int64) for u in order]
    return order, items, ws, low_items


def mixed_log(seed: int = 0) -> pd.DataFrame:
    """Clicks, ratings high and low, zero-weight views, repeats; users in shuffled first appearance."""
    rng = np.random.default_rng(seed)
    n = 600
    return pd.DataFrame(
        {
            USER_KEY: [f"u{u}" for u in rng.integers(0, N_USERS - 5, n)],  # the last 5 users: no events
            ITEM_KEY: [f"i{i}" for i in rng.integers(0, N_ITEMS, n)],
            "event_type": rng.choice(["click", RATING_EVENT, "view"], n),
            "value": rng.choice([1.0, 2.0, 4.0, 5.0], n),
        }
    )


def test_user_items_equals_grouping_user_by_user():
    catalog, _ = two_taste_world()
    events = mixed_log()
    some = [
        f"u{u}" for u in (N_USERS - 1, 7, 3, 12, N_USERS - 3)
    ]  # an order of its own, users without events
    for users in (None, some):
        got = user_items(events, catalog, WEIGHTS, users, min_rating=3.0)
        order, items, ws, low = grouped_one_by_one(events, catalog, users, 3.0)
        assert got.users == order and got.user_rows.tolist() == catalog.user_rows(order).tolist()
        for name, mine, theirs in (
            ("items", got.items, items),
            ("weights", got.weights, ws),
            ("low", got.low, low),
        ):
            assert len(mine) == len(theirs), name
            for a, b in zip(mine, theirs, strict=True):
                assert a.dtype == b.dtype and a.tolist() == b.tolist(), name
        assert sum(len(x) for x in got.low) > 0  # low ratings were in play
    assert len(got.items[0]) == 0  # and a user without events, in the given order


def test_no_user_gives_no_rows():
    catalog, _ = two_taste_world()
    empty = user_items(mixed_log(), catalog, WEIGHTS, [], min_rating=3.0)
    assert (empty.users, empty.items, empty.weights, empty.low) == ([], [], [], [])

import pandas as pd

from metarec_tasks.data.episodes import QUERY, SUPPORT, TEST, TRAIN, build_tasks, latest_ratings, user_split
from metarec_tasks.paths import Workspace
from metarec_tasks.stages import ingest, validate


def _tasks(tmp_path, params):
    ingest.run(params, Workspace(tmp_path))
    validate.run(params, Workspace(tmp_path))
    events = pd.read_parquet(Workspace(tmp_path).validated / "events.parquet")
    ratings = latest_ratings(events)
    new_since = ratings["timestamp"].max() - pd.Timedelta(days=params.episodes.new_entity_days)
    return ratings, build_tasks(ratings, params.episodes, new_since)


def test_query_is_the_latest_and_support_precedes_it(tmp_path, tiny_params):
    ratings, tasks = _tasks(tmp_path, tiny_params)
    ep = tiny_params.episodes
    for _, group in tasks.groupby("user_id"):
        query, support = group[group["role"] == QUERY], group[group["role"] == SUPPORT]
        assert len(query) == ep.query_size
        assert ep.min_support <= len(support) <= ep.max_support
        assert support["timestamp"].max() <= query["timestamp"].min()
    eligible = ratings.groupby("user_id").size() >= ep.query_size + ep.min_support
    assert set(tasks["user_id"]) == set(eligible[eligible].index)


def test_holdout_users_never_meet_training(tmp_path, tiny_params):
    _, tasks = _tasks(tmp_path, tiny_params)
    splits = tasks.groupby("user_id")["split"].nunique()
    assert (splits == 1).all()
    assert set(tasks.loc[tasks["split"] == TEST, "user_id"]).isdisjoint(
        tasks.loc[tasks["split"] == TRAIN, "user_id"]
    )
    share = (tasks.drop_duplicates("user_id")["split"] == TEST).mean()
    assert 0.05 < share < 0.3


def test_split_is_stable_across_nights(tiny_params):
    ep = tiny_params.episodes
    assert [user_split(f"u{i}", ep) for i in range(200)] == [user_split(f"u{i}", ep) for i in range(200)]


def test_rerating_keeps_the_latest_value():
    ts = pd.to_datetime(["2026-01-01", "2026-01-02"], utc=True)
    events = pd.DataFrame(
        {
            "user_id": ["a", "a"],
            "item_id": ["x", "x"],
            "event_type": "rating",
            "value": [1.0, 5.0],
            "timestamp": ts,
        }
    )
    assert latest_ratings(events)["value"].tolist() == [5.0]

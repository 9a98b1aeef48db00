from datetime import timedelta

import numpy as np
import pandas as pd

from metarec_tasks.logs import synthetic


def _day(params, day, last_day=None):
    world = synthetic.build_world(params.synthetic, params.run.seed, last_day or day)
    return synthetic.simulate_day(params.synthetic, params.run.seed, world, day)


def test_same_seed_same_day_whatever_the_run_date(tiny_params):
    day = tiny_params.run.run_date - timedelta(days=2)
    first = _day(tiny_params, day)
    later = _day(tiny_params, day, last_day=tiny_params.run.run_date)
    pd.testing.assert_frame_equal(first, later)


def test_new_users_and_items_keep_arriving(tiny_params):
    syn = tiny_params.synthetic
    day = tiny_params.run.run_date
    idx = synthetic.day_index(syn, day)
    events = _day(tiny_params, day)
    new_users = {
        f"u{i:06d}" for i in range(synthetic.user_count(syn, idx - 1), synthetic.user_count(syn, idx))
    }
    assert new_users and new_users <= set(events["user_id"].dropna())
    world = synthetic.build_world(syn, tiny_params.run.seed, day)
    assert (world.items["signup_day"] == idx).sum() == syn.new_items_per_day


def test_popularity_is_heavy_tailed(tiny_params):
    days = [tiny_params.run.run_date - timedelta(days=k) for k in range(5)]
    events = pd.concat([_day(tiny_params, d, tiny_params.run.run_date) for d in days])
    counts = events["item_id"].value_counts()
    top_decile = counts.iloc[: max(1, len(counts) // 10)].sum() / counts.sum()
    assert top_decile > 0.2


def test_demographics_partly_explain_taste(tiny_params):
    world = synthetic.build_world(tiny_params.synthetic, tiny_params.run.seed, tiny_params.run.run_date)
    taste = world.user_taste
    groups = world.users.groupby(["age_bucket", "gender", "occupation"]).indices
    explained = sum(len(ix) * np.sum(taste[ix].mean(0) ** 2) for ix in groups.values())
    share = explained / np.sum(taste**2)
    assert 0.2 < share < 0.95


def test_bad_rows_are_injected_at_the_configured_share(tiny_params):
    events = _day(tiny_params, tiny_params.run.run_date)
    clean = synthetic.simulate_day(
        tiny_params.synthetic.model_copy(update={"bad_row_share": 0.0}),
        tiny_params.run.seed,
        synthetic.build_world(tiny_params.synthetic, tiny_params.run.seed, tiny_params.run.run_date),
        tiny_params.run.run_date,
    )
    extra = len(events) - len(clean)
    assert extra == round(tiny_params.synthetic.bad_row_share * len(clean))
    pd.testing.assert_frame_equal(events.iloc[: len(clean)].reset_index(drop=True), clean)


def test_implicit_events_and_unavailable_items(tiny_params):
    day = tiny_params.run.run_date
    events = _day(tiny_params, day)
    good = events.dropna(subset=["user_id", "item_id"])
    implicit = good[good["event_type"].isin(["view", "click", "purchase"])]
    ratings = good[good["event_type"] == "rating"]
    assert len(implicit) > 0.5 * len(ratings)  # implicit_per_rating = 1.0 on average
    assert (implicit["value"].dropna() == 1.0).mean() > 0.95  # bad rows aside, implicit value is 1.0
    # a user's implicit events and ratings of one day are different items (the next picks of their taste)
    both = implicit.merge(ratings, on=["user_id", "item_id"])
    assert len(both) <= 0.02 * len(implicit)
    world = synthetic.build_world(tiny_params.synthetic, tiny_params.run.seed, day)
    flags = world.items["available"]
    assert set(flags) <= {"true", "false"} and (flags == "false").any()


def test_a_day_is_the_same_whatever_the_block_of_users_simulated_at_once(tiny_params, monkeypatch):
    """Big worlds simulate a day's users in blocks (bounded memory): the log must not depend on it."""
    syn, day = tiny_params.synthetic, tiny_params.run.run_date
    world = synthetic.build_world(syn, 7, day)
    whole = synthetic.simulate_day(syn, 7, world, day)
    monkeypatch.setattr(synthetic, "PICK_CELLS", 3 * synthetic.item_count(syn, synthetic.day_index(syn, day)))
    blocks = synthetic.simulate_day(syn, 7, world, day)
    assert len(whole) > 30
    pd.testing.assert_frame_equal(whole, blocks)

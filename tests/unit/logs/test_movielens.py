"""The MovieLens source: ML-100K read in place from ../shared (never copied), ML-1M's format too."""

import os
from datetime import date

import numpy as np
import pandas as pd
import pytest

from metarec_tasks.logs.movielens import movielens_events, read_movielens, replay_into_window
from tests.helpers import REPO

ML100K = (REPO.parent / "shared" / "data" / "ml-100k").resolve()


@pytest.fixture(scope="module")
def ml100k():
    if not (ML100K / "u.data").exists():
        if os.environ.get("CI"):
            pytest.fail(f"ML-100K is required in CI but missing at {ML100K}")
        pytest.skip(f"ML-100K not found at {ML100K}")
    return read_movielens(ML100K)


def test_ml100k_maps_onto_the_contract(ml100k):
    assert len(ml100k.ratings) == 100_000
    assert ml100k.users["user_id"].nunique() == 943 and ml100k.items["item_id"].nunique() == 1682
    assert set(ml100k.ratings["value"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert ml100k.users[["age_bucket", "gender", "occupation", "zip_prefix"]].notna().all().all()
    assert ml100k.items["genres"].str.contains("Drama").sum() > 500
    assert ml100k.items["year_bucket"].value_counts().index[0] == "1990s"
    assert ml100k.items.set_index("item_id").loc["1", "title"] == "Toy Story (1995)"


def test_replay_keeps_order_and_fills_the_window(ml100k):
    first, last = date(2026, 11, 9), date(2026, 11, 22)
    events = movielens_events(ml100k, first, last)
    days = pd.to_datetime(events["timestamp"], utc=True).dt.date
    assert days.min() == first and days.max() == last
    order = np.argsort(ml100k.ratings["timestamp"].to_numpy(), kind="stable")
    replayed = pd.to_datetime(events["timestamp"], utc=True).astype("int64").to_numpy()[order]
    assert (np.diff(replayed) >= 0).all()
    assert (events["partition_date"] == days.astype(str)).all()


def test_movielens_run_validates_cleanly(tmp_path, tiny_params, ml100k):
    from metarec_tasks.paths import Workspace
    from metarec_tasks.stages import ingest, validate

    params = tiny_params.model_copy(
        update={
            "source": tiny_params.source.model_copy(
                update={"kind": "movielens", "movielens_dir": str(ML100K)}
            )
        }
    )
    ingest.run(params, Workspace(tmp_path))
    report = validate.run(params, Workspace(tmp_path))
    assert report.rows_in == 100_000 and report.rows_quarantined == 0


def test_ml1m_format(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::10::5::978300760\n1::20::3::978302109\n2::10::4::978301968\n")
    (tmp_path / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    (tmp_path / "movies.dat").write_text(
        "10::Toy Story (1995)::Animation|Children's|Comedy\n20::Heat (1995)::Action\n", encoding="latin-1"
    )
    ml = read_movielens(tmp_path)
    assert ml.ratings["user_id"].tolist() == ["1", "1", "2"]
    users = ml.users.set_index("user_id")
    assert users.loc["1", "age_bucket"] == "<18" and users.loc["2", "age_bucket"] == "56+"
    assert users.loc["2", "occupation"] == "self-employed"
    assert ml.items.set_index("item_id").loc["10", "year_bucket"] == "1990s"
    assert ml.items.set_index("item_id").loc["10", "title"] == "Toy Story (1995)"  # the run page shows it
    replayed = replay_into_window(ml.ratings, date(2026, 1, 1), date(2026, 1, 1))
    assert replayed.dt.date.eq(date(2026, 1, 1)).all()


def test_ml_latest_csv_format(tmp_path):
    """ml-latest(-small): half stars, a CSV header (lineage counts it), no user table (features unknown)."""
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,10,0.5,1260759108\n1,20,4.5,1260759113\n2,10,4.0,978301968\n"
    )
    (tmp_path / "movies.csv").write_text(
        'movieId,title,genres\n10,"American President, The (1995)",Comedy|Drama|Romance\n'
        "20,Untitled,(no genres listed)\n"
    )
    ml = read_movielens(tmp_path)
    assert ml.ratings["value"].tolist() == [0.5, 4.5, 4.0]
    assert ml.ratings["source_line"].tolist() == [2, 3, 4] and ml.source_file == "ratings.csv"
    assert ml.users["user_id"].tolist() == ["1", "2"] and ml.users["gender"].isna().all()
    items = ml.items.set_index("item_id")
    assert items.loc["10", "year_bucket"] == "1990s" and items.loc["10", "title"].startswith("American")
    assert items.loc["20", "genres"] == "" and items["year_bucket"].isna().loc["20"]

"""The registry copy of ml-latest-small is rewritten in GroupLens' layout, which the source reads."""

import pandas as pd

from benchmarks.fetch_ml_latest_small import grouplens_layout
from metarec_tasks.logs.movielens import read_movielens


def test_the_dslabs_table_round_trips_through_the_grouplens_layout(tmp_path):
    table = pd.DataFrame(  # dslabs' columns: the year split out of the title, one row per rating
        {
            "movieId": [31, 31, 1029],
            "title": ["Dangerous Minds", "Dangerous Minds", "Dumbo"],
            "year": [1995.0, 1995.0, float("nan")],
            "genres": ["Drama", "Drama", "Animation|Children"],
            "userId": [2, 1, 1],
            "rating": [3.0, 2.5, 0.5],
            "timestamp": [835355493, 1260759144, 1260759179],
        }
    )
    ratings, movies = grouplens_layout(table)
    ratings.to_csv(tmp_path / "ratings.csv", index=False)
    movies.to_csv(tmp_path / "movies.csv", index=False)
    ml = read_movielens(tmp_path)
    assert ml.ratings[["user_id", "item_id", "value"]].values.tolist() == [
        ["1", "31", 2.5],
        ["1", "1029", 0.5],
        ["2", "31", 3.0],
    ]
    items = ml.items.set_index("item_id")
    assert items.loc["31", "title"] == "Dangerous Minds (1995)" and items.loc["31", "year_bucket"] == "1990s"
    assert items.loc["1029", "title"] == "Dumbo" and pd.isna(items.loc["1029", "year_bucket"])

"""The `movielens` source: the official ML-100K / ML-1M / ml-latest files mapped onto the landing
contract.

The files are read where they lie (their license forbids redistribution, so they are never copied into
the repository). For a nightly run the ratings are *replayed*: timestamps are mapped linearly, order
preserved, onto the run's window of days, so the whole pipeline — daily partitions, "new" users and
items, the holdout split — works on MovieLens exactly as on production logs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from metarec_tasks.logs.contract import RATING_EVENT

ENCODING = "latin-1"
# ML-100K ages are years; ML-1M ages are already bucket codes. Both map onto these labels.
AGE_EDGES = (18, 25, 35, 45, 50, 56)
AGE_LABELS = ("<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")
ML1M_OCCUPATIONS = (
    "other",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
)
ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")


@dataclass(frozen=True)
class MovieLens:
    ratings: pd.DataFrame  # user_id, item_id, value, timestamp (UTC datetime), source_line
    users: pd.DataFrame  # user_id, age_bucket, gender, occupation, zip_prefix
    items: pd.DataFrame  # item_id, genres ("|"-joined), year_bucket, title
    source_file: str


def age_bucket(age: pd.Series) -> pd.Series:
    idx = np.searchsorted(np.asarray(AGE_EDGES), age.to_numpy(dtype=float), side="right")
    return pd.Series(np.asarray(AGE_LABELS)[idx], index=age.index)


def year_bucket(year: pd.Series) -> pd.Series:
    """Decades ('1990s'); missing years stay missing and encode as 'unknown' downstream."""
    decade = (year // 10 * 10).astype("Int64")
    return decade.astype("string") + "s"


def year_in_title(title: pd.Series) -> pd.Series:
    """The release year GroupLens writes at the end of a title ("Heat (1995)"); missing: NaN."""
    return pd.to_numeric(title.str.extract(YEAR_IN_TITLE)[0], errors="coerce")


def read_movielens(path: Path) -> MovieLens:
    """Detect the release by its files: ML-100K (`u.data`), ML-1M (`ratings.dat`) or the CSV layout
    of ml-latest(-small) and ML-20M/25M (`ratings.csv` + `movies.csv`)."""
    if (path / "u.data").exists():
        return _read_100k(path)
    if (path / "ratings.dat").exists():
        return _read_1m(path)
    if (path / "ratings.csv").exists():
        return _read_csv_release(path)
    raise FileNotFoundError(
        f"{path} holds neither ML-100K (u.data), ML-1M (ratings.dat) nor ml-latest (ratings.csv)"
    )


def _read_100k(path: Path) -> MovieLens:
    ratings = pd.read_csv(path / "u.data", sep="\t", names=["user", "item", "rating", "ts"])
    users = pd.read_csv(
        path / "u.user",
        sep="|",
        names=["user", "age", "gender", "occupation", "zip"],
        encoding=ENCODING,
        dtype={"zip": str},
    )
    item_columns = ["item", "title", "release", "video", "url", *ML100K_GENRES]
    items = pd.read_csv(path / "u.item", sep="|", names=item_columns, encoding=ENCODING)
    genre_flags = items[list(ML100K_GENRES)].to_numpy(bool)
    genres = ["|".join(g for g, on in zip(ML100K_GENRES, row, strict=True) if on) for row in genre_flags]
    year = pd.to_datetime(items["release"], format="%d-%b-%Y", errors="coerce").dt.year
    return MovieLens(
        ratings=_ratings(ratings),
        users=pd.DataFrame(
            {
                "user_id": users["user"].astype(str),
                "age_bucket": age_bucket(users["age"]),
                "gender": users["gender"],
                "occupation": users["occupation"],
                "zip_prefix": users["zip"].str[:1],
            }
        ),
        items=pd.DataFrame(
            {
                "item_id": items["item"].astype(str),
                "genres": genres,
                "year_bucket": year_bucket(year),
                "title": items["title"],  # no feature: the run page's name for the item
            }
        ),
        source_file="u.data",
    )


def _read_1m(path: Path) -> MovieLens:
    def dat(name: str, columns: list[str]) -> pd.DataFrame:
        text = (path / name).read_text(encoding=ENCODING)
        rows = [line.split("::") for line in text.splitlines() if line]
        return pd.DataFrame(rows, columns=columns)

    ratings = dat("ratings.dat", ["user", "item", "rating", "ts"]).astype(
        {"user": int, "item": int, "rating": float, "ts": int}
    )
    users = dat("users.dat", ["user", "gender", "age", "occupation", "zip"])
    items = dat("movies.dat", ["item", "title", "genres"])
    year = year_in_title(items["title"])
    occupation = np.asarray(ML1M_OCCUPATIONS)[users["occupation"].astype(int).to_numpy()]
    return MovieLens(
        ratings=_ratings(ratings),
        users=pd.DataFrame(
            {
                "user_id": users["user"],
                "age_bucket": age_bucket(users["age"].astype(int)),
                "gender": users["gender"],
                "occupation": occupation,
                "zip_prefix": users["zip"].str[:1],
            }
        ),
        items=pd.DataFrame(
            {
                "item_id": items["item"],
                "genres": items["genres"],
                "year_bucket": year_bucket(year),
                "title": items["title"],
            }
        ),
        source_file="ratings.dat",
    )


def _read_csv_release(path: Path) -> MovieLens:
    """ml-latest(-small), ML-20M, ML-25M: half-star ratings (0.5–5) and no user table, so every user
    feature is unknown (encoded as such, never guessed)."""
    ratings = pd.read_csv(path / "ratings.csv").rename(
        columns={"userId": "user", "movieId": "item", "timestamp": "ts"}
    )
    items = pd.read_csv(path / "movies.csv", dtype={"title": str, "genres": str})
    year = year_in_title(items["title"])
    users = pd.Series(sorted(ratings["user"].unique())).astype(str)
    unknown = pd.Series(pd.NA, index=users.index, dtype="string")
    return MovieLens(
        ratings=_ratings(ratings, first_line=2),
        users=pd.DataFrame(
            {
                "user_id": users,
                "age_bucket": unknown,
                "gender": unknown,
                "occupation": unknown,
                "zip_prefix": unknown,
            }
        ),
        items=pd.DataFrame(
            {
                "item_id": items["movieId"].astype(str),
                "genres": items["genres"].replace("(no genres listed)", ""),
                "year_bucket": year_bucket(year),
                "title": items["title"],
            }
        ),
        source_file="ratings.csv",
    )


def _ratings(frame: pd.DataFrame, first_line: int = 1) -> pd.DataFrame:
    """`first_line`: the file line of the first rating (2 under a CSV header), for the lineage."""
    return pd.DataFrame(
        {
            "user_id": frame["user"].astype(str),
            "item_id": frame["item"].astype(str),
            "value": frame["rating"].astype(float),
            "timestamp": pd.to_datetime(frame["ts"].astype("int64"), unit="s", utc=True),
            "source_line": np.arange(first_line, len(frame) + first_line),
        }
    )


def replay_into_window(ratings: pd.DataFrame, first_day: date, last_day: date) -> pd.Series:
    """Map timestamps linearly (order kept) onto [first_day 00:00, last_day 24:00) in UTC."""
    start = datetime.combine(first_day, time(0), tzinfo=UTC)
    span = datetime.combine(last_day + timedelta(days=1), time(0), tzinfo=UTC) - start
    ts = ratings["timestamp"].astype("int64").to_numpy(dtype=float)
    low, high = ts.min(), ts.max()
    fraction = (ts - low) / (high - low) if high > low else np.zeros_like(ts)
    seconds = np.minimum(fraction * span.total_seconds(), span.total_seconds() - 1).astype("int64")
    return pd.Series(pd.Timestamp(start) + pd.to_timedelta(seconds, unit="s"), index=ratings.index)


def movielens_events(ml: MovieLens, first_day: date, last_day: date) -> pd.DataFrame:
    """Ratings in the raw landing contract (string timestamps) with lineage, replayed into the window."""
    replayed = replay_into_window(ml.ratings, first_day, last_day)
    return pd.DataFrame(
        {
            "user_id": ml.ratings["user_id"].astype("string"),
            "item_id": ml.ratings["item_id"].astype("string"),
            "event_type": pd.Series(RATING_EVENT, index=ml.ratings.index, dtype="string"),
            "value": ml.ratings["value"],
            "timestamp": replayed.dt.strftime("%Y-%m-%dT%H:%M:%SZ").astype("string"),
            "partition_date": replayed.dt.strftime("%Y-%m-%d"),
            "source_file": ml.source_file,
            "source_line": ml.ratings["source_line"],
        }
    )

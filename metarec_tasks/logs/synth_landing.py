"""Write the synthetic world INTO the landing layout, as a producer would deliver it.

For tests, demos and anyone trying `source.kind: landing` without a real producer:
`metarec synth-landing --days 14` fills `landing/date=YYYY-MM-DD/` for the days ending at the run
date with an events file and the day's user and item snapshots. Rewriting a day writes identical
bytes, so running it twice changes nothing (and DVC sees no change).
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from pathlib import Path
from typing import Literal

import pandas as pd
from tqdm import tqdm

from metarec_tasks.logs import synthetic
from metarec_tasks.logs.landing import partition_dir
from metarec_tasks.params import Params

log = logging.getLogger(__name__)

LandingFormat = Literal["csv", "csv.gz", "jsonl", "jsonl.gz", "parquet"]
FORMATS: tuple[str, ...] = ("csv", "csv.gz", "jsonl", "jsonl.gz", "parquet")


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """One landing file in the format its name says; gzip without a timestamp, so bytes repeat."""
    name = path.name
    if name.endswith(".parquet"):
        frame.to_parquet(path, index=False)
        return
    compression = {"method": "gzip", "mtime": 0} if name.endswith(".gz") else None
    if ".jsonl" in name:
        frame.to_json(path, orient="records", lines=True, compression=compression)
    else:
        frame.to_csv(path, index=False, compression=compression)


def write_synthetic_landing(
    params: Params, landing_dir: Path, days: int, fmt: LandingFormat = "csv"
) -> list[Path]:
    """Simulate `days` days ending at the run date and write them as landing partitions."""
    syn, run_date = params.synthetic, params.run.run_date
    world = synthetic.build_world(syn, params.run.seed, run_date)
    written: list[Path] = []
    wanted = [run_date - timedelta(days=k) for k in range(days - 1, -1, -1)]
    for day in tqdm(
        [d for d in wanted if d >= syn.start_date], desc="landing days", unit="day", disable=None
    ):
        written += _write_day(params, world, landing_dir, day, fmt)
    log.info("wrote %d landing files for %d days under %s", len(written), days, landing_dir)
    return written


def _write_day(params: Params, world: synthetic.World, landing_dir: Path, day: date, fmt: str) -> list[Path]:
    folder = partition_dir(landing_dir, day)
    folder.mkdir(parents=True, exist_ok=True)
    events = synthetic.simulate_day(params.synthetic, params.run.seed, world, day)
    users, items = synthetic.side_tables(world, synthetic.day_index(params.synthetic, day))
    paths = [folder / f"events.{fmt}", folder / f"users.{fmt}", folder / f"items.{fmt}"]
    for frame, path in zip((events, users, items), paths, strict=True):
        write_table(frame, path)
    return paths

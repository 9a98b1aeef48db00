"""The raw contract writer and the per-source readers the `ingest` stage chooses between.

Whatever the source, the output is the same: events in the raw contract with lineage columns, written
chunk by chunk (memory stays bounded), plus the users/items side tables and the list of files read.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from metarec_tasks.logs import landing, movielens, synthetic
from metarec_tasks.logs.contract import EVENT_COLUMNS, LINEAGE_DTYPES, pandas_dtypes
from metarec_tasks.params import Params

log = logging.getLogger(__name__)

RAW_DTYPES: dict[str, str] = {**pandas_dtypes(EVENT_COLUMNS), landing.READ_ERROR: "string", **LINEAGE_DTYPES}


@dataclass(frozen=True)
class IngestSummary:
    events: int
    users: int
    items: int
    files: list[dict[str, Any]]


class RawEventWriter:
    """Append event chunks to one Parquet file with a fixed schema (one row group per chunk)."""

    def __init__(self, path: Path):
        import pyarrow as pa

        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # renamed into place by close()
        self.schema = pa.Schema.from_pandas(
            _conform(pd.DataFrame(columns=list(RAW_DTYPES))), preserve_index=False
        )
        self._writer = None
        self.rows = 0

    def write(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._writer is None:
            self._writer = pq.ParquetWriter(self.tmp, self.schema)
        table = pa.Table.from_pandas(_conform(frame), schema=self.schema, preserve_index=False)
        self._writer.write_table(table)
        self.rows += len(frame)

    def __enter__(self) -> RawEventWriter:
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        """A complete file is renamed into place; a failed ingest leaves the previous one."""
        if exc_type is None and self._writer is None:  # no rows at all: still a valid, empty file
            self.write(pd.DataFrame(columns=list(RAW_DTYPES)))
        if self._writer is not None:
            self._writer.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        self.tmp.unlink(missing_ok=True)


def _conform(frame: pd.DataFrame) -> pd.DataFrame:
    for name in RAW_DTYPES:
        if name not in frame:
            frame[name] = None
    return frame[list(RAW_DTYPES)].astype(RAW_DTYPES)


def window_days(params: Params) -> list[date]:
    """The days one run covers: `history_days` ending at the run date (the simulation's start
    bounds the synthetic source, which has no days before it)."""
    run_date = params.run.run_date
    days = [run_date - timedelta(days=k) for k in range(params.source.history_days - 1, -1, -1)]
    if params.source.kind == "synthetic":
        days = [d for d in days if d >= params.synthetic.start_date]
    return days


def ingest_synthetic(params: Params, writer: RawEventWriter) -> tuple[list[dict], pd.DataFrame, pd.DataFrame]:
    syn, run_date = params.synthetic, params.run.run_date
    world = synthetic.build_world(syn, params.run.seed, run_date)
    files = []
    for day in tqdm(window_days(params), desc="simulate days", unit="day", disable=None):
        frame = synthetic.simulate_day(syn, params.run.seed, world, day)
        name = f"synthetic/date={day.isoformat()}"
        frame["partition_date"] = day.isoformat()
        frame["source_file"] = name
        frame["source_line"] = range(1, len(frame) + 1)
        writer.write(frame)
        files.append(
            landing.FileEntry(
                name, day.isoformat(), "events", "", 0, rows=len(frame), columns=list(frame)
            ).to_json()
        )
    users, items = synthetic.side_tables(world, synthetic.day_index(syn, run_date))
    return files, users.astype("string"), items.astype("string")


def ingest_movielens(
    params: Params, root: Path, writer: RawEventWriter
) -> tuple[list[dict], pd.DataFrame, pd.DataFrame]:
    """MovieLens files read in place, their ratings replayed into the window (see logs/movielens.py)."""
    ml = movielens.read_movielens((root / params.source.movielens_dir).resolve())
    window = window_days(params)
    events = movielens.movielens_events(ml, window[0], window[-1])
    writer.write(events)
    entry = landing.FileEntry(ml.source_file, window[-1].isoformat(), "events", "", 0, rows=len(events))
    entry.columns = list(events.columns)
    return [entry.to_json()], ml.users.astype("string"), ml.items.astype("string")

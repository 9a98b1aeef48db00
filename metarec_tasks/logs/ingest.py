"""The `ingest` stage: bring one run's window of behavior logs into `data/raw/`.

Whatever the source, the output is the same three Parquet files in the raw contract, with lineage
columns, so every later stage is source-agnostic.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from metarec_tasks.logs import landing, movielens, synthetic
from metarec_tasks.params import Params
from metarec_tasks.paths import Workspace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RawLogs:
    events: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame


def read_source(params: Params, root: Path) -> RawLogs:
    """Dispatch on `source.kind`; each source returns the raw contract plus lineage."""
    run_date, days = params.run.run_date, params.source.history_days
    if params.source.kind == "landing":
        events, users, items = landing.read_landing(root / params.source.landing_dir, run_date, days)
        return RawLogs(events, users, items)
    if params.source.kind == "movielens":
        ml = movielens.read_movielens((root / params.source.movielens_dir).resolve())
        window = window_days(params)
        return RawLogs(movielens.movielens_events(ml, window[0], window[-1]), ml.users, ml.items)
    return _read_synthetic(params)


def window_days(params: Params) -> list[date]:
    """The days one run covers: `history_days` ending at the run date (the simulation's start
    bounds the synthetic source, which has no days before it)."""
    run_date = params.run.run_date
    days = [run_date - timedelta(days=k) for k in range(params.source.history_days - 1, -1, -1)]
    if params.source.kind == "synthetic":
        days = [d for d in days if d >= params.synthetic.start_date]
    return days


def _read_synthetic(params: Params) -> RawLogs:
    syn, run_date = params.synthetic, params.run.run_date
    world = synthetic.build_world(syn, params.run.seed, run_date)
    frames = []
    for day in tqdm(window_days(params), desc="simulate days", unit="day", disable=None):
        frame = synthetic.simulate_day(syn, params.run.seed, world, day)
        frame["partition_date"] = day.isoformat()
        frame["source_file"] = f"synthetic/date={day.isoformat()}"
        frame["source_line"] = range(1, len(frame) + 1)
        frames.append(frame)
    users, items = synthetic.side_tables(world, synthetic.day_index(syn, run_date))
    return RawLogs(pd.concat(frames, ignore_index=True), users, items)


def run_ingest(params: Params, root: Path) -> RawLogs:
    ws = Workspace(root)
    raw = read_source(params, root)
    ws.raw.mkdir(parents=True, exist_ok=True)
    raw.events.to_parquet(ws.raw / "events.parquet", index=False)
    raw.users.to_parquet(ws.raw / "users.parquet", index=False)
    raw.items.to_parquet(ws.raw / "items.parquet", index=False)
    log.info(
        "ingested %d events, %d users, %d items from %s for %s",
        len(raw.events),
        len(raw.users),
        len(raw.items),
        params.source.kind,
        params.run.run_date,
    )
    return raw

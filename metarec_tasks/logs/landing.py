"""The `landing` source: what producers drop into `landing/date=YYYY-MM-DD/`.

Files may be CSV, JSONL or Parquet (optionally gzipped). Event files are any file whose name does not
start with `users` or `items`; those two prefixes are the optional side tables. Everything is read as
strings so that validation, not the reader, decides what is malformed.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from metarec_tasks.logs.contract import REQUIRED_EVENT_COLUMNS, to_raw_dtypes

log = logging.getLogger(__name__)

SUFFIXES = (".csv", ".csv.gz", ".jsonl", ".jsonl.gz", ".parquet")
SIDE_TABLES = ("users", "items")


def partition_dir(landing_dir: Path, day: date) -> Path:
    return landing_dir / f"date={day.isoformat()}"


def read_table(path: Path) -> pd.DataFrame:
    """Read one landing file with every column as a string (Parquet keeps its own types)."""
    name = path.name.lower()
    if name.endswith(".parquet"):
        return pd.read_parquet(path)
    if name.endswith((".jsonl", ".jsonl.gz")):
        return pd.read_json(path, lines=True, dtype=False)
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])


def landing_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(SUFFIXES))


def read_landing(
    landing_dir: Path, run_date: date, history_days: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Events of the window ending at `run_date`, with lineage, and the latest side tables."""
    events, side = [], {name: [] for name in SIDE_TABLES}
    for offset in range(history_days - 1, -1, -1):
        day = run_date - timedelta(days=offset)
        folder = partition_dir(landing_dir, day)
        if not folder.is_dir():
            log.warning("landing partition %s is missing", folder)
            continue
        for path in landing_files(folder):
            table = path.name.split(".")[0].split("_")[0]
            frame = read_table(path)
            if table in SIDE_TABLES:
                side[table].append(frame.astype("string"))
                continue
            missing = [c for c in REQUIRED_EVENT_COLUMNS if c not in frame.columns]
            frame = frame.reindex(columns=[*frame.columns, *missing])
            frame = to_raw_dtypes(frame)
            frame["partition_date"] = day.isoformat()
            frame["source_file"] = str(path.relative_to(landing_dir))
            frame["source_line"] = range(2, len(frame) + 2)  # 1-based, after the header line
            events.append(frame)
    users = _latest(side["users"], "user_id")
    items = _latest(side["items"], "item_id")
    if not events:
        return pd.DataFrame(columns=list(REQUIRED_EVENT_COLUMNS)), users, items
    return pd.concat(events, ignore_index=True), users, items


def _latest(frames: list[pd.DataFrame], key: str) -> pd.DataFrame:
    if not frames:
        return pd.DataFrame(columns=[key], dtype="string")
    merged = pd.concat(frames, ignore_index=True)
    return merged.drop_duplicates(subset=[key], keep="last").reset_index(drop=True)

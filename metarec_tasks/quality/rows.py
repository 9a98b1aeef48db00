"""Per-row facts the suite checks that are not plain columns of the delivery.

Great Expectations checks one column at a time; facts that need the partition, other rows or the side
tables (when was this event relative to its day, was this exact row seen before, does the user exist)
are computed here as derived columns, so every row-level decision still goes through the suite.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from metarec_tasks.logs.contract import REQUIRED_EVENT_COLUMNS

EVENT_TIME = "event_time"  # the parsed timestamp (UTC), NaT where unparseable
PARTITION_LAG = "partition_lag_s"  # seconds from the event to the end of its partition's day
REPEAT = "is_repeat"  # an exact copy of an earlier row of the window
KNOWN = {"users": "user_in_side_table", "items": "item_in_side_table"}
DAY_SECONDS = 86_400.0


def add_time_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Parse ISO 8601 (any offset, converted to UTC; the suite flags non-UTC offsets separately)."""
    frame[EVENT_TIME] = pd.to_datetime(frame["timestamp"], errors="coerce", utc=True, format="ISO8601")
    codes, days = pd.factorize(frame["partition_date"])  # a handful of days: parse each once
    ends = pd.to_datetime(pd.Series(days), format="%Y-%m-%d", utc=True) + pd.Timedelta(days=1)
    day_end = pd.Series(ends.to_numpy()[codes], index=frame.index) if len(days) else frame[EVENT_TIME]
    frame[PARTITION_LAG] = (day_end - frame[EVENT_TIME]).dt.total_seconds()
    return frame


def partition_lag_bounds(max_lateness_hours: float) -> tuple[float, float]:
    """(exclusive min, inclusive max) of `partition_lag_s` for an event that belongs to its day."""
    return 0.0, DAY_SECONDS + max_lateness_hours * 3600.0


def latest_allowed(now: datetime | None = None) -> pd.Timestamp:
    return pd.Timestamp(now or datetime.now(UTC))


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def day_end(day: date) -> datetime:
    return day_start(day) + timedelta(days=1)


class RepeatTracker:
    """Exact duplicates across chunks: the first delivery is kept, later copies are repeats.

    Rows are compared by a 64-bit hash of the contract columns (collision odds for 10 M rows are about
    one in 300,000 runs); the hashes seen so far are kept sorted, 8 bytes per row.
    """

    def __init__(self) -> None:
        self.seen = np.empty(0, dtype=np.uint64)

    def mark(self, frame: pd.DataFrame) -> pd.DataFrame:
        hashes = pd.util.hash_pandas_object(frame[list(REQUIRED_EVENT_COLUMNS)], index=False).to_numpy()
        # Work in sorted order (a stable sort keeps the first delivery first among equal rows):
        # sorted lookups and a linear merge keep this O(seen + chunk) per chunk.
        order = np.argsort(hashes, kind="stable")
        ordered = hashes[order]
        within = np.concatenate(([False], ordered[1:] == ordered[:-1]))
        if len(self.seen):
            pos = np.minimum(np.searchsorted(self.seen, ordered), len(self.seen) - 1)
            before = self.seen[pos] == ordered
        else:
            before = np.zeros(len(ordered), dtype=bool)
        repeat = np.empty(len(ordered), dtype=bool)
        repeat[order] = within | before
        frame[REPEAT] = repeat
        fresh = ordered[~(within | before)]
        self.seen = np.insert(self.seen, np.searchsorted(self.seen, fresh), fresh)
        return frame


def add_known_columns(frame: pd.DataFrame, side_ids: dict[str, pd.Index]) -> pd.DataFrame:
    """Referential integrity: only for side tables that were delivered (non-empty).

    Arrow's `is_in`, not `Series.isin`: on Arrow-backed strings pandas turns every id of the side
    table into a Python object for each chunk (14 s per chunk against 2M user ids, whatever the
    chunk's rows, so validate grew with users × chunks); Arrow hashes them natively (0.6 s for a
    1M-row chunk)."""
    for table, key in (("users", "user_id"), ("items", "item_id")):
        ids = side_ids.get(table)
        if ids is not None and len(ids):
            known = pc.is_in(_strings(frame[key]), value_set=_strings(ids))
            frame[KNOWN[table]] = known.to_numpy(zero_copy_only=False) | frame[key].isna().to_numpy()
    return frame


def _strings(values: pd.Series | pd.Index) -> pa.Array:
    """Ids as one Arrow string array (nulls kept as nulls; never equal to an id)."""
    return pa.array(values.astype("str").array, type=pa.large_string(), from_pandas=True)

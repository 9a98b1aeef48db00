"""The behavior-log contract: one definition that drives dtypes, validation and docs.

Raw data keeps every column exactly as delivered (ids and timestamps as strings) so that validation
sees what the producer sent; only validated data carries parsed, typed columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Column:
    name: str
    raw_dtype: str
    description: str


EVENT_COLUMNS: tuple[Column, ...] = (
    Column("user_id", "string", "who acted; an opaque id"),
    Column("item_id", "string", "what they acted on; an opaque id"),
    Column("event_type", "string", "rating, click, view, purchase, ... (list in params.yaml)"),
    Column("value", "float64", "the rating, or 1.0 for implicit events"),
    Column("timestamp", "string", "when, ISO 8601 in UTC"),
)
REQUIRED_EVENT_COLUMNS: tuple[str, ...] = tuple(c.name for c in EVENT_COLUMNS)

# Lineage columns added by ingest: where each row came from, for quarantine reports.
LINEAGE_COLUMNS: tuple[str, ...] = ("partition_date", "source_file", "source_line")

RATING_EVENT = "rating"
USER_KEY = "user_id"
ITEM_KEY = "item_id"


def empty_events() -> pd.DataFrame:
    """An events frame with the raw contract's columns and dtypes and no rows."""
    frame = pd.DataFrame({c.name: pd.Series(dtype=c.raw_dtype) for c in EVENT_COLUMNS})
    for name in LINEAGE_COLUMNS:
        frame[name] = pd.Series(dtype="int64" if name == "source_line" else "string")
    return frame


def to_raw_dtypes(events: pd.DataFrame) -> pd.DataFrame:
    """Cast the contract columns to their raw dtypes (strings stay strings, value to float)."""
    out = events.copy()
    for column in EVENT_COLUMNS:
        if column.name not in out:
            continue
        if column.raw_dtype == "float64":
            out[column.name] = pd.to_numeric(out[column.name], errors="coerce").astype("float64")
        else:
            out[column.name] = out[column.name].astype("string")
    return out

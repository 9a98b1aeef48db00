"""The behavior-log contract: the one schema that drives dtypes, the validation suite and the docs.

Every column is declared once here with its *kind*; `quality.suite` turns kinds into Great
Expectations expectations, `pandas_dtypes` into dtypes, and `contract_markdown` into the README table,
so the three can never disagree. Raw data keeps every column exactly as delivered (ids and timestamps
as strings) so that validation sees what the producer sent; only validated data carries parsed columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from metarec_tasks.params import FeatureParams, ValidateParams

ColumnKind = Literal["id", "event_type", "value", "timestamp", "feature", "flag"]


@dataclass(frozen=True)
class Column:
    name: str
    kind: ColumnKind
    raw_dtype: str  # as ingested into data/raw (what the producer sent, as text where possible)
    valid_dtype: str  # as written to data/validated
    description: str
    required: bool = True


EVENT_COLUMNS: tuple[Column, ...] = (
    Column("user_id", "id", "string", "string", "who acted; an opaque id"),
    Column("item_id", "id", "string", "string", "what they acted on; an opaque id"),
    Column("event_type", "event_type", "string", "string", "what kind of interaction"),
    Column("value", "value", "float64", "float64", "the rating, or 1.0 for implicit events"),
    Column("timestamp", "timestamp", "string", "datetime64[us, UTC]", "when the event happened"),
)
REQUIRED_EVENT_COLUMNS: tuple[str, ...] = tuple(c.name for c in EVENT_COLUMNS if c.required)

# Lineage columns added by ingest: where each row came from, for quarantine reports.
LINEAGE_COLUMNS: tuple[str, ...] = ("partition_date", "source_file", "source_line")
LINEAGE_DTYPES: dict[str, str] = {"partition_date": "string", "source_file": "string", "source_line": "int64"}

RATING_EVENT = "rating"
IMPLICIT_VALUE = 1.0
USER_KEY = "user_id"
ITEM_KEY = "item_id"
SIDE_TABLE_KEYS: dict[str, str] = {"users": USER_KEY, "items": ITEM_KEY}
AVAILABLE_COLUMN = "available"
FLAG_VALUES: tuple[str, ...] = ("true", "false", "True", "False", "1", "0")
FALSE_VALUES: frozenset[str] = frozenset({"false", "False", "0"})
# Optional columns of a side table that are not model features (the ranking stage reads them).
SIDE_TABLE_FLAGS: dict[str, tuple[Column, ...]] = {
    "users": (),
    "items": (
        Column(
            AVAILABLE_COLUMN,
            "flag",
            "string",
            "string",
            "false: the item is never recommended (absent: available)",
            required=False,
        ),
    ),
}


def side_table_columns(features: FeatureParams, table: str) -> tuple[Column, ...]:
    """A side table's contract: its key plus the feature columns `params.yaml` declares for it."""
    key = SIDE_TABLE_KEYS[table]
    specs = features.user if table == "users" else features.item
    feature_columns = tuple(
        Column(
            spec.name,
            "feature",
            "string",
            "string",
            {"multi_hot": "`\\|`-separated values", "text": "free text (embedded)"}.get(
                spec.kind, "one category"
            ),
            required=False,
        )
        for spec in specs
    )
    return (
        Column(key, "id", "string", "string", f"the {table[:-1]}'s id, as in the events"),
        *feature_columns,
        *SIDE_TABLE_FLAGS[table],
    )


def pandas_dtypes(columns: tuple[Column, ...], validated: bool = False) -> dict[str, str]:
    return {c.name: c.valid_dtype if validated else c.raw_dtype for c in columns}


def empty_events() -> pd.DataFrame:
    """An events frame with the raw contract's columns and dtypes, lineage included, and no rows."""
    dtypes = {**pandas_dtypes(EVENT_COLUMNS), **LINEAGE_DTYPES}
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in dtypes.items()})


def to_raw_dtypes(events: pd.DataFrame) -> pd.DataFrame:
    """Cast the contract columns to their raw dtypes (strings stay strings, value to float).

    Values that cannot be numbers (`"abc"`) become NaN here and are quarantined as `null_value`.
    """
    out = events.copy()
    for column in EVENT_COLUMNS:
        if column.name not in out:
            continue
        if column.raw_dtype == "float64":
            out[column.name] = _as_number(out[column.name])
        else:
            out[column.name] = _as_text(out[column.name])
    return out


def _as_number(series: pd.Series) -> pd.Series:
    """Numbers as float; anything else — text, and booleans (JSON `true` is not the rating 1) — NaN."""
    if pd.api.types.is_bool_dtype(series):
        return pd.Series(float("nan"), index=series.index, dtype="float64")
    if series.dtype == object:
        series = series.map(lambda v: None if isinstance(v, bool | np.bool_) else v)
    return pd.to_numeric(series, errors="coerce").astype("float64")


def _as_text(series: pd.Series) -> pd.Series:
    """Text without type coercion: 7 → "7", "007" stays "007", a UTC datetime → ISO 8601."""
    if isinstance(series.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(series):
        return series.map(lambda t: None if pd.isna(t) else t.isoformat()).astype("string")
    return series.astype("string")


def rules(column: Column, vp: ValidateParams) -> str:
    """What the suite checks for `column`, in words: the README's 'rules' column."""
    if column.kind == "id":
        return f"not null; matches `{vp.id_pattern}`"
    if column.kind == "event_type":
        return "not null; one of " + ", ".join(f"`{t}`" for t in vp.event_types)
    if column.kind == "value":
        return (
            f"not null, finite; `{RATING_EVENT}`: {vp.rating_min:g} to {vp.rating_max:g}; "
            f"other types: exactly {IMPLICIT_VALUE:g}"
        )
    if column.kind == "timestamp":
        return (
            "ISO 8601; UTC (`Z`, `+00:00` or no offset); inside its partition's day, "
            f"or up to {vp.max_lateness_hours:g} h before it; not in the future"
        )
    if column.kind == "flag":
        return "optional; one of " + ", ".join(f"`{v}`" for v in FLAG_VALUES) + " or empty"
    return "optional; kept as delivered text"


def contract_markdown(features: FeatureParams, vp: ValidateParams) -> str:
    """The contract as a Markdown table (what `metarec contract --markdown` prints into README)."""
    lines = [
        "| table | column | raw dtype | validated dtype | meaning | rules |",
        "|---|---|---|---|---|---|",
    ]
    tables = [("events", EVENT_COLUMNS)] + [(t, side_table_columns(features, t)) for t in SIDE_TABLE_KEYS]
    for table, columns in tables:
        for c in columns:
            cells = (table, f"`{c.name}`", c.raw_dtype, c.valid_dtype, c.description, rules(c, vp))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

"""The users and items side tables: row checks, quarantine, the latest row per id."""

from __future__ import annotations

import logging

import pandas as pd

from metarec_tasks.files import write_parquet
from metarec_tasks.logs.contract import SIDE_TABLE_KEYS, side_table_columns
from metarec_tasks.params import Params
from metarec_tasks.paths import Workspace
from metarec_tasks.quality.chunks import REASON
from metarec_tasks.quality.suite import GxSession, build_side_suite, reasons_for

log = logging.getLogger(__name__)


def validate_side_tables(
    ws: Workspace, params: Params, session: GxSession
) -> tuple[dict[str, pd.Index], dict[str, dict[str, int]]]:
    """Quarantine malformed side rows, keep the latest delivered row per id; return the valid ids
    of every side table that was delivered (non-empty), for referential integrity, and a summary
    per table (rows in, quarantined) that `quality.batch.side_table_checks` judges."""
    ids: dict[str, pd.Index] = {}
    summary: dict[str, dict[str, int]] = {}
    for table, key in SIDE_TABLE_KEYS.items():
        raw = pd.read_parquet(ws.raw_table(table)).astype("string").reset_index(drop=True)
        columns = side_table_columns(params.active_features, table)
        # optional flag columns (items.available) are checked only when delivered
        columns = tuple(c for c in columns if c.kind != "flag" or c.name in raw)
        if key not in raw:
            raw[key] = pd.Series(pd.NA, index=raw.index, dtype="string")
        session.register(
            table, build_side_suite(columns, params.validate_), params.validate_.max_bad_row_share
        )
        reasons = reasons_for(len(raw), session.failing_rows(table, raw, run_name=f"{table}-side-table"))
        bad = (reasons != "").to_numpy()
        write_parquet(raw[bad].assign(**{REASON: reasons[bad].to_numpy()}), ws.quarantine_table(table))
        good = raw[~bad].drop_duplicates(subset=[key], keep="last")
        good = good.drop(columns=[c for c in ("source_file", "source_line") if c in good]).reset_index(
            drop=True
        )
        write_parquet(good, ws.validated_table(table))
        missing = [c.name for c in columns if c.name not in raw]
        summary[table] = {
            "rows_in": len(raw),
            "rows_quarantined": int(bad.sum()),
            "ids": len(good),
            "missing_feature_columns": len(missing),
        }
        if missing and len(raw):
            log.warning("%s side table lacks feature columns %s", table, missing)
        if len(raw):  # delivered: events must reference its valid ids — none valid means none known
            ids[table] = pd.Index(good[key])
    return ids, summary

"""The `validate` stage: Great Expectations decides which rows are fit to learn from.

Reads `data/raw/` chunk by chunk (memory stays bounded however big the window), so the flow is:

1. side tables: validated first, because events must reference their ids when they are delivered;
2. events, per chunk: derive the row facts (`quality.rows`), run the GX suite generated from the
   contract (`quality.suite`), write valid rows to `data/validated/` and failing rows with their
   reasons, source file and line to `data/quarantine/`, and tally counts per file and day;
3. batch checks over the manifest and the tallies (`quality.batch`);
4. the report (`reports/data_quality.json`) and the GX data docs (`reports/data_docs/`) are written
   *before* a failing batch check raises `DataQualityError`, so the evidence is always there.

The helpers live in `metarec_tasks/quality/` so this file stays a readable table of contents.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from metarec_tasks.errors import DataQualityError
from metarec_tasks.logs.contract import (
    ITEM_KEY,
    LINEAGE_COLUMNS,
    REQUIRED_EVENT_COLUMNS,
    SIDE_TABLE_KEYS,
    USER_KEY,
    side_table_columns,
)
from metarec_tasks.logs.landing import READ_ERROR
from metarec_tasks.logs.raw import window_days
from metarec_tasks.params import Params
from metarec_tasks.paths import Workspace
from metarec_tasks.quality import batch, rows
from metarec_tasks.quality.suite import GxSession, build_event_suite, build_side_suite, reasons_for

log = logging.getLogger(__name__)

REASON = "reason"
_DONE = object()
OUTSIDE_PARTITION = "timestamp_outside_partition"


@dataclass
class QualityReport:
    run_date: str
    rows_in: int
    rows_valid: int
    rows_quarantined: int
    reasons: dict[str, int]
    checks: list[dict[str, Any]]
    partitions: list[dict[str, Any]]
    failures: list[str] = field(default_factory=list)
    side_tables: dict[str, dict[str, int]] = field(default_factory=dict)
    phases_s: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "passed": self.passed}


def run(params: Params, ws: Workspace, docs: bool = True) -> QualityReport:
    vp, run_date = params.validate_, params.run.run_date
    manifest = json.loads(ws.raw_manifest.read_text()) if ws.raw_manifest.exists() else {"files": []}
    timer = PhaseTimer()
    for folder in (ws.validated, ws.quarantine, ws.reports):
        folder.mkdir(parents=True, exist_ok=True)
    docs_dir = _fresh(ws.data_docs) if docs else None
    with timer("gx_setup"):
        session = GxSession(docs_dir)

    # 1. Side tables first: their ids are what events must reference.
    with timer("side_tables"):
        side_ids, side_summary = validate_side_tables(ws, params, session)
    session.register("events", build_event_suite(vp, datetime.now(UTC), tuple(side_ids)))

    # 2. Events, chunk by chunk.
    tally = Tally(run_date.isoformat())
    repeats = rows.RepeatTracker()
    raw = timer.iterate("read_raw", _raw_chunks(ws.raw_events, vp.chunk_rows))
    with (
        ChunkWriter(ws.validated_events) as valid_out,
        ChunkWriter(ws.quarantine / "events.parquet") as bad_out,
    ):
        for index, chunk in enumerate(tqdm(raw, desc="validate chunks", unit="chunk", disable=None)):
            with timer("derive_row_facts"):
                chunk = rows.add_known_columns(repeats.mark(rows.add_time_columns(chunk)), side_ids)
            with timer("gx_validate_and_docs"):
                failing = session.failing_rows("events", chunk, run_name=f"events-chunk-{index:04d}")
            with timer("write_outputs"):
                reasons = reasons_for(len(chunk), failing)
                bad = (reasons != "").to_numpy()
                valid_out.write(_validated_events(chunk[~bad]))
                bad_out.write(_quarantined_events(chunk[bad], reasons[bad]))
            with timer("tally"):
                tally.add(chunk, bad, reasons[bad], failing.get(OUTSIDE_PARTITION))

    # 3. Batch checks: files, days, volume; new-entity shares are reported.
    with timer("batch_checks"):
        checks = [
            *batch.file_checks(manifest["files"], tally.per_file, vp),
            *batch.day_checks(tally.per_day, window_days(params), run_date, vp),
            batch.share_check("new_user_share", f"date={run_date}", *tally.new_share("users")),
            batch.share_check("new_item_share", f"date={run_date}", *tally.new_share("items")),
        ]
    failures = [c.message() for c in checks if c.fails_run]

    # 4. Report (and docs, already rendered per chunk), then fail if a batch check says so.
    report = QualityReport(
        run_date=run_date.isoformat(),
        rows_in=tally.rows,
        rows_valid=tally.rows - tally.bad,
        rows_quarantined=tally.bad,
        reasons=dict(sorted(tally.reasons.items())),
        checks=[c.to_json() for c in checks],
        partitions=tally.partitions(),
        failures=failures,
        side_tables=side_summary,
        phases_s=timer.rounded(),
    )
    ws.data_quality_report.write_text(json.dumps(report.to_json(), indent=2, default=str))
    log.info(
        "validated %d rows: %d kept, %d quarantined %s; phases %s",
        report.rows_in,
        report.rows_valid,
        report.rows_quarantined,
        report.reasons,
        report.phases_s,
    )
    if failures:
        raise DataQualityError("; ".join(failures))
    return report


def validate_side_tables(
    ws: Workspace, params: Params, session: GxSession
) -> tuple[dict[str, pd.Index], dict[str, dict[str, int]]]:
    """Quarantine malformed side rows, keep the latest delivered row per id; return the valid ids
    of every side table that was delivered (non-empty), for referential integrity."""
    ids: dict[str, pd.Index] = {}
    summary: dict[str, dict[str, int]] = {}
    for table, key in SIDE_TABLE_KEYS.items():
        raw = pd.read_parquet(ws.raw_table(table)).astype("string").reset_index(drop=True)
        columns = side_table_columns(params.active_features, table)
        # optional flag columns (items.available) are checked only when delivered
        columns = tuple(c for c in columns if c.kind != "flag" or c.name in raw)
        if key not in raw:
            raw[key] = pd.Series(pd.NA, index=raw.index, dtype="string")
        session.register(table, build_side_suite(columns, params.validate_))
        reasons = reasons_for(len(raw), session.failing_rows(table, raw, run_name=f"{table}-side-table"))
        bad = (reasons != "").to_numpy()
        raw[bad].assign(**{REASON: reasons[bad].to_numpy()}).to_parquet(
            ws.quarantine / f"{table}.parquet", index=False
        )
        good = raw[~bad].drop_duplicates(subset=[key], keep="last")
        good = good.drop(columns=[c for c in ("source_file", "source_line") if c in good]).reset_index(
            drop=True
        )
        good.to_parquet(ws.validated_table(table), index=False)
        missing = [c.name for c in columns if c.name not in raw]
        summary[table] = {
            "rows_in": len(raw),
            "rows_quarantined": int(bad.sum()),
            "ids": len(good),
            "missing_feature_columns": len(missing),
        }
        if missing and len(raw):
            log.warning("%s side table lacks feature columns %s", table, missing)
        if len(good):
            ids[table] = pd.Index(good[key])
    return ids, summary


class Tally:
    """Counts the batch checks need, accumulated chunk by chunk."""

    def __init__(self, run_date: str):
        self.run_date = run_date
        self.rows = self.bad = 0
        self.reasons: Counter[str] = Counter()
        self.per_file: dict[str, dict[str, int]] = defaultdict(
            lambda: {"rows": 0, "bad": 0, "outside_partition": 0}
        )
        self.per_day: Counter[str] = Counter()
        self.file_day: dict[str, str] = {}
        self.first_seen: dict[str, pd.Series] = {}
        self.run_date_ids: dict[str, pd.Index] = {}

    def add(
        self, chunk: pd.DataFrame, bad: np.ndarray, reasons: pd.Series, outside: np.ndarray | None
    ) -> None:
        self.rows += len(chunk)
        self.bad += int(bad.sum())
        for joined, n in reasons.value_counts().items():
            for reason in str(joined).split(";"):
                self.reasons[reason] += int(n)
        flags = pd.DataFrame({"file": chunk["source_file"], "day": chunk["partition_date"], "bad": bad})
        flags["outside"] = False
        if outside is not None:
            flags.loc[outside, "outside"] = True
        for (name, day), group in flags.groupby(["file", "day"], sort=False):
            entry = self.per_file[str(name)]
            entry["rows"] += len(group)
            entry["bad"] += int(group["bad"].sum())
            entry["outside_partition"] += int(group["outside"].sum())
            self.file_day[str(name)] = str(day)
        self.per_day.update({str(k): int(v) for k, v in chunk["partition_date"].value_counts().items()})
        valid = chunk.loc[~bad, [USER_KEY, ITEM_KEY, "partition_date"]]
        for table, key in (("users", USER_KEY), ("items", ITEM_KEY)):
            first = valid.groupby(key, sort=False)["partition_date"].min()
            if table in self.first_seen:
                first = pd.concat([self.first_seen[table], first]).groupby(level=0, sort=False).min()
            self.first_seen[table] = first
            today = pd.Index(valid.loc[valid["partition_date"] == self.run_date, key].unique())
            self.run_date_ids[table] = self.run_date_ids.get(table, pd.Index([])).union(today)

    def new_share(self, table: str) -> tuple[int, int]:
        ids = self.run_date_ids.get(table)
        if ids is None or not len(ids):
            return 0, 0
        first = self.first_seen[table].reindex(ids)
        return int((first == self.run_date).sum()), len(ids)

    def partitions(self) -> list[dict[str, Any]]:
        return [
            {
                "partition_date": self.file_day[name],
                "source_file": name,
                "rows": c["rows"],
                "bad_rows": c["bad"],
                "bad_share": c["bad"] / c["rows"] if c["rows"] else 0.0,
            }
            for name, c in sorted(self.per_file.items(), key=lambda kv: (self.file_day[kv[0]], kv[0]))
        ]


def _validated_events(frame: pd.DataFrame) -> pd.DataFrame:
    """Contract columns with the parsed UTC timestamp, plus lineage."""
    keep = [c for c in REQUIRED_EVENT_COLUMNS if c != "timestamp"]
    out = frame[[*keep, rows.EVENT_TIME, *LINEAGE_COLUMNS]].rename(columns={rows.EVENT_TIME: "timestamp"})
    out["timestamp"] = out["timestamp"].astype("datetime64[us, UTC]")
    return out.reset_index(drop=True)


def _quarantined_events(frame: pd.DataFrame, reasons: pd.Series) -> pd.DataFrame:
    """As delivered (text), with lineage and the reasons, `;`-joined."""
    out = frame[[*REQUIRED_EVENT_COLUMNS, READ_ERROR, *LINEAGE_COLUMNS]].copy()
    out[REASON] = reasons.to_numpy()
    return out.astype({c: "string" for c in out.columns if c != "source_line"}).reset_index(drop=True)


def _raw_chunks(path: Path, chunk_rows: int):
    """Raw events in chunks; a raw file without the contract's columns is a batch failure."""
    import pyarrow.parquet as pq

    missing = [
        c
        for c in (*REQUIRED_EVENT_COLUMNS, READ_ERROR, *LINEAGE_COLUMNS)
        if c not in pq.read_schema(path).names
    ]
    if missing:
        raise DataQualityError(
            f"check required_columns failed for {path.name}: observed {len(missing)} missing columns "
            f"{missing}, expected 0 (re-run ingest)"
        )
    empty = True
    for record_batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
        empty = False
        yield record_batch.to_pandas()
    if empty:  # one empty chunk, so the outputs are still written with their schema
        yield pq.read_table(path).to_pandas()


class ChunkWriter:
    """Append frames to one Parquet file; the first frame fixes the schema. Always leaves a file."""

    def __init__(self, path: Path):
        self.path = path
        self._writer = None
        self._schema = None
        self._empty: pd.DataFrame | None = None

    def __enter__(self) -> ChunkWriter:
        return self

    def write(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._writer is None:
            if frame.empty:
                self._empty = frame
                return
            self._schema = pa.Schema.from_pandas(frame, preserve_index=False)
            self._writer = pq.ParquetWriter(self.path, self._schema)
        if not frame.empty:
            self._writer.write_table(pa.Table.from_pandas(frame, schema=self._schema, preserve_index=False))

    def __exit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()
        elif self._empty is not None:
            self._empty.to_parquet(self.path, index=False)


class PhaseTimer:
    """Where validate's time goes (reported in data_quality.json and by the benchmark)."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - start

    def iterate(self, phase: str, items: Iterator[Any]) -> Iterator[Any]:
        """Yield from `items`, counting the time spent producing each one as `phase`."""
        while True:
            with self(phase):
                item = next(items, _DONE)
            if item is _DONE:
                return
            yield item

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.seconds.items()}


def _fresh(folder: Path) -> Path:
    """Data docs are per run: last run's pages would be misleading next to this run's."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder

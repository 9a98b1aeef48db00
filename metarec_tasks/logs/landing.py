"""The `landing` source: what producers drop into `landing/date=YYYY-MM-DD/`.

Files may be CSV, JSONL or Parquet, each optionally gzipped (Parquet compresses internally). Event
files are any file whose name does not start with `users` or `items`; those two prefixes are the
optional side tables. Everything is read as text so that validation, not the reader, decides what is
malformed, and read in chunks so a 1 GB file never sits in memory at once.

Idempotency: a run reads the whole window again and writes `data/raw/` from scratch, in a fixed order
(day, then file name). Same files → byte-identical output; a late file → its rows are added, the rows
already taken keep their identity (`source_file`, `source_line`). A file whose bytes (SHA-256) equal an
earlier file of the window is a re-delivery: it is recorded in the manifest and not read again.
"""

from __future__ import annotations

import csv
import errno
import gzip
import hashlib
import io
import json
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from metarec_tasks.logs.contract import REQUIRED_EVENT_COLUMNS, SIDE_TABLE_KEYS, to_raw_dtypes

log = logging.getLogger(__name__)

SUFFIXES = (".csv", ".csv.gz", ".jsonl", ".jsonl.gz", ".json.gz", ".parquet")
READ_ERROR = "read_error"  # raw column: why a record could not be read as a row (null when fine)
TRUNCATED_ROW = "truncated_row: the file ends mid-row (no final newline)"
DELIMITER_HINTS = (";", "\t", "|")
HASH_BLOCK = 1 << 20


@dataclass
class FileEntry:
    """One landing file as ingest saw it: the manifest row validation's batch checks read."""

    source_file: str
    partition_date: str
    table: str
    sha256: str
    bytes: int
    status: str = "read"  # read | empty | duplicate | unreadable
    rows: int = 0
    columns: list[str] = field(default_factory=list)
    missing_columns: list[str] = field(default_factory=list)
    extra_columns: list[str] = field(default_factory=list)
    duplicate_of: str | None = None
    error: str | None = None
    hint: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def partition_dir(landing_dir: Path, day: date) -> Path:
    return landing_dir / f"date={day.isoformat()}"


def landing_files(folder: Path) -> list[Path]:
    """Every entry named like a landing file — also the ones that are not readable files (a folder
    named `x.csv`, a dangling symlink, a symlink loop), which ingest reports instead of skipping."""
    return sorted(p for p in folder.iterdir() if p.name.lower().endswith(SUFFIXES))


def not_a_readable_file(path: Path) -> str | None:
    """Why `path` cannot be read as a landing file, or None when it is a regular file."""
    try:
        mode = path.stat().st_mode  # follows symlinks
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symlink loop"
        if path.is_symlink():
            return f"a dangling symlink (to {os.readlink(path)})"
        return f"{type(exc).__name__}: {exc.strerror}"
    if not stat.S_ISREG(mode):
        return "not a regular file (a directory?)" if stat.S_ISDIR(mode) else "not a regular file"
    return None


def ends_mid_row(path: Path) -> bool:
    """A plain CSV or JSONL whose last byte is not a newline was cut mid-row (a partial upload): its
    last record is quarantined, not repaired into a plausible row. (Gzip and Parquet carry their
    own integrity checks.)"""
    if not path.name.lower().endswith((".csv", ".jsonl")) or path.stat().st_size == 0:
        return False
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) != b"\n"


def mark_last_row(chunks: Iterator[pd.DataFrame], reason: str) -> Iterator[pd.DataFrame]:
    """The chunks as they are, with `read_error` set on the very last row."""
    previous = None
    for chunk in chunks:
        if previous is not None:
            yield previous
        previous = chunk
    if previous is not None and len(previous):
        previous = previous.copy()
        if READ_ERROR not in previous:
            previous[READ_ERROR] = None
        previous[READ_ERROR] = previous[READ_ERROR].astype(object)
        previous.iloc[-1, previous.columns.get_loc(READ_ERROR)] = reason
        yield previous


def table_of(path: Path) -> str:
    """`users*.csv` → users, `items*` → items, anything else → events."""
    stem = path.name.lower()
    return next((t for t in SIDE_TABLE_KEYS if stem.startswith(t)), "events")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def window_files(landing_dir: Path, run_date: date, history_days: int) -> Iterator[tuple[date, Path]]:
    """Every landing file of the window, oldest day first, files by name: the order rows are taken in."""
    for offset in range(history_days - 1, -1, -1):
        day = run_date - timedelta(days=offset)
        folder = partition_dir(landing_dir, day)
        if not folder.is_dir():
            log.warning("landing partition %s is missing", folder)
            continue
        for path in landing_files(folder):
            yield day, path


def read_chunks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Yield the file as text frames of at most `chunk_rows` rows, each with a 1-based `source_line`.

    `source_line` is the line in the file for CSV (header = line 1) and JSONL, the row number for
    Parquet. Records that cannot be read as a row come through with `read_error` set.
    """
    name = path.name.lower()
    if name.endswith(".parquet"):
        yield from _parquet_chunks(path, chunk_rows)
    elif name.endswith((".jsonl", ".jsonl.gz", ".json.gz")):
        yield from _jsonl_chunks(path, chunk_rows)
    else:
        yield from _csv_chunks(path, chunk_rows)


def _open_text(path: Path) -> io.TextIOBase:
    """Text in UTF-8; undecodable bytes become U+FFFD so the row (not the file) fails validation."""
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace", newline="")
    return path.open("r", encoding="utf-8", errors="replace", newline="")


def _csv_chunks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """pandas' C parser first; a ragged file (rows with the wrong field count) falls back to the
    stdlib reader, which keeps such rows and marks them instead of failing the whole file."""
    taken = 0
    try:
        with _open_text(path) as handle:
            reader = pd.read_csv(
                handle,
                dtype=str,
                keep_default_na=False,
                na_values=[""],
                index_col=False,
                chunksize=chunk_rows,
            )
            for chunk in reader:
                chunk["source_line"] = range(taken + 2, taken + 2 + len(chunk))
                taken += len(chunk)
                yield chunk
    except pd.errors.EmptyDataError:
        return
    except pd.errors.ParserError as exc:
        log.warning("%s: %s; re-reading with the tolerant reader from row %d", path, exc, taken + 1)
        yield from _csv_chunks_tolerant(path, chunk_rows, skip=taken)


def _csv_chunks_tolerant(path: Path, chunk_rows: int, skip: int) -> Iterator[pd.DataFrame]:
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return
        rows: list[dict[str, Any]] = []
        for index, record in enumerate(reader):
            if index < skip:
                continue
            row: dict[str, Any] = dict(zip(header, record, strict=False))
            if len(record) != len(header):
                row[READ_ERROR] = f"wrong_field_count: {len(record)} fields, header has {len(header)}"
            row["source_line"] = reader.line_num
            rows.append(row)
            if len(rows) >= chunk_rows:
                yield pd.DataFrame(rows, dtype=object)
                rows = []
        if rows:
            yield pd.DataFrame(rows, dtype=object)


def _jsonl_chunks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    rows: list[dict[str, Any]] = []
    with _open_text(path) as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                record = {READ_ERROR: f"invalid_json: {exc.msg}"}
            if not isinstance(record, dict):
                record = {READ_ERROR: f"invalid_json: a {type(record).__name__}, not an object"}
            record["source_line"] = line_no
            rows.append(record)
            if len(rows) >= chunk_rows:
                yield _object_frame(rows)
                rows = []
    if rows:
        yield _object_frame(rows)


def _object_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Keep JSON values as Python objects (7 stays 7, "007" stays "007") until cast to text."""
    frame = pd.DataFrame.from_records(rows)
    return frame.astype({c: object for c in frame.columns if c != "source_line"})


def _parquet_chunks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq

    taken = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
        chunk = batch.to_pandas()
        chunk["source_line"] = range(taken + 1, taken + 1 + len(chunk))
        taken += len(chunk)
        yield chunk


def conform_events(chunk: pd.DataFrame, entry: FileEntry) -> pd.DataFrame:
    """Contract columns (missing ones as nulls, extras dropped), raw dtypes, lineage."""
    for column in REQUIRED_EVENT_COLUMNS:
        if column not in chunk:
            chunk[column] = None
    if READ_ERROR not in chunk:
        chunk[READ_ERROR] = None
    out = to_raw_dtypes(chunk[[*REQUIRED_EVENT_COLUMNS, READ_ERROR, "source_line"]])
    out[READ_ERROR] = out[READ_ERROR].astype("string")
    out["source_line"] = out["source_line"].astype("int64")
    out["partition_date"] = entry.partition_date
    out["source_file"] = entry.source_file
    return out


def describe_columns(
    entry: FileEntry, columns: list[str], required: tuple[str, ...], known: tuple[str, ...]
) -> None:
    """Record what the header held: missing required and unknown extra columns, a delimiter hint."""
    entry.columns = [c for c in columns if c not in ("source_line", READ_ERROR)]
    entry.missing_columns = [c for c in required if c not in entry.columns]
    entry.extra_columns = [c for c in entry.columns if c not in (*required, *known)]
    if entry.missing_columns and len(entry.columns) == 1:
        found = [d for d in DELIMITER_HINTS if d in entry.columns[0]]
        if found:
            entry.hint = f"the header looks {found[0]!r}-delimited; the contract is comma-separated"


def ingest_landing(
    landing_dir: Path,
    run_date: date,
    history_days: int,
    chunk_rows: int,
    sink: Any,
    known_columns: dict[str, tuple[str, ...]],
) -> tuple[list[FileEntry], pd.DataFrame, pd.DataFrame]:
    """Stream the window's event rows into `sink(frame)`; return the manifest and the side tables.

    A file that breaks while being read (a truncated gzip or Parquet) keeps the rows read before the
    break and is marked `unreadable`, which fails validation's batch check for that file.
    `known_columns` per side table: the columns the contract reads from it (the key, the source's
    feature columns, flags), so a used feature column is never reported as an extra one.
    """
    entries: list[FileEntry] = []
    seen: dict[str, str] = {}
    side: dict[str, list[pd.DataFrame]] = {name: [] for name in SIDE_TABLE_KEYS}
    for day, path in window_files(landing_dir, run_date, history_days):
        table = table_of(path)
        entry = FileEntry(path.relative_to(landing_dir).as_posix(), day.isoformat(), table, "", 0)
        entries.append(entry)
        try:  # every file-level fault is this file's failed `readable_file` check, never the run's crash
            problem = not_a_readable_file(path)
            if problem:
                raise OSError(problem)
            entry.sha256, entry.bytes = file_sha256(path), path.stat().st_size
            if entry.sha256 in seen:
                entry.status, entry.duplicate_of = "duplicate", seen[entry.sha256]
                log.warning(
                    "%s is a re-delivery of %s: not read again", entry.source_file, entry.duplicate_of
                )
                continue
            seen[entry.sha256] = entry.source_file
            chunks = read_chunks(path, chunk_rows)
            if table == "events" and ends_mid_row(path):
                log.warning("%s ends mid-row: its last row is quarantined", entry.source_file)
                chunks = mark_last_row(chunks, TRUNCATED_ROW)
            for chunk in chunks:
                if not entry.columns:
                    required = REQUIRED_EVENT_COLUMNS if table == "events" else (SIDE_TABLE_KEYS[table],)
                    describe_columns(entry, list(chunk.columns), required, known_columns.get(table, ()))
                entry.rows += len(chunk)
                if table == "events":
                    sink(conform_events(chunk, entry))
                else:
                    side[table].append(_side_rows(chunk, entry))
        except (OSError, EOFError, ValueError, UnicodeError) as exc:  # pyarrow errors are ValueErrors
            entry.status = "unreadable"
            entry.error = (
                str(exc) if isinstance(exc, OSError) and not exc.errno else f"{type(exc).__name__}: {exc}"
            )
            log.error("%s is unreadable after %d rows: %s", entry.source_file, entry.rows, entry.error)
            continue
        if not entry.columns:
            entry.status = "empty"
        log.info("%s: %d rows (%s)", entry.source_file, entry.rows, entry.status)
    users, items = (_concat_side(side[t], SIDE_TABLE_KEYS[t]) for t in SIDE_TABLE_KEYS)
    return entries, users, items


def _side_rows(chunk: pd.DataFrame, entry: FileEntry) -> pd.DataFrame:
    """Side-table rows as text (ids are never numbers: "007" and 7 stay different ids)."""
    text = chunk.drop(columns=["source_line", READ_ERROR], errors="ignore").astype("string")
    text["source_file"] = entry.source_file
    text["source_line"] = chunk["source_line"].astype("int64").to_numpy()
    return text


def _concat_side(frames: list[pd.DataFrame], key: str) -> pd.DataFrame:
    """All delivered side rows, oldest first; validation keeps the latest well-formed row per id."""
    if not frames:
        return pd.DataFrame({key: pd.Series(dtype="string")})
    merged = pd.concat(frames, ignore_index=True)
    if key not in merged:
        merged[key] = pd.Series(pd.NA, index=merged.index, dtype="string")
    return merged

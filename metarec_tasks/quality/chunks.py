"""Reading raw events in bounded chunks and writing the validated and quarantined rows."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from metarec_tasks.errors import DataQualityError
from metarec_tasks.logs.contract import LINEAGE_COLUMNS, REQUIRED_EVENT_COLUMNS
from metarec_tasks.logs.landing import READ_ERROR
from metarec_tasks.quality import rows

REASON = "reason"


def validated_events(frame: pd.DataFrame) -> pd.DataFrame:
    """Contract columns with the parsed UTC timestamp, plus lineage."""
    keep = [c for c in REQUIRED_EVENT_COLUMNS if c != "timestamp"]
    out = frame[[*keep, rows.EVENT_TIME, *LINEAGE_COLUMNS]].rename(columns={rows.EVENT_TIME: "timestamp"})
    out["timestamp"] = out["timestamp"].astype("datetime64[us, UTC]")
    return out.reset_index(drop=True)


def quarantined_events(frame: pd.DataFrame, reasons: pd.Series) -> pd.DataFrame:
    """As delivered (text), with lineage and the reasons, `;`-joined."""
    out = frame[[*REQUIRED_EVENT_COLUMNS, READ_ERROR, *LINEAGE_COLUMNS]].copy()
    out[REASON] = reasons.to_numpy()
    return out.astype({c: "string" for c in out.columns if c != "source_line"}).reset_index(drop=True)


def raw_chunks(path: Path, chunk_rows: int):
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
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
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
            self._writer = pq.ParquetWriter(self.tmp, self._schema)
        if not frame.empty:
            self._writer.write_table(pa.Table.from_pandas(frame, schema=self._schema, preserve_index=False))

    def __exit__(self, exc_type, *exc: object) -> None:
        """Only a complete file replaces the target (renamed into place); a failed run leaves none."""
        if self._writer is not None:
            self._writer.close()
        elif self._empty is not None:
            self._empty.to_parquet(self.tmp, index=False)
        if exc_type is None and self.tmp.exists():
            os.replace(self.tmp, self.path)
        self.tmp.unlink(missing_ok=True)

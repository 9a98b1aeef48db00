"""The warehouse: SQLAlchemy tables for recommendations, runs and data quality, and atomic publishing.

SQLite by default, PostgreSQL in production; the same Core statements run on both. A publish is one
transaction: a passed (or forced) run replaces everything of its run id, so re-running a night is
idempotent and a reader sees either the old rows or the new ones, never a half-written run. Nothing
published is ever lost: a rejected rerun of a published day leaves that day's rows and record as
they were, and is kept only as an attempt (`attempts`: every publish decision, in order).
Connecting and every statement are bounded by `publish.connect_timeout_s` and
`publish.statement_timeout_s`; a warehouse that is down, refuses or stays silent is a
`WarehouseError` — one line, exit code 5 — never a hang or a traceback.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Date,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from metarec_tasks.errors import WarehouseError
from metarec_tasks.params import Params

log = logging.getLogger(__name__)

metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("run_id", String(128), primary_key=True),
    Column("logical_date", Date, nullable=False),
    Column("status", String(32), nullable=False),  # published | rejected | forced
    Column("published", Boolean, nullable=False),
    Column("forced", Boolean, nullable=False),
    Column("gate_passed", Boolean, nullable=False),
    Column("gate_reason", Text, nullable=False),
    Column("primary_metric", String(32), nullable=False),
    Column("primary_value", Float),
    Column("algorithm", String(32)),
    Column("params", JSON, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("data_hash", String(64)),
    Column("model_hash", String(64)),
    Column("dvc_lock", JSON),
    Column("airflow_run_id", String(256)),
    Column("recommendation_rows", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

recommendations = Table(
    "recommendations",
    metadata,
    Column("run_id", String(128), ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", String(128), primary_key=True),
    Column("rank", Integer, primary_key=True),
    Column("item_id", String(128), nullable=False),
    Column("score", Float, nullable=False),
)

data_quality = Table(
    "data_quality",
    metadata,
    Column("run_id", String(128), ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True),
    Column("scope", String(512), primary_key=True),  # "all" or a source file
    Column("check_name", String(128), primary_key=True),
    Column("observed", Float, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("passed", Boolean, nullable=False),
)

attempts = Table(
    "attempts",
    metadata,
    Column("run_id", String(128), primary_key=True),
    Column("attempted_at", DateTime(timezone=True), primary_key=True),
    Column("status", String(32), nullable=False),  # published | forced | rejected | kept
    Column("reason", Text, nullable=False),
    Column("primary_metric", String(32), nullable=False),
    Column("primary_value", Float),
    Column("algorithm", String(32)),
    Column("model_hash", String(64)),
)

producers = Table(  # which candidate made a run's published rows: its parts, files and blend weights
    "producers",
    metadata,
    Column("run_id", String(128), ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True),
    Column("candidate", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("parts", JSON, nullable=False),
    Column("model_hashes", JSON, nullable=False),
    Column("blend", JSON),
)

LATEST_VIEW = "latest_recommendations"
_LATEST_SELECT = (
    "SELECT r.run_id, r.user_id, r.rank, r.item_id, r.score, p.candidate AS producer "
    "FROM recommendations r LEFT JOIN producers p ON p.run_id = r.run_id "
    "WHERE r.run_id = (SELECT run_id FROM runs WHERE published = true "
    "ORDER BY logical_date DESC, updated_at DESC LIMIT 1)"
)
INSERT_CHUNK = 50_000  # rows per INSERT batch (SQLite) or per COPY chunk (PostgreSQL)
RECOMMENDATION_COLUMNS = ("user_id", "rank", "item_id", "score")


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    logical_date: date
    status: str
    published: bool
    forced: bool
    gate_passed: bool
    gate_reason: str
    primary_metric: str
    primary_value: float | None
    algorithm: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    data_hash: str | None
    model_hash: str | None


@dataclass(frozen=True)
class Timeouts:
    connect_s: float
    statement_s: float


def connect(url: str, timeouts: Timeouts | None = None) -> Engine:
    """An engine with the schema in place (created if missing; SQLite's folder too); `timeouts`
    bound connecting and every statement (None: the driver's own, for tests)."""
    args: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        if timeouts:
            args = {"timeout": timeouts.statement_s}  # how long SQLite waits for a locked database
    elif timeouts and url.startswith("postgresql"):
        statement_ms = int(timeouts.statement_s * 1000)
        args = {
            "connect_timeout": max(1, round(timeouts.connect_s)),
            "options": f"-c statement_timeout={statement_ms}",
        }
    engine = create_engine(url, future=True, connect_args=args)
    with guarded(engine, "create the schema in"), engine.begin() as conn:
        metadata.create_all(conn)
        _create_latest_view(conn)
    return engine


def open_warehouse(params: Params, root: Path) -> Engine:
    """The run's warehouse (per source, `publish.warehouse_url`) with the run's timeouts."""
    pp = params.publish
    url = pp.url_for(root, params.source.kind)
    return connect(url, Timeouts(pp.connect_timeout_s, pp.statement_timeout_s))


@contextmanager
def guarded(engine: Engine, doing: str) -> Iterator[None]:
    """Database errors as one line naming the warehouse (credentials hidden) and the cause."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:  # down, refusing, silent, timed out
        cause = " ".join(str(exc.orig).split()) if exc.orig is not None else type(exc).__name__
        where = engine.url.render_as_string(hide_password=True)
        raise WarehouseError(f"could not {doing} the warehouse {where}: {cause}") from None


def _create_latest_view(conn: Connection) -> None:
    """(Re)created on every connect, so a warehouse made by an older version gains new columns
    (PostgreSQL replaces it in place, readers never see it missing; new columns go last)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"CREATE OR REPLACE VIEW {LATEST_VIEW} AS {_LATEST_SELECT}"))
    else:
        conn.execute(text(f"DROP VIEW IF EXISTS {LATEST_VIEW}"))
        conn.execute(text(f"CREATE VIEW {LATEST_VIEW} AS {_LATEST_SELECT}"))


def champion(engine: Engine, source: str) -> dict[str, Any] | None:
    """The most recent published run of `source` (the demo never judges real data, nor the
    reverse) — the same day's earlier publish included: a rerun must not be worse than it."""
    query = (
        select(runs)
        .where(runs.c.published.is_(True))
        .order_by(runs.c.logical_date.desc(), runs.c.updated_at.desc())
    )
    with guarded(engine, "read the champion from"), engine.connect() as conn:
        for row in conn.execute(query).mappings():
            if (row["params"] or {}).get("source", {}).get("kind") == source:
                return dict(row)
    return None


@dataclass(frozen=True)
class Published:
    rows: int  # recommendation rows of this run id now in the warehouse
    kept_earlier: bool  # a rejected rerun: the day's earlier published rows were kept


def publish_run(
    engine: Engine,
    record: RunRecord,
    recs: pd.DataFrame,
    quality: list[dict[str, Any]],
    producer: dict[str, Any] | None = None,
) -> Published:
    """In one transaction: record the attempt; a published (or forced) run replaces everything of
    its run id; a rejected one is recorded too — unless the day is already published, which it
    then leaves untouched."""
    columns = list(RECOMMENDATION_COLUMNS)
    if record.published and recs[columns].isna().any().any():
        bad = recs[columns].isna().sum()
        raise ValueError(f"refusing to publish recommendations with missing values: {bad[bad > 0].to_dict()}")
    rows = recs[columns] if record.published else recs[columns].iloc[0:0]
    now = datetime.now(UTC)
    with guarded(engine, "publish to"), engine.begin() as conn:
        existing = conn.execute(select(runs).where(runs.c.run_id == record.run_id)).mappings().first()
        kept = bool(existing and existing["published"] and not record.published)
        conn.execute(
            insert(attempts).values(
                run_id=record.run_id,
                attempted_at=now,
                status="kept" if kept else record.status,
                reason=record.gate_reason,
                primary_metric=record.primary_metric,
                primary_value=record.primary_value,
                algorithm=record.algorithm,
                model_hash=record.model_hash,
            )
        )
        if kept:
            log.warning("warehouse: run %s rejected; its earlier published rows are kept", record.run_id)
            return Published(int(existing["recommendation_rows"]), True)
        conn.execute(delete(recommendations).where(recommendations.c.run_id == record.run_id))
        conn.execute(delete(data_quality).where(data_quality.c.run_id == record.run_id))
        conn.execute(delete(producers).where(producers.c.run_id == record.run_id))
        conn.execute(delete(runs).where(runs.c.run_id == record.run_id))
        conn.execute(
            insert(runs).values(
                **record.__dict__,
                dvc_lock=existing["dvc_lock"] if existing else None,
                airflow_run_id=existing["airflow_run_id"] if existing else None,
                recommendation_rows=len(rows),
                updated_at=now,
            )
        )
        write_recommendations(conn, record.run_id, rows)
        if quality:
            conn.execute(insert(data_quality), [{"run_id": record.run_id, **q} for q in quality])
        if producer:
            conn.execute(insert(producers).values(run_id=record.run_id, **producer))
    log.info("warehouse: run %s %s with %d recommendation rows", record.run_id, record.status, len(rows))
    return Published(len(rows), False)


def write_recommendations(conn: Connection, run_id: str, rows: pd.DataFrame) -> None:
    """Inside the publish transaction: PostgreSQL's COPY, streamed in chunks (bounded memory, an
    order of magnitude faster than INSERTs); batched INSERTs elsewhere (SQLite)."""
    if conn.dialect.name == "postgresql":
        columns = ", ".join(["run_id", *RECOMMENDATION_COLUMNS])
        statement = f"COPY recommendations ({columns}) FROM STDIN WITH (FORMAT csv)"
        try:
            with conn.connection.driver_connection.cursor() as cursor:
                cursor.copy_expert(statement, CsvStream(run_id, rows))
        except conn.dialect.dbapi.Error as exc:  # as SQLAlchemy's own errors (IntegrityError, ...)
            raise DBAPIError.instance(statement, None, exc, conn.dialect.dbapi.Error) from exc
        return
    for start in range(0, len(rows), INSERT_CHUNK):
        chunk = rows.iloc[start : start + INSERT_CHUNK]
        conn.execute(insert(recommendations), [{"run_id": run_id, **r} for r in chunk.to_dict("records")])


class CsvStream(io.RawIOBase):
    """A file-like CSV of (run_id, rows…), made chunk by chunk (pyarrow's writer) as COPY reads it."""

    def __init__(self, run_id: str, rows: pd.DataFrame):
        self.run_id, self.rows = run_id, rows
        self.start, self.buffer = 0, b""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        import pyarrow as pa
        import pyarrow.csv as pcsv

        while (size < 0 or len(self.buffer) < size) and self.start < len(self.rows):
            chunk = self.rows.iloc[self.start : self.start + INSERT_CHUNK].assign(run_id=self.run_id)
            table = pa.Table.from_pandas(chunk[["run_id", *RECOMMENDATION_COLUMNS]], preserve_index=False)
            out = io.BytesIO()
            pcsv.write_csv(table, out, pcsv.WriteOptions(include_header=False))
            self.buffer += out.getvalue()
            self.start += INSERT_CHUNK
        data, self.buffer = (self.buffer, b"") if size < 0 else (self.buffer[:size], self.buffer[size:])
        return data


def record_versions(
    engine: Engine, run_id: str, dvc_lock: dict[str, Any] | None, airflow_run_id: str | None
) -> bool:
    """Attach the DVC lock (exact data/model hashes) and the Airflow run to a published run record."""
    with engine.begin() as conn:
        result = conn.execute(
            runs.update()
            .where(runs.c.run_id == run_id)
            .values(dvc_lock=dvc_lock, airflow_run_id=airflow_run_id, updated_at=datetime.now(UTC))
        )
    return result.rowcount == 1


def top_items(engine: Engine, run_id: str, user_ids: list[str], k: int) -> pd.DataFrame:
    query = (
        select(recommendations)
        .where(
            recommendations.c.run_id == run_id,
            recommendations.c.user_id.in_(user_ids),
            recommendations.c.rank <= k,
        )
        .order_by(recommendations.c.user_id, recommendations.c.rank)
    )
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(query).mappings().all())


def count_recommendations(engine: Engine, run_id: str) -> int:
    query = select(func.count()).select_from(recommendations).where(recommendations.c.run_id == run_id)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def run_row(engine: Engine, run_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(runs).where(runs.c.run_id == run_id)).mappings().first()
    return dict(row) if row else None

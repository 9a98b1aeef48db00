"""The `ingest` stage: bring one run's window of behavior logs into `data/raw/`.

Whatever the source (`source.kind`: synthetic world, landing files, MovieLens), the output is the same:
`events.parquet` in the raw contract with lineage columns, the side tables, and `manifest.json` — the
files read and what was found in them, which validation's batch checks judge.
"""

from __future__ import annotations

import logging

from metarec_tasks.files import write_json, write_parquet
from metarec_tasks.logs import landing
from metarec_tasks.logs.contract import SIDE_TABLE_KEYS, side_table_columns
from metarec_tasks.logs.raw import (
    IngestSummary,
    RawEventWriter,
    ingest_movielens,
    ingest_synthetic,
    window_days,
)
from metarec_tasks.params import Params
from metarec_tasks.paths import Workspace

log = logging.getLogger(__name__)


def run(params: Params, ws: Workspace) -> IngestSummary:
    ws.raw.mkdir(parents=True, exist_ok=True)
    with RawEventWriter(ws.raw_events) as writer:
        if params.source.kind == "landing":
            entries, users, items = landing.ingest_landing(
                ws.root / params.source.landing_dir,
                params.run.run_date,
                params.source.history_days,
                params.source.read_chunk_rows,
                writer.write,
                {
                    t: tuple(c.name for c in side_table_columns(params.active_features, t))
                    for t in SIDE_TABLE_KEYS
                },
            )
            files = [e.to_json() for e in entries]
        elif params.source.kind == "movielens":
            files, users, items = ingest_movielens(params, ws.root, writer)
        else:
            files, users, items = ingest_synthetic(params, writer)
    write_parquet(users, ws.raw_table("users"))
    write_parquet(items, ws.raw_table("items"))
    manifest = {
        "source": params.source.kind,
        "days": [d.isoformat() for d in window_days(params)],
        "files": files,
    }
    write_json(ws.raw_manifest, manifest)
    log.info(
        "ingested %d events (%d files), %d user rows, %d item rows from %s for %s",
        writer.rows,
        len(files),
        len(users),
        len(items),
        params.source.kind,
        params.run.run_date,
    )
    return IngestSummary(writer.rows, len(users), len(items), files)

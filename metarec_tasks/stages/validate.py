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
from datetime import UTC, datetime
from pathlib import Path

from tqdm import tqdm

from metarec_tasks.errors import DataQualityError
from metarec_tasks.files import write_json
from metarec_tasks.logs.raw import window_days
from metarec_tasks.params import Params
from metarec_tasks.paths import Workspace
from metarec_tasks.quality import batch, rows
from metarec_tasks.quality.chunks import ChunkWriter, quarantined_events, raw_chunks, validated_events
from metarec_tasks.quality.side_tables import validate_side_tables
from metarec_tasks.quality.suite import GxSession, build_event_suite, reasons_for
from metarec_tasks.quality.tally import QualityReport, Tally
from metarec_tasks.quality.timing import PhaseTimer

log = logging.getLogger(__name__)

OUTSIDE_PARTITION = "timestamp_outside_partition"


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
    session.register(
        "events", build_event_suite(vp, datetime.now(UTC), tuple(side_ids)), vp.max_bad_row_share
    )

    # 2. Events, chunk by chunk.
    tally = Tally(run_date.isoformat())
    repeats = rows.RepeatTracker()
    raw = timer.iterate("read_raw", raw_chunks(ws.raw_events, vp.chunk_rows))
    with (
        ChunkWriter(ws.validated_events) as valid_out,
        ChunkWriter(ws.quarantine_table("events")) as bad_out,
    ):
        for index, chunk in enumerate(tqdm(raw, desc="validate chunks", unit="chunk", disable=None)):
            with timer("derive_row_facts"):
                chunk = rows.add_known_columns(repeats.mark(rows.add_time_columns(chunk)), side_ids)
            with timer("gx_validate_and_docs"):
                failing = session.failing_rows("events", chunk, run_name=f"events-chunk-{index:04d}")
            with timer("write_outputs"):
                reasons = reasons_for(len(chunk), failing)
                bad = (reasons != "").to_numpy()
                valid_out.write(validated_events(chunk[~bad]))
                bad_out.write(quarantined_events(chunk[bad], reasons[bad]))
            with timer("tally"):
                tally.add(chunk, bad, reasons[bad], failing.get(OUTSIDE_PARTITION))

    # 3. Batch checks: files, days, volume; new-entity shares are reported.
    with timer("batch_checks"):
        checks = [
            *batch.file_checks(manifest["files"], tally.per_file, vp),
            *batch.side_table_checks(side_summary, vp),
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
        gx_success=dict(session.success),
        phases_s=timer.rounded(),
    )
    write_json(ws.data_quality_report, report.to_json())
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


def _fresh(folder: Path) -> Path:
    """Data docs are per run: last run's pages would be misleading next to this run's."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder

"""The `publish` stage: the champion/challenger decision, then an atomic write to the warehouse.

The baseline half of the gate was decided by `evaluate`; the champion half needs the warehouse, which
DVC cannot track, so it lives here. Whatever the decision, the run is recorded with its reason and
its producer (the candidate whose rows are published: the night's selection, or the rating model when
`ranking.objective` is rating); recommendation rows are written only for a published (or
force-published) run. Last, the night's run page (`reports/run.html`) gathers it all on one page.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import pandas as pd

from metarec_tasks.evaluation.run_page import write_run_page
from metarec_tasks.evaluation.tables import MODEL
from metarec_tasks.files import write_json
from metarec_tasks.params import Params
from metarec_tasks.paths import Workspace
from metarec_tasks.publishing.champion import decide, decide_challenger, promote_champion
from metarec_tasks.publishing.records import file_md5, producer_row, quality_rows
from metarec_tasks.publishing.warehouse import RunRecord, champion, open_warehouse, publish_run

log = logging.getLogger(__name__)


def run(params: Params, ws: Workspace) -> dict[str, Any]:
    metrics = json.loads(ws.metrics.read_text())
    gate = json.loads(ws.gate.read_text())
    quality = json.loads(ws.data_quality_report.read_text())
    recs = pd.read_parquet(ws.recommendations)
    engine = open_warehouse(params, ws.root)
    current = champion(engine, params.source.kind)
    ranked = params.ranking.objective != "rating"
    chosen = gate.get("selection")
    if ranked and chosen:  # the challenger: chosen on validation users
        metric, value = chosen["metric"], float(chosen["value"])
        status, reason = decide_challenger(
            chosen, current, params.publish.champion_tolerance, params.publish.force
        )
    else:  # the rating model's list: the gate against the baselines, then the champion
        metric = params.evaluate.primary_metric
        value = float(metrics["predictors"].get(MODEL, {}).get(metric, math.nan))  # missing: the gate failed
        status, reason = decide(
            gate, value, current, metric, params.publish.champion_tolerance, params.publish.force
        )
    run_id = params.run.run_id
    produced_by = json.loads(ws.selection.read_text())["producer"] if ws.selection.is_file() else None
    model_file = ws.rank_model_file if ranked else ws.model_file  # the model trained tonight
    record = RunRecord(
        run_id=run_id,
        logical_date=params.run.run_date,
        status=status,
        published=status in ("published", "forced"),
        forced=status == "forced",
        gate_passed=bool(gate.get("passed")),
        gate_reason=reason,
        primary_metric=metric,
        primary_value=value if math.isfinite(value) else None,
        algorithm=(produced_by or {}).get("candidate", params.meta.algorithm)[:32],
        params=params.model_dump(mode="json", by_alias=True),
        metrics=metrics,
        data_hash=file_md5(ws.validated_events),
        model_hash=file_md5(model_file),
    )
    lineage = producer_row(produced_by, params, ws) if produced_by else None
    outcome = publish_run(engine, record, recs, quality_rows(quality), lineage)
    if status == "published":  # passed the gate: tomorrow's `meta.warm_start` starts from this model
        promote_champion(ws.model_file, ws.root / params.meta.champion_model)
    if outcome.kept_earlier:
        status, reason = "kept", f"{reason}; the day's earlier published recommendations are kept"
    receipt = {
        "run_id": run_id,
        "status": status,
        "published": record.published,
        "reason": reason,
        "recommendation_rows": outcome.rows,
        "producer": (produced_by or {}).get("candidate"),
        "champion": current["run_id"] if current else None,
        "warehouse": engine.url.render_as_string(hide_password=True),
    }
    write_json(ws.publish_receipt, receipt)
    page = write_run_page(ws, params, receipt, quality, metrics, recs)
    log.info("publish: %s (%s); run page %s", status, reason, page.as_uri())
    return receipt

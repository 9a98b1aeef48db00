"""The `publish` stage: the champion/challenger decision, then an atomic write to the warehouse.

The baseline half of the gate was decided by `evaluate`; the champion half needs the warehouse, which
DVC cannot track, so it lives here. Whatever the decision, the run is recorded with its reason;
recommendation rows are written only for a published (or force-published) run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from metarec_tasks.evaluate import MODEL, lower_is_better
from metarec_tasks.params import Params
from metarec_tasks.paths import Workspace
from metarec_tasks.warehouse import RunRecord, champion, connect, publish_run

log = logging.getLogger(__name__)


def file_md5(path: Path) -> str | None:
    """The same digest DVC records for a file output, so warehouse rows match `dvc.lock`."""
    if not path.is_file():
        return None
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def decide(
    gate: dict[str, Any],
    challenger: float,
    current: dict[str, Any] | None,
    metric: str,
    tolerance: float,
    force: bool,
) -> tuple[str, str]:
    """(status, reason): published, rejected, or forced."""
    if not gate.get("passed"):
        reason = f"gate failed: {gate.get('reason')}"
    elif current is not None and current["primary_metric"] == metric and current["primary_value"] is not None:
        worse_by = challenger - current["primary_value"]
        if not lower_is_better(metric):
            worse_by = -worse_by
        if worse_by > tolerance:
            reason = (
                f"challenger {metric} {challenger:.4f} is worse than champion {current['run_id']} "
                f"({current['primary_value']:.4f}) by {worse_by:.4f} > tolerance {tolerance}"
            )
        else:
            return "published", f"{gate['reason']}; within {tolerance} of champion {current['run_id']}"
    else:
        return "published", f"{gate['reason']}; no champion yet"
    if force:
        return "forced", f"force_publish overrode: {reason}"
    return "rejected", reason


def promote_champion(model_file: Path, champion_file: Path) -> None:
    """Keep a copy of a published model where `meta.warm_start` finds it (atomic, no torch import)."""
    champion_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = champion_file.with_suffix(champion_file.suffix + ".tmp")
    shutil.copyfile(model_file, tmp)
    os.replace(tmp, champion_file)


def quality_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The compact data-quality summary the warehouse keeps: every batch check (per file or day) with
    its observed value, one row per quarantine reason, and the overall valid-row count."""
    rows = [
        {
            "scope": c["scope"],
            "check_name": c["check"],
            "observed": float(c["observed"]),
            "rows": int(c.get("rows", 0)),
            "passed": bool(c["passed"]),
        }
        for c in report.get("checks", [])
    ]
    rows += [
        {
            "scope": "all",
            "check_name": f"quarantined:{reason}",
            "observed": float(count),
            "rows": int(report["rows_in"]),
            "passed": True,  # row failures are quarantined; the batch checks above decide the run
        }
        for reason, count in sorted(report.get("reasons", {}).items())
    ]
    rows.append(
        {
            "scope": "all",
            "check_name": "rows_valid",
            "observed": float(report["rows_valid"]),
            "rows": int(report["rows_in"]),
            "passed": bool(report.get("passed", True)),
        }
    )
    return rows


def run_publish(params: Params, root: Path) -> dict[str, Any]:
    ws = Workspace(root)
    metrics = json.loads(ws.metrics.read_text())
    gate = json.loads(ws.gate.read_text())
    quality = json.loads(ws.data_quality_report.read_text())
    recs = pd.read_parquet(ws.predictions / "recommendations.parquet")
    metric = params.evaluate.primary_metric
    value = float(metrics["predictors"][MODEL][metric])
    run_id = params.run.run_id

    engine = connect(params.publish.url_for(root))
    current = champion(engine, exclude_run=run_id)
    status, reason = decide(
        gate, value, current, metric, params.publish.champion_tolerance, params.publish.force
    )
    record = RunRecord(
        run_id=run_id,
        logical_date=params.run.run_date,
        status=status,
        published=status in ("published", "forced"),
        forced=status == "forced",
        gate_passed=bool(gate.get("passed")),
        gate_reason=reason,
        primary_metric=metric,
        primary_value=value,
        algorithm=params.meta.algorithm,
        params=params.model_dump(mode="json", by_alias=True),
        metrics=metrics,
        data_hash=file_md5(ws.validated / "events.parquet"),
        model_hash=file_md5(ws.model_file),
    )
    written = publish_run(engine, record, recs, quality_rows(quality))
    if record.published:  # the new champion: where tomorrow's `meta.warm_start` starts from
        promote_champion(ws.model_file, root / params.meta.champion_model)
    receipt = {
        "run_id": run_id,
        "status": status,
        "published": record.published,
        "reason": reason,
        "recommendation_rows": written,
        "champion": current["run_id"] if current else None,
        "warehouse": engine.url.render_as_string(hide_password=True),
    }
    ws.publish_receipt.write_text(json.dumps(receipt, indent=2))
    log.info("publish: %s (%s)", status, reason)
    return receipt

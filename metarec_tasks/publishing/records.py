"""What a run record carries besides the decision: file digests (as in `dvc.lock`), the compact
data-quality summary, and the producer of the published rows."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


def file_md5(path: Path) -> str | None:
    """The same digest DVC records for a file output, so warehouse rows match `dvc.lock`."""
    if not path.is_file():
        return None
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


PART_FILES = {  # Workspace properties
    "meta": "rank_model_file",
    "transfer": "rank_pretrained_file",
    "student": "student_model_file",
}


def producer_row(producer: dict[str, Any], params: Any, ws: Any) -> dict[str, Any]:
    """Lineage of the published rows: the candidate, its parts (algorithms and knobs), the model
    files they read (md5, as in `dvc.lock`), and the blend's weights."""
    algorithms = {}
    hashes = {}
    for name, part in producer["parts"].items():
        kind = part["kind"]
        algorithms[name] = params.ranking.meta.algorithm if kind == "meta" else name
        if kind == "meta" and name == "rating_model":
            hashes[name] = file_md5(ws.model_file)
        elif kind in PART_FILES:
            hashes[name] = file_md5(getattr(ws, PART_FILES[kind]))
    return {
        "candidate": producer["candidate"],
        "kind": producer["kind"],
        "parts": {name: {**part, "algorithm": algorithms[name]} for name, part in producer["parts"].items()},
        "model_hashes": hashes,
        "blend": producer.get("blend"),
    }

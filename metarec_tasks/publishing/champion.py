"""The champion/challenger decision, and keeping the champion's model where warm start finds it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from metarec_tasks.evaluation.tables import lower_is_better
from metarec_tasks.files import copy_file


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
    elif current is None:
        return "published", f"{gate['reason']}; no champion yet"
    else:
        return "published", f"{gate['reason']}; champion {current['run_id']} was judged on another metric"
    if force:
        return "forced", f"force_publish overrode: {reason}"
    return "rejected", reason


def promote_champion(model_file: Path, champion_file: Path) -> None:
    """Keep a copy of a published model where `meta.warm_start` finds it (atomic, no torch import)."""
    copy_file(model_file, champion_file)

"""The champion/challenger decisions, and keeping the champion's model where warm start finds it.

- `decide_challenger`: the published top-K — the night's selected candidate against the champion;
- `decide`: `ranking.objective` rating — the rating model must pass the gate and the champion.
"""

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


def decide_challenger(
    selection: dict[str, Any], current: dict[str, Any] | None, tolerance: float, force: bool
) -> tuple[str, str]:
    """(status, reason) for the night's challenger — the best candidate on validation users —
    against the current champion of the same source on the same metric: published, rejected (the
    champion's rows stay), or forced. A first run always publishes: never nothing."""
    metric, value, name = selection["metric"], selection["value"], selection["challenger"]
    kind = selection["challenger_kind"] + (", a baseline" if selection["challenger_is_baseline"] else "")
    what = f"challenger {name} ({kind})"
    versus = ""
    if selection.get("best_single_baseline"):
        versus = (
            f"; vs the best single baseline {selection['best_single_baseline']}: "
            f"{selection['difference']:+.4f} (Wilcoxon p {selection['wilcoxon_p']:.2g})"
        )
    head = f"{what} {metric} {value:.4f} on holdout users{versus}"
    if current is None or current["primary_metric"] != metric or current["primary_value"] is None:
        return "published", f"{head}; no champion of this source on {metric} yet"
    worse_by = current["primary_value"] - value
    if worse_by <= tolerance:
        return "published", f"{head}; within {tolerance} of champion {current['run_id']}"
    reason = (
        f"{head}; worse than champion {current['run_id']} ({current['primary_value']:.4f}) by "
        f"{worse_by:.4f} > tolerance {tolerance}: the champion's recommendations stay"
    )
    return ("forced", f"force_publish overrode: {reason}") if force else ("rejected", reason)


def promote_champion(model_file: Path, champion_file: Path) -> None:
    """Keep a copy of a published model where `meta.warm_start` finds it (atomic, no torch import)."""
    copy_file(model_file, champion_file)

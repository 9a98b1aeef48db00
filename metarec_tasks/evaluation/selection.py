"""The night's selection as the holdout users see it: every candidate with its validation and
holdout Recall@K (95% CIs), the challenger, and a paired test against the best single baseline;
with a student, the student against its teacher (Recall@K, paired test, scoring time).

The choice itself was made on validation users in `finetune` (`metarec_tasks/selection`); nothing
here changes it — holdout users only report how good it was.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from metarec_tasks.evaluation.metrics import mean_ci95
from metarec_tasks.evaluation.tables import per_user_catalog
from metarec_tasks.logs.contract import USER_KEY
from metarec_tasks.params import EvaluateParams

SELECTED = "selected"  # the challenger's holdout lists (personalization/ranking.py writes them)
STUDENT_KIND = "student"  # the candidate distilled from the challenger (selection/distill.py)


def selection_report(
    selection: dict[str, Any],
    topk: pd.DataFrame,
    holdout: pd.DataFrame,
    ep: EvaluateParams,
    timing: dict[str, Any] | None = None,
) -> dict[str, Any]:
    metric = f"catalog_recall@{ep.catalog_k}"
    kinds = {name: c["kind"] for name, c in selection["candidates"].items()}
    if selection.get("blend"):
        kinds["blend"] = "blend"
    per_user = {
        name: per_user_catalog(topk, holdout, name, ep).set_index(USER_KEY)[metric]
        for name in [*kinds, SELECTED]
    }
    rows = []
    for name, kind in kinds.items():
        values = per_user[name].to_numpy(float)
        mean, half = mean_ci95(values) if len(values) else (float("nan"), float("nan"))
        rows.append(
            {
                "candidate": name,
                "kind": kind,
                "validation": selection["validation_recall"].get(name, float("nan")),
                "holdout": mean,
                "holdout_ci95": half,
            }
        )
    baselines = [r for r in rows if r["kind"] == "baseline"]
    best = (
        max(baselines, key=lambda r: np.nan_to_num(r["validation"], nan=-1.0))["candidate"]
        if baselines
        else None
    )
    challenger = selection["challenger"]
    report = {
        "metric": metric,
        "challenger": challenger,
        "challenger_kind": kinds[challenger],
        "challenger_is_baseline": kinds[challenger] == "baseline",
        "value": float(per_user[SELECTED].mean()) if len(per_user[SELECTED]) else float("nan"),
        "best_single_baseline": best,
        "candidates": rows,
    }
    if best is not None:
        report |= paired(per_user[SELECTED], per_user[best])
    students = [name for name, kind in kinds.items() if kind == STUDENT_KIND]
    if students:
        report["distill"] = distill_report(students[0], selection, per_user, timing or {})
    return report


def distill_report(
    student: str, selection: dict[str, Any], per_user: dict[str, pd.Series], timing: dict[str, Any]
) -> dict[str, Any]:
    """The student against its teacher on holdout users: Recall@K of each (95% CI), the paired test,
    and the scoring time of each (ms per 1,000 users, measured by finetune on the same users)."""
    teacher = selection["candidates"][student]["knobs"]["teacher"]
    out: dict[str, Any] = {"student": student, "teacher": teacher}
    for role, name in (("student", student), ("teacher", teacher)):
        values = per_user[name].to_numpy(float)
        mean, half = mean_ci95(values) if len(values) else (float("nan"), float("nan"))
        out[f"{role}_holdout"], out[f"{role}_holdout_ci95"] = mean, half
    ms = timing.get("ms_per_1000_users", {})
    out["student_ms_per_1000_users"] = ms.get(student, float("nan"))
    out["teacher_ms_per_1000_users"] = ms.get(teacher, float("nan"))
    return out | paired(per_user[student], per_user[teacher])


def paired(challenger: pd.Series, baseline: pd.Series) -> dict[str, float]:
    """Challenger − baseline per holdout user: mean difference and the Wilcoxon signed-rank p."""
    joined = pd.concat([challenger.rename("a"), baseline.rename("b")], axis=1).dropna()
    diff = (joined["a"] - joined["b"]).to_numpy()
    p = float(stats.wilcoxon(diff).pvalue) if np.any(diff != 0) else 1.0
    return {
        "difference": float(diff.mean()) if len(diff) else float("nan"),
        "wilcoxon_p": p,
        "paired_users": len(diff),
    }

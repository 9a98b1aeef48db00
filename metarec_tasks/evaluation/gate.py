"""The gate: does the model beat every non-meta baseline on the primary metric (and, where asked,
the top-K baselines on full-catalog recall)? A pure function of the evaluate stage's inputs, so DVC
can cache it; the comparison with the current champion needs the warehouse and happens in `publish`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from metarec_tasks.evaluation.tables import MODEL, lower_is_better
from metarec_tasks.params import EvaluateParams


def gate(results: dict[str, dict[str, float]], ep: EvaluateParams) -> dict[str, Any]:
    """Does the model beat every gate baseline on the primary metric?"""
    name = ep.primary_metric
    missing = sorted(b for b in [MODEL, *ep.gate_baselines] if name not in results.get(b, {}))
    if missing:
        return {
            "passed": False,
            "primary_metric": name,
            "reason": f"primary metric {name} missing for predictors {missing}",
        }
    model_value = results[MODEL][name]
    baselines = {b: results[b][name] for b in ep.gate_baselines}
    pick = min if lower_is_better(name) else max
    best_name = pick(baselines, key=baselines.get)
    best = baselines[best_name]
    improvement = (best - model_value) if lower_is_better(name) else (model_value - best)
    passed = bool(np.isfinite(model_value) and improvement > 0)
    verb = "beats" if passed else "does not beat"
    overlap = cis_overlap(results[MODEL], results[best_name], name)
    noise = {True: " (95% CIs overlap: within noise)", False: " (95% CIs apart)", None: ""}[overlap]
    return {
        "passed": passed,
        "primary_metric": name,
        "model": model_value,
        "best_baseline": best_name,
        "baseline": best,
        "improvement": improvement,
        "relative_improvement": improvement / abs(best) if best else float("nan"),
        "ci_overlap": overlap,
        "reason": f"model {name} {model_value:.4f} {verb} best baseline {best_name} {best:.4f}{noise}",
    }


def cis_overlap(a: dict[str, float], b: dict[str, float], metric: str) -> bool | None:
    """Do the two predictors' 95% confidence intervals of `metric` overlap (None: no CI known)? A
    "beats" whose intervals overlap is a point estimate, not a finding, and the reason says so."""
    ca, cb = a.get(f"{metric}_ci95"), b.get(f"{metric}_ci95")
    if ca is None or cb is None or not (np.isfinite(ca) and np.isfinite(cb)):
        return None
    return bool(abs(a[metric] - b[metric]) <= ca + cb)


def catalog_gate(decision: dict[str, Any], results: dict[str, dict[str, float]], ep: EvaluateParams):
    """The published top-K must also beat `evaluate.catalog_gate_baselines` on full-catalog recall."""
    metric = f"catalog_recall@{ep.catalog_k}"
    if not ep.catalog_gate_baselines:
        return decision
    rivals = {b: results.get(b, {}).get(metric, float("nan")) for b in ep.catalog_gate_baselines}
    model_value = results.get(MODEL, {}).get(metric, float("nan"))
    beaten = [b for b, v in rivals.items() if np.isfinite(v) and model_value > v]
    passed = len(beaten) == len(rivals) and np.isfinite(model_value)
    note = (
        f"; top-K {metric} {model_value:.4f} "
        + ("beats " if passed else "does not beat all of ")
        + str({b: round(v, 4) for b, v in rivals.items()})
    )
    return {
        **decision,
        "passed": bool(decision["passed"] and passed),
        "catalog": {"metric": metric, "model": model_value, "baselines": rivals, "passed": bool(passed)},
        "reason": decision["reason"] + note,
    }

"""The `evaluate` stage: score every predictor on the holdout users and decide if the model is good enough.

Reads the holdout predictions, top-K lists and selection of `finetune`; writes `metrics.json` (every
predictor, every metric, with 95% CIs over users), `gate.json` (the meta model against the non-meta
baselines, and the night's selection: every candidate on validation and holdout users, the
challenger, a paired test against the best single baseline; the student against its teacher:
holdout Recall@K and scoring ms per 1,000 users),
the cold-start and scenario breakdowns (DVC plots) and `report.md` with its charts.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pandas as pd

from metarec_tasks.evaluation.gate import catalog_gate, gate
from metarec_tasks.evaluation.report import write_report
from metarec_tasks.evaluation.selection import selection_report
from metarec_tasks.evaluation.tables import (
    breakdown,
    per_user_catalog,
    per_user_scores,
    predictor_columns,
    scenario_of,
    summarize,
    support_bucket,
)
from metarec_tasks.files import write_csv, write_json
from metarec_tasks.logs.contract import ITEM_KEY, USER_KEY
from metarec_tasks.params import Params
from metarec_tasks.paths import Workspace

log = logging.getLogger(__name__)


def headline(results: dict[str, dict[str, float]], decision: dict[str, Any], ep) -> dict[str, Any]:
    """A handful of numbers, so `dvc metrics show` stays one readable row."""
    chosen = decision.get("selection", {})
    model = results.get("model", {})
    return {
        "challenger": chosen.get("challenger"),
        f"selected.catalog_recall@{ep.catalog_k}": chosen.get("value"),
        "vs_best_single_baseline": chosen.get("difference"),
        f"model.{ep.primary_metric}": model.get(ep.primary_metric),
        "model.mae": model.get("mae"),
        "meta_gate_passed": bool(decision.get("passed")),
    }


def run(params: Params, ws: Workspace) -> dict[str, Any]:
    ep = params.evaluate
    holdout = pd.read_parquet(ws.holdout_predictions)
    topk_path = ws.holdout_topk
    topk = (
        pd.read_parquet(topk_path)
        if topk_path.exists()
        else pd.DataFrame(columns=[USER_KEY, "predictor", "rank", ITEM_KEY])
    )

    results, per_user = {}, {}
    for name, column in predictor_columns(holdout).items():
        per_user[name] = per_user_scores(holdout, column, ep)
        results[name] = summarize(per_user[name])
    for name in topk["predictor"].unique():
        catalog = summarize(per_user_catalog(topk, holdout, name, ep))
        results.setdefault(name, {}).update({k: v for k, v in catalog.items() if k != "users"})
        results[name]["catalog_users"] = catalog["users"]

    scenarios = breakdown(holdout, topk, scenario_of(holdout), ep)
    curve = breakdown(holdout, topk, support_bucket(holdout["support_size"]), ep)
    decision = catalog_gate(gate(results, ep), results, ep)
    if ws.selection.is_file():  # the night's top-K candidates, chosen on validation users
        timing = json.loads(ws.distill_timing.read_text()) if ws.distill_timing.is_file() else {}
        selection = json.loads(ws.selection.read_text())
        decision["selection"] = selection_report(selection, topk, holdout, ep, timing)
    report = {
        "primary_metric": ep.primary_metric,
        "predictors": results,
        "gate": decision,
        "scenarios": scenarios.to_dict(orient="records"),
    }

    ws.plots.mkdir(parents=True, exist_ok=True)
    write_json(ws.metrics, report)
    write_json(ws.headline, headline(results, decision, ep))
    write_json(ws.gate, decision)
    write_csv(curve.rename(columns={"group": "support_size"}), ws.cold_start_curve)
    write_csv(scenarios.rename(columns={"group": "scenario"}), ws.scenarios)
    write_report(ws, params, results, decision, curve, scenarios)
    log.info("evaluate: %s", decision["reason"])
    return report

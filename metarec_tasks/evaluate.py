"""The `evaluate` stage: score every predictor on the holdout users and decide if the model is good enough.

Every `pred_<name>` column of the holdout predictions is a predictor scored on the same query rows,
and every predictor in `holdout_topk.parquet` is ranked over the same full catalog, so the model and
the baselines are compared on identical ground. Metrics are averaged over users (each holdout user
counts once) with 95% confidence intervals. The gate here checks the model against the non-meta
baselines — a pure function of this stage's inputs, so DVC can cache it; the comparison with the
current champion needs the warehouse and happens in `publish`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metarec_tasks import metrics as m
from metarec_tasks.logs.contract import ITEM_KEY, USER_KEY
from metarec_tasks.params import EvaluateParams, Params
from metarec_tasks.paths import Workspace
from metarec_tasks.report import write_report

log = logging.getLogger(__name__)

MODEL = "model"
SUPPORT_BUCKETS = (1, 3, 5, 10, 20)
LOWER_IS_BETTER_METRICS = ("mae", "rmse")


def lower_is_better(metric: str) -> bool:
    return metric in LOWER_IS_BETTER_METRICS


def predictor_columns(holdout: pd.DataFrame) -> dict[str, str]:
    return {c.removeprefix("pred_"): c for c in holdout.columns if c.startswith("pred_")}


def per_user_scores(holdout: pd.DataFrame, column: str, ep: EvaluateParams) -> pd.DataFrame:
    """One row per holdout user: every query-set metric of one predictor."""
    rows = []
    for user, group in holdout.groupby(USER_KEY, sort=True):
        truth, pred = group["value"].to_numpy(float), group[column].to_numpy(float)
        row = {
            USER_KEY: user,
            "mae": float(np.mean(np.abs(truth - pred))),
            "rmse": float(np.sqrt(np.mean((truth - pred) ** 2))),
        }
        for k in ep.ndcg_ks:
            row[f"ndcg@{k}"] = m.ndcg_graded(truth, pred, k)
        relevant = m.top_rated_relevance(truth, ep.binary_relevant)
        binary = m.binary_metrics(relevant, pred, ep.binary_k)
        row |= {f"bin_{name}" if name.startswith("ndcg") else name: v for name, v in binary.items()}
        rows.append(row)
    return pd.DataFrame(rows)


def per_user_catalog(
    topk: pd.DataFrame, holdout: pd.DataFrame, predictor: str, ep: EvaluateParams
) -> pd.DataFrame:
    """Full-catalog Recall/nDCG@K per holdout user with at least one relevant held-out item."""
    relevant = holdout[holdout["value"] >= ep.relevance_threshold].groupby(USER_KEY)[ITEM_KEY].agg(set)
    ranked = (
        topk[topk["predictor"] == predictor]
        .sort_values([USER_KEY, "rank"])
        .groupby(USER_KEY)[ITEM_KEY]
        .agg(list)
    )
    rows = []
    for user, items in relevant.items():
        scores = m.catalog_metrics(ranked.get(user, []), items, ep.catalog_k)
        rows.append({USER_KEY: user, **{f"catalog_{k}": v for k, v in scores.items()}})
    return pd.DataFrame(rows)


def summarize(per_user: pd.DataFrame) -> dict[str, float]:
    """Mean and 95% CI half-width of every metric column, plus the number of users."""
    out: dict[str, float] = {"users": len(per_user)}
    for column in per_user.columns.drop(USER_KEY):
        mean, half = m.mean_ci95(per_user[column].to_numpy(float))
        out[column], out[f"{column}_ci95"] = mean, half
    return out


def scenario_of(holdout: pd.DataFrame) -> pd.Series:
    user = np.where(holdout["user_new"], "new_user", "existing_user")
    item = np.where(holdout["item_new"], "new_item", "existing_item")
    return pd.Series(user, index=holdout.index) + "/" + pd.Series(item, index=holdout.index)


def support_bucket(sizes: pd.Series) -> pd.Series:
    """The largest bucket in SUPPORT_BUCKETS not above the support size: the cold-start curve's x."""
    edges = np.asarray(SUPPORT_BUCKETS)
    idx = np.searchsorted(edges, sizes.to_numpy(), side="right") - 1
    return pd.Series(edges[np.clip(idx, 0, len(edges) - 1)], index=sizes.index)


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
    return {
        "passed": passed,
        "primary_metric": name,
        "model": model_value,
        "best_baseline": best_name,
        "baseline": best,
        "improvement": improvement,
        "relative_improvement": improvement / abs(best) if best else float("nan"),
        "reason": f"model {name} {model_value:.4f} {verb} best baseline {best_name} {best:.4f}",
    }


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


def run_evaluate(params: Params, root: Path) -> dict[str, Any]:
    ws = Workspace(root)
    ep = params.evaluate
    holdout = pd.read_parquet(ws.predictions / "holdout.parquet")
    topk_path = ws.predictions / "holdout_topk.parquet"
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

    scenarios = _breakdown(holdout, scenario_of(holdout), ep)
    curve = _breakdown(holdout, support_bucket(holdout["support_size"]), ep)
    decision = catalog_gate(gate(results, ep), results, ep)
    report = {
        "primary_metric": ep.primary_metric,
        "predictors": results,
        "gate": decision,
        "scenarios": scenarios.to_dict(orient="records"),
    }

    ws.plots.mkdir(parents=True, exist_ok=True)
    ws.metrics.write_text(json.dumps(report, indent=2, default=float))
    ws.gate.write_text(json.dumps(decision, indent=2))
    curve.rename(columns={"group": "support_size"}).to_csv(ws.plots / "cold_start_curve.csv", index=False)
    scenarios.rename(columns={"group": "scenario"}).to_csv(ws.plots / "scenarios.csv", index=False)
    write_report(ws, params, results, decision, curve, scenarios)
    log.info("evaluate: %s", decision["reason"])
    return report


def _breakdown(holdout: pd.DataFrame, groups: pd.Series, ep: EvaluateParams) -> pd.DataFrame:
    """Primary metric and MAE per predictor within each group (scenario or support-size bucket)."""
    rows = []
    columns = predictor_columns(holdout)
    for group, part in holdout.groupby(groups.to_numpy(), sort=True):
        row: dict[str, Any] = {"group": group, "users": int(part[USER_KEY].nunique()), "rows": len(part)}
        for name, column in columns.items():
            scores = per_user_scores(part, column, ep)
            row[f"{name}.mae"] = float(scores["mae"].mean())
            if ep.primary_metric in scores:
                row[f"{name}.{ep.primary_metric}"] = float(scores[ep.primary_metric].mean())
        rows.append(row)
    return pd.DataFrame(rows)

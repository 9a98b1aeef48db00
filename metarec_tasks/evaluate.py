"""The `evaluate` stage: score every predictor on the holdout users and decide if the model is good enough.

Every `pred_<name>` column of the holdout predictions is a predictor scored on the same rows, so the
model and the baselines can only be compared fairly. The gate here checks the model against the
baselines (a pure function of this stage's inputs, so DVC can cache it); the comparison with the
current champion needs the warehouse and happens in `publish`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metarec_tasks.finetune import NO_ADAPT_COLUMN
from metarec_tasks.logs.contract import USER_KEY
from metarec_tasks.params import EvaluateParams, Params
from metarec_tasks.paths import Workspace

log = logging.getLogger(__name__)

MODEL = "model"
LOWER_IS_BETTER = {"mae": True, "rmse": True, "ndcg": False}
SUPPORT_BUCKETS = (1, 3, 5, 10, 20)


def predictor_columns(holdout: pd.DataFrame) -> dict[str, str]:
    return {c.removeprefix("pred_"): c for c in holdout.columns if c.startswith("pred_")}


def mae(truth: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(np.abs(truth - pred))) if len(truth) else float("nan")


def rmse(truth: np.ndarray, pred: np.ndarray) -> float:
    return float(np.sqrt(np.mean((truth - pred) ** 2))) if len(truth) else float("nan")


def ndcg_graded(truth: np.ndarray, pred: np.ndarray, k: int) -> float:
    """nDCG@k of one user's query items ranked by prediction, gain 2^rating − 1 (MeLU's definition).

    Ties in the prediction are broken pessimistically (the lower true rating first), so a constant
    predictor cannot score well by luck of the row order.
    """
    order = np.lexsort((truth, -pred))[:k]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    gains = 2.0**truth - 1
    dcg = float(np.sum(gains[order] * discounts[: len(order)]))
    ideal = np.sort(gains)[::-1][:k]
    idcg = float(np.sum(ideal * discounts[: len(ideal)]))
    return dcg / idcg if idcg > 0 else 0.0


def score(holdout: pd.DataFrame, column: str, k: int) -> dict[str, float]:
    truth, pred = holdout["value"].to_numpy(float), holdout[column].to_numpy(float)
    per_user = [
        ndcg_graded(g["value"].to_numpy(float), g[column].to_numpy(float), k)
        for _, g in holdout.groupby(USER_KEY, sort=False)
    ]
    return {
        "mae": mae(truth, pred),
        "rmse": rmse(truth, pred),
        "ndcg": float(np.mean(per_user)) if per_user else float("nan"),
        "users": int(holdout[USER_KEY].nunique()),
        "rows": len(holdout),
    }


def scenario_of(holdout: pd.DataFrame) -> pd.Series:
    user = np.where(holdout["user_new"], "new_user", "existing_user")
    item = np.where(holdout["item_new"], "new_item", "existing_item")
    return pd.Series(user, index=holdout.index) + "/" + pd.Series(item, index=holdout.index)


def support_bucket(sizes: pd.Series) -> pd.Series:
    """The largest bucket in SUPPORT_BUCKETS not above the support size: the cold-start curve's x."""
    edges = np.asarray(SUPPORT_BUCKETS)
    idx = np.searchsorted(edges, sizes.to_numpy(), side="right") - 1
    return pd.Series(edges[np.clip(idx, 0, len(edges) - 1)], index=sizes.index)


def gate(metrics: dict[str, dict[str, float]], ep: EvaluateParams) -> dict[str, Any]:
    """Does the model beat every gate baseline on the primary metric?"""
    name = ep.primary_metric
    lower = LOWER_IS_BETTER[name]
    model_value = metrics[MODEL][name]
    baselines = {b: metrics[b][name] for b in ep.gate_baselines if b in metrics}
    missing = sorted(set(ep.gate_baselines) - set(baselines))
    if missing:
        return {"passed": False, "reason": f"gate baselines missing from predictions: {missing}"}
    best_name = min(baselines, key=baselines.get) if lower else max(baselines, key=baselines.get)
    best = baselines[best_name]
    improvement = (best - model_value) if lower else (model_value - best)
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


def run_evaluate(params: Params, root: Path) -> dict[str, Any]:
    ws = Workspace(root)
    ep = params.evaluate
    holdout = pd.read_parquet(ws.predictions / "holdout.parquet")
    columns = predictor_columns(holdout)
    metrics = {name: score(holdout, column, ep.ndcg_k) for name, column in columns.items()}

    scenarios = holdout.assign(scenario=scenario_of(holdout))
    by_scenario = {
        scenario: {name: mae(g["value"].to_numpy(float), g[c].to_numpy(float)) for name, c in columns.items()}
        | {"rows": len(g)}
        for scenario, g in scenarios.groupby("scenario")
    }
    decision = gate(metrics, ep)
    report = {
        "primary_metric": ep.primary_metric,
        "ndcg_k": ep.ndcg_k,
        "predictors": metrics,
        "scenarios": by_scenario,
        "gate": decision,
        "adaptation_gain_mae": metrics[MODEL]["mae"] - metrics[NO_ADAPT_COLUMN.removeprefix("pred_")]["mae"],
    }

    ws.plots.mkdir(parents=True, exist_ok=True)
    ws.metrics.write_text(json.dumps(report, indent=2))
    ws.gate.write_text(json.dumps(decision, indent=2))
    _cold_start_curve(holdout, columns).to_csv(ws.plots / "cold_start_curve.csv", index=False)
    pd.DataFrame([{"scenario": s, **v} for s, v in by_scenario.items()]).to_csv(
        ws.plots / "scenarios.csv", index=False
    )
    log.info("evaluate: %s", decision["reason"])
    return report


def _cold_start_curve(holdout: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """MAE per support-size bucket for every predictor (one row per bucket)."""
    bucketed = holdout.assign(support_bucket=support_bucket(holdout["support_size"]))
    rows = []
    for bucket, g in bucketed.groupby("support_bucket"):
        rows.append(
            {
                "support_size": int(bucket),
                "rows": len(g),
                **{
                    name: mae(g["value"].to_numpy(float), g[c].to_numpy(float)) for name, c in columns.items()
                },
            }
        )
    return pd.DataFrame(rows)

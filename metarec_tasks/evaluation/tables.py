"""Per-user holdout tables: every predictor scored on the same rows, summarized with 95% CIs.

Every `pred_<name>` column of the holdout predictions is a predictor scored on the same query rows,
and every predictor in `holdout_topk.parquet` is ranked over the same full catalog, so the model and
the baselines are compared on identical ground; each holdout user counts once.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from metarec_tasks.evaluation import metrics as m
from metarec_tasks.logs.contract import ITEM_KEY, USER_KEY
from metarec_tasks.params import CATALOG_METRIC_STEMS, EvaluateParams, metric_names

MODEL = "model"
SUPPORT_BUCKETS = (1, 3, 5, 10, 20)
LOWER_IS_BETTER_METRICS = ("mae", "rmse")


def lower_is_better(metric: str) -> bool:
    return metric in LOWER_IS_BETTER_METRICS


def ranked_by(results: dict[str, dict[str, float]], metric: str) -> list[str]:
    """Predictor names, best first on `metric`; those without a finite value last, in their order."""
    sign = 1.0 if lower_is_better(metric) else -1.0

    def key(name: str) -> tuple[bool, float]:
        value = results[name].get(metric)
        finite = isinstance(value, int | float) and math.isfinite(value)
        return (not finite, sign * value if finite else 0.0)

    return sorted(results, key=key)


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


def user_mean_absolute_error(holdout: pd.DataFrame, column: str) -> float:
    """MAE of one predictor, each user's rows averaged first (as `per_user_scores` weighs users)."""
    return float((holdout["value"] - holdout[column]).abs().groupby(holdout[USER_KEY]).mean().mean())


def per_user_catalog(
    topk: pd.DataFrame, holdout: pd.DataFrame, predictor: str, ep: EvaluateParams
) -> pd.DataFrame:
    """Full-catalog Recall/nDCG@K per holdout user with at least one relevant held-out item (the
    relevant items are those of the `holdout` rows given, so a subset of rows gives the metrics
    against that subset's items)."""
    return _catalog_scores(_ranked_lists(topk, predictor), holdout, ep)


def _ranked_lists(topk: pd.DataFrame, predictor: str) -> pd.Series:
    """Each user's ranked item list of one top-K predictor."""
    return (
        topk[topk["predictor"] == predictor]
        .sort_values([USER_KEY, "rank"])
        .groupby(USER_KEY)[ITEM_KEY]
        .agg(list)
    )


def _catalog_scores(ranked: pd.Series, holdout: pd.DataFrame, ep: EvaluateParams) -> pd.DataFrame:
    relevant = holdout[holdout["value"] >= ep.relevance_threshold].groupby(USER_KEY)[ITEM_KEY].agg(set)
    rows = []
    for user, items in relevant.items():
        scores = m.catalog_metrics(ranked.get(user, []), items, ep.catalog_k)
        rows.append({USER_KEY: user, **{f"catalog_{k}": v for k, v in scores.items()}})
    columns = [USER_KEY, *(f"{stem}@{ep.catalog_k}" for stem in CATALOG_METRIC_STEMS)]
    return pd.DataFrame(rows, columns=columns)


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


def breakdown(
    holdout: pd.DataFrame, topk: pd.DataFrame, groups: pd.Series, ep: EvaluateParams
) -> pd.DataFrame:
    """Per group (scenario or support-size bucket; `groups` is aligned with the holdout rows): MAE
    and the primary metric, when it is a query-set metric, of every rating predictor, and the
    full-catalog metrics of every top-K predictor, as `<predictor>.<metric>` columns.

    The catalog metrics of a group score each of its users' top-K lists against the user's relevant
    held-out items within the group: all of them for a support-size bucket (a user's rows share one
    support size), only the new (or existing) items for a scenario split by item.
    """
    rows = []
    columns = predictor_columns(holdout)
    ranked = {name: _ranked_lists(topk, name) for name in topk["predictor"].unique()}
    catalog_metrics = {f"{stem}@{ep.catalog_k}" for stem in CATALOG_METRIC_STEMS}
    query_ranking_metrics = set(metric_names(ep)) - catalog_metrics - {"mae"}
    for group, part in holdout.groupby(groups.to_numpy(), sort=True):
        row: dict[str, Any] = {"group": group, "users": int(part[USER_KEY].nunique()), "rows": len(part)}
        for name, column in columns.items():
            row[f"{name}.mae"] = user_mean_absolute_error(part, column)
            if ep.primary_metric in query_ranking_metrics:  # only then the per-user rankings are needed
                row[f"{name}.{ep.primary_metric}"] = float(
                    per_user_scores(part, column, ep)[ep.primary_metric].mean()
                )
        for name, lists in ranked.items():
            scores = _catalog_scores(lists, part, ep)
            for metric in scores.columns.drop(USER_KEY):
                row[f"{name}.{metric}"] = float(scores[metric].mean()) if len(scores) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)

"""Non-meta baselines, scored in the same harness as the meta-learned model.

Every report must be able to say whether meta-learning earned its keep, so each baseline predicts the
same holdout query rows from the same information (training users' ratings and the holdout user's
support set) and becomes one more `pred_<name>` column.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from metarec_tasks.logs.contract import ITEM_KEY, USER_KEY
from metarec_tasks.params import EvaluateParams

Baseline = Callable[[pd.DataFrame, pd.DataFrame, pd.DataFrame, EvaluateParams], np.ndarray]


def global_mean(
    train: pd.DataFrame, support: pd.DataFrame, query: pd.DataFrame, ep: EvaluateParams
) -> np.ndarray:
    """The mean training rating for every row: the floor any model must clear."""
    return np.full(len(query), float(train["value"].mean()))


def item_mean_user_bias(
    train: pd.DataFrame, support: pd.DataFrame, query: pd.DataFrame, ep: EvaluateParams
) -> np.ndarray:
    """Shrunk item mean plus the user's mean offset on their support set (a strong rating baseline)."""
    mu = float(train["value"].mean())
    k = ep.shrinkage
    stats = train.groupby(ITEM_KEY)["value"].agg(["sum", "count"])
    item_offset = (stats["sum"] - stats["count"] * mu) / (stats["count"] + k)
    support = support.assign(residual=support["value"] - mu - support[ITEM_KEY].map(item_offset).fillna(0))
    user_stats = support.groupby(USER_KEY)["residual"].agg(["sum", "count"])
    user_offset = user_stats["sum"] / (user_stats["count"] + k)
    prediction = (
        mu
        + query[ITEM_KEY].map(item_offset).fillna(0).to_numpy()
        + query[USER_KEY].map(user_offset).fillna(0).to_numpy()
    )
    return prediction.astype(float)


BASELINES: dict[str, Baseline] = {
    "global_mean": global_mean,
    "item_mean_user_bias": item_mean_user_bias,
}

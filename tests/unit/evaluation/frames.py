"""Small hand-made evaluation inputs shared by the evaluation unit tests: a holdout frame of three
users, the top-K lists of two predictors, and validated EvaluateParams with overrides."""

from __future__ import annotations

import numpy as np
import pandas as pd

from metarec_tasks.logs.contract import ITEM_KEY, USER_KEY
from metarec_tasks.params import EvaluateParams, load_params
from tests.helpers import REPO

DEFAULT = load_params(REPO / "params.yaml").evaluate


def evaluate_params(**update) -> EvaluateParams:
    """params.yaml's `evaluate` with `update` applied, validated (the primary-metric check runs)."""
    return EvaluateParams.model_validate({**DEFAULT.model_dump(), **update})


# (user, item, rating, support size, new user, new item); relevant (rating >= 4): u1 {a, c}, u2 {d},
# u3 {f, g}; support buckets 1, 3 and 10.
ROWS = [
    ("u1", "a", 5.0, 1, True, False),
    ("u1", "b", 2.0, 1, True, False),
    ("u1", "c", 4.0, 1, True, True),
    ("u2", "d", 5.0, 4, False, False),
    ("u2", "e", 1.0, 4, False, False),
    ("u3", "f", 4.0, 12, False, False),
    ("u3", "g", 5.0, 12, False, True),
    ("u3", "h", 3.0, 12, False, False),
]
TOPK = {  # predictor -> user -> ranked items
    "model": {"u1": ["a", "x"], "u2": ["d", "y"], "u3": ["z", "g"]},
    "popularity": {"u1": ["x", "y"], "u2": ["y", "d"], "u3": ["f", "g"]},
}


def holdout_frame() -> pd.DataFrame:
    frame = pd.DataFrame(ROWS, columns=[USER_KEY, ITEM_KEY, "value", "support_size", "user_new", "item_new"])
    frame["pred_model"] = frame["value"] + np.linspace(-0.5, 0.5, len(frame))
    frame["pred_global_mean"] = frame["value"].mean()
    return frame


def topk_frame() -> pd.DataFrame:
    rows = [
        {USER_KEY: user, "predictor": predictor, "rank": rank, ITEM_KEY: item}
        for predictor, lists in TOPK.items()
        for user, items in lists.items()
        for rank, item in enumerate(items, start=1)
    ]
    return pd.DataFrame(rows).iloc[::-1]  # the tables must sort by rank themselves

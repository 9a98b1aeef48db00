"""Padded per-task results → one long frame: the one helper for every table finetune writes."""

from __future__ import annotations

import numpy as np
import pandas as pd


def rows_frame(
    valid: np.ndarray,
    per_task: dict[str, np.ndarray],
    per_row: dict[str, np.ndarray],
    rank: bool = False,
) -> pd.DataFrame:
    """One row per True entry of `valid` [tasks, rows]: `per_task` columns [tasks] repeated,
    `per_row` columns [tasks, rows] picked; `rank` adds the 1-based position within the task."""
    t_idx, r_idx = np.nonzero(valid)
    columns = {name: np.asarray(values, dtype=object)[t_idx] for name, values in per_task.items()}
    if rank:
        columns["rank"] = r_idx + 1
    columns |= {name: np.asarray(values)[t_idx, r_idx] for name, values in per_row.items()}
    return pd.DataFrame(columns)

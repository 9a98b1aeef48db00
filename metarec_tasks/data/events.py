"""Reading the validated events for the stages that learn from them (`episodes`, `train`, `finetune`)."""

from __future__ import annotations

import pandas as pd

from metarec_tasks.logs.contract import EVENT_COLUMNS
from metarec_tasks.paths import Workspace


def load_events(ws: Workspace) -> pd.DataFrame:
    """The validated events, the contract's columns only: the lineage columns validate adds (partition,
    source file and line) are over half of the frame's bytes, and no model reads them."""
    return pd.read_parquet(ws.validated_events, columns=[c.name for c in EVENT_COLUMNS])

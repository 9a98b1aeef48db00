"""Loading the episodes stage's outputs into tensors, shared by `train` and `finetune`."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from metarec_tasks.data.features import Vocabulary
from metarec_tasks.data.text import text_lookup
from metarec_tasks.logs.contract import ITEM_KEY, USER_KEY
from metarec_tasks.meta.tasks import Catalog
from metarec_tasks.paths import Workspace


@dataclass
class EpisodeData:
    vocab: Vocabulary
    catalog: Catalog
    tasks: pd.DataFrame
    global_mean: float

    def split(self, name: str) -> pd.DataFrame:
        return self.tasks[self.tasks["split"] == name]


def load_episode_data(ws: Workspace, extra_events: pd.DataFrame | None = None) -> EpisodeData:
    """Tasks, vocabulary and a catalog that covers every user/item in them (and in `extra_events`)."""
    vocab = Vocabulary.from_json(json.loads(ws.vocab_file.read_text()))
    stats = json.loads(ws.episode_stats.read_text())
    tasks = pd.read_parquet(ws.tasks_file)
    users = pd.read_parquet(ws.validated_table("users"))
    items = pd.read_parquet(ws.validated_table("items"))
    names = vocab.item_features("text")
    table = pd.read_parquet(ws.item_text_file) if names and ws.item_text_file.exists() else None
    catalog = Catalog.build(vocab, users, items, text_lookup(table, names))
    seen = [tasks] if extra_events is None else [tasks, extra_events]
    catalog = catalog.with_missing(
        vocab,
        pd.concat([f[USER_KEY] for f in seen]).astype(str).unique().tolist(),
        pd.concat([f[ITEM_KEY] for f in seen]).astype(str).unique().tolist(),
    )
    return EpisodeData(vocab, catalog, tasks, float(stats["global_mean"]))

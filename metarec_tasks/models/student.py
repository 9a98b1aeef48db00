"""The distilled student: a FISM-like two-tower network that maps a support set to a catalog ranking.

- item tower: RankNet's `ItemTower` (item-ID embedding + categorical, multi-hot and text features,
  summed; a per-item bias) gives each item its output vector, and embeds the user's categorical
  features;
- user vector = the weighted mean of the support items' input vectors (an item-ID embedding plus a
  linear map of the item's tower vector, so an item new to the catalog still has one) + a learned
  gate × the mean input vector of the items the user rated low (a negative weight in the support
  rows marks one: the teacher reads them, so must the student) + the user's feature embedding;
- score(user, item) = <user vector, item vector> + item bias.

There is no per-user inner loop: the support set is read in one forward pass, so scoring a user
costs O(dim × items), not an adaptation (meta ranker) or O(items²) (EASE).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metarec_tasks.models.io import atomic_save, cpu_state, restore, safe_load
from metarec_tasks.models.ranking import ItemTower, RankDims
from metarec_tasks.models.rating import Features

STUDENT_FORMAT = "metarec-student-model/2"
ITEM_ID = "item_id"
USER_CAT = "user_cat"


class Student(nn.Module):
    def __init__(self, dims: RankDims, items: Features, users: Features):
        """`items`/`users`: the catalog's encoded feature rows, kept as buffers (not saved: they are
        the run's data, not weights; the items in the tower) so the student scores catalog rows
        directly."""
        super().__init__()
        self.dims = dims
        self.tower = ItemTower(dims, items)
        self.inputs = nn.Embedding(dims.n_item_ids, dims.dim)
        self.mix = nn.Linear(dims.dim, dims.dim, bias=False)
        self.low_gate = nn.Parameter(torch.zeros(()))  # weight of the low-rated items' mean vector
        nn.init.normal_(self.inputs.weight, std=0.05)
        self.register_buffer("user_cat", users[USER_CAT], persistent=False)

    @property
    def n_items(self) -> int:
        return len(self.tower.catalog()[ITEM_ID])

    def user_vectors(
        self, rows: torch.Tensor, weights: torch.Tensor, user_rows: torch.Tensor, table: torch.Tensor
    ) -> torch.Tensor:
        """[T, dim] from padded support rows [T, S] (-1 = padding), their weights (< 0: an item the
        user rated low) and the users' rows."""
        mask = rows >= 0
        safe = rows.clamp(min=0)
        ids = self.tower.catalog()[ITEM_ID][safe]
        vectors = self.inputs(ids) + self.mix(table[safe])
        w = torch.where(mask & (weights > 0), weights, torch.zeros_like(weights))
        pooled = (w[..., None] * vectors).sum(1) / w.sum(1, keepdim=True).clamp(min=1e-6)
        low = (mask & (weights < 0)).to(vectors.dtype)
        low_pooled = (low[..., None] * vectors).sum(1) / low.sum(1, keepdim=True).clamp(min=1.0)
        return pooled + self.low_gate * low_pooled + self.tower.users({USER_CAT: self.user_cat[user_rows]})

    def forward(
        self,
        rows: torch.Tensor,
        weights: torch.Tensor,
        user_rows: torch.Tensor,
        columns: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[T, n_items] scores of every catalog row, or [T, C] of the catalog rows `columns` [T, C]."""
        table, bias = self.tower.table()
        users = self.user_vectors(rows, weights, user_rows, table)
        if columns is None:
            return users @ table.T + bias
        safe = columns.clamp(min=0)
        return (users[:, None, :] * table[safe]).sum(-1) + bias[safe]


def save_student(path: Path, model: Student, metadata: dict[str, Any]) -> None:
    """The weights and shape (the catalog's features are the run's data, not saved)."""
    payload = {
        "format": STUDENT_FORMAT,
        "dims": asdict(model.dims),
        "state_dict": cpu_state(model.state_dict()),
    }
    atomic_save({**payload, "metadata": metadata}, path)


def load_student(
    path: Path, items: Features, users: Features, device: torch.device | str = "cpu"
) -> tuple[Student, dict[str, Any]]:
    """(student over this catalog's features, metadata); anything but a student file is refused."""
    payload = safe_load(path, device, STUDENT_FORMAT, "MetaRec student model file")
    model = restore(payload, path, lambda dims: Student(RankDims(**dims), items, users), "student model file")
    return model.to(device), payload["metadata"]

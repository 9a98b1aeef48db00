"""The run's item catalog inside a network: task rows carry only their catalog row (`ITEM_ROW`).

Both networks (the rating network's encoder, the ranker's item tower) keep the catalog's encoded item
features in `CatalogRows` and read a task row's features there, instead of every task row holding a
copy of its item's feature vectors: gathered per row, the 384-wide text features made a task batch's
memory grow with users × rows × feature width, and were most of a meta-step's time.
"""

from __future__ import annotations

import torch
from torch import nn

ITEM_ROW = "item_row"  # a task row's item feature: its catalog row


class CatalogRows(nn.Module):
    def __init__(self, items: dict[str, torch.Tensor] | None = None):
        """`items`: the catalog's encoded item feature rows, kept as non-persistent buffers: they move
        with the network (`.to(device)`) but are not saved with it — they are the run's data, not
        weights, so loading a model file takes the catalog again."""
        super().__init__()
        self.names = sorted(items or {})
        for name in self.names:
            self.register_buffer(_buffer(name), items[name], persistent=False)

    def features(self) -> dict[str, torch.Tensor]:
        """Every encoded item feature, [n_items, ...] per name."""
        if not self.names:
            raise RuntimeError("this network was built without the catalog's item features")
        return {name: getattr(self, _buffer(name)) for name in self.names}


def gather_rows(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """`table[rows]` ([*rows.shape, *row shape]) by `index_select`: its backward adds the rows'
    gradients with `index_add`, where indexing's backward, an accumulating `index_put`, was the
    largest part of a meta-step's backward (a catalog read per task row)."""
    return table.index_select(0, rows.reshape(-1)).reshape(*rows.shape, *table.shape[1:])


def _buffer(name: str) -> str:
    return f"catalog__{name.replace('.', '__')}"

"""Random padded tasks for a given network shape: what tests and the speed benchmark feed the
meta-learners when the question is "does the code compute the right thing, fast", not "does it learn".

Like real tasks, their rows name rows of a catalog (`random_items`, one row per item id), which the
network keeps (`RatingNet(dims, random_items(dims))`).
"""

from __future__ import annotations

import torch

from metarec_tasks.meta.tasks import InteractionSet, TaskBatch
from metarec_tasks.models.catalog import ITEM_ROW
from metarec_tasks.models.rating import Features, NetDims


def random_items(dims: NetDims, seed: int = 0) -> Features:
    """A random encoded catalog, row r holding item id r (`encode_items`' keys, float32 features)."""
    generator = torch.Generator().manual_seed(seed)
    n = dims.n_item_ids
    items = {"item_id": torch.arange(n), "item_cat": torch.zeros((n, 0), dtype=torch.long)}
    if dims.item_cat_sizes:
        items["item_cat"] = torch.stack(
            [torch.randint(0, size, (n,), generator=generator) for size in dims.item_cat_sizes], -1
        )
    for name, size in dims.item_multi_sizes.items():
        hot = (torch.rand((n, size), generator=generator) < 0.3).float()
        hot[..., 0] += 1.0  # never an all-zero row
        items[f"item_multi.{name}"] = hot / hot.sum(-1, keepdim=True)
    return items


def random_rows(
    dims: NetDims, n_tasks: int, width: int, dtype: torch.dtype, generator: torch.Generator, ragged: bool
) -> InteractionSet:
    """[n_tasks, width] rows of catalog rows 1.. (`random_items`), one user per task ([n_tasks, 1]);
    with `ragged`, task t has between 1 and `width` real rows (rest padded, reading row 0)."""
    lengths = (
        torch.randint(1, width + 1, (n_tasks,), generator=generator)
        if ragged
        else torch.full((n_tasks,), width)
    )
    mask = torch.arange(width)[None, :] < lengths[:, None]
    users = torch.stack(
        [torch.randint(0, n, (n_tasks,), generator=generator) for n in dims.user_cat_sizes], -1
    ).reshape(n_tasks, len(dims.user_cat_sizes))
    rows = torch.randint(1, dims.n_item_ids, (n_tasks, width), generator=generator)
    return InteractionSet(
        user={"user_cat": users[:, None, :]},
        item={ITEM_ROW: torch.where(mask, rows, 0)},
        target=torch.randint(1, 6, (n_tasks, width), generator=generator).to(dtype),
        mask=mask,
        item_rows=torch.where(mask, rows, -1),
    )


def random_task_batch(
    dims: NetDims,
    n_tasks: int,
    support: int,
    query: int,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    ragged: bool = True,
) -> TaskBatch:
    generator = torch.Generator().manual_seed(seed)
    return TaskBatch(
        user_ids=[f"u{t}" for t in range(n_tasks)],
        user_rows=torch.arange(n_tasks),
        support=random_rows(dims, n_tasks, support, dtype, generator, ragged),
        query=random_rows(dims, n_tasks, query, dtype, generator, ragged),
    )

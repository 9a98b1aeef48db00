"""Tiny random recommendation tasks (ragged, padded) and a tiny RatingNet, for meta-learning tests."""

from __future__ import annotations

import torch

from metarec_tasks.meta.tasks import InteractionSet, TaskBatch
from metarec_tasks.model import NetDims, RatingNet

DIMS = NetDims(
    user_cat_sizes=[4, 3],
    item_cat_sizes=[5],
    item_multi_sizes={"tags": 6},
    n_item_ids=12,
    embedding_dim=3,
    hidden=[8, 4],
    item_id_embedding=True,
    rating_offset=3.5,
)


def tiny_model(dtype: torch.dtype = torch.float64, seed: int = 0) -> RatingNet:
    torch.manual_seed(seed)
    model = RatingNet(DIMS).to(dtype)
    with torch.no_grad():  # a non-zero head, so every parameter gets a gradient
        model.head.weight.normal_(0, 0.3)
    return model


def random_rows(n_tasks: int, width: int, dtype: torch.dtype, generator: torch.Generator) -> InteractionSet:
    """Padded rows: task t has between 1 and `width` real rows."""
    lengths = torch.randint(1, width + 1, (n_tasks,), generator=generator)
    mask = torch.arange(width)[None, :] < lengths[:, None]
    users = torch.stack(
        [torch.randint(0, n, (n_tasks,), generator=generator) for n in DIMS.user_cat_sizes], -1
    )
    item_ids = torch.randint(1, DIMS.n_item_ids, (n_tasks, width), generator=generator)
    tags = torch.rand((n_tasks, width, 6), generator=generator, dtype=dtype)
    return InteractionSet(
        user={"user_cat": users[:, None, :].expand(n_tasks, width, -1).clone()},
        item={
            "item_cat": torch.randint(0, 5, (n_tasks, width, 1), generator=generator),
            "item_multi.tags": tags / tags.sum(-1, keepdim=True),
            "item_id": item_ids,
        },
        target=torch.randint(1, 6, (n_tasks, width), generator=generator).to(dtype),
        mask=mask,
        item_rows=torch.where(mask, item_ids, -1),
    )


def random_batch(
    n_tasks: int = 5, support: int = 7, query: int = 4, dtype: torch.dtype = torch.float64, seed: int = 0
) -> TaskBatch:
    generator = torch.Generator().manual_seed(seed)
    return TaskBatch(
        user_ids=[f"u{t}" for t in range(n_tasks)],
        user_rows=torch.arange(n_tasks),
        support=random_rows(n_tasks, support, dtype, generator),
        query=random_rows(n_tasks, query, dtype, generator),
    )

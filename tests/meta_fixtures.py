"""A tiny RatingNet over a random catalog and tiny ragged random tasks on it, for meta-learning tests
(float64 by default)."""

from __future__ import annotations

import torch

from metarec_tasks.meta.random_tasks import random_items, random_task_batch
from metarec_tasks.meta.tasks import TaskBatch
from metarec_tasks.models.rating import Features, NetDims, RatingNet
from metarec_tasks.params import MetaParams

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


def tiny_model(dtype: torch.dtype = torch.float64, seed: int = 0, items: Features | None = None) -> RatingNet:
    """Over `items` (encoded catalog rows), by default the random catalog `random_batch`'s rows name."""
    torch.manual_seed(seed)
    model = RatingNet(DIMS, random_items(DIMS) if items is None else items).to(dtype)
    with torch.no_grad():  # a non-zero head, so every parameter gets a gradient
        model.head.weight.normal_(0, 0.3)
    return model


def random_batch(
    n_tasks: int = 5, support: int = 7, query: int = 4, dtype: torch.dtype = torch.float64, seed: int = 0
) -> TaskBatch:
    return random_task_batch(DIMS, n_tasks, support, query, dtype, seed, ragged=True)


def meta_params(algorithm: str, adapt: str = "mlp", **extra) -> MetaParams:
    """Small, fast meta-learning settings shared by the algorithm tests."""
    base = dict(
        algorithm=algorithm,
        adapt=adapt,
        inner_steps=3,
        inner_lr=0.1,
        meta_lr=0.01,
        meta_batch_size=8,
        epochs=2,
        patience=2,
        patience_tasks=0,
        pretrain_epochs=0,
        pretrain_batch_size=8,
        first_order_epochs=1,
        multi_step_loss_epochs=3,
        ridge_lambda=1.0,
        weight_average_decay=0.0,
        support_subsample=False,
        amp=False,
        checkpoint_every=1,
        tasks_per_epoch=0,
    )
    return MetaParams(**{**base, **extra})

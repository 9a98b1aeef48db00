"""Meta-SGD (Li et al., 2017): MAML whose inner learning rate is learned, one per parameter entry.

The rates start at `meta.inner_lr`, are meta-learned with the initialization (second-order), and are
saved in the model file so fine-tuning adapts with exactly the rates training found.
"""

from __future__ import annotations

import torch
from torch import nn

from metarec_tasks.meta.base import InnerLoop, MetaAlgorithm, learned_key
from metarec_tasks.meta.functional import VECTORIZED, Engine
from metarec_tasks.meta.tasks import TaskBatch
from metarec_tasks.models.rating import split_params


class MetaSGD(MetaAlgorithm):
    name = "metasgd"

    def __init__(self, inner: InnerLoop, model: nn.Module, engine: Engine = VECTORIZED):
        super().__init__(inner, engine)
        fast, _ = split_params(model, inner.adapt)
        self.inner_lrs = nn.ParameterDict(
            {learned_key(n): nn.Parameter(torch.full_like(p.detach(), inner.lr)) for n, p in fast.items()}
        )

    def step_size(self, step: int, name: str) -> torch.Tensor:
        return self.inner_lrs[learned_key(name)]

    def meta_loss(self, model: nn.Module, batch: TaskBatch) -> torch.Tensor:
        path, shared = self.trajectory(model, batch.support, first_order=False)
        return self.engine.losses(model, path[-1], shared, batch.query).mean()

"""Reptile (Nichol et al., 2018): move the initialization towards the weights each task adapts to.

No backpropagation through the inner loop: the surrogate 0.5·‖θ − stopgrad(mean_t θ_t)‖² has gradient
θ − mean_t θ_t, which is Reptile's update direction, so the same optimizer (Adam) applies it like any
other meta-gradient. Parameters that do not adapt (`meta.adapt` = mlp or head leaves the embeddings
shared) have no Reptile direction; they get the first-order gradient of the query loss at the adapted
weights instead, so the embeddings keep learning as under first-order MAML.
"""

from __future__ import annotations

import torch
from torch import nn

from metarec_tasks.meta.base import MetaAlgorithm
from metarec_tasks.meta.tasks import TaskBatch
from metarec_tasks.models.rating import split_params


class Reptile(MetaAlgorithm):
    name = "reptile"

    def meta_loss(self, model: nn.Module, batch: TaskBatch) -> torch.Tensor:
        path, shared = self.trajectory(model, batch.support, first_order=True)
        fast, _ = split_params(model, self.inner.adapt)
        adapted = {k: v.detach() for k, v in path[-1].items()}
        surrogate = sum(0.5 * (fast[name] - adapted[name].mean(dim=0)).pow(2).sum() for name in fast)
        query = self.engine.losses(model, adapted, shared, batch.query).mean()
        # The query term trains only the shared parameters: `adapted` is detached.
        return surrogate + query

"""MAML (Finn et al., 2017) and its first-order variant, vectorized over tasks.

Second-order MAML backpropagates through the inner SGD steps; first-order MAML treats the inner
gradients as constants, which is cheaper and often as good on small recommendation tasks.
"""

from __future__ import annotations

import torch
from torch import nn

from metarec_tasks.meta.base import InnerLoop, MetaAlgorithm
from metarec_tasks.meta.functional import VECTORIZED, Engine
from metarec_tasks.meta.tasks import TaskBatch


class MAML(MetaAlgorithm):
    def __init__(self, inner: InnerLoop, first_order: bool = False, engine: Engine = VECTORIZED):
        super().__init__(inner, engine)
        self.first_order = first_order
        self.name = "fomaml" if first_order else "maml"

    def meta_loss(self, model: nn.Module, batch: TaskBatch) -> torch.Tensor:
        path, shared = self.trajectory(model, batch.support, self.first_order)
        return self.engine.losses(model, path[-1], shared, batch.query).mean()

"""MAML (Finn et al., 2017) and its first-order variant, vectorized over tasks.

Second-order MAML backpropagates through the inner SGD steps; first-order MAML treats the inner
gradients as constants, which is cheaper and often as good on small recommendation tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metarec_tasks.meta.base import InnerLoop, detached_split
from metarec_tasks.meta.functional import adapt_batch, query_losses
from metarec_tasks.meta.tasks import TaskBatch
from metarec_tasks.model import ParamDict, split_params


@dataclass(frozen=True)
class MAML:
    inner: InnerLoop
    first_order: bool = False

    @property
    def name(self) -> str:
        return "fomaml" if self.first_order else "maml"

    def meta_loss(self, model: torch.nn.Module, batch: TaskBatch) -> torch.Tensor:
        fast, shared = split_params(model, self.inner.adapt)
        losses = query_losses(
            model, fast, shared, batch.support, batch.query, self.inner.steps, self.inner.lr, self.first_order
        )
        return losses.mean()

    def adapt(self, model: torch.nn.Module, batch: TaskBatch, steps: int) -> tuple[ParamDict, ParamDict]:
        fast, shared = detached_split(model, self.inner.adapt)
        adapted = adapt_batch(model, fast, shared, batch.support, steps, self.inner.lr, first_order=True)
        return {k: v.detach() for k, v in adapted.items()}, shared

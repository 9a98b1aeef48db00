"""MAML++ (Antoniou et al., 2019): MAML made stable and cheaper to train.

Three of its fixes, each a knob in `params.yaml`:
- per-step, per-layer learned inner learning rates (LSLR), saved with the model;
- multi-step loss: the query loss after *every* inner step counts, with weights annealed towards the
  last step over `meta.multi_step_loss_epochs` epochs (early epochs get gradient at every depth);
- derivative-order annealing: first-order for the first `meta.first_order_epochs` epochs (cheap, stable),
  second-order afterwards.
Fine-tuning with more steps than were meta-trained reuses the last step's learned rates.
"""

from __future__ import annotations

import torch
from torch import nn

from metarec_tasks.meta.base import InnerLoop, MetaAlgorithm, learned_key
from metarec_tasks.meta.functional import VECTORIZED, Engine
from metarec_tasks.meta.tasks import TaskBatch
from metarec_tasks.models.rating import split_params


class MAMLPlusPlus(MetaAlgorithm):
    name = "mamlpp"

    def __init__(
        self,
        inner: InnerLoop,
        model: nn.Module,
        first_order_epochs: int,
        multi_step_loss_epochs: int,
        engine: Engine = VECTORIZED,
    ):
        super().__init__(inner, engine)
        fast, _ = split_params(model, inner.adapt)
        self.inner_lrs = nn.ParameterDict(
            {learned_key(n): nn.Parameter(torch.full((inner.steps,), inner.lr)) for n in fast}
        )
        self.first_order_epochs = first_order_epochs
        self.multi_step_loss_epochs = multi_step_loss_epochs
        self.epoch = 0

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def first_order(self) -> bool:
        return self.epoch < self.first_order_epochs

    def step_weights(self) -> list[float]:
        """Loss weight of each inner step: uniform at epoch 0, all on the last step once annealed."""
        steps = self.inner.steps
        if self.epoch >= self.multi_step_loss_epochs or steps == 1:
            return [0.0] * (steps - 1) + [1.0]
        early = (1.0 / steps) * (1.0 - self.epoch / self.multi_step_loss_epochs)
        return [early] * (steps - 1) + [1.0 - early * (steps - 1)]

    def step_size(self, step: int, name: str) -> torch.Tensor:
        rates = self.inner_lrs[learned_key(name)]
        return rates[min(step, rates.shape[0] - 1)]

    def meta_loss(self, model: nn.Module, batch: TaskBatch) -> torch.Tensor:
        path, shared = self.trajectory(model, batch.support, self.first_order)
        total = torch.zeros((), dtype=batch.query.target.dtype, device=batch.query.target.device)
        for weight, adapted in zip(self.step_weights(), path, strict=True):
            if weight > 0:
                total = total + weight * self.engine.losses(model, adapted, shared, batch.query).mean()
        return total

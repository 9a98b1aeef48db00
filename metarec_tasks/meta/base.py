"""The one interface every meta-learning algorithm implements.

Like RecBole's `calculate_loss`/`predict`: the trainer only ever calls `meta_loss` (to learn the
initialization), `adapt` (to personalize it) and `start_epoch` (for schedules such as MAML++'s), so
adding an algorithm never touches the trainer. An algorithm is an `nn.Module` so that learned state
(inner learning rates) is optimized with the model and saved in the same model file.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from metarec_tasks.meta.functional import VECTORIZED, Engine, Trajectory
from metarec_tasks.meta.tasks import InteractionSet, TaskBatch
from metarec_tasks.models.rating import ParamDict, split_params
from metarec_tasks.params import AdaptGroup


@dataclass(frozen=True)
class InnerLoop:
    adapt: AdaptGroup
    steps: int
    lr: float


class MetaAlgorithm(nn.Module):
    """Base class: plain SGD inner loop with a fixed learning rate, vectorized over tasks."""

    name = "base"

    def __init__(self, inner: InnerLoop, engine: Engine = VECTORIZED):
        super().__init__()
        self.inner = inner
        self.engine = engine

    def meta_loss(self, model: nn.Module, batch: TaskBatch) -> torch.Tensor:
        """Scalar loss whose backward gives the meta-gradient (for model and algorithm parameters)."""
        raise NotImplementedError

    def adapt(self, model: nn.Module, batch: TaskBatch, steps: int) -> tuple[ParamDict, ParamDict]:
        """(per-task adapted parameters with a leading task dim, shared parameters), detached."""
        fast, shared = split_params(model, self.inner.adapt)
        with torch.no_grad():  # the engine's inner steps enable grad for themselves; nothing else is tracked
            fast = {k: v.detach() for k, v in fast.items()}
            shared = {k: v.detach() for k, v in shared.items()}
            trajectory = self.engine.adapt(model, fast, shared, batch.support, steps, self.step_size, True)
        return {k: v.detach() for k, v in trajectory[-1].items()}, shared

    def start_epoch(self, epoch: int) -> None:
        """Called before every meta-training epoch; schedules (annealing) hook in here."""

    def step_size(self, step: int, name: str) -> torch.Tensor | float:
        return self.inner.lr

    # Shared helpers for subclasses.
    def trajectory(
        self, model: nn.Module, support: InteractionSet, first_order: bool
    ) -> tuple[Trajectory, ParamDict]:
        """Meta-training's inner loop: `inner.steps` steps on the support set, differentiable."""
        fast, shared = split_params(model, self.inner.adapt)
        path = self.engine.adapt(model, fast, shared, support, self.inner.steps, self.step_size, first_order)
        return path, shared


def learned_key(name: str) -> str:
    """Parameter names contain dots, which nn.ParameterDict keys may not."""
    return name.replace(".", "__")

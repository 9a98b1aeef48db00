"""The one interface every meta-learning algorithm implements.

Like RecBole's `calculate_loss`/`predict`: the trainer only ever calls `meta_loss` (to learn the
initialization) and `adapt` (to personalize it), so adding an algorithm never touches the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from metarec_tasks.meta.tasks import TaskBatch
from metarec_tasks.model import ParamDict, split_params
from metarec_tasks.params import AdaptGroup


@dataclass(frozen=True)
class InnerLoop:
    adapt: AdaptGroup
    steps: int
    lr: float


class MetaAlgorithm(Protocol):
    name: str

    def meta_loss(self, model: torch.nn.Module, batch: TaskBatch) -> torch.Tensor:
        """Mean query loss after inner-loop adaptation; backward gives the meta-gradient."""
        ...

    def adapt(self, model: torch.nn.Module, batch: TaskBatch, steps: int) -> tuple[ParamDict, ParamDict]:
        """(per-task adapted parameters with a leading task dim, shared parameters), detached."""
        ...


def detached_split(model: torch.nn.Module, adapt: AdaptGroup) -> tuple[ParamDict, ParamDict]:
    fast, shared = split_params(model, adapt)
    return ({k: v.detach() for k, v in fast.items()}, {k: v.detach() for k, v in shared.items()})

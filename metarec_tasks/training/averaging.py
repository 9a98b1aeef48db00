"""Model averaging in weight space: an exponential moving average of the meta-learned weights.

Polyak–Ruppert / SWA-style averaging (Izmailov et al., 2018): the average of the iterates along the
end of a noisy meta-training run sits in a flatter, better-generalising spot than any single iterate —
the seeds' "model averaging" applied to the checkpoints of one run. After every optimizer step

    average ← decay · average + (1 − decay) · weights          (`meta.weight_average_decay`; 0 = off)

and every epoch the loop validates both the current and the averaged weights, keeping whichever is
better on validation users — the average is used only where it helps there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class WeightAverage:
    def __init__(self, decay: float, modules: dict[str, nn.Module]):
        self.decay = decay
        self.modules = modules
        self.average = {name: _floats(module) for name, module in modules.items()}

    def update(self) -> None:
        with torch.no_grad():
            for name, module in self.modules.items():
                current = module.state_dict()
                for key, value in self.average[name].items():
                    value.mul_(self.decay).add_(current[key].detach(), alpha=1.0 - self.decay)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the modules for the duration of the block, then the current ones."""
        saved = {name: _floats(module) for name, module in self.modules.items()}
        self._load(self.average)
        try:
            yield
        finally:
            self._load(saved)

    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        return {
            name: {k: v.detach().cpu().clone() for k, v in avg.items()} for name, avg in self.average.items()
        }

    def load_state_dict(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        for name, avg in self.average.items():
            for key, value in avg.items():
                value.copy_(state[name][key])

    def _load(self, weights: dict[str, dict[str, torch.Tensor]]) -> None:
        with torch.no_grad():
            for name, module in self.modules.items():
                current = module.state_dict()
                for key, value in weights[name].items():
                    current[key].copy_(value)


def _floats(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items() if v.is_floating_point()}

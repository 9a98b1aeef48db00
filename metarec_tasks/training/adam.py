"""Adam for every training phase, without `torch.optim`.

Why not `torch.optim.Adam(fused=True)`: its first call imports `torch._dynamo` (over 800 modules,
sympy among them: about a second of CPU, a twelfth of `metarec train` on the default world), and
every `step` and `zero_grad` then passes through dynamo's disable wrapper. This class calls the same
fused kernel with the same arguments and keeps torch's state-dict layout, so weights, moments and
checkpoints are identical to torch's (tests/unit/training/test_adam.py); a checkpoint written by
either loads into the other.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

BETAS = (0.9, 0.999)  # torch's defaults, the ones every phase has always used
EPS = 1e-8


class Adam:
    """Adam (no weight decay, no AMSGrad) over one parameter group, fused per device and dtype."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float):
        self.param_groups: list[dict[str, Any]] = [
            {
                "params": list(params),
                "lr": lr,
                "betas": BETAS,
                "eps": EPS,
                "weight_decay": 0.0,
                "amsgrad": False,
                "maximize": False,
                "foreach": None,
                "capturable": False,
                "differentiable": False,
                "fused": True,
                "decoupled_weight_decay": False,
            }
        ]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    @property
    def params(self) -> list[torch.nn.Parameter]:
        return self.param_groups[0]["params"]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def _state(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        if p not in self.state:  # the fused kernel keeps `step` as a float32 tensor beside the weight
            self.state[p] = {
                "step": torch.zeros((), dtype=torch.float32, device=p.device),
                "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
            }
        return self.state[p]

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        beta1, beta2 = group["betas"]
        by_kind: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
        for p in self.params:
            if p.grad is not None:
                by_kind.setdefault((p.device, p.dtype), []).append(p)
        for params in by_kind.values():
            states = [self._state(p) for p in params]
            steps = [s["step"] for s in states]
            torch._foreach_add_(steps, 1)
            torch._fused_adam_(
                params,
                [p.grad for p in params],
                [s["exp_avg"] for s in states],
                [s["exp_avg_sq"] for s in states],
                [],
                steps,
                amsgrad=False,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                weight_decay=0.0,
                eps=group["eps"],
                maximize=False,
                grad_scale=None,
                found_inf=None,
            )

    def state_dict(self) -> dict[str, Any]:
        """torch.optim's layout: per-parameter state by position, the group with positions."""
        index = {p: i for i, p in enumerate(self.params)}
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        return {
            "state": {index[p]: dict(s) for p, s in self.state.items()},
            "param_groups": [{**group, "params": list(range(len(self.params)))}],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        (saved,) = state_dict["param_groups"]
        if len(saved["params"]) != len(self.params):
            raise ValueError(
                f"optimizer state has {len(saved['params'])} parameters, the model {len(self.params)}"
            )
        self.param_groups[0]["lr"] = saved["lr"]
        self.state = {}
        for i, s in state_dict["state"].items():
            p = self.params[saved["params"].index(int(i))]
            self.state[p] = {
                "step": s["step"].to(device=p.device, dtype=torch.float32).clone(),
                "exp_avg": s["exp_avg"].to(device=p.device, dtype=p.dtype).clone(),
                "exp_avg_sq": s["exp_avg_sq"].to(device=p.device, dtype=p.dtype).clone(),
            }


def adam(params, lr: float) -> Adam:
    """The one optimizer of every training phase. Fused: one kernel over all tensors per step, where
    torch's CPU default loops over them in Python — 5x faster for a network of this size, which
    steps thousands of times a night (this module's docstring says why it is not `torch.optim`'s)."""
    return Adam(params, lr)

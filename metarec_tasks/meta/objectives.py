"""Per-task losses the one engine (`meta.functional`) is parametrized by, over one task's padded rows.

Every objective has the signature `(scores, target, mask, item) -> scalar`, a pure function of one
task's rows, so `vmap` lifts it over a batch of tasks:
- `mse`: masked mean squared error of predicted ratings (the rating model);
- `softmax`: sampled softmax — each positive (target > 0, its weight) competes with the task's
  negatives (target 0); the item feature `log_q` (log sampling probability) is subtracted from every
  logit, the logQ correction that makes popularity-sampled negatives an unbiased stand-in for the
  full catalog (Yi et al., 2019);
- `bpr`: Bayesian personalized ranking — mean softplus(s_neg − s_pos) over (positive, negative) pairs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from metarec_tasks.models.rating import Features, masked_mse

Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Features], torch.Tensor]
LOG_Q = "log_q"  # item feature: log-probability of the item being drawn as a negative


def _roles(target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    positive = mask & (target > 0)
    negative = mask & (target <= 0)
    return positive, negative


def mse(scores: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, item: Features) -> torch.Tensor:
    return masked_mse(scores, target, mask)


def sampled_softmax(
    scores: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, log_q: torch.Tensor
) -> torch.Tensor:
    positive, negative = _roles(target, mask)
    logits = scores - log_q
    neg_lse = torch.logsumexp(torch.where(negative, logits, torch.full_like(logits, -1e9)), dim=-1)
    # -log softmax of a positive against the negatives, log(1 + e^(neg_lse - logit)), as softplus: its
    # second derivative (MAML differentiates through this) stays finite where logaddexp's overflows
    per_row = F.softplus(torch.where(positive, neg_lse - logits, torch.zeros_like(logits)))
    weight = torch.where(positive, target, torch.zeros_like(target))
    return (per_row * weight).sum() / weight.sum().clamp_min(1e-6)


def bpr(scores: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    positive, negative = _roles(target, mask)
    pairs = F.softplus(scores[None, :] - scores[:, None])  # [pos row, neg col]
    neg_w = negative.to(scores.dtype)
    per_pos = (pairs * neg_w[None, :]).sum(-1) / neg_w.sum().clamp_min(1.0)
    weight = torch.where(positive, target, torch.zeros_like(target))
    return (per_pos * weight).sum() / weight.sum().clamp_min(1e-6)


def _with_log_q(loss: Callable[..., torch.Tensor]) -> Objective:
    def objective(scores, target, mask, item: Features) -> torch.Tensor:
        return loss(scores, target, mask, item[LOG_Q])

    objective.__name__ = loss.__name__
    return objective


OBJECTIVES: dict[str, Objective] = {
    "mse": mse,
    "softmax": _with_log_q(sampled_softmax),
    "bpr": _with_log_q(bpr),
}

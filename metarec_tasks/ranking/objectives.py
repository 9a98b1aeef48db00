"""Ranking losses for one task's padded rows: positives carry a weight > 0, sampled negatives 0.

Both are pure functions of one task's rows, so `vmap` lifts them over a batch of tasks.
- `softmax`: sampled softmax — each positive competes with the task's negatives; `log_q` (the log of
  each item's sampling probability) is subtracted from every logit, the logQ correction that makes
  popularity-sampled negatives an unbiased stand-in for the full catalog (Yi et al., 2019).
- `bpr`: Bayesian personalized ranking — mean softplus(s_neg − s_pos) over (positive, negative) pairs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

RankLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _roles(target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    positive = mask & (target > 0)
    negative = mask & (target <= 0)
    return positive, negative


def sampled_softmax(
    scores: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, log_q: torch.Tensor
) -> torch.Tensor:
    positive, negative = _roles(target, mask)
    logits = scores - log_q
    neg_lse = torch.logsumexp(torch.where(negative, logits, torch.full_like(logits, -1e9)), dim=-1)
    per_row = torch.logaddexp(logits, neg_lse) - logits  # -log softmax of a positive against negatives
    weight = torch.where(positive, target, torch.zeros_like(target))
    return (per_row * weight).sum() / weight.sum().clamp_min(1e-6)


def bpr(scores: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    positive, negative = _roles(target, mask)
    pairs = F.softplus(scores[None, :] - scores[:, None])  # [pos row, neg col]
    neg_w = negative.to(scores.dtype)
    per_pos = (pairs * neg_w[None, :]).sum(-1) / neg_w.sum().clamp_min(1.0)
    weight = torch.where(positive, target, torch.zeros_like(target))
    return (per_pos * weight).sum() / weight.sum().clamp_min(1e-6)


LOSSES: dict[str, RankLoss] = {"softmax": sampled_softmax, "bpr": bpr}

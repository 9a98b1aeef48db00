"""Closed-form inner loop (R2-D2, Bertinetto et al., 2019; MetaOptNet): adaptation as ridge regression.

With `adapt: head` a model's scores are *linear* in the adapted parameters θ (the ranker's user vector,
the rating network's last layer), so s(θ0 + δ) = s(θ0) + J·δ holds exactly, J being the Jacobian of the
support rows' scores. The inner loop is then one exact solve instead of a few SGD steps:

    δ = (Jᵀ W J + λ I)⁻¹ Jᵀ W (y − s(θ0))

- rating objective (`mse`): y = the support ratings, W = 1 per row — the exact ridge fit of the head;
- ranking objectives: y = `target_scale` for a positive, 0 for a sampled negative; W = the positive's
  event weight, positives and negatives each normalised to weigh 1 in total, the positives' total
  times `positive_weight` (implicit-feedback ALS's fold-in, Hu et al., 2008, with balanced classes).
λ, `positive_weight` and `target_scale` are meta-learned (log-space, saved with the model), and the
meta-gradient reaches the initialization θ0 and the item tower through the solve, which is
differentiable. There is no step size to tune and no step count: `steps` is ignored, adaptation is
exact and its cost is one p×p solve per user (p = the head's size).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from metarec_tasks.meta.base import InnerLoop, MetaAlgorithm
from metarec_tasks.meta.functional import Engine, batch_encoding, head_jacobian, over_tasks, predict
from metarec_tasks.meta.tasks import InteractionSet, TaskBatch
from metarec_tasks.models.rating import ParamDict, split_params


class ClosedFormRidge(MetaAlgorithm):
    name = "ridge"

    def __init__(self, inner: InnerLoop, model: nn.Module, ridge_lambda: float, engine: Engine):
        super().__init__(inner, engine)
        if inner.adapt != "head":
            raise ValueError(
                "algorithm ridge adapts the head only (the scores must be linear in it): set adapt: head"
            )
        self.regression = engine.objective == "mse"
        self.log_lambda = nn.Parameter(torch.tensor(math.log(ridge_lambda)))
        self.log_positive_weight = nn.Parameter(torch.zeros(()))
        self.log_target_scale = nn.Parameter(torch.zeros(()))

    def solve(self, model: nn.Module, support: InteractionSet) -> tuple[ParamDict, ParamDict]:
        """(per-task adapted head, shared parameters): the exact ridge fit of every task's support."""
        fast, shared = split_params(model, self.inner.adapt)
        names = list(fast)
        shapes = [fast[n].shape for n in names]
        sizes = [fast[n].numel() for n in names]
        theta0 = torch.cat([fast[n].reshape(-1) for n in names])
        eye = torch.eye(len(theta0), dtype=theta0.dtype, device=theta0.device)
        lam = self.log_lambda.exp()

        def unflatten(theta: torch.Tensor) -> ParamDict:
            return {n: t.reshape(s) for n, t, s in zip(names, theta.split(sizes), shapes, strict=True)}

        def one_task(user, item, target, mask, encoded) -> torch.Tensor:
            s0 = predict(model, {**shared, **fast}, user, item, encoded)  # [rows]
            per_param = head_jacobian(model, {**shared, **fast}, user, item, encoded)
            jac = torch.cat([per_param[n].reshape(len(s0), -1) for n in names], 1)  # [rows, p]
            y, w = self.targets(target, mask)
            a = jac.T @ (w[:, None] * jac) + lam * eye
            return theta0 + torch.linalg.solve(a, jac.T @ (w * (y - s0)))

        rows = (support.user, support.item, support.target, support.mask)
        if self.engine.reference:  # tests: task by task, as a least-squares problem
            thetas = torch.stack(
                [
                    self._reference_task(model, shared, unflatten, theta0, support, t)
                    for t in range(len(support.target))
                ]
            )
        else:
            encoded = batch_encoding(model, fast, shared, support.user, support.item)
            thetas = over_tasks(one_task, encoded, *rows)
        per_task = {
            n: t.reshape(len(thetas), *s)
            for n, t, s in zip(names, thetas.split(sizes, 1), shapes, strict=True)
        }
        return per_task, shared

    def _reference_task(
        self, model, shared, unflatten, theta0, support: InteractionSet, t: int
    ) -> torch.Tensor:
        """One task's fit as the augmented least-squares problem [√W·J; √λ·I] δ ≈ [√W·r; 0], with the
        Jacobian from reverse-mode autograd — independent of the vectorized normal-equation solve."""
        user = {k: v[t] for k, v in support.user.items()}
        item = {k: v[t] for k, v in support.item.items()}

        def scores(theta: torch.Tensor) -> torch.Tensor:
            return predict(model, {**shared, **unflatten(theta)}, user, item)

        with torch.enable_grad():
            jac = torch.autograd.functional.jacobian(scores, theta0, create_graph=True)
            y, w = self.targets(support.target[t], support.mask[t])
            root = w.sqrt()[:, None]
            lhs = torch.cat(
                [
                    root * jac,
                    self.log_lambda.exp().sqrt() * torch.eye(len(theta0), dtype=jac.dtype, device=jac.device),
                ]
            )
            rhs = torch.cat(
                [
                    root[:, 0] * (y - scores(theta0)),
                    torch.zeros(len(theta0), dtype=jac.dtype, device=jac.device),
                ]
            )
            return theta0 + torch.linalg.lstsq(lhs, rhs[:, None]).solution[:, 0]

    def targets(self, target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(regression targets, row weights) of one task's support rows; padding weighs 0."""
        valid = mask.to(target.dtype)
        if self.regression:
            return target, valid
        positive = (target > 0).to(target.dtype)
        negative = valid * (1 - positive)
        y = positive * self.log_target_scale.exp()
        # each class weighs 1 in total (times the learned positive weight), whatever the row counts
        w_pos = valid * positive * target / (valid * positive * target).sum().clamp_min(1e-6)
        w_neg = negative / negative.sum().clamp_min(1.0)
        return y, w_pos * self.log_positive_weight.exp() + w_neg

    def meta_loss(self, model: nn.Module, batch: TaskBatch) -> torch.Tensor:
        adapted, shared = self.solve(model, batch.support)
        return self.engine.losses(model, adapted, shared, batch.query).mean()

    def adapt(self, model: nn.Module, batch: TaskBatch, steps: int) -> tuple[ParamDict, ParamDict]:
        with torch.no_grad():
            adapted, shared = self.solve(model, batch.support)
        return {k: v.detach() for k, v in adapted.items()}, {k: v.detach() for k, v in shared.items()}

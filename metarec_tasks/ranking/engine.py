"""The inner loop with a ranking loss, as an `Engine` every algorithm of `metarec_tasks.meta` accepts.

The algorithms only call `engine.adapt` (the inner trajectory) and `engine.losses` (per-task query
losses), so swapping the rating engine for this one makes MAML, FOMAML, MAML++, Meta-SGD and Reptile
meta-learn the ranking objective with no change to them. Same two forms as `meta.functional`:
vectorized (`vmap` + `grad` over padded tasks) and the naive per-task loop as the reference in tests.
Rows carry the item's sampling log-probability as the item feature `log_q` (the logQ correction).
"""

from __future__ import annotations

from functools import partial

import torch
from torch.func import functional_call, vmap

from metarec_tasks.meta.functional import Engine, StepSize, Trajectory, sgd_trajectory
from metarec_tasks.meta.tasks import InteractionSet
from metarec_tasks.model import Features, ParamDict
from metarec_tasks.ranking.objectives import LOSSES, RankLoss

LOG_Q = "log_q"


def task_loss(
    loss: RankLoss,
    model,
    params: ParamDict,
    user: Features,
    item: Features,
    target: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    scores = functional_call(model, params, (user, item))
    return loss(scores, target, mask, item[LOG_Q])


def inner_trajectory(
    loss, model, fast, shared, user, item, target, mask, steps: int, step_size: StepSize, first_order: bool
) -> Trajectory:
    def support_loss(params: ParamDict) -> torch.Tensor:
        return task_loss(loss, model, {**shared, **params}, user, item, target, mask)

    return sgd_trajectory(support_loss, fast, steps, step_size, first_order)


def adapt_batch(
    loss, model, fast, shared, support: InteractionSet, steps, step_size, first_order
) -> Trajectory:
    def one_task(user, item, target, mask):
        return inner_trajectory(
            loss, model, fast, shared, user, item, target, mask, steps, step_size, first_order
        )

    return vmap(one_task)(support.user, support.item, support.target, support.mask)


def losses_batch(loss, model, adapted: ParamDict, shared: ParamDict, rows: InteractionSet) -> torch.Tensor:
    def one_task(params, user, item, target, mask):
        return task_loss(loss, model, {**shared, **params}, user, item, target, mask)

    return vmap(one_task)(adapted, rows.user, rows.item, rows.target, rows.mask)


def adapt_reference(
    loss, model, fast, shared, support: InteractionSet, steps, step_size, first_order
) -> Trajectory:
    """Naive per-task loop with `torch.autograd.grad`: the ground truth for the vectorized engine."""
    per_task = []
    with torch.enable_grad():
        for t in range(support.target.shape[0]):
            params = {k: v if v.requires_grad else v.detach().requires_grad_() for k, v in fast.items()}
            user = {k: v[t] for k, v in support.user.items()}
            item = {k: v[t] for k, v in support.item.items()}
            path = []
            for step in range(steps):
                value = task_loss(
                    loss, model, {**shared, **params}, user, item, support.target[t], support.mask[t]
                )
                grads = torch.autograd.grad(value, list(params.values()), create_graph=not first_order)
                params = {
                    n: p - step_size(step, n) * g for (n, p), g in zip(params.items(), grads, strict=True)
                }
                path.append(params)
            per_task.append(path)
    return [{n: torch.stack([task[s][n] for task in per_task]) for n in fast} for s in range(steps)]


def losses_reference(loss, model, adapted, shared, rows: InteractionSet) -> torch.Tensor:
    out = []
    for t in range(rows.target.shape[0]):
        params = {**shared, **{k: v[t] for k, v in adapted.items()}}
        user = {k: v[t] for k, v in rows.user.items()}
        item = {k: v[t] for k, v in rows.item.items()}
        out.append(task_loss(loss, model, params, user, item, rows.target[t], rows.mask[t]))
    return torch.stack(out)


def ranking_engine(loss_name: str, reference: bool = False) -> Engine:
    """The engine for `ranking.loss` (softmax | bpr); `reference=True` gives the naive loop."""
    loss = LOSSES[loss_name]
    if reference:
        return Engine(
            f"ranking-{loss_name}-reference", partial(adapt_reference, loss), partial(losses_reference, loss)
        )
    return Engine(f"ranking-{loss_name}", partial(adapt_batch, loss), partial(losses_batch, loss))


def user_vectors(model, adapted: ParamDict, shared: ParamDict, user: Features) -> torch.Tensor:
    """[T, dim] adapted user vectors; `user` holds one feature row per task."""

    def one_task(params, u):
        return functional_call(model, {**shared, **params}, (u, None), {"part": "user"})

    return vmap(one_task)(adapted, user)


def item_table(model, shared: ParamDict, items: Features) -> tuple[torch.Tensor, torch.Tensor]:
    """([n_items, dim] item vectors, [n_items] biases) under the shared (never adapted) item tower."""
    return functional_call(model, shared, (None, items), {"part": "item"})

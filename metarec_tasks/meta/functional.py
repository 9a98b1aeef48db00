"""Pure functions over parameter dicts: the building blocks every meta-learner shares.

`adapt_batch` and `predict_batch` lift a single task's computation over a batch of tasks with
`torch.func.vmap`; there is no per-task Python loop. `adapt_reference` is the plain loop kept only
so tests can check the vectorized code against it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import functional_call, grad, vmap

from metarec_tasks.meta.tasks import InteractionSet
from metarec_tasks.model import Features, ParamDict, masked_mse

StepSize = Callable[[int, str], torch.Tensor | float]


def predict(model: torch.nn.Module, params: ParamDict, user: Features, item: Features) -> torch.Tensor:
    return functional_call(model, params, (user, item))


def task_loss(
    model, params: ParamDict, user: Features, item: Features, target: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    return masked_mse(predict(model, params, user, item), target, mask)


def inner_loop(
    model,
    fast: ParamDict,
    shared: ParamDict,
    user: Features,
    item: Features,
    target: torch.Tensor,
    mask: torch.Tensor,
    steps: int,
    lr: float,
    first_order: bool,
) -> ParamDict:
    """`steps` SGD steps on one task's support set; differentiable unless `first_order`."""

    def support_loss(params: ParamDict) -> torch.Tensor:
        return task_loss(model, {**shared, **params}, user, item, target, mask)

    for _ in range(steps):
        grads = grad(support_loss)(fast)
        if first_order:
            grads = {name: g.detach() for name, g in grads.items()}
        fast = {name: fast[name] - lr * grads[name] for name in fast}
    return fast


def adapt_batch(
    model,
    fast: ParamDict,
    shared: ParamDict,
    support: InteractionSet,
    steps: int,
    lr: float,
    first_order: bool,
) -> ParamDict:
    """Adapted `fast` parameters for every task at once: each tensor gains a leading task dim."""

    def one_task(user, item, target, mask):
        return inner_loop(model, fast, shared, user, item, target, mask, steps, lr, first_order)

    return vmap(one_task)(support.user, support.item, support.target, support.mask)


def query_losses(
    model,
    fast: ParamDict,
    shared: ParamDict,
    support: InteractionSet,
    query: InteractionSet,
    steps: int,
    lr: float,
    first_order: bool,
) -> torch.Tensor:
    """[T] query losses after adapting on each task's support set (the MAML objective)."""

    def one_task(s_user, s_item, s_target, s_mask, q_user, q_item, q_target, q_mask):
        adapted = inner_loop(model, fast, shared, s_user, s_item, s_target, s_mask, steps, lr, first_order)
        return task_loss(model, {**shared, **adapted}, q_user, q_item, q_target, q_mask)

    return vmap(one_task)(
        support.user,
        support.item,
        support.target,
        support.mask,
        query.user,
        query.item,
        query.target,
        query.mask,
    )


def predict_batch(
    model, adapted: ParamDict, shared: ParamDict, user: Features, item: Features
) -> torch.Tensor:
    """Predictions of per-task parameters on per-task rows: [T, rows]."""

    def one_task(params, u, i):
        return predict(model, {**shared, **params}, u, i)

    return vmap(one_task)(adapted, user, item)


def score_catalog(
    model, adapted: ParamDict, shared: ParamDict, user: Features, items: Features
) -> torch.Tensor:
    """[T, n_items] scores: each task's adapted weights against the whole item table."""
    n_items = next(iter(items.values())).shape[0]

    def one_task(params, u):
        u_rows = {k: v.expand(n_items, *v.shape) for k, v in u.items()}
        return predict(model, {**shared, **params}, u_rows, items)

    return vmap(one_task, in_dims=(0, 0))(adapted, user)


def adapt_reference(
    model,
    fast: ParamDict,
    shared: ParamDict,
    support: InteractionSet,
    steps: int,
    lr: float,
    first_order: bool,
) -> list[ParamDict]:
    """The naive per-task loop with `torch.autograd.grad`: the ground truth in tests."""
    adapted = []
    for t in range(support.target.shape[0]):
        params = dict(fast)
        user = {k: v[t] for k, v in support.user.items()}
        item = {k: v[t] for k, v in support.item.items()}
        for _ in range(steps):
            loss = task_loss(model, {**shared, **params}, user, item, support.target[t], support.mask[t])
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=not first_order)
            params = {name: p - lr * g for (name, p), g in zip(params.items(), grads, strict=True)}
        adapted.append(params)
    return adapted

"""Pure functions over parameter dicts: the inner loop every meta-learner shares, in two engines.

- `VECTORIZED` (production): one task's inner loop is a plain function of its rows, lifted over a batch
  of padded tasks with `torch.func.vmap`; gradients with `torch.func.grad`. No per-task Python loop.
  When the encoder (embeddings) is not adapted, each task's rows are encoded once and reused by every
  step, which is most of the forward pass.
- `REFERENCE` (tests and benchmarks only): the naive loop — per task, clone the parameters, full
  forward, `torch.autograd.grad` — the ground truth the vectorized engine must match.

Both return the inner-loop *trajectory* (the adapted parameters after each step, with a leading task
dim), so algorithms such as MAML++ can score every step; most only use the last entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.func import functional_call, grad, vmap

from metarec_tasks.meta.tasks import InteractionSet
from metarec_tasks.model import ENCODER_PREFIX, Features, ParamDict, masked_mse

# Learning rate of inner step `step` for parameter `name`: a float (MAML), a scalar tensor per step and
# layer (MAML++), or a tensor shaped like the parameter (Meta-SGD). Learned ones are tensors that
# require grad, so the meta-gradient reaches them through the inner loop.
StepSize = Callable[[int, str], torch.Tensor | float]
Trajectory = list[ParamDict]


def constant_step(lr: float) -> StepSize:
    return lambda step, name: lr


def predict(model: torch.nn.Module, params: ParamDict, user: Features, item: Features) -> torch.Tensor:
    return functional_call(model, params, (user, item))


def task_loss(
    model, params: ParamDict, user: Features, item: Features, target: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    return masked_mse(predict(model, params, user, item), target, mask)


def encoder_adapts(fast: ParamDict) -> bool:
    return any(name.startswith(ENCODER_PREFIX) for name in fast)


def encode(model, shared: ParamDict, user: Features, item: Features) -> torch.Tensor:
    """The encoder's output for these rows under the (shared) parameters given."""
    weights = {k.removeprefix(ENCODER_PREFIX): v for k, v in shared.items() if k.startswith(ENCODER_PREFIX)}
    return functional_call(model.encoder, weights, (user, item))


def inner_trajectory(
    model,
    fast: ParamDict,
    shared: ParamDict,
    user: Features,
    item: Features,
    target: torch.Tensor,
    mask: torch.Tensor,
    steps: int,
    step_size: StepSize,
    first_order: bool,
) -> Trajectory:
    """`steps` SGD steps on one task's support rows; differentiable unless `first_order`."""
    if encoder_adapts(fast):

        def support_loss(params: ParamDict) -> torch.Tensor:
            return task_loss(model, {**shared, **params}, user, item, target, mask)
    else:
        encoded = encode(model, shared, user, item)

        def support_loss(params: ParamDict) -> torch.Tensor:
            prediction = functional_call(model, {**shared, **params}, (None, None), {"encoded": encoded})
            return masked_mse(prediction, target, mask)

    return sgd_trajectory(support_loss, fast, steps, step_size, first_order)


def sgd_trajectory(
    support_loss, fast: ParamDict, steps: int, step_size: StepSize, first_order: bool
) -> Trajectory:
    """The inner loop every objective shares: `steps` SGD steps on `support_loss`, every iterate kept
    (MAML++'s multi-step loss scores them all); differentiable unless `first_order`."""
    trajectory = []
    for step in range(steps):
        grads = grad(support_loss)(fast)
        if first_order:
            grads = {name: g.detach() for name, g in grads.items()}
        fast = {name: fast[name] - step_size(step, name) * grads[name] for name in fast}
        trajectory.append(fast)
    return trajectory


def adapt_batch(
    model,
    fast: ParamDict,
    shared: ParamDict,
    support: InteractionSet,
    steps: int,
    step_size: StepSize,
    first_order: bool,
) -> Trajectory:
    """Every task's trajectory at once: each tensor gains a leading task dim."""

    def one_task(user, item, target, mask):
        return inner_trajectory(model, fast, shared, user, item, target, mask, steps, step_size, first_order)

    return vmap(one_task)(support.user, support.item, support.target, support.mask)


def losses_batch(model, adapted: ParamDict, shared: ParamDict, rows: InteractionSet) -> torch.Tensor:
    """[T] loss of each task's adapted parameters on its own rows (e.g. the query set)."""

    def one_task(params, user, item, target, mask):
        return task_loss(model, {**shared, **params}, user, item, target, mask)

    return vmap(one_task)(adapted, rows.user, rows.item, rows.target, rows.mask)


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
    step_size: StepSize,
    first_order: bool,
) -> Trajectory:
    """The naive per-task loop with `torch.autograd.grad`: the ground truth in tests and benchmarks."""
    with torch.enable_grad():  # `MetaAlgorithm.adapt` runs under no_grad; this loop needs autograd
        return _adapt_reference(model, fast, shared, support, steps, step_size, first_order)


def _adapt_reference(model, fast, shared, support, steps, step_size, first_order) -> Trajectory:
    per_task: list[Trajectory] = []
    for t in range(support.target.shape[0]):
        params = {k: v if v.requires_grad else v.detach().requires_grad_() for k, v in fast.items()}
        user = {k: v[t] for k, v in support.user.items()}
        item = {k: v[t] for k, v in support.item.items()}
        trajectory = []
        for step in range(steps):
            loss = task_loss(model, {**shared, **params}, user, item, support.target[t], support.mask[t])
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=not first_order)
            params = {
                name: p - step_size(step, name) * g
                for (name, p), g in zip(params.items(), grads, strict=True)
            }
            trajectory.append(params)
        per_task.append(trajectory)
    return [
        {name: torch.stack([task[step][name] for task in per_task]) for name in fast} for step in range(steps)
    ]


def losses_reference(model, adapted: ParamDict, shared: ParamDict, rows: InteractionSet) -> torch.Tensor:
    losses = []
    for t in range(rows.target.shape[0]):
        params = {**shared, **{k: v[t] for k, v in adapted.items()}}
        user = {k: v[t] for k, v in rows.user.items()}
        item = {k: v[t] for k, v in rows.item.items()}
        losses.append(task_loss(model, params, user, item, rows.target[t], rows.mask[t]))
    return torch.stack(losses)


@dataclass(frozen=True)
class Engine:
    """How an algorithm runs its inner loop: vectorized in production, the naive loop in tests."""

    name: str
    adapt: Callable[..., Trajectory]
    losses: Callable[..., torch.Tensor]


VECTORIZED = Engine("vectorized", adapt_batch, losses_batch)
REFERENCE = Engine("reference", adapt_reference, losses_reference)

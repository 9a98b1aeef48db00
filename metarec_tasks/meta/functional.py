"""Pure functions over parameter dicts: the one inner loop every meta-learner shares, in two engines.

An engine is parametrized by a per-task objective (`meta.objectives`: masked MSE for ratings,
sampled softmax or BPR for ranking), so one implementation serves the rating model and the ranker.
- vectorized (production): one task's loss is a plain function of its rows, lifted over a batch of
  padded tasks with `torch.func.vmap`; each inner step differentiates the tasks' summed losses with
  respect to per-task parameter copies (`adapt_batch`). No per-task Python loop.
  When the encoder (embeddings) is not adapted, each task's rows are encoded once (the model's
  `part="encode"`) and reused by every step, which is most of the forward pass.
- reference (tests and benchmarks only): the naive loop — per task, clone the parameters, full
  forward, `torch.autograd.grad` — the ground truth the vectorized engine must match.

Both return the inner-loop *trajectory* (the adapted parameters after each step, with a leading task
dim), so algorithms such as MAML++ can score every step; most only use the last entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch.func import functional_call, vmap

from metarec_tasks.meta.objectives import OBJECTIVES, Objective
from metarec_tasks.meta.tasks import InteractionSet
from metarec_tasks.models.rating import ENCODER_PREFIX, Features, ParamDict

# Learning rate of inner step `step` for parameter `name`: a float (MAML), a scalar tensor per step and
# layer (MAML++), or a tensor shaped like the parameter (Meta-SGD). Learned ones are tensors that
# require grad, so the meta-gradient reaches them through the inner loop.
StepSize = Callable[[int, str], torch.Tensor | float]
Trajectory = list[ParamDict]


def constant_step(lr: float) -> StepSize:
    return lambda step, name: lr


def stateless_call(model: torch.nn.Module, params: ParamDict, args: tuple, kwargs: dict | None = None):
    """`model(*args, **kwargs)` under `params` (`functional_call`), without its weight-tying
    bookkeeping: no network here ties weights, and untying them was half the cost of a call's
    parameter swap, of which a meta-step makes several."""
    return functional_call(model, params, args, kwargs or {}, tie_weights=False)


def predict(model: torch.nn.Module, params: ParamDict, user: Features, item: Features, encoded=None):
    """Per-row scores under `params`; `encoded` (from `encode`) skips the encoder."""
    return stateless_call(model, params, (user, item), None if encoded is None else {"encoded": encoded})


def task_loss(
    objective: Objective,
    model,
    params: ParamDict,
    user: Features,
    item: Features,
    target: torch.Tensor,
    mask: torch.Tensor,
    encoded=None,
) -> torch.Tensor:
    return objective(predict(model, params, user, item, encoded), target, mask, item)


def encoder_adapts(fast: ParamDict) -> bool:
    return any(name.startswith(ENCODER_PREFIX) for name in fast)


def encode(model, shared: ParamDict, user: Features, item: Features):
    """The encoder's output for these rows under the (shared) parameters given."""
    return stateless_call(model, shared, (user, item), {"part": "encode"})


def head_jacobian(model, params: ParamDict, user: Features, item: Features, encoded) -> ParamDict:
    """∂score/∂p per row for each head parameter p, as [rows, *p.shape]: closed-form, because a
    network's score is linear in its head (what the ridge inner loop solves for). Forward-mode
    autodiff got the same numbers by pushing one tangent per head entry through the score: a
    [rows, entries, dim] product per task, six sevenths of a ridge meta-step."""
    return stateless_call(model, params, (user, item), {"encoded": encoded, "part": "head_jacobian"})


def batch_encoding(model, adapted: ParamDict, shared: ParamDict, user: Features, item: Features):
    """The encoder's output for every task's rows at once, outside `vmap` (None when `adapted`
    holds encoder parameters: every task then has its own). Outside, the encoder sees the whole
    batch's rows and can encode the catalog once and read it at them, where one task's rows under
    `vmap` are too few for that and each gathered its own feature rows (384-wide title embeddings)."""
    return None if encoder_adapts(adapted) else encode(model, shared, user, item)


def over_tasks(one_task: Callable, encoded, *batched) -> Any:
    """`one_task(*batched, encoded)` lifted over the tasks with `vmap`: every `batched` argument has
    a leading task dim, and so has each tensor of `encoded` (a `batch_encoding`: a tensor, a tuple
    with None entries, or None)."""
    if isinstance(encoded, tuple):
        dims = tuple(None if part is None else 0 for part in encoded)
    else:
        dims = None if encoded is None else 0
    return vmap(one_task, in_dims=(0,) * len(batched) + (dims,))(*batched, encoded)


def per_task_copies(fast: ParamDict, tasks: int) -> ParamDict:
    """`fast` with a leading task dim, one copy per task, differentiable back to `fast` (whose
    gradient sums the copies'); constants (adaptation at serving) become differentiable leaves."""
    return {
        name: (p if p.requires_grad else p.detach().requires_grad_()).expand(tasks, *p.shape)
        for name, p in fast.items()
    }


def adapt_batch(
    objective: Objective,
    model,
    fast: ParamDict,
    shared: ParamDict,
    support: InteractionSet,
    steps: int,
    step_size: StepSize,
    first_order: bool,
) -> Trajectory:
    """Every task's trajectory at once (`steps` SGD steps on its support rows, every iterate kept:
    MAML++ scores them all); each tensor gains a leading task dim; differentiable unless
    `first_order`. One `torch.autograd.grad` per step of the tasks' summed support losses with respect
    to per-task copies of the parameters: task t's loss reads copy t alone, so the sum's gradient at
    copy t is task t's own gradient. (`torch.func.grad` inside `vmap` computed the same numbers, one
    task-level backward at a time, and its first call imports torch._dynamo: a second per process.)"""
    encoded = batch_encoding(model, fast, shared, support.user, support.item)
    trajectory = []
    with torch.enable_grad():  # `MetaAlgorithm.adapt` runs under no_grad; each step differentiates
        params = per_task_copies(fast, support.target.shape[0])
        for step in range(steps):
            losses = task_losses(objective, model, params, shared, support, encoded)
            grads = torch.autograd.grad(losses.sum(), list(params.values()), create_graph=not first_order)
            params = {
                name: p - step_size(step, name) * g
                for (name, p), g in zip(params.items(), grads, strict=True)
            }
            trajectory.append(params)
    return trajectory


def losses_batch(
    objective: Objective, model, adapted: ParamDict, shared: ParamDict, rows: InteractionSet
) -> torch.Tensor:
    """[T] loss of each task's adapted parameters on its own rows (e.g. the query set)."""
    encoded = batch_encoding(model, adapted, shared, rows.user, rows.item)
    return task_losses(objective, model, adapted, shared, rows, encoded)


def task_losses(
    objective: Objective, model, adapted: ParamDict, shared: ParamDict, rows: InteractionSet, encoded
) -> torch.Tensor:
    """`losses_batch` with the rows' `batch_encoding` given (the inner loop encodes its support once)."""

    def one_task(params, user, item, target, mask, encoded):
        return task_loss(objective, model, {**shared, **params}, user, item, target, mask, encoded)

    return over_tasks(one_task, encoded, adapted, rows.user, rows.item, rows.target, rows.mask)


def predict_batch(
    model, adapted: ParamDict, shared: ParamDict, user: Features, item: Features
) -> torch.Tensor:
    """Predictions of per-task parameters on per-task rows: [T, rows]."""
    encoded = batch_encoding(model, adapted, shared, user, item)

    def one_task(params, u, i, encoded):
        return predict(model, {**shared, **params}, u, i, encoded)

    return over_tasks(one_task, encoded, adapted, user, item)


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
    objective: Objective,
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
        return _adapt_reference(objective, model, fast, shared, support, steps, step_size, first_order)


def _adapt_reference(objective, model, fast, shared, support, steps, step_size, first_order) -> Trajectory:
    per_task: list[Trajectory] = []
    for t in range(support.target.shape[0]):
        params = {k: v if v.requires_grad else v.detach().requires_grad_() for k, v in fast.items()}
        user = {k: v[t] for k, v in support.user.items()}
        item = {k: v[t] for k, v in support.item.items()}
        trajectory = []
        for step in range(steps):
            loss = task_loss(
                objective, model, {**shared, **params}, user, item, support.target[t], support.mask[t]
            )
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


def losses_reference(
    objective: Objective, model, adapted: ParamDict, shared: ParamDict, rows: InteractionSet
) -> torch.Tensor:
    losses = []
    for t in range(rows.target.shape[0]):
        params = {**shared, **{k: v[t] for k, v in adapted.items()}}
        user = {k: v[t] for k, v in rows.user.items()}
        item = {k: v[t] for k, v in rows.item.items()}
        losses.append(task_loss(objective, model, params, user, item, rows.target[t], rows.mask[t]))
    return torch.stack(losses)


@dataclass(frozen=True)
class Engine:
    """How an algorithm runs its inner loop for one objective: vectorized, or the naive loop in tests.

    Algorithms only call `adapt` (the inner trajectory) and `losses` (per-task query losses), so any
    algorithm of `metarec_tasks.meta` learns any objective unchanged."""

    name: str
    objective: str  # `meta.objectives.OBJECTIVES` key: closed-form algorithms regress on what it scores
    adapt: Callable[..., Trajectory]
    losses: Callable[..., torch.Tensor]
    reference: bool = False  # the naive loop: closed-form algorithms then solve task by task too


def make_engine(objective: str = "mse", reference: bool = False) -> Engine:
    """The engine for objective `objective` (`meta.objectives.OBJECTIVES`); `reference`: the naive loop."""
    loss = OBJECTIVES[objective]
    if reference:
        return Engine(
            f"{objective}-reference",
            objective,
            partial(adapt_reference, loss),
            partial(losses_reference, loss),
            reference=True,
        )
    return Engine(
        f"{objective}-vectorized", objective, partial(adapt_batch, loss), partial(losses_batch, loss)
    )


VECTORIZED = make_engine("mse")  # the rating model's engines
REFERENCE = make_engine("mse", reference=True)

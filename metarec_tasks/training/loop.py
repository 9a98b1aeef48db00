"""The one meta-training loop. The rating model (`training/rating.py`) and the top-K ranker
(`training/ranker.py`) are its two callers; they differ only in how an epoch's meta-batches are drawn
and in the validation metric, so every guarantee below holds for both.

The loop owns:
- epochs with a progress line (`epoch i/N`, ETA; on a terminal also a bar), the best-state snapshot
  and patience: `patience` epochs without improvement, or `patience_tasks` training tasks, whichever
  comes first. In epochs alone, a world ten times bigger trains ten times more tasks past its best
  epoch; the task bound keeps the evidence asked for constant (`params.yaml` says how it was set);
- the NaN rules: a non-finite meta-loss, or a validation metric that turns NaN, stops the run with
  `NonFiniteLossError` before any model file is written; a validation with nothing to score (no
  validation user, or none with a relevant item) keeps the latest epoch instead of the starting point;
- model averaging (`meta.weight_average_decay`, `training/averaging.py`): an exponential moving
  average of the weights, validated every epoch beside the current weights; the better one counts;
- checkpoint/resume: every `checkpoint_every` epochs a checkpoint of model, algorithm, optimizer and
  random generators; a killed run resumes from the newest one of the *same* run (fingerprint) and
  ends with the weights an uninterrupted run would have;
- device and AMP (`run.device`, `meta.amp`): batches arrive on the model's device, the meta-loss runs
  under bfloat16 autocast when asked;
- the data-parallel hooks: under torchrun each rank differentiates its shard of the meta-batch and
  the gradients are all-reduced (`training/distributed.py`); rank 0 alone writes checkpoints;
- the history (one row per epoch) that the caller writes as a CSV.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from metarec_tasks.errors import NonFiniteLossError
from metarec_tasks.files import atomic_path
from metarec_tasks.meta.base import MetaAlgorithm
from metarec_tasks.meta.tasks import TaskBatch, select
from metarec_tasks.params import MetaParams
from metarec_tasks.training.adam import Adam, adam
from metarec_tasks.training.averaging import WeightAverage
from metarec_tasks.training.checkpoint import Checkpoints, TrainState
from metarec_tasks.training.distributed import SINGLE, World
from metarec_tasks.training.runtime import autocast

log = logging.getLogger(__name__)

HISTORY_FIELDS = ("epoch", "phase", "train_loss", "tasks", "seconds")  # + the validation metric's column
AVERAGED = "averaged"  # history column: the validation metric of the averaged weights ('' when off)


@dataclass(frozen=True)
class Validation:
    """How an epoch is judged: the metric's history column, its direction, and the scorer.

    `score()` returns None when there is nothing to score, NaN when the model has diverged."""

    metric: str
    lower_is_better: bool
    score: Callable[[], float | None]

    def improves(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value < best if self.lower_is_better else value > best


@dataclass(frozen=True)
class Randomness:
    """The generators an epoch draws from: torch's (shuffling), numpy's (episode sampling), if used."""

    generator: torch.Generator
    rng: np.random.Generator | None = None


@dataclass(frozen=True)
class FitResult:
    best_epoch: int
    best_value: float | None
    epochs_run: int
    resumed_from: int | None
    history: list[dict]
    best_averaged: bool = False  # the kept weights are the moving average's, not one epoch's


def fit(
    model: torch.nn.Module,
    algorithm: MetaAlgorithm,
    batches: Callable[[int], Iterable[TaskBatch]],
    validation: Validation,
    mp: MetaParams,
    checkpoints: Checkpoints,
    randomness: Randomness,
    warm_up: Callable[[Adam, list[dict]], None] | None = None,
    world: World = SINGLE,
) -> FitResult:
    """Meta-train `model` + `algorithm` for `mp.epochs` (resuming a checkpoint of this run if any);
    on return they hold the best epoch's weights. `warm_up` runs only on a fresh start."""
    optimizer = adam([*model.parameters(), *algorithm.parameters()], mp.meta_lr)
    state = checkpoints.resume(model, algorithm, optimizer, randomness.generator, randomness.rng)
    if state is None:
        world.barrier()  # every rank has looked for a checkpoint before rank 0 deletes them
        if world.is_main:
            checkpoints.clear()
        state = TrainState()
        if warm_up is not None:
            warm_up(optimizer, state.history)
    world.broadcast_state(model, algorithm, optimizer=optimizer)
    average = None
    if mp.weight_average_decay > 0:
        average = WeightAverage(mp.weight_average_decay, {"model": model, "algorithm": algorithm})
        if state.average:
            average.load_state_dict(state.average)
    device = next(model.parameters()).device
    started_at, first = time.perf_counter(), state.next_epoch
    for epoch in range(state.next_epoch, mp.epochs):
        if state.stopped:
            break
        started = time.perf_counter()
        algorithm.start_epoch(epoch)
        total, tasks = 0.0, 0
        # rank 0 on a terminal gets a bar per epoch, cleared before the epoch line; logs get none
        bar_off = None if world.is_main else True  # tqdm's None: off unless stderr is a terminal
        desc = f"meta epoch {epoch + 1}/{mp.epochs}"
        for batch in tqdm(batches(epoch), desc, leave=False, unit="batch", disable=bar_off):
            loss = meta_gradients(model, optimizer, algorithm, batch, world, autocast(device, mp.amp))
            check_finite(loss, f"meta epoch {epoch}")
            check_finite_gradients(optimizer, f"meta epoch {epoch}")
            optimizer.step()
            if average is not None:
                average.update()
            total, tasks = total + loss.item() * len(batch), tasks + len(batch)
        value = _validate(validation, epoch)
        averaged = None
        if average is not None:
            with average.applied():
                averaged = _validate(validation, epoch)
        train_loss = total / max(tasks, 1)
        state.history.append(
            {
                "epoch": epoch,
                "phase": "meta",
                "train_loss": train_loss,
                "tasks": tasks,
                validation.metric: "" if value is None else value,
                AVERAGED: "" if averaged is None else averaged,
                "seconds": time.perf_counter() - started,
            }
        )
        use_average = averaged is not None and (value is None or validation.improves(averaged, value))
        if use_average:
            value = averaged
        if value is None or validation.improves(value, state.best_value):
            with average.applied() if use_average else nullcontext():
                state.record_best(value, epoch, model, algorithm)
            state.best_averaged = use_average
        else:
            state.stale, state.stale_tasks = state.stale + 1, state.stale_tasks + tasks
            state.stopped = state.stale >= mp.patience or 0 < mp.patience_tasks <= state.stale_tasks
        state.next_epoch = epoch + 1
        _log_epoch(epoch, mp.epochs, train_loss, validation.metric, value, started_at, first)
        due = state.stopped or state.next_epoch % mp.checkpoint_every == 0 or state.next_epoch == mp.epochs
        if due and world.is_main:
            state.average = average.state_dict() if average is not None else {}
            checkpoints.save(state, model, algorithm, optimizer, randomness.generator, randomness.rng)
        if state.stopped:
            log.info(
                "early stop after epoch %d (no improvement for %d epochs, %d tasks)",
                epoch,
                state.stale,
                state.stale_tasks,
            )
    if state.best_model:
        model.load_state_dict(state.best_model)
        algorithm.load_state_dict(state.best_algorithm)
    if state.best_averaged:
        log.info(
            "kept the averaged weights of epoch %d (better on validation than the epoch's own)",
            state.best_epoch,
        )
    return FitResult(
        state.best_epoch,
        state.best_value,
        state.next_epoch,
        state.resumed_from,
        state.history,
        state.best_averaged,
    )


def meta_gradients(
    model: torch.nn.Module,
    optimizer: Adam,
    algorithm: MetaAlgorithm,
    batch: TaskBatch,
    world: World = SINGLE,
    precision: AbstractContextManager | None = None,
) -> torch.Tensor:
    """Leave in `.grad` the meta-gradient of the mean meta-loss over the meta-batch; return that loss.

    Under torchrun each rank differentiates its shard of the batch (every rank built the same batch,
    support subsampling included, from the shared generator) and the gradients are all-reduced."""
    tasks = len(batch)
    if world.size > 1:
        batch = select(batch, world.shard(torch.arange(tasks, device=batch.user_rows.device)))
    optimizer.zero_grad()
    loss = torch.zeros((), device=batch.user_rows.device)
    if len(batch):  # a meta-batch smaller than the world leaves some ranks without a task
        with precision or nullcontext():
            loss = algorithm.meta_loss(model, batch)
        loss.backward()
    return world.average_gradients(optimizer, loss, len(batch), tasks)


def check_finite(loss: torch.Tensor, where: str) -> None:
    """Every training phase (warm-ups, meta-epochs) stops on a non-finite loss before a file is written."""
    if not torch.isfinite(loss):
        raise NonFiniteLossError(f"loss became {loss.item()} at {where}; no model was written")


def check_finite_gradients(optimizer: Adam, where: str) -> None:
    """...and on a non-finite gradient behind a finite loss (a second-order term that overflowed),
    before the optimizer writes it into every weight."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if grads and not all_finite(grads):
        raise NonFiniteLossError(f"gradient became non-finite at {where}; no model was written")


def all_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether every element is finite: one fused pass (the mixed-precision scaler's own check, its
    scale 1 leaving the values as they are), a fifth of the cost of a total norm per step."""
    found = torch.zeros((), device=tensors[0].device)
    torch._amp_foreach_non_finite_check_and_unscale_(tensors, found, torch.ones((), device=found.device))
    return not found.item()


def write_history(path: Path, history: list[dict], metric: str) -> None:
    """The per-epoch log as CSV (a DVC plot: x = epoch, y = the validation metric)."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*HISTORY_FIELDS[:4], metric, AVERAGED, HISTORY_FIELDS[4]])
        writer.writeheader()
        writer.writerows(history)


def _validate(validation: Validation, epoch: int) -> float | None:
    value = validation.score()
    if value is not None and math.isnan(value):
        raise NonFiniteLossError(
            f"validation {validation.metric} became NaN after meta epoch {epoch}; no model was written"
        )
    return value


def _log_epoch(
    epoch: int, epochs: int, loss: float, metric: str, value: float | None, started_at: float, first: int
) -> None:
    done = epoch + 1 - first
    eta = (time.perf_counter() - started_at) / done * (epochs - epoch - 1)
    shown = "n/a (nothing to validate on)" if value is None else f"{value:.4f}"
    log.info("epoch %d/%d: meta loss %.4f, %s %s (ETA %.0f s)", epoch + 1, epochs, loss, metric, shown, eta)

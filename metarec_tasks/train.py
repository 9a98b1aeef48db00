"""The `train` stage: learn an initialization that adapts to a new user in a few steps.

Flow: load tasks → build the network and the algorithm (warm-started from the champion when
`meta.warm_start`) → fit the pretrained non-meta baseline and save it → resume from the last
checkpoint of this run, if any → supervised warm-up → meta-train on batches of training tasks,
validating after every epoch on validation users (adapt on support, score query), checkpointing every
`meta.checkpoint_every` epochs → keep the best epoch, stop early when validation stops improving →
save the model atomically. A loss that turns NaN/inf stops the run with an error, and no model is written.
Under torchrun, meta-training is data-parallel over tasks (`metarec_tasks/distributed.py`); rank 0
alone fits the baseline and writes files.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from metarec_tasks.checkpoint import Checkpoints, TrainState, fingerprint
from metarec_tasks.dataset import load_episode_data
from metarec_tasks.distributed import SINGLE, World, init_distributed
from metarec_tasks.episodes import TRAIN, VALIDATION
from metarec_tasks.errors import NonFiniteLossError
from metarec_tasks.meta import build_algorithm
from metarec_tasks.meta.base import MetaAlgorithm
from metarec_tasks.meta.functional import predict_batch
from metarec_tasks.meta.tasks import TaskBatch, build_task_batch, select, subsample_support
from metarec_tasks.model import NetDims, RatingNet
from metarec_tasks.model_io import save_model
from metarec_tasks.params import Params
from metarec_tasks.paths import Workspace
from metarec_tasks.runtime import autocast, pick_device, seed_everything, to_device
from metarec_tasks.supervised import check_finite, fit_pretrained, flatten, supervised_epoch
from metarec_tasks.warm_start import warm_start

log = logging.getLogger(__name__)

TRAIN_LOG_FIELDS = ("epoch", "phase", "train_loss", "val_mae", "seconds")
BASELINE_SEED_OFFSET = 1  # the baseline shuffles with its own generator, so it never shifts the meta run


@dataclass(frozen=True)
class TrainResult:
    best_epoch: int
    best_val_mae: float
    epochs_run: int
    resumed_from: int | None = None


def run_train(params: Params, root: Path) -> TrainResult:
    """The `train` stage: the meta-learned rating model, then the meta-learned top-K ranker."""
    result = train_rating_model(params, root)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone fits the (single-process) ranker
        from metarec_tasks.ranking.stage import run_rank_train  # the top-K model (metarec_tasks/ranking)

        run_rank_train(params, root)
    return result


def train_rating_model(params: Params, root: Path) -> TrainResult:
    """Meta-train the rating model (and fit its non-meta rival); benchmarks call this alone."""
    ws = Workspace(root)
    mp = params.meta
    generator = seed_everything(params.run.seed)
    device = pick_device(params.run.device)
    world = init_distributed(device)
    data = load_episode_data(ws)
    train_batch = to_device(build_task_batch(data.split(TRAIN), data.catalog), device)
    val_batch = to_device(build_task_batch(data.split(VALIDATION), data.catalog), device)
    log.info("training on %d tasks, validating on %d, device %s", len(train_batch), len(val_batch), device)

    dims = NetDims.from_vocab(data.vocab, params.model, rating_offset=data.global_mean)
    model = RatingNet(dims).to(device)
    algorithm = build_algorithm(mp, model)
    champion_md5 = (
        warm_start(model, algorithm, root / mp.champion_model, data.vocab.item_ids) if mp.warm_start else None
    )
    optimizer = torch.optim.Adam([*model.parameters(), *algorithm.parameters()], lr=mp.meta_lr)

    baseline = RatingNet(dims).to(device)
    if world.is_main:  # only saved for finetune, never used by meta-training: one rank fits it
        baseline_fit = fit_pretrained(
            baseline,
            train_batch,
            val_batch,
            mp,
            torch.Generator().manual_seed(params.run.seed + BASELINE_SEED_OFFSET),
        )
        save_model(
            ws.pretrained_model_file, baseline, {"kind": "pretrained", "adapt": mp.adapt, **baseline_fit}
        )

    checkpoints = Checkpoints(ws.checkpoints, run_fingerprint(params, ws, champion_md5))
    state = checkpoints.resume(model, algorithm, optimizer, generator)
    if state is None:
        world.barrier()  # every rank has looked for a checkpoint before rank 0 deletes them
        if world.is_main:
            checkpoints.clear()
        state = TrainState()
        if champion_md5 is None:  # a champion is already trained; a warm-up would only undo some of it
            pretrain(model, optimizer, train_batch, params, generator, state.history, device)
    world.broadcast_state(model, algorithm, optimizer=optimizer)
    result = meta_train(
        model, optimizer, algorithm, train_batch, val_batch, params, generator, state, checkpoints, world
    )
    if not world.is_main:  # rank 0 writes the model and the log
        return result

    save_model(
        ws.model_file,
        model,
        {
            "algorithm": algorithm.name,
            "adapt": mp.adapt,
            "inner_lr": mp.inner_lr,
            "inner_steps": mp.inner_steps,
            "run_date": params.run.run_date.isoformat(),
            "best_epoch": result.best_epoch,
            "best_val_mae": result.best_val_mae,
            "resumed_from_epoch": result.resumed_from,
            "warm_start_from": champion_md5,
            "item_ids": list(data.vocab.item_ids),
        },
        algorithm.state_dict(),
    )
    _write_log(ws.train_log, state.history)
    log.info(
        "saved %s (best epoch %d, validation MAE %.4f)", ws.model_file, result.best_epoch, result.best_val_mae
    )
    return result


def run_fingerprint(params: Params, ws: Workspace, champion_md5: str | None) -> str:
    """What makes two training runs the same run: parameters, seed, data and starting point."""
    meta = params.meta.model_dump(mode="json", exclude={"checkpoint_every"})
    tasks_md5 = hashlib.md5((ws.episodes / "tasks.parquet").read_bytes()).hexdigest()
    return fingerprint(params.run.seed, params.model.model_dump(mode="json"), meta, tasks_md5, champion_md5)


def pretrain(
    model: RatingNet,
    optimizer: torch.optim.Optimizer,
    batch: TaskBatch,
    params: Params,
    generator: torch.Generator,
    history: list[dict],
    device: torch.device,
) -> None:
    """Plain supervised fitting on every training interaction: a better starting point for MAML."""
    rows = flatten(batch)
    for epoch in tqdm(range(params.meta.pretrain_epochs), desc="pretrain", unit="epoch", disable=None):
        started = time.perf_counter()
        loss = supervised_epoch(
            model,
            optimizer,
            rows,
            params.meta.pretrain_batch_size,
            generator,
            f"pretrain epoch {epoch}",
            autocast(device, params.meta.amp),
        )
        history.append(
            {
                "epoch": epoch,
                "phase": "pretrain",
                "train_loss": loss,
                "val_mae": "",
                "seconds": time.perf_counter() - started,
            }
        )


def meta_train(
    model: RatingNet,
    optimizer: torch.optim.Optimizer,
    algorithm: MetaAlgorithm,
    train: TaskBatch,
    val: TaskBatch,
    params: Params,
    generator: torch.Generator,
    state: TrainState,
    checkpoints: Checkpoints,
    world: World = SINGLE,
) -> TrainResult:
    mp = params.meta
    device = train.support.target.device
    if state.best_epoch < 0:  # a fresh run: the starting point is the best so far
        state.best_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
        state.best_algorithm = {k: v.detach().clone() for k, v in algorithm.state_dict().items()}
    epochs = tqdm(
        range(state.next_epoch, mp.epochs),
        initial=state.next_epoch,
        total=mp.epochs,
        desc=f"meta-train ({algorithm.name})",
        unit="epoch",
        disable=None,
    )
    for epoch in epochs:
        if state.stopped:
            break
        algorithm.start_epoch(epoch)
        started, total = time.perf_counter(), 0.0
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(train), mp.meta_batch_size):
            batch = select(train, order[start : start + mp.meta_batch_size].to(device))
            if mp.support_subsample:
                batch = subsample_support(batch, generator)
            loss = meta_gradients(model, optimizer, algorithm, batch, world, autocast(device, mp.amp))
            check_finite(loss, f"meta epoch {epoch}")
            optimizer.step()
            total += loss.item() * len(batch)
        val_mae = adapted_mae(model, algorithm, val, mp.inner_steps, world)
        if math.isnan(val_mae) and len(val):
            raise NonFiniteLossError(
                f"validation MAE became NaN after meta epoch {epoch}; no model was written"
            )
        state.history.append(
            {
                "epoch": epoch,
                "phase": "meta",
                "train_loss": total / max(len(train), 1),
                "val_mae": val_mae,
                "seconds": time.perf_counter() - started,
            }
        )
        log.info("epoch %d: meta loss %.4f, validation MAE %.4f", epoch, total / max(len(train), 1), val_mae)
        if val_mae < state.best_val_mae:
            state.record_best(val_mae, epoch, model, algorithm)
        else:
            state.stale += 1
            state.stopped = state.stale >= mp.patience
        state.next_epoch = epoch + 1
        due = state.stopped or state.next_epoch % mp.checkpoint_every == 0 or state.next_epoch == mp.epochs
        if due and world.is_main:
            checkpoints.save(state, model, algorithm, optimizer, generator)
        if state.stopped:
            log.info("early stop after epoch %d (no improvement for %d epochs)", epoch, state.stale)
    model.load_state_dict(state.best_model)
    algorithm.load_state_dict(state.best_algorithm)
    return TrainResult(state.best_epoch, state.best_val_mae, state.next_epoch, state.resumed_from)


def meta_gradients(
    model: RatingNet,
    optimizer: torch.optim.Optimizer,
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


def adapted_mae(
    model: RatingNet, algorithm: MetaAlgorithm, batch: TaskBatch, steps: int, world: World = SINGLE
) -> float:
    """Query MAE after adapting on each task's support set (the number the gate cares about).

    Under torchrun each rank adapts its shard of the tasks and the error sums are all-reduced."""
    if len(batch) == 0:
        return float("nan")
    sums = torch.zeros(2, device=batch.query.target.device)
    if world.size > 1:
        batch = select(batch, world.shard(torch.arange(len(batch), device=sums.device)))
    if len(batch):
        adapted, shared = algorithm.adapt(model, batch, steps)
        with torch.no_grad():
            pred = predict_batch(model, adapted, shared, batch.query.user, batch.query.item)
            mask = batch.query.mask
            err = (pred - batch.query.target).abs() * mask
            sums = torch.stack([err.sum(), mask.sum().to(err.dtype)])
    sums = world.all_sum(sums)
    return float(sums[0] / sums[1].clamp_min(1))


def _write_log(path: Path, history: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=TRAIN_LOG_FIELDS)
        writer.writeheader()
        writer.writerows(history)

"""The rating model: an initialization that adapts to a new user's ratings in a few steps.

Flow: load tasks → build the network and the algorithm (warm-started from the champion when
`meta.warm_start`) → fit the pretrained non-meta baseline → meta-train with the one loop
(`training/loop.py`: resume, supervised warm-up on a fresh start, validation MAE of adapted
validation users after every epoch, patience, NaN rules). Under torchrun, meta-training is
data-parallel over tasks; rank 0 alone fits the baseline and writes files. Nothing is written here:
`save_rating_models` writes the files once the whole stage has succeeded.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from tqdm import tqdm

from metarec_tasks.data.episodes import TRAIN, VALIDATION
from metarec_tasks.data.loader import EpisodeData, load_episode_data
from metarec_tasks.meta import build_algorithm
from metarec_tasks.meta.base import MetaAlgorithm
from metarec_tasks.meta.functional import predict_batch
from metarec_tasks.meta.tasks import TaskBatch, build_task_batch, select, subsample_support
from metarec_tasks.models.io import save_model
from metarec_tasks.models.rating import NetDims, RatingNet
from metarec_tasks.params import Params
from metarec_tasks.paths import Workspace
from metarec_tasks.training.adam import Adam
from metarec_tasks.training.checkpoint import Checkpoints, fingerprint
from metarec_tasks.training.distributed import SINGLE, World, init_distributed
from metarec_tasks.training.loop import FitResult, Randomness, Validation, fit, write_history
from metarec_tasks.training.runtime import autocast, pick_device, seed_everything, to_device
from metarec_tasks.training.supervised import fit_pretrained, flatten, supervised_epoch
from metarec_tasks.training.warm_start import warm_start

log = logging.getLogger(__name__)

METRIC = "val_mae"
BASELINE_SEED_OFFSET = 1  # the baseline shuffles with its own generator, so it never shifts the meta run


@dataclass
class RatingModels:
    """What the rating half of `train` produced, written by `save_rating_models`."""

    model: RatingNet
    algorithm: MetaAlgorithm
    baseline: RatingNet
    baseline_fit: dict
    fit: FitResult
    item_ids: list[str]
    warm_start_from: str | None
    world: World

    @property
    def best_epoch(self) -> int:
        return self.fit.best_epoch

    @property
    def best_val_mae(self) -> float:
        return float("nan") if self.fit.best_value is None else self.fit.best_value

    @property
    def resumed_from(self) -> int | None:
        return self.fit.resumed_from


def train_rating_model(params: Params, ws: Workspace, data: EpisodeData | None = None) -> RatingModels:
    """Meta-train the rating model (and fit its non-meta rival) on `data` (default: the episode data
    of `ws`, as the benchmarks call it); the train stage passes what it loaded once for both models."""
    mp = params.meta
    generator = seed_everything(params.run.seed)
    device = pick_device(params.run.device)
    world = init_distributed(device)
    data = data or load_episode_data(ws)
    train = to_device(build_task_batch(data.split(TRAIN), data.catalog), device)
    val = to_device(build_task_batch(data.split(VALIDATION), data.catalog), device)
    log.info("training on %d tasks, validating on %d, device %s", len(train), len(val), device)

    dims = NetDims.from_vocab(data.vocab, params.model, rating_offset=data.global_mean)
    model = RatingNet(dims, data.catalog.items).to(device)
    algorithm = build_algorithm(mp, model)
    champion_md5 = (
        warm_start(model, algorithm, ws.root / mp.champion_model, data.vocab.item_ids)
        if mp.warm_start
        else None
    )
    baseline, baseline_fit = RatingNet(dims, data.catalog.items).to(device), {}
    if world.is_main:  # only saved for finetune, never used by meta-training: one rank fits it
        baseline_generator = torch.Generator().manual_seed(params.run.seed + BASELINE_SEED_OFFSET)
        baseline_fit = fit_pretrained(baseline, train, val, mp, baseline_generator)

    def batches(epoch: int) -> Iterator[TaskBatch]:
        order = torch.randperm(len(train), generator=generator)[: mp.tasks_per_epoch or None]
        for start in range(0, len(order), mp.meta_batch_size):
            batch = select(train, order[start : start + mp.meta_batch_size].to(device))
            yield subsample_support(batch, generator) if mp.support_subsample else batch

    def warm_up(optimizer: Adam, history: list[dict]) -> None:
        if champion_md5 is None:  # a champion is already trained; a warm-up would only undo some of it
            pretrain(model, optimizer, train, params, generator, history, device)

    result = fit(
        model,
        algorithm,
        batches,
        Validation(METRIC, True, lambda: adapted_mae(model, algorithm, val, mp.inner_steps, world)),
        mp,
        Checkpoints(ws.checkpoints_for("rating"), run_fingerprint(params, ws, champion_md5)),
        Randomness(generator),
        warm_up=warm_up,
        world=world,
    )
    log.info("rating model: best epoch %d, validation MAE %s", result.best_epoch, result.best_value)
    return RatingModels(
        model, algorithm, baseline, baseline_fit, result, list(data.vocab.item_ids), champion_md5, world
    )


def save_rating_models(params: Params, ws: Workspace, trained: RatingModels) -> None:
    """Write the meta-model, its non-meta baseline and the training log (rank 0 only)."""
    if not trained.world.is_main:
        return
    mp, result = params.meta, trained.fit
    save_model(
        ws.pretrained_model_file,
        trained.baseline,
        {"kind": "pretrained", "adapt": mp.adapt, **trained.baseline_fit},
    )
    save_model(
        ws.model_file,
        trained.model,
        {
            "algorithm": trained.algorithm.name,
            "adapt": mp.adapt,
            "inner_lr": mp.inner_lr,
            "inner_steps": mp.inner_steps,
            "run_date": params.run.run_date.isoformat(),
            "best_epoch": result.best_epoch,
            "best_val_mae": trained.best_val_mae,
            "resumed_from_epoch": result.resumed_from,
            "warm_start_from": trained.warm_start_from,
            "item_ids": trained.item_ids,
        },
        trained.algorithm.state_dict(),
    )
    write_history(ws.train_log, result.history, METRIC)
    log.info(
        "saved %s (best epoch %d, validation MAE %.4f)",
        ws.model_file,
        result.best_epoch,
        trained.best_val_mae,
    )


def run_fingerprint(params: Params, ws: Workspace, champion_md5: str | None) -> str:
    """What makes two training runs the same run: parameters, seed, data and starting point."""
    meta = params.meta.model_dump(mode="json", exclude={"checkpoint_every"})
    tasks_md5 = hashlib.md5(ws.tasks_file.read_bytes()).hexdigest()
    return fingerprint(params.run.seed, params.model.model_dump(mode="json"), meta, tasks_md5, champion_md5)


def pretrain(
    model: RatingNet,
    optimizer: Adam,
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
                METRIC: "",
                "seconds": time.perf_counter() - started,
            }
        )


def adapted_mae(
    model: RatingNet, algorithm: MetaAlgorithm, batch: TaskBatch, steps: int, world: World = SINGLE
) -> float | None:
    """Query MAE after adapting on each task's support set (the number the gate cares about); None
    when there are no validation tasks.

    Under torchrun each rank adapts its shard of the tasks and the error sums are all-reduced."""
    if len(batch) == 0:
        return None
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

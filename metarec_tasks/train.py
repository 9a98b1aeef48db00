"""The `train` stage: learn an initialization that adapts to a new user in a few steps.

Flow: load tasks → (optional) supervised warm-up on training interactions → meta-train on batches of
training tasks, validating after every epoch on validation users (adapt on support, score query) →
keep the best epoch, stop early when validation stops improving → save the model atomically.
A loss that turns NaN/inf stops the run with an error, and no model is written.
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from metarec_tasks.dataset import load_episode_data
from metarec_tasks.episodes import TRAIN, VALIDATION
from metarec_tasks.errors import NonFiniteLossError
from metarec_tasks.meta import build_algorithm
from metarec_tasks.meta.base import MetaAlgorithm
from metarec_tasks.meta.functional import predict_batch
from metarec_tasks.meta.tasks import TaskBatch, build_task_batch, select
from metarec_tasks.model import NetDims, RatingNet
from metarec_tasks.model_io import save_model
from metarec_tasks.params import Params
from metarec_tasks.paths import Workspace
from metarec_tasks.runtime import pick_device, seed_everything

log = logging.getLogger(__name__)

TRAIN_LOG_FIELDS = ("epoch", "phase", "train_loss", "val_mae", "seconds")


@dataclass(frozen=True)
class TrainResult:
    best_epoch: int
    best_val_mae: float
    epochs_run: int


def run_train(params: Params, root: Path) -> TrainResult:
    ws = Workspace(root)
    generator = seed_everything(params.run.seed)
    device = pick_device(params.run.device)
    data = load_episode_data(ws)
    train_batch = build_task_batch(data.split(TRAIN), data.catalog).to(device)
    val_batch = build_task_batch(data.split(VALIDATION), data.catalog).to(device)
    log.info("training on %d tasks, validating on %d, device %s", len(train_batch), len(val_batch), device)

    dims = NetDims.from_vocab(data.vocab, params.model, rating_offset=data.global_mean)
    model = RatingNet(dims).to(device)
    algorithm = build_algorithm(params.meta)
    optimizer = torch.optim.Adam(model.parameters(), lr=params.meta.meta_lr)
    history: list[dict] = []

    pretrain(model, optimizer, train_batch, params, generator, history)
    result = meta_train(model, optimizer, algorithm, train_batch, val_batch, params, generator, history)

    save_model(
        ws.model_file,
        model,
        {
            "algorithm": algorithm.name,
            "adapt": params.meta.adapt,
            "inner_lr": params.meta.inner_lr,
            "inner_steps": params.meta.inner_steps,
            "run_date": params.run.run_date.isoformat(),
            "best_epoch": result.best_epoch,
            "best_val_mae": result.best_val_mae,
        },
    )
    _write_log(ws.train_log, history)
    log.info(
        "saved %s (best epoch %d, validation MAE %.4f)", ws.model_file, result.best_epoch, result.best_val_mae
    )
    return result


def pretrain(
    model: RatingNet,
    optimizer: torch.optim.Optimizer,
    batch: TaskBatch,
    params: Params,
    generator: torch.Generator,
    history: list[dict],
) -> None:
    """Plain supervised fitting on every training interaction: a better starting point for MAML."""
    rows = _flatten(batch)
    n = rows["target"].shape[0]
    size = params.meta.pretrain_batch_size
    for epoch in tqdm(range(params.meta.pretrain_epochs), desc="pretrain", unit="epoch", disable=None):
        started, total = time.perf_counter(), 0.0
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, size):
            idx = order[start : start + size].to(rows["target"].device)
            pred = model(
                {k: v[idx] for k, v in rows["user"].items()}, {k: v[idx] for k, v in rows["item"].items()}
            )
            loss = torch.nn.functional.mse_loss(pred, rows["target"][idx])
            _check_finite(loss, f"pretrain epoch {epoch}")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        history.append(
            {
                "epoch": epoch,
                "phase": "pretrain",
                "train_loss": total / max(n, 1),
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
    history: list[dict],
) -> TrainResult:
    mp = params.meta
    best = (float("inf"), -1, {k: v.detach().clone() for k, v in model.state_dict().items()})
    stale = 0
    epoch = -1
    for epoch in tqdm(range(mp.epochs), desc=f"meta-train ({algorithm.name})", unit="epoch", disable=None):
        started, total = time.perf_counter(), 0.0
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(train), mp.meta_batch_size):
            batch = select(train, order[start : start + mp.meta_batch_size].to(train.user_rows.device))
            loss = algorithm.meta_loss(model, batch)
            _check_finite(loss, f"meta epoch {epoch}")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        val_mae = adapted_mae(model, algorithm, val, mp.inner_steps)
        history.append(
            {
                "epoch": epoch,
                "phase": "meta",
                "train_loss": total / max(len(train), 1),
                "val_mae": val_mae,
                "seconds": time.perf_counter() - started,
            }
        )
        log.info("epoch %d: meta loss %.4f, validation MAE %.4f", epoch, total / max(len(train), 1), val_mae)
        if val_mae < best[0]:
            best, stale = (val_mae, epoch, {k: v.detach().clone() for k, v in model.state_dict().items()}), 0
        else:
            stale += 1
            if stale >= mp.patience:
                log.info("early stop after epoch %d (no improvement for %d epochs)", epoch, stale)
                break
    model.load_state_dict(best[2])
    return TrainResult(best_epoch=best[1], best_val_mae=best[0], epochs_run=epoch + 1)


def adapted_mae(model: RatingNet, algorithm: MetaAlgorithm, batch: TaskBatch, steps: int) -> float:
    """Query MAE after adapting on each task's support set (the number the gate cares about)."""
    if len(batch) == 0:
        return float("nan")
    adapted, shared = algorithm.adapt(model, batch, steps)
    with torch.no_grad():
        pred = predict_batch(model, adapted, shared, batch.query.user, batch.query.item)
        mask = batch.query.mask
        err = (pred - batch.query.target).abs() * mask
        return float(err.sum() / mask.sum().clamp_min(1))


def _flatten(batch: TaskBatch) -> dict:
    """All real (unpadded) support and query rows of a batch as flat [N, ...] tensors."""
    parts = []
    for s in (batch.support, batch.query):
        m = s.mask
        parts.append(
            {
                "user": {k: v[m] for k, v in s.user.items()},
                "item": {k: v[m] for k, v in s.item.items()},
                "target": s.target[m],
            }
        )
    return {
        "user": {k: torch.cat([p["user"][k] for p in parts]) for k in parts[0]["user"]},
        "item": {k: torch.cat([p["item"][k] for p in parts]) for k in parts[0]["item"]},
        "target": torch.cat([p["target"] for p in parts]),
    }


def _check_finite(loss: torch.Tensor, where: str) -> None:
    if not torch.isfinite(loss):
        raise NonFiniteLossError(f"loss became {loss.item()} at {where}; no model was written")


def _write_log(path: Path, history: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=TRAIN_LOG_FIELDS)
        writer.writeheader()
        writer.writerows(history)

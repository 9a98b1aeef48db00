"""Plain supervised training on every training interaction (no adaptation).

Two uses: the short warm-up before meta-training, and the *pretrained* non-meta baseline — the same
network trained to convergence on all training users' ratings, early-stopped on validation users.
Fine-tuned per user on the support set, that baseline is plain transfer learning, the strongest
non-meta rival; it is trained in the `train` stage because that stage already owns the training data,
the device, the seed and supervised fitting, and `finetune` then treats it like the meta-model.
"""

from __future__ import annotations

import logging
import math
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from tqdm import tqdm

from metarec_tasks.meta.tasks import TaskBatch
from metarec_tasks.models.rating import RatingNet
from metarec_tasks.params import RatingMetaParams
from metarec_tasks.training.adam import Adam, adam
from metarec_tasks.training.loop import check_finite, check_finite_gradients

log = logging.getLogger(__name__)

Rows = dict[str, Any]


def flatten(batch: TaskBatch) -> Rows:
    """All real (unpadded) support and query rows of a batch as flat [N, ...] tensors."""
    parts = []
    for s in (batch.support, batch.query):
        m = s.mask
        parts.append(
            {
                "user": {k: v.expand(*m.shape, *v.shape[2:])[m] for k, v in s.user.items()},
                "item": {k: v[m] for k, v in s.item.items()},
                "target": s.target[m],
            }
        )
    return {
        "user": {k: torch.cat([p["user"][k] for p in parts]) for k in parts[0]["user"]},
        "item": {k: torch.cat([p["item"][k] for p in parts]) for k in parts[0]["item"]},
        "target": torch.cat([p["target"] for p in parts]),
    }


def supervised_epoch(
    model: RatingNet,
    optimizer: Adam,
    rows: Rows,
    batch_size: int,
    generator: torch.Generator,
    where: str,
    autocast: AbstractContextManager | None = None,
) -> float:
    """One shuffled pass of MSE minibatches; returns the mean training loss. The rows are put in
    the epoch's order once, so a minibatch is a slice (a view), not a gather per feature."""
    n = rows["target"].shape[0]
    total = 0.0
    order = torch.randperm(n, generator=generator).to(rows["target"].device)
    user = {k: v[order] for k, v in rows["user"].items()}
    item = {k: v[order] for k, v in rows["item"].items()}
    target = rows["target"][order]
    for start in range(0, n, batch_size):
        idx = slice(start, start + batch_size)
        with autocast or nullcontext():
            pred = model({k: v[idx] for k, v in user.items()}, {k: v[idx] for k, v in item.items()})
            loss = torch.nn.functional.mse_loss(pred.float(), target[idx].float())
        check_finite(loss, where)
        optimizer.zero_grad()
        loss.backward()
        check_finite_gradients(optimizer, where)
        optimizer.step()
        total += loss.item() * len(pred)
    return total / max(n, 1)


def unadapted_mae(model: RatingNet, batch: TaskBatch) -> float:
    """Query MAE of the network as it is, no per-user adaptation."""
    if len(batch) == 0:
        return math.nan
    with torch.no_grad():
        pred = model(batch.query.user, batch.query.item)
        mask = batch.query.mask
        return float(((pred - batch.query.target).abs() * mask).sum() / mask.sum().clamp_min(1))


def fit_pretrained(
    model: RatingNet, train: TaskBatch, val: TaskBatch, mp: RatingMetaParams, generator: torch.Generator
) -> dict[str, Any]:
    """Train to the best validation MAE (same epoch budget and patience as meta-training, its own
    minibatch size and learning rate: `meta.baseline_batch_size`, `meta.baseline_lr`)."""
    rows = flatten(train)
    optimizer = adam(model.parameters(), mp.baseline_lr)
    best = (math.inf, -1, {k: v.detach().clone() for k, v in model.state_dict().items()})
    stale = 0
    for epoch in tqdm(range(mp.epochs), desc="pretrained baseline", unit="epoch", disable=None):
        loss = supervised_epoch(
            model, optimizer, rows, mp.baseline_batch_size, generator, f"baseline {epoch}"
        )
        val_mae = unadapted_mae(model, val)
        log.debug("baseline epoch %d: loss %.4f, validation MAE %.4f", epoch, loss, val_mae)
        if val_mae < best[0]:
            best, stale = (val_mae, epoch, {k: v.detach().clone() for k, v in model.state_dict().items()}), 0
        else:
            stale += 1
            if stale >= mp.patience:
                break
    model.load_state_dict(best[2])
    log.info("pretrained baseline: best epoch %d, validation MAE (no adaptation) %.4f", best[1], best[0])
    return {"best_epoch": best[1], "best_val_mae": best[0]}

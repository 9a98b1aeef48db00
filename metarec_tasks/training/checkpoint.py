"""Training checkpoints: resume a killed `train` where it stopped, and only the run it belongs to.

A checkpoint holds everything the rest of the run depends on — model, learned algorithm state,
optimizer moments, the random generators (torch's, and numpy's where episodes are sampled with it),
the best epoch so far and the log — so a resumed run finishes with the same model as an
uninterrupted one (on CPU, where kernels are deterministic). Each trained model has its own folder
under `models/checkpoints`, a DVC out with `persist: true` (DVC would otherwise delete it before the stage
re-runs); a fingerprint of the parameters and the training data keeps a checkpoint of another night's
run from ever being resumed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarec_tasks.errors import ModelFileError
from metarec_tasks.models.io import atomic_save, safe_load
from metarec_tasks.training.adam import Adam

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "metarec-checkpoint/2"  # 2: best_value (either direction), numpy generator
KEEP = 2  # the newest checkpoints kept; older ones are deleted as new ones land


@dataclass
class TrainState:
    """Meta-training progress: what a checkpoint must restore besides model and optimizer."""

    next_epoch: int = 0
    best_value: float | None = None  # the best validation metric so far (None: no epoch yet)
    best_epoch: int = -1
    best_model: dict[str, torch.Tensor] = field(default_factory=dict)
    best_algorithm: dict[str, torch.Tensor] = field(default_factory=dict)
    stale: int = 0  # epochs since the best one...
    stale_tasks: int = 0  # ...and the training tasks they held
    stopped: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int | None = None  # the epoch count of the checkpoint this run resumed from
    average: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # WeightAverage state
    best_averaged: bool = False  # the best weights are the moving average's

    def record_best(
        self, value: float | None, epoch: int, model: torch.nn.Module, algorithm: torch.nn.Module
    ):
        self.best_value, self.best_epoch, self.stale, self.stale_tasks = value, epoch, 0, 0
        self.best_model = _clone(model.state_dict())
        self.best_algorithm = _clone(algorithm.state_dict())


def fingerprint(*parts: Any) -> str:
    """A stable digest of JSON-able parts (parameters, data digests)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class Checkpoints:
    folder: Path
    run_fingerprint: str

    def save(
        self,
        state: TrainState,
        model: torch.nn.Module,
        algorithm: torch.nn.Module,
        optimizer: Adam,
        generator: torch.Generator,
        rng: np.random.Generator | None = None,
    ) -> Path:
        path = self.folder / f"epoch-{state.next_epoch:04d}.pt"
        payload = {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": self.run_fingerprint,
            "model": _clone(model.state_dict(), cpu=True),
            "algorithm": _clone(algorithm.state_dict(), cpu=True),
            "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": json.dumps(rng.bit_generator.state) if rng is not None else None,
            "state": {
                "next_epoch": state.next_epoch,
                "best_value": state.best_value,
                "best_epoch": state.best_epoch,
                "best_model": _clone(state.best_model, cpu=True),
                "best_algorithm": _clone(state.best_algorithm, cpu=True),
                "stale": state.stale,
                "stopped": state.stopped,
                "history": state.history,
                "average": state.average,
                "best_averaged": state.best_averaged,
            },
        }
        atomic_save(payload, path)
        for old in self._files()[:-KEEP]:
            old.unlink(missing_ok=True)
        log.info("checkpoint %s", path)
        return path

    def resume(
        self,
        model: torch.nn.Module,
        algorithm: torch.nn.Module,
        optimizer: Adam,
        generator: torch.Generator,
        rng: np.random.Generator | None = None,
    ) -> TrainState | None:
        """Restore the newest checkpoint of this run; None (start fresh) when there is none."""
        for path in reversed(self._files()):
            try:
                payload = safe_load(path, "cpu", CHECKPOINT_FORMAT, "MetaRec training checkpoint")
            except ModelFileError as exc:  # e.g. a file truncated by a crash before the atomic rename
                log.warning("ignoring unreadable checkpoint: %s", exc)
                continue
            if payload["fingerprint"] != self.run_fingerprint:
                log.info("ignoring %s: it belongs to another run (different params or data)", path.name)
                return None
            device = next(model.parameters()).device
            model.load_state_dict(payload["model"])
            algorithm.load_state_dict(payload["algorithm"])
            optimizer.load_state_dict(payload["optimizer"])
            generator.set_state(payload["generator"])
            torch.set_rng_state(payload["torch_rng"])
            if rng is not None and payload.get("numpy_rng"):
                rng.bit_generator.state = json.loads(payload["numpy_rng"])
            saved = payload["state"]
            state = TrainState(
                **{
                    **saved,
                    "best_model": _clone(saved["best_model"], device=device),
                    "best_algorithm": _clone(saved["best_algorithm"], device=device),
                }
            )
            state.resumed_from = state.next_epoch
            log.info("resuming from %s (%d meta-epochs done)", path.name, state.next_epoch)
            return state
        return None

    def clear(self) -> None:
        """Remove checkpoints of other runs, so this run's are the only ones (and never pruned)."""
        for path in self._files():
            path.unlink(missing_ok=True)

    def _files(self) -> list[Path]:
        return sorted(self.folder.glob("epoch-*.pt")) if self.folder.is_dir() else []


def _clone(state: dict[str, torch.Tensor], cpu: bool = False, device=None) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        value = value.detach().clone()
        if cpu:
            value = value.cpu()
        if device is not None:
            value = value.to(device)
        out[key] = value
    return out

"""Run-time choices that must not be scattered: device, seeding, mixed precision, host→device copies."""

from __future__ import annotations

import logging
import random
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch

from metarec_tasks.errors import ConfigError

log = logging.getLogger(__name__)


def pick_device(requested: str) -> torch.device:
    """CUDA when present (or when forced), CPU otherwise; a forced but missing GPU is an error."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device is cuda but no CUDA device is available; set run.device to auto or cpu")
    if requested in ("cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed every RNG the pipeline touches; return a generator for explicit shuffling."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def autocast(device: torch.device, enabled: bool) -> AbstractContextManager:
    """bfloat16 autocast on CUDA when `meta.amp` is on; a no-op on CPU.

    bfloat16 keeps float32's exponent range, so no gradient scaler is needed — which matters here,
    because the meta-gradient flows through the inner loop's own gradient steps, where a scaled
    loss would also scale the inner steps.
    """
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def to_device(batch, device: torch.device):
    """Move a TaskBatch: through pinned memory with non-blocking copies on CUDA, as-is on CPU."""
    if device.type == "cuda":
        return batch.pin_memory().to(device, non_blocking=True)
    return batch.to(device)

"""Run-time choices that must not be scattered: device and seeding."""

from __future__ import annotations

import logging
import random

import numpy as np
import torch

log = logging.getLogger(__name__)


def pick_device(requested: str) -> torch.device:
    """CUDA when present (or when forced), CPU otherwise; a forced but missing GPU is an error."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("params.yaml forces run.device=cuda but no CUDA device is available")
    if requested in ("cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed every RNG the pipeline touches; return a generator for explicit shuffling."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)

"""Saving and loading models safely: `weights_only=True` and a format marker we check."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from metarec_tasks.errors import ModelFileError
from metarec_tasks.model import MODEL_FORMAT, NetDims, RatingNet


def save_model(path: Path, model: RatingNet, metadata: dict[str, Any]) -> None:
    """Write atomically: a crash mid-write never leaves a half-written model behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": MODEL_FORMAT,
        "dims": model.dims.to_json(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": metadata,
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[RatingNet, dict[str, Any]]:
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # unpickling refused or not a torch file at all
        raise ModelFileError(f"{path} is not a MetaRec model file: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ModelFileError(
            f"{path} is not a MetaRec model file (format {found!r}, expected {MODEL_FORMAT!r})"
        )
    model = RatingNet(NetDims(**payload["dims"]))
    model.load_state_dict(payload["state_dict"])
    return model.to(device), payload["metadata"]

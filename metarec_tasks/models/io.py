"""Saving and loading models safely: `weights_only=True` and a format marker we check.

A model file holds the network (shape + weights), the algorithm's learned state (e.g. Meta-SGD's
inner learning rates, needed to adapt the way training did) and metadata. Anything else — a pickle, a
foreign checkpoint, an older format — is refused with `ModelFileError`, never half-loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from metarec_tasks.errors import ModelFileError
from metarec_tasks.files import atomic_path
from metarec_tasks.models.rating import MODEL_FORMAT, Features, NetDims, RatingNet


@dataclass
class ModelBundle:
    model: RatingNet
    metadata: dict[str, Any]
    algorithm_state: dict[str, torch.Tensor] = field(default_factory=dict)


def save_model(
    path: Path,
    model: RatingNet,
    metadata: dict[str, Any],
    algorithm_state: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write atomically: a crash mid-write never leaves a half-written model behind."""
    payload = {
        "format": MODEL_FORMAT,
        "dims": model.dims.to_json(),
        "state_dict": cpu_state(model.state_dict()),
        "algorithm_state": cpu_state(algorithm_state or {}),
        "metadata": metadata,
    }
    atomic_save(payload, path)


def atomic_save(payload: dict[str, Any], path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_bundle(
    path: Path, catalog: Features | None = None, device: torch.device | str = "cpu"
) -> ModelBundle:
    """The network reading `catalog`'s item rows (`RatingNet`; the file holds weights only), its
    metadata and learned algorithm state; without `catalog`, the weights alone are usable."""
    payload = safe_load(path, device, MODEL_FORMAT, "MetaRec model file")
    model = restore(payload, path, lambda dims: RatingNet(NetDims(**dims), catalog), "MetaRec model file")
    return ModelBundle(model.to(device), payload["metadata"], payload.get("algorithm_state", {}))


def load_model(
    path: Path, catalog: Features | None = None, device: torch.device | str = "cpu"
) -> tuple[RatingNet, dict[str, Any]]:
    bundle = load_bundle(path, catalog, device)
    return bundle.model, bundle.metadata


def safe_load(path: Path, device: torch.device | str, expected: str, what: str) -> dict[str, Any]:
    """`torch.load(weights_only=True)` plus a check of our format marker."""
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # unpickling refused or not a torch file at all
        raise ModelFileError(f"{path} is not a {what}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != expected:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ModelFileError(f"{path} is not a {what} (format {found!r}, expected {expected!r})")
    return payload


def restore(payload: dict[str, Any], path: Path, build: Callable[[dict], torch.nn.Module], what: str):
    """Rebuild a network from a checked payload; a file whose shapes or keys do not fit is refused."""
    try:
        model = build(payload["dims"])
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise ModelFileError(f"{path} is a damaged {what}: {exc}") from exc
    return model


def cpu_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in state.items()}

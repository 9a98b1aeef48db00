"""Warm start: begin tonight's meta-training from the current champion instead of from scratch.

The champion is the model of the last *published* run: `publish` copies it to `meta.champion_model`
(default `models/champion.pt`), a file outside DVC's outputs, so it survives the next night's
`dvc repro` (DVC deletes a stage's outs before re-running it, so yesterday's `models/meta_model.pt` is
already gone when `train` starts). The vocabulary grows every night — new items — so weights are copied
by name where shapes agree, and item-id embedding rows are matched by item id; new items keep their
fresh initialization. The champion's md5 goes into the model metadata and the checkpoint fingerprint.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch

from metarec_tasks.errors import ModelFileError
from metarec_tasks.meta.base import MetaAlgorithm
from metarec_tasks.models.io import load_bundle
from metarec_tasks.models.rating import RatingNet

log = logging.getLogger(__name__)

ITEM_ID_WEIGHT = "encoder.item_id.weight"


def warm_start(model: RatingNet, algorithm: MetaAlgorithm, path: Path, item_ids: list[str]) -> str | None:
    """Copy the champion's weights into `model` (and learned state into `algorithm`); its md5 or None."""
    if not path.is_file():
        log.warning("warm start requested but no champion at %s yet: starting from scratch", path)
        return None
    champion = load_bundle(path)  # refuses files that are not ours (ModelFileError)
    old_ids = champion.metadata.get("item_ids")
    state = model.state_dict()
    copied, skipped = 0, []
    with torch.no_grad():
        for name, value in champion.model.state_dict().items():
            if name == ITEM_ID_WEIGHT and name in state and old_ids is not None:
                _copy_item_rows(state[name], value, old_ids, item_ids)
                copied += 1
            elif name in state and state[name].shape == value.shape:
                state[name].copy_(value)
                copied += 1
            else:
                skipped.append(name)
    if copied == 0:
        raise ModelFileError(f"champion {path} shares no parameter with this network; cannot warm-start")
    if champion.metadata.get("algorithm") == algorithm.name and champion.algorithm_state:
        try:
            algorithm.load_state_dict(champion.algorithm_state)
        except RuntimeError as exc:  # learned rates shaped for another network or adapt group
            log.warning("champion's %s state does not fit: %s", algorithm.name, exc)
    log.info("warm start from %s: %d tensors copied, skipped %s", path, copied, skipped or "none")
    return hashlib.md5(path.read_bytes()).hexdigest()


def _copy_item_rows(target: torch.Tensor, source: torch.Tensor, old_ids: list[str], new_ids: list[str]):
    position = {item: row for row, item in enumerate(old_ids)}
    pairs = [(row, position[item]) for row, item in enumerate(new_ids) if item in position]
    if pairs:
        new_rows, old_rows = (torch.as_tensor(side) for side in zip(*pairs, strict=True))
        target[new_rows.to(target.device)] = source[old_rows.to(source.device)].to(target.device)

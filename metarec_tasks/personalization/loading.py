"""The one loader of a trained model for adaptation: the network plus the algorithm that adapts it.

A meta-model adapts the way it was meta-trained (its file names the algorithm, the adapt group and,
for the rating model, the inner learning rate and steps) with the learned state training left; a
pretrained baseline adapts with plain SGD (`algorithm="fomaml"`, no learned state).
"""

from __future__ import annotations

from pathlib import Path

import torch

from metarec_tasks.errors import ConfigError
from metarec_tasks.meta import build_algorithm
from metarec_tasks.meta.base import MetaAlgorithm
from metarec_tasks.meta.functional import VECTORIZED, make_engine
from metarec_tasks.models.io import load_bundle
from metarec_tasks.models.ranking import RankNet, load_rank_model
from metarec_tasks.models.rating import Features, RatingNet
from metarec_tasks.params import MetaParams, Params

ADAPTATION_KEYS = ("inner_lr", "inner_steps")  # taken from the model file when it records them


def load_adapting(
    model: torch.nn.Module,
    metadata: dict,
    algorithm_state: dict,
    meta: MetaParams,
    engine,
    algorithm: str | None = None,
) -> MetaAlgorithm:
    model.eval()
    settings = {"algorithm": algorithm or metadata["algorithm"], "adapt": metadata["adapt"]}
    settings |= {key: metadata[key] for key in ADAPTATION_KEYS if key in metadata}
    adapting = build_algorithm(meta.model_copy(update=settings), model, engine)
    if algorithm is None:
        adapting.load_state_dict(algorithm_state)
    return adapting


def load_adapting_model(
    path: Path, catalog: Features, params: Params, device: torch.device, algorithm: str | None = None
) -> tuple[RatingNet, MetaAlgorithm]:
    """A saved rating network over `catalog`'s item rows and the algorithm that adapts it."""
    bundle = load_bundle(path, catalog, device)
    adapting = load_adapting(
        bundle.model, bundle.metadata, bundle.algorithm_state, params.meta, VECTORIZED, algorithm
    )
    return bundle.model, adapting


def load_adapting_ranker(
    path: Path, catalog: Features, params: Params, device: torch.device, algorithm: str | None = None
) -> tuple[RankNet, MetaAlgorithm]:
    """A saved ranking network over `catalog`'s item rows and the algorithm that adapts it (with the
    `ranking.loss` objective)."""
    model, metadata, state = load_rank_model(path, catalog, device)
    rp = params.ranking
    if model.dims.prior != (rp.prior != "none"):
        raise ConfigError(
            f"{path}: trained with ranking.prior {metadata.get('prior', 'none')}, params.yaml says "
            f"{rp.prior}: re-run the train stage (dvc repro) after changing ranking.prior"
        )
    return model, load_adapting(model, metadata, state, rp.meta, make_engine(rp.loss), algorithm)

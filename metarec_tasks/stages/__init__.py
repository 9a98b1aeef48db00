"""The pipeline's stages, in run order: the one list the CLI, the DAG, the DVC checks and the tests use.

Each stage is a module here with `run(params, ws)`, a short function that reads top to bottom as the
data flows (load → compute → write); the work lives in the library packages beside this one.
Stages are imported lazily so that `metarec ingest` never pays for importing torch.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

from metarec_tasks.params import Params
from metarec_tasks.paths import Workspace

STAGES: tuple[str, ...] = ("ingest", "validate", "episodes", "train", "finetune", "evaluate", "publish")
GPU_STAGES: tuple[str, ...] = ("train", "finetune")  # the stages that run models: the GPU queue

StageRun = Callable[[Params, Workspace], Any]


def stage_runner(name: str) -> StageRun:
    """The `run(params, ws)` of stage `name`."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; choose from {', '.join(STAGES)}")
    return import_module(f"{__name__}.{name}").run

"""Meta-learning algorithms behind one interface, chosen by name from `params.yaml`.

Adding an algorithm: one new module implementing `MetaAlgorithm`, one line in `ALGORITHMS`.
"""

from __future__ import annotations

from collections.abc import Callable

from metarec_tasks.meta.base import InnerLoop, MetaAlgorithm
from metarec_tasks.meta.maml import MAML
from metarec_tasks.params import MetaParams

ALGORITHMS: dict[str, Callable[[InnerLoop], MetaAlgorithm]] = {
    "maml": lambda inner: MAML(inner, first_order=False),
    "fomaml": lambda inner: MAML(inner, first_order=True),
}


def build_algorithm(meta: MetaParams) -> MetaAlgorithm:
    if meta.algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {meta.algorithm!r}; choose from {sorted(ALGORITHMS)}")
    return ALGORITHMS[meta.algorithm](InnerLoop(meta.adapt, meta.inner_steps, meta.inner_lr))

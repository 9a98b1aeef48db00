"""Meta-learning algorithms behind one interface, chosen by name from `params.yaml` (`meta.algorithm`).

| name      | inner loop                               | outer update                                  |
|-----------|------------------------------------------|-----------------------------------------------|
| `maml`    | SGD, fixed rate                          | second-order query-loss gradient              |
| `fomaml`  | SGD, fixed rate                          | first-order (inner gradients are constants)   |
| `mamlpp`  | SGD, learned rate per step and layer     | multi-step loss, first- then second-order     |
| `metasgd` | SGD, learned rate per parameter entry    | second-order; the rates are meta-learned too  |
| `reptile` | SGD, fixed rate                          | towards the mean adapted weights (surrogate)  |
| `ridge`   | closed form: exact ridge fit of the head | through the solve; λ and weights meta-learned |

Every algorithm adapts only the parameter groups `meta.adapt` names (mlp: MeLU, head: ANIL, all), runs
its inner loop vectorized over tasks (`functional.VECTORIZED`), and can be run with the naive loop
(`functional.REFERENCE`) in tests. Non-meta baselines: `baselines.py` (statistics) and the pretrained
network of `metarec_tasks/training/supervised.py`.

Adding an algorithm: one new module subclassing `MetaAlgorithm`, one line in `ALGORITHMS`. Algorithms
with learned state (inner learning rates) are built against the model, whose parameters shape it.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from metarec_tasks.meta.base import InnerLoop, MetaAlgorithm
from metarec_tasks.meta.functional import VECTORIZED, Engine
from metarec_tasks.meta.maml import MAML
from metarec_tasks.meta.mamlpp import MAMLPlusPlus
from metarec_tasks.meta.metasgd import MetaSGD
from metarec_tasks.meta.reptile import Reptile
from metarec_tasks.meta.ridge import ClosedFormRidge
from metarec_tasks.params import MetaParams

TRANSFER_ALGORITHM = "fomaml"  # plain SGD at a fixed rate: how a pretrained network is fine-tuned per user
Builder = Callable[[InnerLoop, MetaParams, nn.Module, Engine], MetaAlgorithm]

ALGORITHMS: dict[str, Builder] = {
    "maml": lambda inner, mp, model, engine: MAML(inner, first_order=False, engine=engine),
    "fomaml": lambda inner, mp, model, engine: MAML(inner, first_order=True, engine=engine),
    "mamlpp": lambda inner, mp, model, engine: MAMLPlusPlus(
        inner, model, mp.first_order_epochs, mp.multi_step_loss_epochs, engine
    ),
    "metasgd": lambda inner, mp, model, engine: MetaSGD(inner, model, engine),
    "reptile": lambda inner, mp, model, engine: Reptile(inner, engine),
    "ridge": lambda inner, mp, model, engine: ClosedFormRidge(inner, model, mp.ridge_lambda, engine),
}


ADAPTS_ONLY = {"ridge": "head"}  # the closed form needs scores linear in what adapts


def supported_adapt(name: str, adapt: str) -> str:
    """`adapt`, or the one group algorithm `name` can adapt (benchmarks that sweep algorithms)."""
    return ADAPTS_ONLY.get(name, adapt)


def build_algorithm(meta: MetaParams, model: nn.Module, engine: Engine = VECTORIZED) -> MetaAlgorithm:
    if meta.algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {meta.algorithm!r}; choose from {sorted(ALGORITHMS)}")
    inner = InnerLoop(meta.adapt, meta.inner_steps, meta.inner_lr)
    return ALGORITHMS[meta.algorithm](inner, meta, model, engine).to(next(model.parameters()).device)

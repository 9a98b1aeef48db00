"""The vectorized engine must compute what the naive per-task loop computes, for every algorithm.

float64 so that "within float tolerance" is tight; ragged tasks so padding and masks are exercised.
"""

from __future__ import annotations

import pytest
import torch

from metarec_tasks.meta import ALGORITHMS, build_algorithm, supported_adapt
from metarec_tasks.meta.functional import REFERENCE, VECTORIZED
from tests.helpers import imports_dynamo
from tests.meta_fixtures import meta_params, random_batch, tiny_model

TOL = {"rtol": 1e-9, "atol": 1e-11}


def gradients(algorithm_name: str, adapt: str, engine, epoch: int = 0):
    model = tiny_model()
    algorithm = build_algorithm(meta_params(algorithm_name, adapt), model, engine).double()
    if hasattr(algorithm, "log_lambda"):  # learned ridge knobs away from their neutral start
        with torch.no_grad():
            algorithm.log_lambda.fill_(-0.5)
    if hasattr(algorithm, "inner_lrs"):  # learned rates that differ per entry and step
        with torch.no_grad():
            for rates in algorithm.inner_lrs.values():
                rates.uniform_(0.05, 0.15, generator=torch.Generator().manual_seed(1))
    algorithm.start_epoch(epoch)
    batch = random_batch()
    loss = algorithm.meta_loss(model, batch)
    loss.backward()
    named = {**dict(model.named_parameters()), **{f"alg.{k}": v for k, v in algorithm.named_parameters()}}
    grads = {k: v.grad.clone() for k, v in named.items() if v.grad is not None}
    adapted, _ = algorithm.adapt(model, batch, steps=4)
    return loss.detach(), grads, adapted


@pytest.mark.parametrize("adapt", ["mlp", "head", "all"])
@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_vectorized_matches_naive_loop(name, adapt):
    if supported_adapt(name, adapt) != adapt:  # the closed form needs scores linear in what adapts
        with pytest.raises(ValueError, match="adapt: head"):
            gradients(name, adapt, VECTORIZED)
        return
    loss_v, grads_v, adapted_v = gradients(name, adapt, VECTORIZED)
    loss_r, grads_r, adapted_r = gradients(name, adapt, REFERENCE)
    torch.testing.assert_close(loss_v, loss_r, **TOL)
    assert grads_v.keys() == grads_r.keys() and grads_v
    for key in grads_r:
        torch.testing.assert_close(grads_v[key], grads_r[key], **TOL, msg=f"meta-gradient of {key}")
    assert adapted_v.keys() == adapted_r.keys()
    for key in adapted_r:
        torch.testing.assert_close(adapted_v[key], adapted_r[key], **TOL, msg=f"adapted {key}")


@pytest.mark.parametrize("epoch", [0, 4])
def test_mamlpp_schedules_match_naive_loop(epoch):
    """First-order multi-step loss early on, second-order last-step loss later: both must agree."""
    loss_v, grads_v, _ = gradients("mamlpp", "mlp", VECTORIZED, epoch)
    loss_r, grads_r, _ = gradients("mamlpp", "mlp", REFERENCE, epoch)
    torch.testing.assert_close(loss_v, loss_r, **TOL)
    for key in grads_r:
        torch.testing.assert_close(grads_v[key], grads_r[key], **TOL, msg=key)


def test_a_meta_step_and_an_adaptation_never_import_dynamo():
    """`torch.func.grad` imports torch._dynamo on its first call; the inner loop differentiates with
    `torch.autograd.grad` instead."""
    code = (
        "from metarec_tasks.meta import build_algorithm\n"
        "from tests.meta_fixtures import meta_params, random_batch, tiny_model\n"
        "model = tiny_model()\n"
        "algorithm = build_algorithm(meta_params('mamlpp', 'mlp'), model).double()\n"
        "algorithm.start_epoch(4)\n"
        "algorithm.meta_loss(model, random_batch()).backward()\n"
        "algorithm.adapt(model, random_batch(), steps=2)"
    )
    assert not imports_dynamo(code)

"""The graphed meta-step's input plumbing, on CPU (where it runs eagerly): every call must see the
batch it is given, and leave exactly `meta_gradients`' gradients. On CUDA the same class replays a
captured graph; `benchmarks/speed.py` checks that replay against eager steps there."""

from __future__ import annotations

import pytest
import torch

from metarec_tasks.meta import build_algorithm
from metarec_tasks.training.graphed import GraphedMetaGradients
from metarec_tasks.training.loop import meta_gradients
from tests.meta_fixtures import meta_params, random_batch, tiny_model


def _grads(model) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("name", ["maml", "metasgd"])
def test_graphed_gradients_equal_the_loops_for_every_new_batch(name):
    model = tiny_model()
    algorithm = build_algorithm(meta_params(name), model)
    optimizer = torch.optim.Adam([*model.parameters(), *algorithm.parameters()], lr=0.01)
    batches = [random_batch(seed=seed) for seed in (1, 2, 3)]
    graphed = GraphedMetaGradients(model, optimizer, algorithm, batches[0])
    seen = []
    for batch in [*batches, batches[0]]:
        loss = graphed(batch)
        got = _grads(model)
        expected_loss = meta_gradients(model, optimizer, algorithm, batch)
        torch.testing.assert_close(loss, expected_loss)
        for g, e in zip(got, _grads(model), strict=True):
            torch.testing.assert_close(g, e)
        seen.append(got[0])
        optimizer.step()  # the weights move between calls, as in training
    assert not torch.equal(seen[0], seen[1])  # different batches: a stale input would have shown


def test_a_batch_of_another_shape_is_refused():
    model = tiny_model()
    algorithm = build_algorithm(meta_params("maml"), model)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    graphed = GraphedMetaGradients(model, optimizer, algorithm, random_batch(n_tasks=5))
    with pytest.raises(ValueError, match="captured \\(5,\\), got \\(4,\\)"):
        graphed(random_batch(n_tasks=4))
    with pytest.raises(ValueError, match="captured \\(5, 7\\), got \\(5, 6\\)"):
        graphed(random_batch(n_tasks=5, support=6))

"""The training loops' Adam is torch's fused Adam, step for step, without importing torch._dynamo."""

from __future__ import annotations

import torch

from metarec_tasks.training.adam import Adam
from tests.helpers import imports_dynamo


def _net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Embedding(7, 4), torch.nn.Flatten(), torch.nn.Linear(12, 1))


def _steps(model: torch.nn.Module, optimizer, count: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        rows = torch.randint(0, 7, (5, 3), generator=generator)
        loss = model(rows).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_same_weights_and_moments_as_torch_fused_adam():
    ours, theirs = _net(0), _net(0)
    a, b = Adam(ours.parameters(), 0.01), torch.optim.Adam(theirs.parameters(), lr=0.01, fused=True)
    _steps(ours, a, 7, seed=1)
    _steps(theirs, b, 7, seed=1)
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(p, q)
    mine, torchs = a.state_dict(), b.state_dict()
    assert mine["state"].keys() == torchs["state"].keys()
    for i, state in torchs["state"].items():
        for key, value in state.items():
            assert torch.equal(mine["state"][i][key], value), key


def test_a_parameter_without_gradient_is_left_alone():
    model = _net(0)
    frozen = model[2].bias.detach().clone()
    optimizer = Adam(model.parameters(), 0.1)
    model[2].bias.requires_grad_(False)
    _steps(model, optimizer, 3, seed=2)
    assert torch.equal(model[2].bias, frozen) and model[2].bias not in optimizer.state


def test_checkpoints_load_across_both_implementations():
    """A resume reads whichever wrote the checkpoint: torch's state into ours and ours into torch's
    continue exactly like an uninterrupted run."""
    straight = _net(0)
    reference = torch.optim.Adam(straight.parameters(), lr=0.01, fused=True)
    _steps(straight, reference, 6, seed=3)

    first = _net(0)
    torch_half = torch.optim.Adam(first.parameters(), lr=0.01, fused=True)
    _steps(first, torch_half, 3, seed=3)
    ours = Adam(first.parameters(), 0.5)
    ours.load_state_dict(torch_half.state_dict())  # the learning rate comes back too
    _continue(first, ours)

    second = _net(0)
    our_half = Adam(second.parameters(), 0.01)
    _steps(second, our_half, 3, seed=3)
    back = torch.optim.Adam(second.parameters(), lr=0.5, fused=True)
    back.load_state_dict(our_half.state_dict())
    _continue(second, back)

    for model in (first, second):
        for p, q in zip(model.parameters(), straight.parameters(), strict=True):
            assert torch.equal(p, q)


def _continue(model: torch.nn.Module, optimizer) -> None:
    """Steps 4-6 of `_steps(..., 6, seed=3)`: replay the first three draws, then step."""
    generator = torch.Generator().manual_seed(3)
    for step in range(6):
        rows = torch.randint(0, 7, (5, 3), generator=generator)
        if step < 3:
            continue
        loss = model(rows).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_training_never_imports_dynamo():
    """torch.optim would import torch._dynamo (about a second of CPU per stage process)."""
    code = (
        "import torch\n"
        "from metarec_tasks.training.adam import adam\n"
        "m = torch.nn.Linear(3, 1)\n"
        "o = adam(m.parameters(), 0.1)\n"
        "m(torch.ones(2, 3)).sum().backward(); o.step(); o.zero_grad()"
    )
    assert not imports_dynamo(code)

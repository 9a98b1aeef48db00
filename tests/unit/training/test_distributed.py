"""Data-parallel meta-training: 2 CPU processes (gloo, loopback) compute what one process computes.

- One meta-step's gradients, sharded over 2 ranks and all-reduced, equal the single-process gradients
  on the whole meta-batch for every algorithm — learned inner learning rates included — also when the
  batch splits unevenly (7 tasks: 4 + 3) and when one rank gets no task at all (1 task).
- The sharded validation MAE equals the single-process one.
- End to end (slow): `metarec train` re-launched under torchrun with 2 processes writes the same model
  as a single process for the same seed, and rank 0 alone writes files.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as torch_mp

from metarec_tasks.meta import ALGORITHMS, build_algorithm, supported_adapt
from metarec_tasks.meta.tasks import select
from metarec_tasks.models.io import load_bundle
from metarec_tasks.params import load_params, update_params_file
from metarec_tasks.paths import Workspace
from metarec_tasks.stages import train
from metarec_tasks.training.distributed import NPROC_ENV, SINGLE, World, init_distributed
from metarec_tasks.training.loop import meta_gradients
from metarec_tasks.training.rating import adapted_mae
from tests.helpers import BIN, REPO, build_episodes_workspace
from tests.meta_fixtures import meta_params, random_batch, tiny_model

WORLD_SIZE = 2
# (algorithm, tasks in the meta-batch, epoch): 7 tasks split 4 + 3; 1 task leaves rank 1 empty.
CASES = [(name, n, 4) for name in sorted(ALGORITHMS) for n in (7, 1)] + [("mamlpp", 7, 0)]
TOL = {"rtol": 1e-9, "atol": 1e-11}  # float64: only the summation order differs


def one_step(world: World, name: str, n_tasks: int, epoch: int) -> dict:
    """Gradients (None where a parameter has none), loss and validation MAE of one meta-step."""
    model = tiny_model()
    algorithm = build_algorithm(meta_params(name, supported_adapt(name, "mlp")), model).double()
    if hasattr(algorithm, "inner_lrs"):  # learned rates that differ per entry and step
        with torch.no_grad():
            for rates in algorithm.inner_lrs.values():
                rates.uniform_(0.05, 0.15, generator=torch.Generator().manual_seed(1))
    algorithm.start_epoch(epoch)
    optimizer = torch.optim.Adam([*model.parameters(), *algorithm.parameters()])
    tasks = random_batch(n_tasks=9, seed=3)
    index = torch.randperm(9, generator=torch.Generator().manual_seed(5))[:n_tasks]
    loss = meta_gradients(model, optimizer, algorithm, select(tasks, index), world)
    named = {**dict(model.named_parameters()), **{f"alg.{k}": v for k, v in algorithm.named_parameters()}}
    grads = {k: None if v.grad is None else v.grad.detach().clone() for k, v in named.items()}
    return {"loss": loss.detach(), "grads": grads, "val_mae": adapted_mae(model, algorithm, tasks, 2, world)}


def _rank_main(rank: int, port: int, out: Path) -> None:
    """One torchrun-like worker: the environment torchrun would set, then the production code path."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD_SIZE),
    )
    torch.set_num_threads(1)
    world = init_distributed(torch.device("cpu"))
    assert (world.rank, world.size) == (rank, WORLD_SIZE)
    torch.save([one_step(world, *case) for case in CASES], out / f"rank{rank}.pt")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> list[list[dict]]:
    out = tmp_path_factory.mktemp("ranks")
    torch_mp.spawn(_rank_main, args=(free_port(), out), nprocs=WORLD_SIZE, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD_SIZE)]


@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{a}-{n}tasks-epoch{e}" for a, n, e in CASES])
def test_sharded_meta_gradients_equal_single_process(sharded, case):
    single = one_step(SINGLE, *CASES[case])
    rank0, rank1 = sharded[0][case], sharded[1][case]
    assert single["grads"].keys() == rank0["grads"].keys()
    name = CASES[case][0]
    learned = build_algorithm(meta_params(name, supported_adapt(name, "mlp")), tiny_model())
    assert any(key.startswith("alg.") for key in single["grads"]) == any(True for _ in learned.parameters())
    if CASES[case][0] != "reptile":  # its surrogate's *gradient* is a mean over tasks, its value is not
        torch.testing.assert_close(rank0["loss"], single["loss"], **TOL)
    for key, expected in single["grads"].items():
        if expected is None:  # the optimizer must skip exactly what it skips in one process
            assert rank0["grads"][key] is None and rank1["grads"][key] is None, key
            continue
        torch.testing.assert_close(rank0["grads"][key], expected, **TOL, msg=f"meta-gradient of {key}")
        assert torch.equal(rank0["grads"][key], rank1["grads"][key]), f"ranks disagree on {key}"
    assert any(g is not None and g.abs().sum() > 0 for g in single["grads"].values())
    assert rank0["val_mae"] == pytest.approx(single["val_mae"], rel=1e-12)
    assert rank0["val_mae"] == rank1["val_mae"]


def test_shards_are_disjoint_and_cover_the_batch():
    index = torch.arange(7)
    parts = [World(r, 3).shard(index) for r in range(3)]
    assert [len(p) for p in parts] == [3, 2, 2]
    assert torch.equal(torch.cat(parts), index)
    assert len(World(1, 2).shard(index[:1])) == 0
    assert SINGLE.shard(index) is index


@pytest.fixture(scope="module")
def episodes_ws(tmp_path_factory) -> Path:
    return build_episodes_workspace(tmp_path_factory.mktemp("episodes"))


def weights(path: Path) -> dict[str, torch.Tensor]:
    bundle = load_bundle(path)
    return {**bundle.model.state_dict(), **{f"alg.{k}": v for k, v in bundle.algorithm_state.items()}}


def train_under_torchrun(root: Path) -> subprocess.CompletedProcess:
    """`metarec train` with METAREC_TRAIN_NPROC=2: it re-launches itself under torchrun (gloo)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), NPROC_ENV: str(WORLD_SIZE)}
    env.pop("TORCHELASTIC_RUN_ID", None)
    command = [str(BIN / "metarec"), "--root", str(root), "train"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_torchrun_training_matches_a_single_process(episodes_ws, tmp_path):
    # Meta-SGD: learned per-entry inner rates; 15 tasks a batch: 8 + 7 on the two ranks; support
    # subsampling draws from the shared generator, before the batch is sharded.
    overrides = {
        "meta.algorithm": "metasgd",
        "meta.meta_batch_size": 15,
        "meta.support_subsample": True,
        "run.device": "cpu",
    }
    one, two = (shutil.copytree(episodes_ws, tmp_path / name) for name in ("one", "two"))
    for ws in (one, two):
        update_params_file(ws / "params.yaml", overrides)
    single = train.run(load_params(one / "params.yaml"), Workspace(one))

    done = train_under_torchrun(two)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "data-parallel meta-training: 2 processes, backend gloo" in done.stderr
    assert done.stderr.count("saved ") == 1  # rank 0 alone reports (and writes) the model

    a, b = Workspace(one), Workspace(two)
    for path_a, path_b in ((a.model_file, b.model_file), (a.pretrained_model_file, b.pretrained_model_file)):
        wa, wb = weights(path_a), weights(path_b)
        assert wa.keys() == wb.keys()
        for key in wa:
            torch.testing.assert_close(wb[key], wa[key], rtol=1e-4, atol=1e-5, msg=key)
    meta = load_bundle(b.model_file).metadata
    assert meta["best_epoch"] == single.best_epoch
    assert meta["best_val_mae"] == pytest.approx(single.best_val_mae, abs=1e-5)
    assert a.train_log.read_text().count("\n") == b.train_log.read_text().count("\n")
    assert sorted(p.name for p in b.checkpoints_for("rating").glob("*.pt")) == sorted(
        p.name for p in a.checkpoints_for("rating").glob("*.pt")
    )


@pytest.mark.slow
def test_a_diverged_loss_stops_every_rank_and_writes_no_model(episodes_ws, tmp_path):
    ws = shutil.copytree(episodes_ws, tmp_path / "ws")
    update_params_file(ws / "params.yaml", {"meta.inner_lr": 1.0e8, "run.device": "cpu"})
    done = train_under_torchrun(ws)  # no hang: the all-reduced loss is NaN on both ranks
    assert done.returncode != 0
    assert done.stderr.count("loss became nan at meta epoch 0") == WORLD_SIZE
    assert not Workspace(ws).model_file.exists()

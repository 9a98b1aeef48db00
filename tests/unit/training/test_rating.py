"""The train stage's robustness: determinism, resume after a real kill, NaN stops, safe model files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from metarec_tasks.errors import EXIT_TRAINING, ModelFileError
from metarec_tasks.meta.random_tasks import random_items
from metarec_tasks.models.io import load_bundle, load_model, save_model
from metarec_tasks.orchestration.cli import main
from metarec_tasks.params import load_params, update_params_file
from metarec_tasks.paths import Workspace
from metarec_tasks.stages import train
from tests.helpers import (
    assert_same_weights,
    build_episodes_workspace,
    clone_workspace,
    kill_train_at_first_checkpoint,
)
from tests.meta_fixtures import DIMS, random_batch, tiny_model

FAST = {"meta.epochs": 3, "meta.patience": 3}


@pytest.fixture(scope="module")
def episodes_ws(tmp_path_factory) -> Path:
    """A workspace with tiny synthetic episodes, built once for this module."""
    return build_episodes_workspace(tmp_path_factory.mktemp("episodes"))


clone = clone_workspace


def test_two_runs_give_identical_weights_on_cpu(episodes_ws, tmp_path):
    overrides = {**FAST, "meta.algorithm": "metasgd", "run.device": "cpu"}
    a = clone(episodes_ws, tmp_path / "a", overrides)
    b = clone(episodes_ws, tmp_path / "b", overrides)
    for ws in (a, b):
        train.run(load_params(ws / "params.yaml"), Workspace(ws))
    assert_same_weights(Workspace(a).model_file, Workspace(b).model_file)
    assert_same_weights(Workspace(a).pretrained_model_file, Workspace(b).pretrained_model_file)
    # Meta-SGD's learned inner learning rates live in the model file and moved away from their start.
    rates = load_bundle(Workspace(a).model_file).algorithm_state
    assert rates and any(not torch.allclose(v, torch.full_like(v, 0.05)) for v in rates.values())


def test_nonfinite_loss_stops_training_and_writes_no_model(episodes_ws, tmp_path):
    ws = clone(episodes_ws, tmp_path / "ws", {**FAST, "meta.inner_lr": 1.0e8})
    previous = Workspace(ws).model_file
    previous.parent.mkdir(parents=True, exist_ok=True)
    previous.write_bytes(b"yesterday's model")
    assert main(["--root", str(ws), "train"]) == EXIT_TRAINING
    assert previous.read_bytes() == b"yesterday's model"  # untouched, not replaced by a broken one
    assert not list(Workspace(ws).checkpoints.rglob("*.pt"))


def test_foreign_model_files_are_refused(tmp_path):
    model = tiny_model()
    not_ours = tmp_path / "state_dict.pt"
    torch.save(model.state_dict(), not_ours)  # a plain torch checkpoint, no MetaRec format marker
    with pytest.raises(ModelFileError, match="not a MetaRec model file"):
        load_bundle(not_ours)
    pickled = tmp_path / "pickle.pt"
    torch.save({"format": "metarec-model/2", "payload": Path("x")}, pickled)  # needs unpickling a class
    with pytest.raises(ModelFileError, match="not a MetaRec model file"):
        load_bundle(pickled)
    text = tmp_path / "model.txt"
    text.write_text("hello")
    with pytest.raises(ModelFileError):
        load_bundle(text)
    ours = tmp_path / "ours.pt"
    save_model(ours, model, {"algorithm": "maml"}, {"rate": torch.ones(2)})
    bundle = load_bundle(ours)
    assert torch.equal(bundle.algorithm_state["rate"], torch.ones(2))


def test_the_model_file_holds_weights_not_the_catalog_and_loads_over_one(tmp_path):
    """The catalog's item rows are the run's data: not saved, given again to `load_model`."""
    model = tiny_model(torch.float32)
    save_model(tmp_path / "m.pt", model, {"algorithm": "maml"})
    saved = torch.load(tmp_path / "m.pt", weights_only=True)["state_dict"]
    assert saved.keys() == dict(model.named_parameters()).keys()  # no catalog buffer
    loaded, metadata = load_model(tmp_path / "m.pt", random_items(DIMS))
    batch = random_batch(dtype=torch.float32)
    torch.testing.assert_close(
        loaded(batch.query.user, batch.query.item), model(batch.query.user, batch.query.item)
    )
    assert metadata == {"algorithm": "maml"}
    weights_only, _ = load_model(tmp_path / "m.pt")
    with pytest.raises(RuntimeError, match="without the catalog"):
        weights_only(batch.query.user, batch.query.item)


@pytest.mark.slow
def test_training_resumes_after_sigkill_and_matches_an_uninterrupted_run(episodes_ws, tmp_path):
    overrides = {"meta.epochs": 10, "meta.patience": 10, "meta.checkpoint_every": 1, "run.device": "cpu"}
    killed = clone(episodes_ws, tmp_path / "killed", overrides)
    clean = clone(episodes_ws, tmp_path / "clean", overrides)
    done, command = kill_train_at_first_checkpoint(killed, Workspace(killed).checkpoints_for("rating"))
    assert not Workspace(killed).model_file.exists()
    assert 1 <= done < overrides["meta.epochs"]

    resumed = subprocess.run(command, capture_output=True, text=True, check=True)
    assert f"resuming from epoch-{done:04d}.pt ({done} meta-epochs done)" in resumed.stderr
    assert load_bundle(Workspace(killed).model_file).metadata["resumed_from_epoch"] == done
    subprocess.run([*command[:2], str(clean), "train"], capture_output=True, check=True)
    assert_same_weights(Workspace(killed).model_file, Workspace(clean).model_file)


def test_checkpoint_of_another_run_is_not_resumed(episodes_ws, tmp_path):
    ws = clone(episodes_ws, tmp_path / "ws", {**FAST, "meta.epochs": 3})
    train.run(load_params(ws / "params.yaml"), Workspace(ws))
    assert train.run(load_params(ws / "params.yaml"), Workspace(ws)).resumed_from == 3  # same run: resumes
    update_params_file(ws / "params.yaml", {"meta.inner_lr": 0.04, "meta.epochs": 2})
    assert (
        train.run(load_params(ws / "params.yaml"), Workspace(ws)).resumed_from is None
    )  # another run: fresh
    # The other run's (higher-numbered) checkpoints are gone, so this run's are found again.
    assert train.run(load_params(ws / "params.yaml"), Workspace(ws)).resumed_from == 2


def test_warm_start_copies_the_champion_and_maps_item_rows(tmp_path):
    from dataclasses import replace

    from metarec_tasks.meta import build_algorithm
    from metarec_tasks.models.rating import RatingNet
    from metarec_tasks.training.warm_start import warm_start
    from tests.unit.meta.test_functional import meta_params

    champion = tiny_model(torch.float32, seed=1)
    old_ids = [f"i{k}" for k in range(champion.dims.n_item_ids)]
    save_model(tmp_path / "champion.pt", champion, {"algorithm": "maml", "item_ids": old_ids})
    # Tonight's vocabulary: one item gone, two new ones, in another order.
    new_ids = ["new1", *reversed(old_ids[1:]), "new2"]
    model = RatingNet(replace(champion.dims, n_item_ids=len(new_ids)))
    algorithm = build_algorithm(meta_params("maml"), model)
    digest = warm_start(model, algorithm, tmp_path / "champion.pt", new_ids)
    assert digest is not None
    assert torch.equal(model.head.weight, champion.head.weight)
    old_rows = champion.encoder.item_id.weight
    for row, item in enumerate(new_ids):
        if item in old_ids:
            assert torch.equal(model.encoder.item_id.weight[row], old_rows[old_ids.index(item)])
    assert warm_start(model, algorithm, tmp_path / "missing.pt", new_ids) is None
    (tmp_path / "foreign.pt").write_bytes(b"not a model")
    with pytest.raises(ModelFileError):
        warm_start(model, algorithm, tmp_path / "foreign.pt", new_ids)


@pytest.mark.parametrize("name", ["metasgd", "mamlpp"])
def test_learned_inner_rates_travel_with_the_model_file(name, tiny_params, tmp_path):
    """finetune adapts with the rates training learned, restored from the model file."""
    from metarec_tasks.meta import build_algorithm
    from metarec_tasks.stages.finetune import load_adapting_model

    model = tiny_model(torch.float32)
    mp = tiny_params.meta.model_copy(update={"algorithm": name})
    algorithm = build_algorithm(mp, model)
    with torch.no_grad():
        for rates in algorithm.inner_lrs.values():
            rates.uniform_(0.01, 0.2)
    metadata = {"algorithm": name, "adapt": mp.adapt, "inner_lr": mp.inner_lr, "inner_steps": mp.inner_steps}
    save_model(tmp_path / "m.pt", model, metadata, algorithm.state_dict())
    _, restored = load_adapting_model(tmp_path / "m.pt", random_items(DIMS), tiny_params, torch.device("cpu"))
    assert restored.name == name
    for key, value in algorithm.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value)

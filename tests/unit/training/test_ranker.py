"""The ranker has the guarantees of the rating model because both are callers of the one loop:
determinism for a seed, resume after SIGKILL to identical weights, NaN rules, the run's device."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pytest
import torch

from metarec_tasks.errors import EXIT_TRAINING
from metarec_tasks.orchestration.cli import main
from metarec_tasks.params import update_params_file
from metarec_tasks.paths import Workspace
from tests.helpers import (
    assert_same_weights,
    build_episodes_workspace,
    clone_workspace,
    kill_train_at_first_checkpoint,
)

FAST = {"meta.epochs": 2, "meta.patience": 2, "ranking.meta.epochs": 3, "run.device": "cpu"}


@pytest.fixture(scope="module")
def episodes_ws(tmp_path_factory) -> Path:
    return build_episodes_workspace(tmp_path_factory.mktemp("episodes"))


clone = clone_workspace


def test_two_ranker_runs_give_identical_weights(episodes_ws, tmp_path):
    a = clone(episodes_ws, tmp_path / "a", FAST)
    b = clone(episodes_ws, tmp_path / "b", FAST)
    for ws in (a, b):
        assert main(["--root", str(ws), "train"]) == 0
    assert_same_weights(Workspace(a).rank_model_file, Workspace(b).rank_model_file)
    assert_same_weights(Workspace(a).rank_pretrained_file, Workspace(b).rank_pretrained_file)
    log = Workspace(a).rank_train_log.read_text().splitlines()
    assert log[0] == "epoch,phase,train_loss,tasks,val_recall@20,averaged,seconds" and len(log) == 1 + 3


def test_tasks_per_epoch_bounds_every_meta_epoch_of_both_models(episodes_ws, tmp_path):
    """A fresh sample of `tasks_per_epoch` tasks per meta-epoch (the night's cost stops growing with
    the user base); 0 means every task, as without the knob."""
    capped = {**FAST, "meta.tasks_per_epoch": 40, "ranking.meta.tasks_per_epoch": 30}
    full, few = clone(episodes_ws, tmp_path / "full", FAST), clone(episodes_ws, tmp_path / "few", capped)
    tasks = {}
    for ws in (full, few):
        assert main(["--root", str(ws), "train"]) == 0
        for name, log in (("rating", Workspace(ws).train_log), ("ranking", Workspace(ws).rank_train_log)):
            rows = [row for row in csv.DictReader(log.open()) if row["phase"] == "meta"]
            tasks[ws.name, name] = {int(row["tasks"]) for row in rows}
    assert tasks["few", "rating"] == {40} and tasks["few", "ranking"] == {30}
    assert min(tasks["full", "rating"]) > 40 and min(tasks["full", "ranking"]) > 30


def test_a_nan_in_the_ranker_writes_no_model_at_all(episodes_ws, tmp_path):
    ws = clone(episodes_ws, tmp_path / "ws", {**FAST, "ranking.meta.meta_lr": 1.0e30})
    files = Workspace(ws)
    for path in (files.model_file, files.pretrained_model_file, files.rank_model_file):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"yesterday's model")
    assert main(["--root", str(ws), "train"]) == EXIT_TRAINING
    for path in (files.model_file, files.pretrained_model_file, files.rank_model_file):
        assert path.read_bytes() == b"yesterday's model", path  # the rating model's files too


def test_the_ranker_trains_on_the_runs_device(episodes_ws, tmp_path, capfd):
    ws = clone(episodes_ws, tmp_path / "ws", FAST)
    assert main(["--root", str(ws), "train"]) == 0
    assert "validation users, device cpu" in capfd.readouterr().err
    if not torch.cuda.is_available():  # run.device=cuda on a machine without one: refused, nothing trained
        update_params_file(ws / "params.yaml", {"run.device": "cuda"})
        assert main(["--root", str(ws), "train"]) == 2


@pytest.mark.slow
def test_the_ranker_resumes_after_sigkill_and_matches_an_uninterrupted_run(episodes_ws, tmp_path):
    overrides = {**FAST, "ranking.meta.epochs": 12, "ranking.meta.patience": 12}
    killed = clone(episodes_ws, tmp_path / "killed", overrides)
    clean = clone(episodes_ws, tmp_path / "clean", overrides)
    done, command = kill_train_at_first_checkpoint(killed, Workspace(killed).checkpoints_for("ranking"))
    assert not Workspace(killed).rank_model_file.exists()
    assert 1 <= done < overrides["ranking.meta.epochs"]

    resumed = subprocess.run(command, capture_output=True, text=True, check=True)
    assert f"resuming from epoch-{done:04d}.pt ({done} meta-epochs done)" in resumed.stderr
    subprocess.run([*command[:2], str(clean), "train"], capture_output=True, check=True)
    assert_same_weights(Workspace(killed).rank_model_file, Workspace(clean).rank_model_file)

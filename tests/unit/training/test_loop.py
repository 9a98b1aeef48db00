"""The one meta-training loop's rules, on tiny random tasks: best epoch, patience, NaN, nothing to
validate, the history, and resume from a checkpoint."""

from __future__ import annotations

import math

import pytest
import torch

from metarec_tasks.errors import NonFiniteLossError
from metarec_tasks.meta import build_algorithm
from metarec_tasks.training.checkpoint import Checkpoints
from metarec_tasks.training.loop import Randomness, Validation, fit, write_history
from tests.meta_fixtures import meta_params, random_batch, tiny_model


def run(tmp_path, scores, epochs=4, patience=4, lower=True, fingerprint="run", patience_tasks=0):
    """Fit a tiny model for `epochs` (one batch of `random_batch()`'s 5 tasks each), validation
    returning `scores` in turn."""
    model = tiny_model()
    mp = meta_params("maml", epochs=epochs, patience=patience, patience_tasks=patience_tasks)
    algorithm = build_algorithm(mp, model)
    values = iter(scores)
    tasks = random_batch()
    result = fit(
        model,
        algorithm,
        lambda epoch: [tasks],
        Validation("val_x", lower, lambda: next(values)),
        mp,
        Checkpoints(tmp_path / "checkpoints", fingerprint),
        Randomness(torch.Generator().manual_seed(0)),
    )
    return model, result


def test_the_best_epoch_is_kept_in_either_direction_and_patience_stops(tmp_path):
    _, lower = run(tmp_path / "a", [0.9, 0.7, 0.8, 0.75], lower=True)
    assert (lower.best_epoch, lower.best_value) == (1, 0.7)
    _, higher = run(tmp_path / "b", [0.1, 0.3, 0.2, 0.4, 0.1, 0.1], epochs=6, patience=2, lower=False)
    assert (higher.best_epoch, higher.best_value, higher.epochs_run) == (3, 0.4, 6)
    _, stopped = run(tmp_path / "c", [0.5, 0.6, 0.7, 0.1], patience=2)
    assert stopped.epochs_run == 3 and stopped.best_epoch == 0  # the 4th epoch never ran


def test_patience_in_tasks_stops_a_big_world_sooner_whichever_bound_comes_first(tmp_path):
    worse = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]  # never better than the first epoch; 5 tasks an epoch
    _, tasks_first = run(tmp_path / "a", worse, epochs=6, patience=4, patience_tasks=10)
    assert tasks_first.epochs_run == 3 and tasks_first.best_epoch == 0  # 2 stale epochs = 10 tasks
    _, epochs_first = run(tmp_path / "b", worse, epochs=6, patience=2, patience_tasks=100)
    assert epochs_first.epochs_run == 3
    _, off = run(tmp_path / "c", worse, epochs=6, patience=4, patience_tasks=0)
    assert off.epochs_run == 5
    _, reset = run(tmp_path / "d", [0.5, 0.6, 0.4, 0.7, 0.8, 0.9], epochs=6, patience=9, patience_tasks=10)
    assert (reset.best_epoch, reset.epochs_run) == (2, 5)  # the count restarts at a better epoch


def test_a_nan_validation_stops_the_run(tmp_path):
    with pytest.raises(NonFiniteLossError, match="validation val_x became NaN after meta epoch 1"):
        run(tmp_path, [0.5, math.nan, 0.4])


def test_nothing_to_validate_keeps_the_latest_epoch_not_the_start(tmp_path):
    model, result = run(tmp_path, [None] * 3, epochs=3)
    assert result.best_epoch == 2 and result.best_value is None
    assert [row["val_x"] for row in result.history] == ["", "", ""]
    assert not torch.equal(model.head.weight, tiny_model().head.weight)  # trained, not the start


def test_a_diverging_loss_stops_the_run(tmp_path):
    model = tiny_model()
    mp = meta_params("maml")
    algorithm = build_algorithm(mp, model)
    tasks = random_batch()
    tasks.query.target[0, 0] = math.inf  # one broken row poisons the meta-loss
    with pytest.raises(NonFiniteLossError, match="at meta epoch 0"):
        fit(
            model,
            algorithm,
            lambda epoch: [tasks],
            Validation("val_x", True, lambda: 0.5),
            mp,
            Checkpoints(tmp_path, "run"),
            Randomness(torch.Generator()),
        )


def test_a_finished_run_resumes_from_its_checkpoint_and_another_run_does_not(tmp_path):
    first_model, first = run(tmp_path, [0.9, 0.8, 0.7, 0.6])
    again_model, again = run(tmp_path, [])  # every epoch is in the checkpoint: nothing to validate
    assert again.resumed_from == 4 and again.best_epoch == first.best_epoch
    for key, value in first_model.state_dict().items():
        assert torch.equal(again_model.state_dict()[key], value)
    _, other = run(tmp_path, [0.5] * 4, fingerprint="another run")
    assert other.resumed_from is None


def test_history_csv_has_the_metric_column(tmp_path):
    _, result = run(tmp_path, [0.9, 0.8, 0.7, 0.6])
    write_history(tmp_path / "log.csv", result.history, "val_x")
    lines = (tmp_path / "log.csv").read_text().splitlines()
    assert lines[0] == "epoch,phase,train_loss,tasks,val_x,averaged,seconds" and len(lines) == 5


@pytest.mark.parametrize("lower", [True, False])
def test_the_moving_average_is_kept_exactly_where_it_validates_better(tmp_path, lower):
    """Validation = how far the head moved from its start: the average (which lags) moves less, so it
    wins when lower is better and loses when higher is better."""
    model = tiny_model()
    start = model.head.weight.detach().clone()
    mp = meta_params("maml", epochs=3, patience=3, weight_average_decay=0.9)
    algorithm = build_algorithm(mp, model)
    tasks = random_batch()
    result = fit(
        model,
        algorithm,
        lambda epoch: [tasks, tasks],
        Validation("val_x", lower, lambda: float((model.head.weight - start).norm())),
        mp,
        Checkpoints(tmp_path, "avg"),
        Randomness(torch.Generator().manual_seed(0)),
    )
    for row in result.history:
        assert (row["averaged"] < row["val_x"]) and row["val_x"] > 0
    assert result.best_averaged is lower
    kept = float((model.head.weight - start).norm())
    best_row = result.history[result.best_epoch]
    assert kept == pytest.approx(best_row["averaged"] if lower else best_row["val_x"])


def test_a_non_finite_gradient_behind_a_finite_loss_stops_the_run_before_a_weight_moves(tmp_path):
    model = tiny_model()
    mp = meta_params("maml")
    algorithm = build_algorithm(mp, model)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    model.head.weight.register_hook(lambda grad: grad * math.nan)  # an overflowed second-order term
    with pytest.raises(NonFiniteLossError, match="gradient became non-finite at meta epoch 0"):
        fit(
            model,
            algorithm,
            lambda epoch: [random_batch()],
            Validation("val_x", True, lambda: 0.5),
            mp,
            Checkpoints(tmp_path, "run"),
            Randomness(torch.Generator()),
        )
    assert all(torch.equal(v, start[k]) for k, v in model.state_dict().items())

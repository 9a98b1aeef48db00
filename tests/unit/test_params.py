import shutil

import pytest

from metarec_tasks.errors import ConfigError
from metarec_tasks.params import load_params, update_params_file
from tests.helpers import REPO


def test_committed_params_are_valid():
    params = load_params(REPO / "params.yaml")
    assert params.run.run_id == f"nightly-{params.run.run_date.isoformat()}"
    assert params.validate_.rating_min < params.validate_.rating_max


def test_update_rewrites_only_changed_keys_and_keeps_comments(tmp_path):
    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    before = path.read_text().splitlines()
    assert update_params_file(path, {"meta.epochs": 7, "run.run_date": "2026-01-02"})
    after = path.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert len(changed) == 2
    assert all("#" in b for a, b in changed if "#" in a)
    params = load_params(path)
    assert params.meta.epochs == 7 and params.run.run_date.isoformat() == "2026-01-02"
    assert not update_params_file(path, {"meta.epochs": 7})  # same value: file untouched


def test_unknown_key_and_invalid_value_are_refused(tmp_path):
    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    original = path.read_text()
    with pytest.raises(ConfigError, match=r"unknown parameter 'meta\.epoch'; did you mean 'meta\.epochs'"):
        update_params_file(path, {"meta.epoch": 3})
    with pytest.raises(ConfigError, match=r"meta\.algorithm: Input should be 'maml'"):
        update_params_file(path, {"meta.algorithm": "not-an-algorithm"})
    assert path.read_text() == original


def test_overrides_apply_without_touching_the_file(tmp_path):
    params = load_params(REPO / "params.yaml", {"meta.inner_steps": 1})
    assert params.meta.inner_steps == 1

"""The seed-ensemble probe: an ensemble is the mean of exactly its algorithm's members, the best meta
ranker is chosen on validation figures only (never a baseline), and the report's differences are
against EASE, paired over test users."""

from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pytest

from benchmarks.meta_ensemble import CHOSEN, best_meta, build_report, ensembles, markdown
from metarec_tasks.logs.contract import USER_KEY


def test_an_ensemble_averages_its_own_algorithms_members():
    z = {
        "meta_ridge": np.array([[1.0, 0.0]]),
        "meta_ridge_m1": np.array([[3.0, 2.0]]),
        "meta_maml": np.array([[0.0, 4.0]]),
        "ease": np.array([[9.0, 9.0]]),
    }
    alone = ensembles(z, ["ridge"])
    assert list(alone) == ["ensemble_ridge"]
    assert np.allclose(alone["ensemble_ridge"], [[2.0, 1.0]])
    both = ensembles(z, ["ridge", "maml"])
    assert np.allclose(both["ensemble_maml"], [[0.0, 4.0]])
    assert np.allclose(both["ensemble_all"], [[4 / 3, 2.0]])  # members only: EASE is no member


def test_the_best_meta_ranker_is_chosen_on_validation_and_never_a_baseline():
    nan = float("nan")
    validation = {"ease_dropout": 0.9, "meta_ridge": 0.4, "ensemble_ridge": 0.5, "meta_ridge_m1": nan}
    assert best_meta(validation) == "ensemble_ridge"
    assert best_meta({**validation, "meta_ridge": 0.6}) == "meta_ridge"


def test_report_compares_every_model_with_ease_paired_over_users():
    recall = {"ease": [0.5, 0.0, 1.0, 0.5] * 3, CHOSEN: [1.0, 0.5, 1.0, 1.0] * 3}
    frame = pd.DataFrame(
        [
            {"fold": 0, USER_KEY: f"u{u}", "model": model, "recall@20": value}
            for model, values in recall.items()
            for u, value in enumerate(values)
        ]
    )
    infos = [{"fold": 0, "chosen": "ensemble_ridge", "validation": {"ease": 0.4, CHOSEN: 0.6}}]
    args = types.SimpleNamespace(argv=["--members", "5"], load_average="0")
    report = build_report(frame, infos, None, None, args, 0.0)
    assert report["users"] == 12 and report["chosen"] == ["ensemble_ridge"]
    assert report["overall"]["ease"]["minus_ease"] == 0.0 and report["overall"]["ease"]["wilcoxon_p"] == 1.0
    assert report["overall"][CHOSEN]["minus_ease"] == pytest.approx(0.375)
    assert report["overall"][CHOSEN]["wilcoxon_p"] < 0.05
    text = markdown(report)
    assert f"| {CHOSEN} | 0.6000 |" in text and "ensemble_ridge" in text

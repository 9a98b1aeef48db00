"""Smoke test of the ML-100K benchmark script in --quick mode (no metric values or times asserted)."""

from pathlib import Path

import pytest

from tests.helpers import run_quick_ml100k_benchmark


@pytest.mark.slow
def test_quick_benchmark_writes_its_report(tmp_path):
    out = tmp_path / "ml100k.json"
    report = run_quick_ml100k_benchmark("ml100k", out, "--algorithms", "fomaml")
    rows = report["results"]
    assert {"fomaml", "global_mean", "item_mean_user_bias", "pretrained", "pretrained_finetuned"} <= set(rows)
    assert all(rows[name]["users"] == rows["fomaml"]["users"] > 100 for name in rows)
    assert 0.0 < rows["fomaml"]["bin_ndcg@5"] <= 1.0 and rows["fomaml"]["mae"] > 0
    assert set(report["cold_start_curve"]["by_support_size"]) == {"1", "3", "5", "10", "20"}
    assert (tmp_path / "ml100k.md").read_text().startswith("# Cold-start rating benchmark on ml-100k")


def test_the_best_meta_model_is_chosen_on_validation_users_not_on_test_users():
    """Holdout rows favour `maml` (exact predictions), validation MAE favours `fomaml`: the report's
    best meta-learned model (paired tests, cold-start curve) must be `fomaml`."""
    import numpy as np
    import pandas as pd

    from benchmarks.ml100k import NON_META, benchmark_params, summarize_benchmark
    from metarec_tasks.logs.contract import USER_KEY

    rng = np.random.default_rng(0)
    value = rng.integers(1, 6, 40).astype(float)
    base = pd.DataFrame({USER_KEY: np.repeat([f"u{i}" for i in range(4)], 10), "value": value})
    base = base.assign(**{f"pred_{name}": value + rng.normal(0, 1, 40) for name in NON_META})
    holdouts = {
        "maml": [base.assign(pred_model=value)],  # perfect on test users
        "fomaml": [base.assign(pred_model=value + rng.normal(0, 2, 40))],
    }
    curves = {name: [frames[0].assign(support_n=1)] for name, frames in holdouts.items()}
    validation = {"maml": [0.9, 0.8], "fomaml": [0.7, 0.7]}
    params = benchmark_params(quick=True, data=Path("ml-100k"))
    report = summarize_benchmark(params, holdouts, curves, {}, validation, 2, 1.0)
    assert report["results"]["maml"]["mae"] < report["results"]["fomaml"]["mae"]
    assert report["best_meta_model"] == "fomaml"
    assert report["cold_start_curve"]["model"] == "fomaml"
    assert {t["model"] for t in report["paired_tests_vs_best_baseline"].values()} == {"fomaml"}

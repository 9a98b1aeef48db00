"""Smoke test of the ML-100K benchmark script in --quick mode (no metric values or times asserted)."""

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
    assert (tmp_path / "ml100k.md").read_text().startswith("# ML-100K cold-start benchmark")

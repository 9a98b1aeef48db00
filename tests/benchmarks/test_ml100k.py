"""Smoke test of the ML-100K benchmark script in --quick mode (no metric values or times asserted)."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO

ML100K = (REPO.parent / "shared" / "data" / "ml-100k").resolve()


@pytest.mark.slow
def test_quick_benchmark_writes_its_report(tmp_path):
    if not (ML100K / "u.data").exists():
        if os.environ.get("CI"):
            pytest.fail(f"ML-100K is required in CI but missing at {ML100K}")
        pytest.skip(f"ML-100K not found at {ML100K}")
    out = tmp_path / "ml100k.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.ml100k",
            "--quick",
            "--algorithms",
            "fomaml",
            "--data",
            str(ML100K),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = report["results"]
    assert {"fomaml", "global_mean", "item_mean_user_bias", "pretrained", "pretrained_finetuned"} <= set(rows)
    assert all(rows[name]["users"] == rows["fomaml"]["users"] > 100 for name in rows)
    assert 0.0 < rows["fomaml"]["bin_ndcg@5"] <= 1.0 and rows["fomaml"]["mae"] > 0
    assert set(report["cold_start_curve"]["by_support_size"]) == {"1", "3", "5", "10", "20"}
    assert (tmp_path / "ml100k.md").read_text().startswith("# ML-100K cold-start benchmark")

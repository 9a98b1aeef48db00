"""Smoke test of the scale benchmark: two tiny worlds, the first stages, a sane report (no times asserted)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO


@pytest.mark.slow
def test_scale_benchmark_measures_every_stage_at_every_size(tmp_path):
    out = tmp_path / "sizes.json"
    command = [
        sys.executable,
        "-m",
        "benchmarks.scale",
        "--users",
        "200",
        "400",
        "--stages",
        "ingest",
        "validate",
        "--set",
        "validate.max_bad_row_share=0.5",
        "--set",
        "synthetic.initial_items=300",
    ]
    result = subprocess.run(
        [*command, "--out", str(out)], cwd=REPO, capture_output=True, text=True, env=dict(os.environ)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert [r["users"] for r in report["runs"]] == [200, 400]
    small, large = report["runs"]
    assert 0 < small["events"] < large["events"]  # the world grew with its users
    for run in report["runs"]:
        assert set(run["stages"]) == {"ingest", "validate"}
        for cost in run["stages"].values():
            assert cost["wall_s"] > 0 and cost["cpu_s"] > 0 and cost["peak_rss_mib"] > 10
    assert set(report["growth"]) == {"ingest", "validate"}
    assert all(g["wall_s"] is not None for g in report["growth"].values())
    assert report["settings"] == {"validate.max_bad_row_share": "0.5", "synthetic.initial_items": "300"}
    text = (tmp_path / "sizes.md").read_text()
    assert text.startswith("# Nightly cost by world size") and "`validate.max_bad_row_share=0.5`" in text
    # per size: the night's total and the stage that dominates it
    assert re.search(r"\| 400 \| 300 \| [\d,]+ \| \d+ \| \d+ \| (ingest|validate) \(\d+%\) \|", text)
    assert (tmp_path / "sizes.png").read_bytes().startswith(b"\x89PNG") and "](sizes.png)" in text

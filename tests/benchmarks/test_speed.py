"""Smoke test of benchmarks/speed.py: it runs and writes a well-formed report (times are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

from metarec_tasks.meta import ALGORITHMS
from tests.helpers import REPO


def test_speed_benchmark_quick_writes_a_report(tmp_path):
    output = tmp_path / "bench_speed.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.speed",
            "--quick",
            "--threads",
            "1",
            "--output",
            str(output),
        ],
        cwd=REPO,
        env={"PATH": ""},
        check=True,
        capture_output=True,
    )
    report = json.loads(output.read_text())
    cpu = report["results"]["cpu/default"]
    assert cpu["finetune"]["naive_users_per_s"] > 0
    assert all(run["users_per_s"] > 0 for run in cpu["finetune"]["vectorized"].values())
    assert set(cpu["meta_train"]["algorithms"]) == set(ALGORITHMS)
    assert all(r["vectorized_tasks_per_s"] > 0 for r in cpu["meta_train"]["algorithms"].values())
    # The graphed meta-step's path (eager on CPU) ends on the eager loop's weights.
    graphs = report["results"]["cpu/graphs"]["meta_batch_sizes"]["8"]
    assert graphs["eager_tasks_per_s"] > 0 and graphs["max_abs_weight_difference"] == 0.0
    # Data-parallel meta-training under torchrun: one process (all cores, one core) and two processes.
    runs = report["data_parallel"]["results"]["cpu/default"]
    assert {run["processes"] for run in runs.values()} == {1, 2}
    assert all(run["tasks_per_s"] > 0 for run in runs.values())

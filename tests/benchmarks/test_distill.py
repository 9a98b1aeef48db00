"""Smoke test of the ML-100K distillation benchmark: `--quick` runs end to end and writes a sane report.

Skips when ML-100K is absent, unless CI is set (then its absence is a failure). Never asserts times or
metric levels beyond sanity (recalls are probabilities; teacher and student on the same test users).
"""

from __future__ import annotations

import pytest

from tests.helpers import run_quick_ml100k_benchmark


@pytest.mark.slow
def test_quick_distill_benchmark_writes_a_sane_report(tmp_path):
    out = tmp_path / "distill.json"
    report = run_quick_ml100k_benchmark("distill", out)
    overall = report["overall"]
    assert set(overall) == {"teacher", "student"}
    assert overall["teacher"]["users"] == overall["student"]["users"] == report["paired"]["users"] > 50
    for entry in overall.values():
        assert 0.0 <= entry["recall@20"] <= 1.0 and entry["ms_per_1000_users"] > 0
    (fold,) = report["folds"]
    assert fold["student_knobs"]["teacher"] == fold["teacher"] == report["teachers"][0]
    assert 0.0 <= report["paired"]["wilcoxon_p"] <= 1.0
    assert (tmp_path / "distill.md").read_text().startswith("# ML-100K distillation")

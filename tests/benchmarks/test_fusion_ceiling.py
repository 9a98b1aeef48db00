"""The fusion-ceiling report: every rule against EASE with the sign and test of `paired_tests`, and
the ceiling is the best *pair* blend, never a single candidate or a learned rule."""

from __future__ import annotations

import types

import pandas as pd
import pytest

from benchmarks.fusion_ceiling import build_report, markdown
from metarec_tasks.logs.contract import USER_KEY


def test_rules_are_compared_with_ease_and_the_ceiling_is_the_best_pair():
    recall = {
        "ease": [0.5, 0.5, 0.0, 1.0, 0.5, 0.5],
        "meta": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],  # best of all, but a single candidate
        "ease+1*meta": [0.5, 1.0, 0.5, 1.0, 1.0, 0.5],
        "ease+2*meta": [0.5, 0.5, 0.5, 1.0, 0.5, 0.5],
        "learned": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        "learned_overall": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        "top2_equal": [0.5, 0.5, 0.0, 1.0, 0.5, 0.5],
        "family_equal": [0.5, 1.0, 0.5, 1.0, 1.0, 0.5],
        "selected": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        "selected_family": [0.5, 1.0, 0.5, 1.0, 1.0, 0.5],
    }
    frame = pd.DataFrame(
        [
            {"fold": 0, USER_KEY: f"u{u}", "rule": rule, "recall": value}
            for rule, values in recall.items()
            for u, value in enumerate(values * 2)  # 12 users: enough for a Wilcoxon p below 0.05
        ]
    )
    report = build_report(frame, [{}], None, None, types.SimpleNamespace(argv=[], load_average="0"), 0.0)
    rules = report["rules"]
    assert report["ceiling_rule"] == "ease+1*meta"
    assert rules["ease"]["minus_ease"] == 0.0 and rules["ease"]["wilcoxon_p"] == 1.0
    assert rules["ease+1*meta"]["minus_ease"] == pytest.approx(0.25)
    assert rules["learned"]["minus_ease"] == pytest.approx(-0.5) and rules["learned"]["wilcoxon_p"] < 0.05
    assert rules["selected_family"]["minus_ease"] == pytest.approx(0.25)  # a rule, never the ceiling
    assert "**ceiling**" in markdown(report) and "| selected_family |" in markdown(report)

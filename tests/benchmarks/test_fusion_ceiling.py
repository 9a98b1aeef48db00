"""The fusion-ceiling report: every rule against EASE with the sign and test of `paired_tests`, and
the ceiling is the best *pair* blend, never a single candidate or a learned rule."""

from __future__ import annotations

import types

import pandas as pd
import pytest

from benchmarks.fusion_ceiling import build_report, challenger_with, family_of, markdown
from metarec_tasks.logs.contract import USER_KEY
from metarec_tasks.selection.candidates import Candidate
from metarec_tasks.selection.select import Selection


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
    shown = markdown(report)
    assert "**ceiling**" in shown
    assert shown.index("| meta |") < shown.index("| learned |") < shown.index("| selected_family |")


def night(validation: dict[str, tuple[str, float]]) -> Selection:
    """A night's selection with candidates `name: (kind, validation recall)` and the blend."""
    candidates = {
        n: Candidate(n, kind, score=lambda s: s, validation=v) for n, (kind, v) in validation.items()
    }
    figures = {n: v for n, (_, v) in validation.items()} | {"blend": 0.9}
    return Selection(candidates, None, "blend", figures)


def test_the_family_is_the_best_baseline_and_the_best_meta_ranker_by_validation():
    selection = night(
        {
            "popularity": ("baseline", float("nan")),  # NaN is last, never the best, even first in line
            "ease": ("baseline", 0.40),
            "ease_dropout": ("baseline", 0.42),
            "meta_ridge": ("meta", 0.41),
            "meta_reptile": ("meta", 0.41),  # a tie: the earlier candidate
            "student": ("student", 0.99),  # neither family
        }
    )
    assert family_of(selection, users=47) == ["ease_dropout", "meta_ridge"]


def test_the_family_rule_competes_with_the_singles_in_place_of_the_blend():
    selection = night(
        {"ease": ("baseline", float("nan")), "ease_dropout": ("baseline", 0.42), "meta_ridge": ("meta", 0.41)}
    )
    assert challenger_with(selection, "family_equal", 0.43, users=47) == "family_equal"
    assert (
        challenger_with(selection, "family_equal", 0.415, users=47) == "ease_dropout"
    )  # the blend's 0.9 is out
    assert challenger_with(selection, "family_equal", float("nan"), users=47) == "ease_dropout"

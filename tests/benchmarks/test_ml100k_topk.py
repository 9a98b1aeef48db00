"""Smoke test of the ML-100K top-K benchmark: `--quick` runs end to end and writes a sane report.

Skips when ML-100K is absent, unless CI is set (then its absence is a failure). Never asserts times or
metric levels beyond sanity (values are probabilities; every predictor is scored on the same users).
"""

from __future__ import annotations

import pytest

from tests.helpers import run_quick_ml100k_benchmark


@pytest.mark.slow
def test_quick_benchmark_writes_a_sane_report(tmp_path):
    out = tmp_path / "topk.json"
    report = run_quick_ml100k_benchmark("ml100k_topk", out, "--buckets", "1", "5")
    overall = report["overall"]
    singles = {"popularity", "popularity_mf", "item_knn", "ease", "ease_dropout", "rank_pretrained_finetuned"}
    assert singles | {"blend", "selected"} <= set(overall)
    assert report["best_meta_model"] in overall
    users = {e["users"] for e in overall.values()}
    assert len(users) == 1 and users.pop() > 50  # every predictor on the same test users
    for entry in overall.values():
        assert 0.0 <= entry["recall@20"] <= 1.0 and 0.0 <= entry["ndcg@20"] <= 1.0
    assert set(report["by_support"]) == {"1", "5"}
    assert set(report["validation_recall_by_support"]) == {"1", "5"}  # what a cold-start choice reads
    assert set(report["validation_recall_by_support"]["1"]) == set(overall) - {"selected"}
    assert set(report["paired_tests"]) == set(overall) - {"selected"}  # the choice vs every single one
    assert set(report["paired_tests_meta"]) == singles  # the best meta model vs every baseline
    assert len(report["challengers"]) == report["folds_run"]
    assert (tmp_path / "topk.md").read_text().startswith("# Full-catalog top-K on ml-100k")


@pytest.mark.slow
def test_a_ranker_is_the_same_whether_or_not_others_train_before_it(tmp_path):
    """`--quick` trains fomaml then maml; maml alone must reach the same validation figure (each ranker
    draws from its own episode stream, not from one the rankers before it consumed)."""
    both = run_quick_ml100k_benchmark("ml100k_topk", tmp_path / "both.json", "--buckets", "1")
    alone = run_quick_ml100k_benchmark(
        "ml100k_topk", tmp_path / "alone.json", "--buckets", "1", "--algorithms", "maml"
    )
    assert [f["val_recall"]["meta_maml"] for f in both["folds"]] == [
        f["val_recall"]["meta_maml"] for f in alone["folds"]
    ]
    assert (
        "meta_fomaml" in both["folds"][0]["val_recall"]
        and "meta_fomaml" not in alone["folds"][0]["val_recall"]
    )

"""Distillation on a tiny world of item clusters: a teacher that knows the clusters ranks a user's
cluster first; the student, trained on training users' support sets only, learns to rank like it,
is chosen on validation users, and scores shapes the selection and the exclusions expect."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metarec_tasks.errors import ConfigError, ModelFileError
from metarec_tasks.meta.tasks import Catalog
from metarec_tasks.models.ranking import RankDims, load_rank_model
from metarec_tasks.models.student import Student, load_student
from metarec_tasks.params import load_params
from metarec_tasks.ranking.data import EvalUsers, RankContext, exclusion_mask
from metarec_tasks.ranking.episodes import UserItems
from metarec_tasks.selection.candidates import Candidate
from metarec_tasks.selection.distill import (
    LOW,
    STUDENT,
    padded,
    save_student_of,
    student_candidate,
    student_inputs,
    student_scorer,
    teach,
)
from metarec_tasks.selection.metrics import mean_recall, top_k_rows
from metarec_tasks.selection.select import select, with_candidate
from tests.helpers import REPO

CLUSTERS, PER_CLUSTER, K = 6, 10, 5
N_ITEMS = CLUSTERS * PER_CLUSTER
CLUSTER = np.arange(N_ITEMS) // PER_CLUSTER
POPULARITY = np.random.default_rng(7).random(N_ITEMS)  # the teacher's tie-breaker within a cluster
FAST = {
    "distill.epochs": 12,
    "distill.patience": 12,
    "distill.temperatures": [1.0],
    "distill.draws": 2,
    "distill.top_n": 15,
    "distill.sampled": 15,
    "distill.batch_size": 32,
    "distill.dim": 16,
    "distill.lr": 0.03,
    "ranking.max_support": 4,
    "finetune.chunk_size": 64,
    "evaluate.catalog_k": K,  # validation Recall@K: the teacher's top 5 (its order within a cluster)
    "evaluate.primary_metric": "mae",
}


def params(**overrides):
    return load_params(REPO / "params.yaml", {**FAST, **overrides})


def teacher_scores(support: UserItems, excluded: np.ndarray | None = None) -> np.ndarray:
    """The teacher: items of the support's clusters first (by how many support items share it),
    popularity within a cluster."""
    scores = np.zeros((len(support), N_ITEMS), np.float32)
    for u, items in enumerate(support.items):
        counts = np.bincount(CLUSTER[items], minlength=CLUSTERS)
        scores[u] = counts[CLUSTER] + 0.5 * POPULARITY
    return scores


def users(n: int, first_row: int, seed: int, size: tuple[int, int]) -> tuple[UserItems, list[set[int]]]:
    """`n` users, each liking one cluster: `size` random items of it as positives; relevant = the
    teacher's top K of the rest."""
    rng = np.random.default_rng(seed)
    items, relevant = [], []
    for u in range(n):
        cluster = u % CLUSTERS
        members = np.flatnonzero(CLUSTER == cluster)
        items.append(rng.choice(members, int(rng.integers(*size)), replace=False))
    support = UserItems(
        [f"u{first_row + u}" for u in range(n)],
        np.arange(first_row, first_row + n),
        items,
        [np.ones(len(i), np.float32) for i in items],
    )
    excluded = exclusion_mask(support.items, np.zeros(N_ITEMS, bool)).numpy()
    top = top_k_rows(teacher_scores(support), excluded, K)
    relevant = [set(row.tolist()) for row in top]
    return support, relevant


def world():
    catalog = Catalog(
        users={"user_cat": torch.zeros((400, 0), dtype=torch.long)},
        items={"item_id": torch.arange(N_ITEMS), "item_cat": torch.zeros((N_ITEMS, 0), dtype=torch.long)},
        user_ids=[f"u{i}" for i in range(400)],
        item_ids=[f"i{i}" for i in range(N_ITEMS)],
    )
    unavailable = np.zeros(N_ITEMS, bool)
    ctx = RankContext(catalog, catalog.items, None, None, np.random.default_rng(0), unavailable)
    train, _ = users(240, 0, 1, (2, 8))
    val_support, val_relevant = users(60, 240, 2, (1, 4))
    dims = RankDims([], [], {}, N_ITEMS, FAST["distill.dim"])
    return ctx, dims, train, EvalUsers(val_support, val_relevant)


def teacher_selection(val: EvalUsers):
    excluded = exclusion_mask(val.seen, np.zeros(N_ITEMS, bool)).numpy()
    scores = teacher_scores(val.support)
    teacher = Candidate(
        "ease",
        "baseline",
        teacher_scores,
        {},
        mean_recall(scores, excluded, val.relevant, K),
        val_scores=scores,
    )
    p = params()
    return select([teacher], val, excluded, K, p.selection.model_copy(update={"blend": False})), excluded


def test_the_teachers_lessons_list_its_top_items_first_and_never_a_support_item():
    ctx, _, train, _ = world()
    lessons = teach(teacher_scores, train, ctx.unavailable, params(), np.random.default_rng(0))
    assert len(lessons.support) == 2 * len(train)  # two draws per training user (all have ≥ 2 items)
    assert lessons.columns.shape == lessons.mask.shape == lessons.scores.shape == (len(lessons.support), 30)
    for e in range(0, len(lessons.support), 37):
        support = lessons.support.items[e]
        assert 1 <= len(support) <= 4  # drawn like ranking episodes: sizes 1..ranking.max_support
        allowed = lessons.columns[e][lessons.mask[e]]
        assert not set(allowed) & set(support)
        assert len(set(allowed)) == len(allowed)  # a sampled item already listed is masked
        top = lessons.columns[e, :15][lessons.mask[e, :15]]
        assert set(CLUSTER[top[: PER_CLUSTER - len(support)]]) == {CLUSTER[support[0]]}  # the user's cluster
        assert np.all(np.diff(lessons.scores[e, :15][lessons.mask[e, :15]]) <= 0)  # best first


def test_the_student_learns_to_rank_like_its_teacher_and_is_a_candidate_chosen_on_validation_users(tmp_path):
    ctx, dims, train, val = world()
    selection, excluded = teacher_selection(val)
    p = params(**{"distill.temperatures": [0.5, 2.0]})
    student = student_candidate(p, ctx, dims, train, val, selection, torch.device("cpu"))
    assert student.name == STUDENT and student.kind == "student"
    assert student.knobs["teacher"] == "ease" and 1 <= student.knobs["epochs"] <= 12
    assert {t["temperature"] for t in student.tried} == {0.5, 2.0}
    best = max(student.tried, key=lambda t: t["recall"])
    assert student.knobs["temperature"] == best["temperature"] and student.validation == best["recall"]

    scores = student.score(val.support)
    assert scores.shape == (len(val.support), N_ITEMS) and np.isfinite(scores).all()
    ours = top_k_rows(scores, excluded, K)
    theirs = top_k_rows(teacher_scores(val.support), excluded, K)
    overlap = np.mean([len(set(a) & set(b)) / K for a, b in zip(ours, theirs, strict=True)])
    chance = K / (N_ITEMS - 2.5)
    assert overlap > 0.6 > 5 * chance, overlap  # the teacher's recall on its own top-K is 1
    untrained = Student(dims, ctx.catalog.items, ctx.catalog.users)
    assert student.validation > 0.6 and student.validation > 3 * mean_recall(
        untrained(*_padded(val.support)).detach().numpy(), excluded, val.relevant, K
    )

    save_student_of(with_candidate(selection, student, len(val.support), K), tmp_path / "student.pt")
    loaded, metadata = load_student(tmp_path / "student.pt", ctx.catalog.items, ctx.catalog.users)
    assert metadata["knobs"] == student.knobs
    np.testing.assert_allclose(student_scorer(loaded, 64)(val.support), scores, rtol=1e-6)
    with pytest.raises(ModelFileError):
        load_rank_model(tmp_path / "student.pt")  # a student file is refused where a ranker is expected

    joined = with_candidate(selection, student, len(val.support), K)
    assert set(joined.candidates) == {"ease", STUDENT} and joined.kind(STUDENT) == "student"
    assert joined.challenger == "ease"  # the teacher is perfect on these users: the student ties at best
    assert joined.to_json()["candidates"][STUDENT]["knobs"]["teacher"] == "ease"
    everyone = joined.score_all(val.support, excluded)
    assert set(everyone) == {"ease", STUDENT} and everyone[STUDENT].shape == (len(val.support), N_ITEMS)


def _padded(support: UserItems):
    rows, weights = padded(support.items, support.weights)
    return rows, weights, torch.as_tensor(support.user_rows)


def test_distill_params_are_validated():
    with pytest.raises(ConfigError, match="temperatures"):
        params(**{"distill.temperatures": [0.0]})
    with pytest.raises(ConfigError, match="temperatures"):
        params(**{"distill.temperatures": []})
    with pytest.raises(ConfigError, match=r"distill\.dim"):
        params(**{"distill.dim": 0})
    with pytest.raises(ConfigError, match=r"distill\.enabled"):
        params(**{"distill.enabled": "sometimes"})


def test_the_student_reads_the_items_a_user_rated_low_as_its_teacher_does():
    ctx, dims, _, _ = world()
    torch.manual_seed(0)
    student = Student(dims, ctx.catalog.items, ctx.catalog.users)
    liked = UserItems(["u0"], np.asarray([0]), [np.asarray([1, 2])], [np.ones(2, np.float32)])
    mixed = UserItems(["u0"], np.asarray([0]), liked.items, liked.weights, [np.asarray([7])])
    items, weights = student_inputs(mixed)
    assert items[0].tolist() == [1, 2, 7] and weights[0].tolist() == [1.0, 1.0, LOW]
    score = student_scorer(student, 8)
    assert np.allclose(score(liked), score(mixed))  # the gate starts at 0: the positives alone
    with torch.no_grad():
        student.low_gate.fill_(1.0)
    assert not np.allclose(score(liked), score(mixed))  # a learned gate: the low-rated item counts


def test_lessons_come_from_at_most_max_users_training_users():
    """The student's cost is bounded on a large user base: a sample of the training users teaches it."""
    ctx, _, train, _ = world()
    cap = len(train) // 3
    lessons = teach(
        teacher_scores, train, ctx.unavailable, params(**{"distill.max_users": cap}), np.random.default_rng(0)
    )
    assert len(set(lessons.support.users)) == cap and len(lessons.support) == 2 * cap
    assert set(lessons.support.users) <= set(train.users)
    everyone = teach(
        teacher_scores, train, ctx.unavailable, params(**{"distill.max_users": 0}), np.random.default_rng(0)
    )
    assert len(set(everyone.support.users)) == len(train)

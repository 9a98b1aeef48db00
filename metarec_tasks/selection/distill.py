"""The student candidate: the night's challenger (the teacher) distilled into a small two-tower net.

1. Lessons: every training user's positives (of a random `distill.max_users` of them, so the cost
   stops growing with the user base) give `distill.draws` support sets, drawn like ranking episodes
   (sizes 1..`ranking.max_support`); the teacher scores the catalog for each once, and the lesson is
   its top `distill.top_n` items plus `distill.sampled` uniformly drawn ones, with the teacher's
   per-user z-scores (`fusion.normalise`, the scale the blend already works in).
2. Training goes through the one training loop (`training/loop.py::fit`): its "algorithm" here is
   `Distillation`, whose loss is the listwise KL between softmax(teacher / τ) and softmax(student)
   over a lesson's items, with no inner loop — the student reads a support set in one forward pass.
   The loop brings patience, the best epoch by validation Recall@K, the NaN rules and the history.
   Its checkpoints go to a scratch folder: the student trains inside `finetune`, which always
   re-runs whole, so a checkpoint would never be resumed.
3. The candidate: τ from `distill.temperatures` and the epoch are chosen on validation users with the
   same `tuned` as every baseline's knobs; the student then competes with every candidate and the
   blend (`select.with_candidate`), but is no part of the blend — it would only echo its teacher.

Nothing here reads a holdout user; `timed_scores` measures scoring time of teacher and student on any
support sets (the finetune stage gives it the holdout users' for the report).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from metarec_tasks.meta.base import InnerLoop, MetaAlgorithm
from metarec_tasks.meta.tasks import InteractionSet, TaskBatch
from metarec_tasks.models.ranking import RankDims
from metarec_tasks.models.student import Student, save_student
from metarec_tasks.params import Params
from metarec_tasks.ranking.data import EvalUsers, RankContext, exclusion_mask, items_on
from metarec_tasks.ranking.episodes import UserItems, ragged_index, sample_episodes
from metarec_tasks.selection.candidates import Candidate, Scorer, tuned
from metarec_tasks.selection.fusion import normalise
from metarec_tasks.selection.metrics import mean_recall, top_k_rows
from metarec_tasks.selection.select import Selection
from metarec_tasks.training.checkpoint import Checkpoints
from metarec_tasks.training.loop import FitResult, Randomness, Validation, fit
from metarec_tasks.training.runtime import to_device

log = logging.getLogger(__name__)

STUDENT = "student"
MASKED = -1e9  # the logit of a lesson's padding: its softmax weight is exactly 0
Teacher = Callable[[UserItems, np.ndarray], np.ndarray]  # (support sets, excluded) → [users, n_items]


@dataclass
class Lessons:
    """What the teacher taught: support sets of training users and its scores of some catalog rows."""

    support: UserItems
    columns: np.ndarray  # [E, C] catalog rows: the teacher's top ones first, then sampled ones
    mask: np.ndarray  # [E, C] False where a row is excluded (seen, unavailable) or already listed
    scores: np.ndarray  # [E, C] the teacher's normalised scores of those rows


def teach(
    teacher: Teacher,
    train: UserItems,
    unavailable: np.ndarray,
    params: Params,
    rng: np.random.Generator,
) -> Lessons:
    """`distill.draws` episode-like support sets per training user (of a random `distill.max_users`
    of them), each scored once by the teacher."""
    dp, chunk = params.distill, params.finetune.chunk_size
    if dp.max_users and len(train) > dp.max_users:
        train = train.subset(np.sort(rng.choice(len(train), dp.max_users, replace=False)))
    users, items, weights = [], [], []
    for _ in range(dp.draws):
        # support sizes uniform in 1..max_support, not the ranker's few-shot-heavy rule: the student
        # scores every user from one pass and must copy the teacher across all sizes (log-uniform
        # lessons gave the student 0.425 vs its teacher's 0.476 on ML-100K, python -m benchmarks.distill)
        drawn, (s_items, s_weights), _ = sample_episodes(train, params.ranking.max_support, 1, rng)
        users.append(drawn)
        items += s_items
        weights += s_weights
    support = UserItems(
        [u for d in users for u in d.users],
        np.concatenate([d.user_rows for d in users]) if users else np.zeros(0, np.int64),
        items,
        weights,
        [low for d in users for low in d.low_items()],  # the episode's low ratings: the teacher reads them
    )
    n_items = len(unavailable)
    parts = []
    for start in range(0, len(support), chunk):
        part = support.subset(np.arange(start, min(start + chunk, len(support))))
        seen = [np.union1d(i, low) for i, low in zip(part.items, part.low_items(), strict=True)]
        excluded = exclusion_mask(seen, unavailable).numpy()
        z = normalise(teacher(part, excluded), excluded)
        top = top_k_rows(z, excluded, dp.top_n)
        listed = excluded.copy()
        np.put_along_axis(listed, top, True, axis=1)
        sampled = rng.integers(0, n_items, (len(part), dp.sampled))
        columns = np.concatenate([top, sampled], axis=1)
        fresh = ~np.take_along_axis(listed, sampled, 1) & ~repeated(sampled)
        mask = np.concatenate([~np.take_along_axis(excluded, top, 1), fresh], axis=1)
        parts.append((columns, mask, np.take_along_axis(z, columns, 1)))
    width = min(dp.top_n, n_items) + dp.sampled
    stacked = [
        np.concatenate([p[i] for p in parts]) if parts else np.zeros((0, width), dtype)
        for i, dtype in enumerate((np.int64, bool, np.float32))
    ]
    return Lessons(support, *stacked)


def repeated(rows: np.ndarray) -> np.ndarray:
    """[T, C] True where a row's value already appeared earlier in that row."""
    order = np.argsort(rows, axis=1, kind="stable")
    ordered = np.take_along_axis(rows, order, 1)
    seen = np.zeros(rows.shape, bool)
    seen[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    out = np.zeros(rows.shape, bool)
    np.put_along_axis(out, order, seen, 1)
    return out


class Distillation(MetaAlgorithm):
    """The loop's algorithm for the student: the loss is the listwise KL to the teacher; there is no
    inner loop (`adapt` is refused: the student reads the support set in its forward pass)."""

    name = "distillation"

    def __init__(self, temperature: float):
        super().__init__(InnerLoop("head", 0, 0.0))
        self.temperature = temperature

    def meta_loss(self, model: Student, batch: TaskBatch) -> torch.Tensor:
        query = batch.query
        logits = model(batch.support.item_rows, batch.support.target, batch.user_rows, query.item_rows)
        student = F.log_softmax(logits.masked_fill(~query.mask, MASKED), dim=-1)
        teacher = F.log_softmax((query.target / self.temperature).masked_fill(~query.mask, MASKED), dim=-1)
        return F.kl_div(student, teacher, reduction="none", log_target=True).sum(-1).mean()

    def adapt(self, model, batch, steps):
        raise NotImplementedError("the student has no inner loop: it reads the support set in one pass")


LOW = -1.0  # the support-row weight that marks an item the user rated low (`Student.user_vectors`)


def student_inputs(support: UserItems) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """What the student reads of support sets: the positives at their weights, then the items each
    user rated low, marked `LOW` — its teacher reads those too."""
    low = support.low_items()
    items = [np.concatenate([i, lo]) for i, lo in zip(support.items, low, strict=True)]
    marks = [np.full(len(lo), LOW, np.float32) for lo in low]
    weights = [np.concatenate([w.astype(np.float32), m]) for w, m in zip(support.weights, marks, strict=True)]
    return items, weights


def padded(items: list[np.ndarray], weights: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """[T, S] catalog rows (-1 = padding) and their weights (0 on padding)."""
    task, column = ragged_index(items)
    width = max(int(column.max()) + 1 if len(column) else 0, 1)
    rows = np.full((len(items), width), -1, np.int64)
    values = np.zeros((len(items), width), np.float32)
    if len(task):
        rows[task, column] = np.concatenate(items)
        values[task, column] = np.concatenate(weights)
    return torch.as_tensor(rows), torch.as_tensor(values)


def lesson_batch(lessons: Lessons, index: np.ndarray) -> TaskBatch:
    """Lessons `index` as the loop's batch: support rows/weights, and the lesson's rows/scores/mask
    in the query set (no per-row features: the student keeps the catalog's)."""
    part = lessons.support.subset(index)
    rows, weights = padded(*student_inputs(part))
    support = InteractionSet({}, {}, weights, rows >= 0, rows)
    query = InteractionSet(
        {},
        {},
        torch.as_tensor(lessons.scores[index]),
        torch.as_tensor(lessons.mask[index]),
        torch.as_tensor(lessons.columns[index]),
    )
    return TaskBatch(part.users, torch.as_tensor(part.user_rows), support, query)


def student_scorer(model: Student, chunk: int) -> Scorer:
    """The student's scores of the whole catalog for support sets, in chunks, on its device."""
    device = next(model.parameters()).device

    def score(support: UserItems) -> np.ndarray:
        out = []
        with torch.no_grad():
            for start in range(0, len(support), chunk):
                part = support.subset(np.arange(start, min(start + chunk, len(support))))
                rows, weights = padded(*student_inputs(part))
                user_rows = torch.as_tensor(part.user_rows, device=device)
                out.append(model(rows.to(device), weights.to(device), user_rows).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, model.n_items), np.float32)

    return score


def train_student(
    model: Student, lessons: Lessons, val: EvalUsers, excluded: np.ndarray, temperature: float, params: Params
) -> FitResult:
    """Fit `model` to the lessons with the one loop, judged every epoch on the validation users'
    Recall@K (`excluded`: their seen and unavailable items); on return it holds the best epoch."""
    dp, k = params.distill, params.evaluate.catalog_k
    device = next(model.parameters()).device
    rng = np.random.default_rng([params.run.seed, 15])
    score = student_scorer(model, params.finetune.chunk_size)

    def batches(epoch: int) -> Iterator[TaskBatch]:
        order = rng.permutation(len(lessons.support))
        for start in range(0, len(order), dp.batch_size):
            yield to_device(lesson_batch(lessons, order[start : start + dp.batch_size]), device)

    def recall() -> float | None:
        if not any(val.relevant):
            return None
        scores = score(val.support)
        return mean_recall(scores, excluded, val.relevant, k) if np.isfinite(scores).all() else float("nan")

    mp = params.ranking.meta.model_copy(  # the loop's knobs: the ranker's block, distill's values
        update={
            "epochs": dp.epochs,
            "patience": dp.patience,
            "meta_lr": dp.lr,
            "weight_average_decay": 0.0,
            "checkpoint_every": dp.epochs,
        }
    )
    with tempfile.TemporaryDirectory() as scratch:
        checkpoints = Checkpoints(Path(scratch), f"student-{temperature}")
        randomness = Randomness(torch.Generator().manual_seed(params.run.seed), rng)
        validation = Validation(f"val_recall@{k}", False, recall)
        return fit(model, Distillation(temperature), batches, validation, mp, checkpoints, randomness)


def student_candidate(
    params: Params,
    ctx: RankContext,
    dims: RankDims,
    train: UserItems,
    val: EvalUsers,
    selection: Selection,
    device: torch.device,
) -> Candidate:
    """The challenger of `selection` taught on `train` (training users' positives); one student per
    temperature, each early-stopped, the best on `val` (validation users) kept."""
    teacher = selection.challenger
    rng = np.random.default_rng([params.run.seed, 15, 1])
    lessons = teach(lambda s, e: selection.score(teacher, s, e), train, ctx.unavailable, params, rng)
    log.info(
        "distill: %d support sets of %d training users taught by %s",
        len(lessons.support),
        len(train),
        teacher,
    )
    excluded = exclusion_mask(val.seen, ctx.unavailable).numpy()
    items = items_on(ctx.catalog.items, device)
    users = items_on(ctx.catalog.users, device)
    trained: dict[float, tuple[Student, int]] = {}

    def build(temperature: float) -> Scorer:
        torch.manual_seed(params.run.seed)
        model = Student(dims, items, users).to(device)
        result = train_student(model, lessons, val, excluded, temperature, params)
        trained[temperature] = model, result.best_epoch + 1
        return student_scorer(model, params.finetune.chunk_size)

    grid = {"temperature": params.distill.temperatures}
    student = tuned(STUDENT, "student", build, grid, val, excluded, params.evaluate.catalog_k)
    student.network, epochs = trained[student.knobs["temperature"]]
    student.knobs |= {"epochs": epochs, "teacher": teacher}
    return student


def save_student_of(selection: Selection, path: Path) -> None:
    """The night's student network and its knobs (what the producer record hashes); without a
    student, an earlier night's file is removed, so no record can hash a stale one."""
    student = selection.candidates.get(STUDENT)
    if student is None or student.network is None:
        path.unlink(missing_ok=True)
        return
    save_student(path, student.network, {"knobs": student.knobs, "validation": student.validation})


def timed_scores(
    selection: Selection, names: list[str], support: UserItems, excluded: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Each of `names`' scores for `support`, and the milliseconds per 1,000 users it took (each
    candidate's own full scoring: a blend scores its parts)."""
    scores, ms = {}, {}
    for name in names:
        started = time.perf_counter()
        scores[name] = selection.score(name, support, excluded)
        ms[name] = (time.perf_counter() - started) * 1e6 / max(len(support), 1)
    return scores, ms

"""ML-100K distillation: the night's challenger (the teacher) against the student distilled from it.

Each fold is built as in `benchmarks/ml100k_topk.py` (the same protocol, the pipeline's own ranker,
candidates and selection on the fold's validation users; by default one meta ranker with the
configured `ranking.meta.algorithm`, as the nightly run trains). The teacher is the fold's
challenger; the student (`metarec_tasks/selection/distill.py`) learns from it on the fold's training
users, its temperature and epochs chosen on validation users. Test users: Recall@20 and nDCG@20 of
both (mean ± 95% CI), the paired Wilcoxon test student − teacher, and each one's scoring time of the
test users' support sets in ms per 1,000 users (one thread, CPU, the fastest of `--repeats` runs, on
whatever load the machine had: the report prints the load average before and after).

    python -m benchmarks.distill               # the measured run (5 folds)
    python -m benchmarks.distill --folds 2     # the first two folds
    python -m benchmarks.distill --quick       # one fold, few epochs (smoke test)
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

from benchmarks.ml100k_topk import (
    benchmark_params,
    benchmark_parser,
    fold_selection,
    per_user_rows,
    run_benchmark,
)
from benchmarks.reports import load_average
from metarec_tasks.evaluation.metrics import mean_ci95
from metarec_tasks.logs.contract import USER_KEY
from metarec_tasks.models.ranking import RankDims
from metarec_tasks.ranking.data import eval_users
from metarec_tasks.ranking.scoring import exclusion_mask
from metarec_tasks.selection.distill import STUDENT, student_candidate, timed_scores
from metarec_tasks.selection.metrics import top_k_rows
from metarec_tasks.selection.select import with_candidate

log = logging.getLogger("benchmarks.distill")
REPO = Path(__file__).resolve().parents[1]
K = 20
TEACHER = "teacher"


def run_fold(fold: int, tasks, folds, protocol, ratings, catalog, vocab, params, args) -> tuple[list, dict]:
    chosen = fold_selection(fold, tasks, folds, protocol, ratings, catalog, vocab, params, args)
    started = time.perf_counter()
    dims = RankDims.from_vocab(vocab, params.distill.dim)
    student = student_candidate(
        params, chosen.ctx, dims, chosen.train, chosen.val, chosen.selection, torch.device("cpu")
    )
    distill_seconds = time.perf_counter() - started
    joined = with_candidate(chosen.selection, student, len(chosen.val.support), K)
    teacher = chosen.selection.challenger
    users = eval_users(chosen.test_tasks, catalog, params)
    excluded = exclusion_mask(users.seen, chosen.ctx.unavailable).numpy()
    runs = [timed_scores(joined, [teacher, STUDENT], users.support, excluded) for _ in range(args.repeats)]
    scores = runs[0][0]
    ms = {name: min(run[1][name] for run in runs) for name in (teacher, STUDENT)}  # the least disturbed
    rows = []
    for role, name in ((TEACHER, teacher), (STUDENT, STUDENT)):
        lists = top_k_rows(scores[name], excluded, K)
        for row in per_user_rows(lists, users.relevant, users.support.users):
            rows.append({"fold": fold, "model": role, **row})
    info = {
        "fold": fold,
        "teacher": teacher,
        "validation_recall": {TEACHER: joined.validation[teacher], STUDENT: student.validation},
        "student_knobs": student.knobs,
        "student_tried": student.tried,
        "selection_picks": joined.challenger,
        "ms_per_1000_users": {TEACHER: ms[teacher], STUDENT: ms[STUDENT]},
        "test_users_scored": len(users.support),
        "distill_seconds": distill_seconds,
        "ranker_train_seconds": chosen.info["train_seconds"],
    }
    log.info("fold %d: %s", fold, info)
    return rows, info


def summarize(frame: pd.DataFrame, fold_info: list[dict]) -> dict:
    out: dict = {"overall": {}}
    for role, part in frame.groupby("model"):
        entry = {"users": len(part)}
        for metric in (f"recall@{K}", f"ndcg@{K}"):
            mean, half = mean_ci95(part[metric].to_numpy())
            entry[metric], entry[f"{metric}_ci95"] = mean, half
        ms = [f["ms_per_1000_users"][role] for f in fold_info]
        entry["ms_per_1000_users"] = float(np.mean(ms))
        entry["ms_per_1000_users_by_fold"] = ms
        out["overall"][role] = entry
    paired = frame.pivot_table(index=[USER_KEY, "fold"], columns="model", values=f"recall@{K}")
    diff = paired[STUDENT] - paired[TEACHER]
    differs = bool((diff != 0).any())
    out["paired"] = {
        "users": len(diff),
        "mean_difference": float(diff.mean()),
        "ci95": mean_ci95(diff.to_numpy())[1],
        "wilcoxon_p": float(stats.wilcoxon(paired[STUDENT], paired[TEACHER]).pvalue) if differs else 1.0,
        "student_share_of_teacher": float(paired[STUDENT].mean() / paired[TEACHER].mean()),
    }
    teacher_ms, student_ms = (out["overall"][r]["ms_per_1000_users"] for r in (TEACHER, STUDENT))
    out["speedup"] = teacher_ms / student_ms if student_ms else float("nan")
    return out


def markdown(report: dict) -> str:
    overall, paired = report["overall"], report["paired"]
    lines = [
        "# ML-100K distillation: the night's challenger (teacher) vs the student distilled from it",
        "",
        f"Command: `{report['command']}` — {report['folds_run']} fold(s), {report['seconds']:.0f} s, "
        f"{report['threads']} thread(s), load average before the run {report['load_average']}, after it "
        f"{report['load_average_after']}. "
        f"Teachers (each fold's challenger, chosen on validation users): {', '.join(report['teachers'])}. "
        "The student's temperature and epochs were chosen on validation users; scoring time is each "
        "model's full scoring of the test users' support sets over the whole catalog, on CPU, the "
        f"fastest of {report['repeats']} runs.",
        "",
        f"| model | test users | Recall@{K} | nDCG@{K} | scoring ms per 1,000 users |",
        "|---|---|---|---|---|",
    ]
    for role in (TEACHER, STUDENT):
        e = overall[role]
        lines.append(
            f"| {role} | {e['users']} | {e[f'recall@{K}']:.3f} ± {e[f'recall@{K}_ci95']:.3f} "
            f"| {e[f'ndcg@{K}']:.3f} ± {e[f'ndcg@{K}_ci95']:.3f} | {e['ms_per_1000_users']:.0f} |"
        )
    lines += [
        "",
        f"Student − teacher, Recall@{K} per test user: {paired['mean_difference']:+.4f} ± "
        f"{paired['ci95']:.4f} (Wilcoxon p {paired['wilcoxon_p']:.2g}, {paired['users']} users); the "
        f"student keeps {100 * paired['student_share_of_teacher']:.0f}% of the teacher's recall and "
        f"scores {report['speedup']:.1f}× faster.",
        "",
        "| fold | teacher | validation recall teacher / student | student knobs | selection picks "
        "| ms per 1,000 users teacher / student |",
        "|---|---|---|---|---|---|",
    ]
    for f in report["folds"]:
        v, ms = f["validation_recall"], f["ms_per_1000_users"]
        knobs = ", ".join(f"{k} {v}" for k, v in f["student_knobs"].items() if k != "teacher")
        lines.append(
            f"| {f['fold']} | {f['teacher']} | {v[TEACHER]:.3f} / {v[STUDENT]:.3f} | {knobs} "
            f"| {f['selection_picks']} | {ms[TEACHER]:.0f} / {ms[STUDENT]:.0f} |"
        )
    return "\n".join(lines) + "\n"


def build_report(frame: pd.DataFrame, fold_info: list[dict], protocol, params, args, started: float) -> dict:
    return {
        "command": "python " + " ".join(sys.argv),
        "protocol": {**protocol.__dict__, "k": K, "relevance_threshold": params.evaluate.relevance_threshold},
        "distill_params": params.distill.model_dump(mode="json"),
        "algorithms": args.algorithms,
        "repeats": args.repeats,
        "folds_run": len(fold_info),
        "seconds": time.perf_counter() - started,
        "threads": torch.get_num_threads(),
        "load_average": args.load_average,
        "load_average_after": load_average(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "teachers": [f["teacher"] for f in fold_info],
        "folds": fold_info,
        **summarize(frame, fold_info),
    }


def main() -> None:
    parser = benchmark_parser(__doc__, "distill.json")
    parser.add_argument(
        "--algorithms", nargs="+", default=None, help="meta rankers (default: the configured one)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed scorings per model; the fastest counts")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    params = benchmark_params(
        args,
        {
            "ranking.meta.epochs": 2,
            "ranking.meta.pretrain_epochs": 1,
            "distill.epochs": 3,
            "distill.temperatures": [1.0],
        },
    )
    args.algorithms = args.algorithms or [params.ranking.meta.algorithm]
    run_benchmark(params, args, run_fold, build_report, markdown)


if __name__ == "__main__":
    main()

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

import argparse
import logging
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from scipy import stats

from benchmarks.ml100k_topk import fold_selection, load, per_user_rows
from benchmarks.protocol import Protocol, assign_roles, eligible_ratings, user_folds
from benchmarks.reports import load_average, write_report
from metarec_tasks.data.features import build_vocabulary
from metarec_tasks.data.text import item_text_table, text_lookup
from metarec_tasks.evaluation.metrics import mean_ci95
from metarec_tasks.logs.contract import ITEM_KEY, USER_KEY
from metarec_tasks.meta.tasks import Catalog
from metarec_tasks.models.ranking import RankDims
from metarec_tasks.params import load_params
from metarec_tasks.paths import Workspace
from metarec_tasks.ranking.data import eval_users
from metarec_tasks.ranking.scoring import exclusion_mask
from metarec_tasks.selection.distill import STUDENT, student_candidate, timed_scores
from metarec_tasks.selection.metrics import top_k_rows
from metarec_tasks.selection.select import with_candidate
from metarec_tasks.threads import apply_thread_policy

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
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ml-100k")
    parser.add_argument("--quick", action="store_true", help="one fold, few epochs")
    parser.add_argument("--folds", type=int, default=None, help="run only the first N folds")
    parser.add_argument(
        "--algorithms", nargs="+", default=None, help="meta rankers (default: the configured one)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed scorings per model; the fastest counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], help="params overrides, e.g. distill.dim=64")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "distill.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    overrides = {"source.kind": "movielens"}
    if args.quick:
        overrides |= {
            "ranking.meta.epochs": 2,
            "ranking.meta.pretrain_epochs": 1,
            "distill.epochs": 3,
            "distill.temperatures": [1.0],
        }
    for item in args.set:
        key, value = item.split("=", 1)
        overrides[key] = yaml.safe_load(value)
    params = load_params(REPO / "params.yaml", overrides)
    args.algorithms = args.algorithms or [params.ranking.meta.algorithm]
    apply_thread_policy(params.run.threads)
    ml, ratings = load(args.data)
    protocol = Protocol(seed=args.seed)
    tasks = assign_roles(eligible_ratings(ratings, protocol), protocol)
    folds = user_folds(sorted(tasks[USER_KEY].unique()), protocol)
    vocab = build_vocabulary(
        params.active_features, ml.users, ml.items, ml.items[ITEM_KEY].astype(str).tolist()
    )
    names = vocab.item_features("text")  # titles, embedded once (cached in the repo workspace)
    text = item_text_table(
        ml.items, names, Workspace(REPO).text_cache, "cpu", params.episodes.text_batch_size
    )
    catalog = Catalog.build(vocab, ml.users, ml.items, text_lookup(text, names))
    n_folds = 1 if args.quick else (args.folds or protocol.folds)

    args.load_average = load_average()
    started = time.perf_counter()
    rows, fold_info = [], []
    for fold in range(n_folds):
        fold_rows, info = run_fold(fold, tasks, folds, protocol, ratings, catalog, vocab, params, args)
        rows += fold_rows
        fold_info.append(info)
        # written after every fold, so a long run that is cut short still leaves its completed folds
        report = build_report(pd.DataFrame(rows), fold_info, protocol, params, args, started)
        write_report(args.out, report, markdown(report))
    log.info("wrote %s and %s", args.out, args.out.with_suffix(".md"))
    log.info("\n%s", markdown(report))


if __name__ == "__main__":
    main()

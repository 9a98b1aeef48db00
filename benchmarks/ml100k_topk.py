"""ML-100K full-catalog top-K: the meta-learned ranking model against the top-K baselines.

Protocol (benchmarks/protocol.py): users with 13–100 ratings, 10 random query ratings each, 5 folds
over users with validation users carved out of the training folds. Training data of a fold: every rating
of every user that is neither a test nor a validation user (heavier users included). Metrics: Recall@20
and nDCG@20 over every item not in the user's support set, relevant = query items rated ≥ 4; mean ± 95%
CI over test users; the cold-start curve truncates every test user's support to 1, 3, 5, 10, 20 random
ratings. Every candidate of the nightly pipeline (the meta-learned rankers, the fine-tuned warm-up,
EASE, popularity + MF, item-kNN, popularity, their blend) is tuned and chosen on *validation* users
with the pipeline's own code (`metarec_tasks/selection`); `selected` — the choice — is compared with
every single predictor by paired tests over test users.

    python -m benchmarks.ml100k_topk            # the measured run (5 folds)
    python -m benchmarks.ml100k_topk --quick    # one fold, few epochs (smoke test)

A real data set the project was never tuned on (fetched by `benchmarks/fetch_ml_latest_small.py`):

    python -m benchmarks.ml100k_topk --data ../shared/data/ml-latest-small \\
        --algorithms ridge --out reports/ml_latest_small_topk.json
"""

from __future__ import annotations

import argparse
import copy
import itertools
import logging
import os
import platform
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from scipy import stats

from benchmarks.protocol import (
    Protocol,
    assign_roles,
    eligible_ratings,
    fold_tasks,
    truncate_support,
    user_folds,
)
from benchmarks.reports import load_average, write_report
from metarec_tasks.data.episodes import TEST, VALIDATION
from metarec_tasks.data.features import build_vocabulary
from metarec_tasks.data.text import item_text_table, text_lookup
from metarec_tasks.evaluation.metrics import catalog_metrics, mean_ci95
from metarec_tasks.evaluation.selection import SELECTED
from metarec_tasks.evaluation.tables import SUPPORT_BUCKETS
from metarec_tasks.logs.contract import ITEM_KEY, USER_KEY
from metarec_tasks.logs.movielens import read_movielens
from metarec_tasks.meta import ALGORITHMS
from metarec_tasks.meta.tasks import Catalog
from metarec_tasks.models.ranking import RankDims, RankNet
from metarec_tasks.params import Params, load_params
from metarec_tasks.paths import Workspace
from metarec_tasks.ranking.data import EvalUsers, RankContext, rank_context
from metarec_tasks.ranking.data import eval_users as ranking_eval_users
from metarec_tasks.ranking.episodes import UserItems
from metarec_tasks.ranking.scoring import exclusion_mask
from metarec_tasks.selection.candidates import night_candidates
from metarec_tasks.selection.metrics import mean_recall, top_k_rows
from metarec_tasks.selection.select import Selection, select
from metarec_tasks.threads import apply_thread_policy
from metarec_tasks.training.checkpoint import Checkpoints
from metarec_tasks.training.ranker import meta_train, ranking_algorithm, warm_up

log = logging.getLogger("benchmarks.ml100k_topk")
REPO = Path(__file__).resolve().parents[1]
K = 20
FULL = "full"
MEMBER_SEED_STRIDE = 1000  # member k of a seed ensemble trains under seed + fold + k x this
QUICK = {"ranking.meta.epochs": 2, "ranking.meta.pretrain_epochs": 1}  # --quick: a smoke test's epochs


def load(path: Path):
    ml = read_movielens(path)
    ratings = ml.ratings.assign(event_type="rating")
    return ml, ratings


def per_user_rows(ranked: np.ndarray, relevant: list[set[int]], users: list[str]) -> list[dict]:
    out = []
    for user, rows, rel in zip(users, ranked, relevant, strict=True):
        if rel:
            out.append({USER_KEY: user, **catalog_metrics(list(rows), rel, K)})
    return out


@dataclass
class Fold:
    """One fold's data and the pipeline's selection on its validation users."""

    selection: Selection
    ctx: RankContext
    train: UserItems  # the ranker's positives of the training users
    val: EvalUsers
    test_tasks: pd.DataFrame
    val_tasks: pd.DataFrame
    info: dict


def episode_stream(seed: int, fold: int, member: int, algorithm: str) -> np.random.Generator:
    """One ranker's episode and negative stream: fixed by (seed, fold, member, algorithm) alone. A
    stream shared by the fold's rankers made the same ranker land ±0.02 apart with and without other
    algorithms trained before it (ml-latest-small: 0.357 alone, 0.337 after five others)."""
    return np.random.default_rng([seed, fold, member, zlib.crc32(algorithm.encode())])


def fold_selection(
    fold: int, tasks, folds, protocol, ratings, catalog, vocab, params, args, members: int = 1
) -> Fold:
    """Train the meta rankers of `args.algorithms` on one fold, then every candidate tuned, the blend
    learned and the challenger chosen on the fold's validation users — the pipeline's own code.
    `members` > 1: each algorithm also trained from the same warm-up under `members` − 1 other seeds
    (`meta_<algorithm>_m<k>`), the members of a seed ensemble (`benchmarks/meta_ensemble.py`).
    Each ranker draws its episodes and negatives from its own stream (`episode_stream`), so its
    result does not depend on which algorithms trained before it in the run."""
    rp = params.ranking
    split = fold_tasks(tasks, folds, fold, protocol)
    held = set(split.loc[split["split"].isin([TEST, VALIDATION]), USER_KEY])
    train_events = ratings[~ratings[USER_KEY].isin(held)]
    unavailable = np.zeros(len(catalog.item_ids), bool)
    val = ranking_eval_users(split[split["split"] == VALIDATION], catalog, params)  # the pipeline's rule
    rng = np.random.default_rng([args.seed, fold])  # the pipeline's own rules: positives, sampler, prior
    ctx, train, interactions, _ = rank_context(params, catalog, train_events, val, unavailable, rng)
    dims = RankDims.from_vocab(vocab, rp.dim, ctx.prior, rp.prior_weight)

    started = time.perf_counter()
    torch.manual_seed(args.seed + fold)
    pretrained = warm_up(RankNet(dims, catalog.items), ctx, train)
    rankers = {}
    for member, name in itertools.product(range(members), args.algorithms):
        label = f"meta_{name}" + (f"_m{member}" if member else "")
        seed = args.seed + fold + MEMBER_SEED_STRIDE * member
        torch.manual_seed(seed)
        model = copy.deepcopy(pretrained)
        algorithm = ranking_algorithm(rp, model, name)
        with tempfile.TemporaryDirectory() as scratch:  # the benchmark never resumes
            checkpoints = Checkpoints(Path(scratch), f"fold{fold}-{label}")
            generator = torch.Generator().manual_seed(seed)
            episodes = replace(ctx, rng=episode_stream(args.seed, fold, member, name))
            fit = meta_train(model, algorithm, episodes, train, val, K, checkpoints, generator)
        rankers[label] = (model, algorithm)
        log.info(
            "fold %d %s: best validation recall@%d %s (epoch %d)",
            fold,
            label,
            K,
            fit.best_value,
            fit.best_epoch,
        )
    train_seconds = time.perf_counter() - started

    device = torch.device("cpu")
    candidates = night_candidates(params, ctx, interactions, val, device, rankers, pretrained)
    excluded_val = exclusion_mask(val.seen, unavailable).numpy()
    selection = select(candidates, val, excluded_val, K, params.selection)
    info = {
        "fold": fold,
        "val_recall": selection.validation,
        "challenger": selection.challenger,
        "knobs": {n: c.knobs for n, c in selection.candidates.items()},
        "blend": selection.blend.to_json() if selection.blend else None,
        "train_seconds": train_seconds,
    }
    parts = (split[split["split"] == TEST], split[split["split"] == VALIDATION])
    return Fold(selection, ctx, train, val, *parts, info)


def run_fold(fold: int, tasks, folds, protocol, ratings, catalog, vocab, params, args) -> tuple[list, dict]:
    chosen = fold_selection(fold, tasks, folds, protocol, ratings, catalog, vocab, params, args)
    selection, test_tasks, unavailable = chosen.selection, chosen.test_tasks, chosen.ctx.unavailable
    val_by_support = {}  # what a cold-start choice may read: validation users, support truncated
    for size in args.buckets:
        part = truncate_support(chosen.val_tasks, set(chosen.val_tasks[USER_KEY]), size, args.seed)
        users = ranking_eval_users(part, catalog, params)
        excluded = exclusion_mask(users.seen, unavailable).numpy()
        val_by_support[str(size)] = {
            name: mean_recall(values, excluded, users.relevant, K)
            for name, values in selection.score_all(users.support, excluded).items()
        }
    rows = []
    for size in [FULL, *args.buckets]:
        part = (
            test_tasks
            if size == FULL
            else truncate_support(test_tasks, set(test_tasks[USER_KEY]), size, args.seed)
        )
        users = ranking_eval_users(part, catalog, params)
        excluded = exclusion_mask(users.seen, unavailable).numpy()
        scores = selection.score_all(users.support, excluded)
        scores[SELECTED] = scores[selection.challenger]
        for name, values in scores.items():
            lists = top_k_rows(values, excluded, K)
            for row in per_user_rows(lists, users.relevant, users.support.users):
                rows.append({"fold": fold, "support": str(size), "predictor": name, **row})
    return rows, {**chosen.info, "val_recall_by_support": val_by_support}


def paired_tests(full: pd.DataFrame, best: str, skip: set[str]) -> dict:
    """`best` − every other predictor (not in `skip`), paired over the test users' Recall@K."""
    out = {}
    for name in full.columns:
        if name == best or name in skip:
            continue
        diff = full[best] - full[name]
        differs = bool((diff != 0).any())
        out[name] = {
            "mean_difference": float(diff.mean()),
            "ci95": mean_ci95(diff.to_numpy())[1],
            "wilcoxon_p": float(stats.wilcoxon(full[best], full[name]).pvalue) if differs else 1.0,
            "ttest_rel_p": float(stats.ttest_rel(full[best], full[name]).pvalue) if differs else 1.0,
        }
    return out


def against_ease(frame: pd.DataFrame, infos: list[dict]) -> dict:
    """Per model of a probe's per-user rows (`model`, `recall@K`): mean validation Recall@K over the
    folds (`infos[i]["validation"]`), holdout mean ± 95% CI, and the difference to EASE with its
    Wilcoxon p, paired over test users."""
    table = frame.pivot_table(index=["fold", USER_KEY], columns="model", values=f"recall@{K}")
    tests = paired_tests(table, "ease", set())  # ease − each other model
    out = {}
    for name in table.columns:
        mean, half = mean_ci95(table[name].to_numpy())
        test = tests.get(name)  # none for ease itself
        out[name] = {
            "validation": float(np.nanmean([i["validation"][name] for i in infos])),
            f"recall@{K}": mean,
            "ci95": half,
            "minus_ease": -test["mean_difference"] if test else 0.0,
            "wilcoxon_p": test["wilcoxon_p"] if test else 1.0,
        }
    return out


def probe_report(name: str, frame: pd.DataFrame, infos: list[dict], args, started: float, **extra) -> dict:
    """A probe's report (`benchmarks.<name>`): its command, size and cost, `extra`, and every model
    `against_ease`."""
    return {
        "command": f"python -m benchmarks.{name} " + " ".join(args.argv),
        "folds_run": len(infos),
        "users": len(frame[["fold", USER_KEY]].drop_duplicates()),
        "seconds": time.perf_counter() - started,
        "load_average": args.load_average,
        **extra,
        "overall": against_ease(frame, infos),
        "folds": infos,
    }


def run_probe(parser: argparse.ArgumentParser, quick: dict, run_fold, build_report, markdown) -> None:
    """Parse a probe's options (its command line kept for the report), then `run_benchmark`."""
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run_benchmark(benchmark_params(args, quick), args, run_fold, build_report, markdown)


def against_ease_table(overall: dict) -> list[str]:
    """`against_ease`'s figures as Markdown table lines, best holdout first."""
    lines = [f"| model | validation | holdout Recall@{K} | − EASE | p |", "|---|---|---|---|---|"]
    for name, e in sorted(overall.items(), key=lambda kv: -kv[1][f"recall@{K}"]):
        lines.append(
            f"| {name} | {e['validation']:.4f} | {e[f'recall@{K}']:.4f} ± {e['ci95']:.4f} "
            f"| {e['minus_ease']:+.4f} | {e['wilcoxon_p']:.2g} |"
        )
    return lines


def summarize(frame: pd.DataFrame, best: str, best_meta: str) -> dict:
    out: dict = {"overall": {}, "by_support": {}}
    for (support, name), part in frame.groupby(["support", "predictor"]):
        entry = {"users": len(part)}
        for metric in (f"recall@{K}", f"ndcg@{K}"):
            mean, half = mean_ci95(part[metric].to_numpy())
            entry[metric], entry[f"{metric}_ci95"] = mean, half
        (out["overall"] if support == FULL else out["by_support"].setdefault(support, {}))[name] = entry
    full = frame[frame["support"] == FULL].pivot_table(
        index=[USER_KEY, "fold"], columns="predictor", values=f"recall@{K}"
    )
    out["paired_tests"] = paired_tests(full, best, {SELECTED})
    metas = {n for n in full.columns if n.startswith("meta_")}
    out["paired_tests_meta"] = paired_tests(full, best_meta, metas | {SELECTED, "blend"})
    curve = {}
    for support, entries in out["by_support"].items():
        if best in entries and "popularity" in entries:
            curve[support] = entries[best][f"recall@{K}"] - entries["popularity"][f"recall@{K}"]
    out["gain_over_popularity_by_support"] = dict(sorted(curve.items(), key=lambda kv: int(kv[0])))
    return out


def markdown(report: dict) -> str:
    best = SELECTED
    lines = [
        f"# Full-catalog top-K on {report['data']}",
        "",
        f"Command: `{report['command']}` — {report['folds_run']} fold(s), {report['seconds']:.0f} s, "
        f"{report['threads']} thread(s), load average before the run {report['load_average']}. "
        f"`selected` is the pipeline's choice on each fold's validation users "
        f"(challengers: {', '.join(report['challengers'])}); best meta-learned model by validation "
        f"recall: `{report['best_meta_model']}`. Every baseline's knobs were chosen on validation users.",
        "",
        "Validation Recall@20 (mean over folds): "
        + ", ".join(
            f"{n} {v:.3f}" for n, v in sorted(report["validation_recall"].items(), key=lambda kv: -kv[1])
        ),
        "",
        f"| predictor | users | Recall@{K} | nDCG@{K} |",
        "|---|---|---|---|",
    ]
    for name, e in sorted(report["overall"].items(), key=lambda kv: -kv[1][f"recall@{K}"]):
        lines.append(
            f"| {name} | {e['users']} | {e[f'recall@{K}']:.3f} ± {e[f'recall@{K}_ci95']:.3f} "
            f"| {e[f'ndcg@{K}']:.3f} ± {e[f'ndcg@{K}_ci95']:.3f} |"
        )
    lines += ["", f"Paired tests over test users ({best} − each single predictor, Recall@{K}):", ""]
    lines += ["| baseline | mean difference | Wilcoxon p | paired t p |", "|---|---|---|---|"]
    for name, t in report["paired_tests"].items():
        lines.append(
            f"| {name} | {t['mean_difference']:+.4f} ± {t['ci95']:.4f} "
            f"| {t['wilcoxon_p']:.2g} | {t['ttest_rel_p']:.2g} |"
        )
    meta = report["best_meta_model"]
    lines += ["", f"Paired tests over test users ({meta}, the best meta model by validation recall, "]
    lines[-1] += f"− each baseline, Recall@{K}):"
    lines += ["", "| baseline | mean difference | Wilcoxon p | paired t p |", "|---|---|---|---|"]
    for name, t in report["paired_tests_meta"].items():
        lines.append(
            f"| {name} | {t['mean_difference']:+.4f} ± {t['ci95']:.4f} "
            f"| {t['wilcoxon_p']:.2g} | {t['ttest_rel_p']:.2g} |"
        )
    val_curve = report.get("validation_recall_by_support", {})
    if val_curve:
        names = sorted(next(iter(val_curve.values())))
        lines += ["", f"Validation cold-start curve (validation users, support truncated), Recall@{K}:", ""]
        lines += ["| s | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for s, entries in sorted(val_curve.items(), key=lambda kv: int(kv[0])):
            lines.append(f"| {s} | " + " | ".join(f"{entries[n]:.3f}" for n in names) + " |")
    lines += ["", f"Cold-start curve (support truncated to s ratings), Recall@{K}:", ""]
    names = sorted(next(iter(report["by_support"].values()), {}))
    lines += ["| s | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for s, entries in sorted(report["by_support"].items(), key=lambda kv: int(kv[0])):
        lines.append(f"| {s} | " + " | ".join(f"{entries[n][f'recall@{K}']:.3f}" for n in names) + " |")
    return "\n".join(lines) + "\n"


def benchmark_parser(doc: str, out: str) -> argparse.ArgumentParser:
    """The options every ML-100K fold benchmark takes; `out`: the report's file name under reports/."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ml-100k")
    parser.add_argument("--quick", action="store_true", help="one fold, few epochs")
    parser.add_argument("--folds", type=int, default=None, help="run only the first N folds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--validation-share",
        type=float,
        default=Protocol.validation_share,
        help="share of each fold's non-test users kept out of training to make every choice on",
    )
    parser.add_argument("--set", nargs="*", default=[], help="params overrides, e.g. ranking.dim=64")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / out)
    return parser


def main() -> None:
    parser = benchmark_parser(__doc__, "ml100k_topk.json")
    parser.add_argument("--algorithms", nargs="+", default=sorted(ALGORITHMS))
    parser.add_argument("--buckets", nargs="+", type=int, default=list(SUPPORT_BUCKETS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    if args.quick:
        args.algorithms = args.algorithms[:2]
    params = benchmark_params(args, QUICK)
    run_benchmark(params, args, run_fold, build_report, markdown)


def benchmark_params(args, quick: dict[str, Any]) -> Params:
    """params.yaml on the MovieLens source, with `quick`'s overrides under --quick, then --set's."""
    overrides: dict[str, Any] = {"source.kind": "movielens"}
    if args.quick:
        overrides |= quick
    for item in args.set:
        key, value = item.split("=", 1)
        overrides[key] = yaml.safe_load(value)
    return load_params(REPO / "params.yaml", overrides)


def run_benchmark(
    params: Params, args, run_fold: Callable, build_report: Callable, markdown: Callable
) -> None:
    """Every fold of the protocol on ML-100K (the first --folds; one under --quick): `run_fold` on
    each, the report rebuilt and written after every fold, so a run cut short keeps its folds."""
    apply_thread_policy(params.run.threads)
    ml, ratings = load(args.data)
    protocol = Protocol(seed=args.seed, validation_share=args.validation_share)
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
        report = build_report(pd.DataFrame(rows), fold_info, protocol, params, args, started)
        write_report(args.out, report, markdown(report))
    log.info("wrote %s and %s", args.out, args.out.with_suffix(".md"))
    log.info("\n%s", markdown(report))


def build_report(frame: pd.DataFrame, fold_info: list[dict], protocol, params, args, started: float) -> dict:
    val_means = {
        n: float(np.nanmean([f["val_recall"].get(n, np.nan) for f in fold_info]))
        for n in fold_info[0]["val_recall"]
    }
    by_support: dict[str, dict[str, float]] = {}
    for f in fold_info:
        for size, entries in f.get("val_recall_by_support", {}).items():
            for name, value in entries.items():
                by_support.setdefault(size, {}).setdefault(name, []).append(value)
    val_by_support = {
        size: {name: float(np.nanmean(values)) for name, values in entries.items()}
        for size, entries in by_support.items()
    }
    best = SELECTED  # the pipeline's choice on each fold's validation users
    best_meta = max((n for n in val_means if n.startswith("meta_")), key=val_means.get)
    return {
        "command": "python " + " ".join(sys.argv),
        "data": args.data.name,
        "protocol": {**protocol.__dict__, "k": K, "relevance_threshold": params.evaluate.relevance_threshold},
        "ranking_params": params.ranking.model_dump(mode="json"),
        "folds_run": len(fold_info),
        "seconds": time.perf_counter() - started,
        "threads": torch.get_num_threads(),
        "load_average": args.load_average,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "validation_recall": val_means,
        "validation_recall_by_support": val_by_support,
        "best_meta_model": best_meta,
        "challengers": [f["challenger"] for f in fold_info],
        "folds": fold_info,
        **summarize(frame, best, best_meta),
    }


if __name__ == "__main__":
    main()

"""ML-100K cold-start benchmark → reports/ml100k.json and reports/ml100k.md.

Protocol (benchmarks/protocol.py): RecBole-MetaRec's user filter (13–100 ratings) and query set
(10 random ratings; the rest is the support set), with 5-fold cross-validation over users so that every
eligible user is a test user exactly once, and validation users carved out of each fold's training
users. Every algorithm and every non-meta baseline is trained and scored on the same folds with the
same stage code the nightly pipeline runs (`training.rating.train_rating_model`,
`personalization.rating.predict_holdout`), through a throwaway workspace per fold and algorithm.
Hyperparameters (the inner learning rate) are chosen on validation users of the first fold only, and
the best meta-learned model (the one the paired tests and the cold-start curve report) by its mean
validation MAE over the folds — never on test users.

Usage: python -m benchmarks.ml100k [--quick] [--data ../shared/data/ml-100k]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
from scipy import stats

from benchmarks import reports
from benchmarks.protocol import (
    Protocol,
    assign_roles,
    eligible_ratings,
    fold_tasks,
    truncate_support,
    user_folds,
)
from metarec_tasks.data.episodes import SUPPORT, TEST, TRAIN, VALIDATION
from metarec_tasks.data.features import build_vocabulary
from metarec_tasks.data.text import item_text_table
from metarec_tasks.evaluation.tables import MODEL, per_user_scores, summarize
from metarec_tasks.logs.contract import ITEM_KEY, USER_KEY
from metarec_tasks.logs.movielens import read_movielens
from metarec_tasks.meta import ALGORITHMS, TRANSFER_ALGORITHM, supported_adapt
from metarec_tasks.meta.baselines import BASELINES
from metarec_tasks.models.io import load_bundle
from metarec_tasks.orchestration.cli import parse_overrides
from metarec_tasks.params import Params, load_params
from metarec_tasks.paths import Workspace
from metarec_tasks.personalization.loading import load_adapting_model
from metarec_tasks.personalization.rating import predict_holdout
from metarec_tasks.threads import apply_thread_policy
from metarec_tasks.training.rating import save_rating_models, train_rating_model
from metarec_tasks.training.runtime import pick_device

log = logging.getLogger("benchmarks.ml100k")
ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = {"MeLU": 0.5331, "MAMO": 0.5929, "TaNP": 0.5994}  # RecBole-MetaRec, ML-100K, nDCG@5 (binary)
TARGETS = {"bin_ndcg@5": 0.65, "mae": 0.75}
SUPPORT_SIZES = (1, 3, 5, 10, 20)
INNER_LR_GRID = (0.05, 0.1, 0.2)
NON_META = ("global_mean", "item_mean_user_bias", "pretrained", "pretrained_finetuned")


def benchmark_params(quick: bool, data: Path, extra: dict[str, Any] | None = None) -> Params:
    overrides: dict[str, Any] = {
        "source.kind": "movielens",
        "source.movielens_dir": str(data),
        **(extra or {}),
    }
    if quick:
        overrides |= {"meta.epochs": 2, "meta.pretrain_epochs": 1, "meta.patience": 1}
    return load_params(ROOT / "params.yaml", overrides)


def write_fold(
    ws: Workspace,
    params: Params,
    tasks: pd.DataFrame,
    users: pd.DataFrame,
    items: pd.DataFrame,
    text: pd.DataFrame,
) -> None:
    """The episodes stage's outputs for one fold, so `run_train` reads them like a nightly run
    (`text`: the items' text embeddings, the same every fold)."""
    train_items = tasks.loc[tasks["split"] == TRAIN, ITEM_KEY].unique().tolist()
    vocab = build_vocabulary(params.active_features, users, items, train_items)
    for folder in (ws.episodes, ws.validated):
        folder.mkdir(parents=True, exist_ok=True)
    tasks.to_parquet(ws.episodes / "tasks.parquet", index=False)
    (ws.episodes / "vocab.json").write_text(json.dumps(vocab.to_json()))
    mean = float(tasks.loc[tasks["split"] == TRAIN, "value"].mean())
    (ws.episodes / "stats.json").write_text(json.dumps({"global_mean": mean}))
    users.to_parquet(ws.validated / "users.parquet", index=False)
    items.to_parquet(ws.validated / "items.parquet", index=False)
    text.to_parquet(ws.item_text_file, index=False)


def score_fold(ws: Workspace, params: Params, tasks: pd.DataFrame) -> pd.DataFrame:
    """Holdout predictions of the trained meta-model, the transfer baselines and the simple ones."""
    from metarec_tasks.data.loader import load_episode_data

    device = pick_device(params.run.device)
    data = load_episode_data(ws)
    model, algorithm = load_adapting_model(ws.model_file, data.catalog.items, params, device)
    transfer_params = with_inner_lr(params, transfer_inner_lr(ws, params, tasks, data, device))
    pretrained, transfer = load_adapting_model(
        ws.pretrained_model_file, data.catalog.items, transfer_params, device, TRANSFER_ALGORITHM
    )
    test = tasks[tasks["split"] == TEST]
    holdout = predict_holdout(model, algorithm, test, data.catalog, params, device)
    tuned = predict_holdout(pretrained, transfer, test, data.catalog, params, device)
    holdout["pred_pretrained"] = tuned["pred_model_no_adaptation"].to_numpy()
    holdout["pred_pretrained_finetuned"] = tuned["pred_model"].to_numpy()
    support = test[test["role"] == SUPPORT]
    for name, baseline in BASELINES.items():
        holdout[f"pred_{name}"] = baseline(tasks[tasks["split"] == TRAIN], support, holdout, params.evaluate)
    return holdout


def with_inner_lr(params: Params, lr: float) -> Params:
    return params.model_copy(update={"meta": params.meta.model_copy(update={"inner_lr": lr})})


def transfer_inner_lr(ws: Workspace, params: Params, tasks: pd.DataFrame, data, device) -> float:
    """The fine-tuned transfer baseline's own learning rate: the best validation MAE over the grid
    (validation users only) — not the rate a meta algorithm chose for itself."""
    val = tasks[tasks["split"] == VALIDATION]
    best = (float("inf"), INNER_LR_GRID[0])
    for lr in INNER_LR_GRID:
        tuned = with_inner_lr(params, lr)
        pretrained, transfer = load_adapting_model(
            ws.pretrained_model_file, data.catalog.items, tuned, device, TRANSFER_ALGORITHM
        )
        rows = predict_holdout(pretrained, transfer, val, data.catalog, params, device)
        best = min(best, (float((rows["pred_model"] - rows["value"]).abs().mean()), lr))
    return best[1]


def cold_start_curve(ws: Workspace, params: Params, tasks: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Holdout predictions with each test user's support cut to 1, 3, 5, 10, 20 ratings."""
    test_users = set(tasks.loc[tasks["split"] == TEST, USER_KEY])
    sizes = tasks[(tasks["role"] == SUPPORT) & tasks[USER_KEY].isin(test_users)].groupby(USER_KEY).size()
    frames = []
    for n in SUPPORT_SIZES:
        users = set(sizes[sizes >= n].index)
        cut = truncate_support(tasks[~tasks[USER_KEY].isin(test_users - users)], users, n, seed)
        frames.append(score_fold(ws, params, cut).assign(support_n=n))
    return pd.concat(frames, ignore_index=True)


def choose_inner_lr(algorithm: str, params: Params, root: Path) -> float:
    """The inner learning rate with the best validation MAE on the first fold (validation users only)."""
    best = (float("inf"), INNER_LR_GRID[0])
    for lr in INNER_LR_GRID:
        trial = with_inner_lr(params, lr).model_copy(
            update={
                "meta": params.meta.model_copy(
                    update={
                        "algorithm": algorithm,
                        "inner_lr": lr,
                        "adapt": supported_adapt(algorithm, params.meta.adapt),
                    }
                )
            }
        )
        ws = Workspace(root)
        save_rating_models(trial, ws, train_rating_model(trial, ws))
        val_mae = load_bundle(ws.model_file).metadata["best_val_mae"]
        log.info("%s inner_lr=%s: validation MAE %.4f", algorithm, lr, val_mae)
        best = min(best, (val_mae, lr))
    return best[1]


def paired_test(a: pd.DataFrame, b: pd.DataFrame, metric: str) -> dict[str, float]:
    """Paired t-test and Wilcoxon signed-rank test over users (a − b)."""
    joined = a[[USER_KEY, metric]].merge(b[[USER_KEY, metric]], on=USER_KEY, suffixes=("_a", "_b"))
    diff = joined[f"{metric}_a"] - joined[f"{metric}_b"]
    t = stats.ttest_rel(joined[f"{metric}_a"], joined[f"{metric}_b"])
    w = stats.wilcoxon(diff) if (diff != 0).any() else None
    return {
        "mean_difference": float(diff.mean()),
        "users": len(diff),
        "t_pvalue": float(t.pvalue),
        "wilcoxon_pvalue": float(w.pvalue) if w else 1.0,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_average = reports.load_average()
    started = time.perf_counter()
    params = benchmark_params(args.quick, args.data, parse_overrides(args.overrides))
    ml = read_movielens(args.data)
    protocol = Protocol(folds=args.folds, seed=params.run.seed)
    ratings = eligible_ratings(ml.ratings, protocol)
    tasks = assign_roles(ratings, protocol).assign(user_new=True, item_new=False)
    folds = user_folds(sorted(tasks[USER_KEY].unique()), protocol)
    n_folds = 1 if args.quick else protocol.folds
    algorithms = args.algorithms or sorted(ALGORITHMS)
    log.info(
        "%d eligible users, %d ratings, %d folds, algorithms %s",
        tasks[USER_KEY].nunique(),
        len(tasks),
        n_folds,
        algorithms,
    )

    names = [f.name for f in params.active_features.item if f.kind == "text"]  # titles, embedded once
    text = item_text_table(
        ml.items, names, Workspace(ROOT).text_cache, "cpu", params.episodes.text_batch_size
    )
    holdouts: dict[str, list[pd.DataFrame]] = {a: [] for a in algorithms}
    curves: dict[str, list[pd.DataFrame]] = {a: [] for a in algorithms}
    chosen: dict[str, float] = {}
    validation: dict[str, list[float]] = {a: [] for a in algorithms}  # best validation MAE per fold
    with tempfile.TemporaryDirectory(prefix="ml100k-") as tmp:
        for fold in range(n_folds):
            split = fold_tasks(tasks, folds, fold, protocol)
            train_items = set(split.loc[split["split"] == TRAIN, ITEM_KEY])
            split = split.assign(item_new=~split[ITEM_KEY].isin(train_items))
            for algorithm in algorithms:
                root = Path(tmp) / f"fold{fold}-{algorithm}"
                ws = Workspace(root)
                write_fold(ws, params, split, ml.users, ml.items, text)
                if algorithm not in chosen:
                    chosen[algorithm] = (
                        params.meta.inner_lr if args.quick else choose_inner_lr(algorithm, params, root)
                    )
                tuned = params.model_copy(
                    update={
                        "meta": params.meta.model_copy(
                            update={
                                "algorithm": algorithm,
                                "inner_lr": chosen[algorithm],
                                "adapt": supported_adapt(algorithm, params.meta.adapt),
                            }
                        )
                    }
                )
                save_rating_models(tuned, ws, train_rating_model(tuned, ws))
                validation[algorithm].append(load_bundle(ws.model_file).metadata["best_val_mae"])
                holdouts[algorithm].append(score_fold(ws, tuned, split).assign(fold=fold))
                curves[algorithm].append(
                    cold_start_curve(ws, tuned, split, params.run.seed).assign(fold=fold)
                )
                log.info("fold %d %s done (%.0f s so far)", fold, algorithm, time.perf_counter() - started)
    seconds = time.perf_counter() - started
    return {
        "command": "python -m benchmarks.ml100k " + " ".join(sys.argv[1:]),
        "data": args.data.name,
        "load_average": load_average,
        **summarize_benchmark(params, holdouts, curves, chosen, validation, n_folds, seconds),
    }


def summarize_benchmark(
    params: Params,
    holdouts: dict[str, list[pd.DataFrame]],
    curves: dict[str, list[pd.DataFrame]],
    chosen: dict[str, float],
    validation: dict[str, list[float]],
    n_folds: int,
    seconds: float,
) -> dict[str, Any]:
    """The report; the best meta-learned model is the one with the lowest mean validation MAE over
    the folds (`validation`: each algorithm's best validation MAE per fold) — test users only report."""
    ep = params.evaluate
    per_user: dict[str, pd.DataFrame] = {}
    for algorithm, frames in holdouts.items():
        holdout = pd.concat(frames, ignore_index=True)
        per_user[algorithm] = per_user_scores(holdout, "pred_model", ep)
        if not any(name in per_user for name in NON_META):  # baselines: identical for every algorithm
            for name in NON_META:
                per_user[name] = per_user_scores(holdout, f"pred_{name}", ep)
    rows = {name: summarize(scores) for name, scores in per_user.items()}
    validation_mae = {a: sum(v) / len(v) for a, v in validation.items()}
    best_meta = min(holdouts, key=validation_mae.__getitem__)
    tests = {}
    for metric in ("bin_ndcg@5", "mae"):
        lower = metric == "mae"
        best_base = (min if lower else max)(NON_META, key=lambda b: rows[b][metric])
        tests[metric] = {
            "model": best_meta,
            "baseline": best_base,
            **paired_test(per_user[best_meta], per_user[best_base], metric),
        }
    curve = {}
    for algorithm in (best_meta,):
        frame = pd.concat(curves[algorithm], ignore_index=True)
        for n, part in frame.groupby("support_n"):
            curve[int(n)] = {
                name: summarize(per_user_scores(part, column, ep))
                for name, column in [(MODEL, "pred_model")]
                + [(b, f"pred_{b}") for b in ("item_mean_user_bias", "pretrained_finetuned")]
            }
    best = rows[best_meta]
    return {
        "protocol": "RecBole-MetaRec's (13-100 ratings, 10 random query ratings), "
        f"{n_folds}-fold CV over users, validation users from training folds",
        "folds": n_folds,
        "overrides": {
            k: str(v) for k, v in params.model_dump(mode="json", by_alias=True)["finetune"].items()
        },
        "seconds": round(seconds, 1),
        "inner_lr_chosen_on_validation": chosen,
        "validation_mae": validation_mae,
        "results": rows,
        "best_meta_model": best_meta,
        "paired_tests_vs_best_baseline": tests,
        "cold_start_curve": {"model": best_meta, "by_support_size": curve},
        "published_ndcg5_binary": PUBLISHED,
        "targets": {
            "bin_ndcg@5 >= 0.65": best["bin_ndcg@5"] >= TARGETS["bin_ndcg@5"],
            "mae <= 0.75": best["mae"] <= TARGETS["mae"],
            "beats best baseline (p<0.05) on both": all(
                t["t_pvalue"] < 0.05
                and (t["mean_difference"] < 0 if m == "mae" else t["mean_difference"] > 0)
                for m, t in tests.items()
            ),
        },
    }


def write_markdown(result: dict[str, Any], path: Path) -> None:
    metrics = ("bin_ndcg@5", "ndcg@5", "mae", "rmse", "precision@5", "mrr@5")
    lines = [
        f"# Cold-start rating benchmark on {result['data']} "
        f"({result['folds']} folds, {result['seconds']:.0f} s)",
        "",
        f"Command: `{result['command']}`; load average before the run {result['load_average']}.",
        "",
        result["protocol"] + ".",
        "",
        "| model | users | " + " | ".join(metrics) + " |",
        "|---|---:|" + "---:|" * len(metrics),
    ]
    for name, row in sorted(result["results"].items(), key=lambda kv: -kv[1]["bin_ndcg@5"]):
        cells = [f"{row[m]:.4f} ± {row[m + '_ci95']:.4f}" for m in metrics]
        lines.append(f"| {name} | {row['users']} | " + " | ".join(cells) + " |")
    if result["data"] == "ml-100k":  # the published figures are ML-100K's
        lines += [
            "",
            "Published on this protocol (single 8:1:1 split): "
            + ", ".join(f"{k} {v}" for k, v in result["published_ndcg5_binary"].items())
            + ".",
        ]
    lines += [
        "",
        "## Paired tests over users (best meta-learned model vs best non-meta baseline)",
        "",
        "The best meta-learned model is the lowest mean validation MAE over the folds (validation "
        "users only): "
        + ", ".join(f"{a} {v:.4f}" for a, v in sorted(result["validation_mae"].items(), key=lambda kv: kv[1]))
        + ".",
        "",
    ]
    for metric, t in result["paired_tests_vs_best_baseline"].items():
        lines.append(
            f"- {metric}: {t['model']} − {t['baseline']} = {t['mean_difference']:+.4f} over "
            f"{t['users']} users (t-test p = {t['t_pvalue']:.3g}, Wilcoxon p = {t['wilcoxon_pvalue']:.3g})"
        )
    lines += [
        "",
        f"## Cold-start curve ({result['cold_start_curve']['model']}, bin_ndcg@5 / MAE)",
        "",
        "| support ratings | users | model | item_mean_user_bias | pretrained_finetuned |",
        "|---:|---:|---:|---:|---:|",
    ]
    for n, row in result["cold_start_curve"]["by_support_size"].items():
        cells = [
            f"{row[p]['bin_ndcg@5']:.4f} / {row[p]['mae']:.4f}"
            for p in (MODEL, "item_mean_user_bias", "pretrained_finetuned")
        ]
        lines.append(f"| {n} | {row[MODEL]['users']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Targets: " + ", ".join(f"{k}: {'met' if v else 'missed'}" for k, v in result["targets"].items()),
        "",
    ]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ml-100k")
    parser.add_argument(
        "--quick", action="store_true", help="one fold, few epochs, no tuning (CI smoke test)"
    )
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--algorithms", nargs="*", help="default: every registered algorithm")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "ml100k.json")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a params.yaml value for this benchmark (e.g. finetune.inner_steps=3)",
    )
    args = parser.parse_args()
    apply_thread_policy(load_params(ROOT / "params.yaml").run.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("metarec_tasks", "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    write_markdown(result, args.out.with_suffix(".md"))
    log.info(
        "wrote %s: best %s bin_ndcg@5 %.4f, MAE %.4f",
        args.out,
        result["best_meta_model"],
        result["results"][result["best_meta_model"]]["bin_ndcg@5"],
        result["results"][result["best_meta_model"]]["mae"],
    )


if __name__ == "__main__":
    main()

"""ML-100K new items: can the ranker rank items nobody has interacted with yet, from their title?

Protocol: the top-K benchmark's users, roles and folds (`benchmarks/protocol.py`). In addition a seeded
share of the catalog (`--new-share`) is *new*: every interaction with those items is removed from the
training data and from every support set, so they have no item-id embedding and no co-occurrence;
they stay in the test users' query sets. Two metrics per test user:
- new-item Recall@20: the user's relevant new items among the top 20 of the new items alone (users
  without a relevant new item are skipped) — can the model order what it has never seen?
- Recall@20 over the whole catalog, as in `ml100k_topk.py` — does text cost anything overall?
Predictors: the meta-learned ranker with the title embedding (`text`, the features of `params.yaml`),
the same ranker without the text feature (`genre_only`), and popularity (new items have no count:
popularity cannot rank them). Both rankers train the same way, their best epoch chosen on
validation users; the paired Wilcoxon test is over test users.

    python -m benchmarks.new_items              # 5 folds
    python -m benchmarks.new_items --folds 1    # a quicker look
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

from benchmarks.ml100k_topk import K, load
from benchmarks.protocol import Protocol, assign_roles, eligible_ratings, fold_tasks, user_folds
from benchmarks.reports import load_average, write_report
from metarec_tasks.data.episodes import SUPPORT, TEST, VALIDATION
from metarec_tasks.data.features import build_vocabulary
from metarec_tasks.data.text import item_text_table, text_lookup
from metarec_tasks.evaluation.metrics import mean_ci95
from metarec_tasks.logs.contract import ITEM_KEY, USER_KEY
from metarec_tasks.meta.tasks import Catalog
from metarec_tasks.models.ranking import RankDims, RankNet
from metarec_tasks.params import FeatureParams, Params, load_params
from metarec_tasks.paths import Workspace
from metarec_tasks.ranking.data import eval_users, exclusion_mask, rank_context
from metarec_tasks.selection.candidates import ranker_scorer
from metarec_tasks.selection.metrics import recall_per_user
from metarec_tasks.threads import apply_thread_policy
from metarec_tasks.training.checkpoint import Checkpoints
from metarec_tasks.training.ranker import meta_train, ranking_algorithm, warm_up

log = logging.getLogger("benchmarks.new_items")
REPO = Path(__file__).resolve().parents[1]
TEXT, GENRE_ONLY, POPULARITY = "text", "genre_only", "popularity"


def without_text(features: FeatureParams) -> FeatureParams:
    return features.model_copy(update={"item": [f for f in features.item if f.kind != "text"]})


def train_ranker(
    params: Params, name: str, features: FeatureParams, ml, train_events, split, text, seed: int
):
    """The pipeline's ranker (warm-up, then meta-training with its best epoch on validation users)
    on `train_events`, with these item features; returns a scorer of support sets and the catalog."""
    rp = params.ranking
    known = train_events[ITEM_KEY].astype(str).unique().tolist()  # new items get no id embedding
    vocab = build_vocabulary(features, ml.users, ml.items, known)
    catalog = Catalog.build(vocab, ml.users, ml.items, text)
    val = eval_users(split[split["split"] == VALIDATION], catalog, params)
    unavailable = np.zeros(len(catalog.item_ids), bool)
    rng = np.random.default_rng(seed)
    ctx, train, _, counts = rank_context(params, catalog, train_events, val, unavailable, rng)
    dims = RankDims.from_vocab(vocab, rp.dim, ctx.prior, rp.prior_weight)
    torch.manual_seed(seed)
    model = warm_up(RankNet(dims, catalog.items), ctx, train)
    algorithm = ranking_algorithm(rp, model)
    with tempfile.TemporaryDirectory() as scratch:
        fit = meta_train(
            model,
            algorithm,
            ctx,
            train,
            val,
            K,
            Checkpoints(Path(scratch), "new-items"),
            torch.Generator().manual_seed(seed),
        )
    log.info("%s ranker: best validation recall@%d %.4f (epoch %d)", name, K, fit.best_value, fit.best_epoch)
    steps, chunk = rp.meta.inner_steps, params.finetune.chunk_size
    return ranker_scorer(model, algorithm, ctx, steps, chunk, torch.device("cpu")), catalog, counts


def run_fold(
    fold: int, params: Params, ml, ratings, tasks, folds, protocol, new: set[str], text, args
) -> list[dict]:
    split = fold_tasks(tasks, folds, fold, protocol)
    split = split[~((split["role"] == SUPPORT) & split[ITEM_KEY].astype(str).isin(new))]  # new: never seen
    held = set(split.loc[split["split"].isin([TEST, VALIDATION]), USER_KEY])
    train_events = ratings[~ratings[USER_KEY].isin(held) & ~ratings[ITEM_KEY].astype(str).isin(new)]
    rows = []
    seed = args.seed + fold
    for name, features in (
        (TEXT, params.active_features),
        (GENRE_ONLY, without_text(params.active_features)),
    ):
        score, catalog, counts = train_ranker(params, name, features, ml, train_events, split, text, seed)
        test = eval_users(split[split["split"] == TEST], catalog, params)
        n_items = len(catalog.item_ids)
        new_rows = np.flatnonzero(np.isin(np.asarray(catalog.item_ids), sorted(new)))
        position = {row: j for j, row in enumerate(new_rows)}
        new_relevant = [{position[r] for r in rel if r in position} for rel in test.relevant]
        predictors = {name: score(test.support)}
        if name == TEXT:  # training counts: every new item has none
            predictors[POPULARITY] = np.broadcast_to(
                counts.astype(np.float32), (len(test.seen), n_items)
            ).copy()
        excluded = exclusion_mask(test.seen, np.zeros(n_items, bool)).numpy()
        for predictor, scores in predictors.items():
            overall = recall_per_user(scores, excluded, test.relevant, K)
            on_new = recall_per_user(scores[:, new_rows], excluded[:, new_rows], new_relevant, K)
            for u, user in enumerate(test.support.users):
                rows.append(
                    {
                        "fold": fold,
                        USER_KEY: user,
                        "predictor": predictor,
                        "overall": overall[u],
                        "new_items": on_new[u],
                    }
                )
    return rows


def summarize(frame: pd.DataFrame) -> dict:
    out: dict = {"predictors": {}, "paired": {}}
    for name, part in frame.groupby("predictor"):
        entry = {}
        for metric in ("new_items", "overall"):
            values = part[metric].dropna().to_numpy()
            mean, half = mean_ci95(values)
            entry[metric] = {"users": len(values), f"recall@{K}": mean, "ci95": half}
        out["predictors"][name] = entry
    for metric in ("new_items", "overall"):
        wide = frame.pivot_table(index=[USER_KEY, "fold"], columns="predictor", values=metric).dropna()
        diff = wide[TEXT] - wide[GENRE_ONLY]
        out["paired"][metric] = {
            "users": len(diff),
            "text_minus_genre_only": float(diff.mean()),
            "ci95": mean_ci95(diff.to_numpy())[1],
            "wilcoxon_p": float(stats.wilcoxon(wide[TEXT], wide[GENRE_ONLY]).pvalue)
            if (diff != 0).any()
            else 1.0,
        }
    return out


def markdown(report: dict) -> str:
    lines = [
        "# ML-100K new items: ranking items nobody has interacted with, from their title",
        "",
        f"Command: `{report['command']}` — {report['folds_run']} fold(s), {report['new_items']} new items "
        f"({report['new_share']:.0%} of the catalog), {report['seconds']:.0f} s, load average before the run "
        f"{report['load_average']}. New-item Recall@{K}: a test user's relevant new items among the top {K} "
        f"of the new items alone; overall: Recall@{K} over the whole catalog.",
        "",
        f"| predictor | new-item Recall@{K} (users) | overall Recall@{K} (users) |",
        "|---|---|---|",
    ]
    for name, e in report["predictors"].items():
        n, o = e["new_items"], e["overall"]
        lines.append(
            f"| {name} | {n[f'recall@{K}']:.3f} ± {n['ci95']:.3f} ({n['users']}) "
            f"| {o[f'recall@{K}']:.3f} ± {o['ci95']:.3f} ({o['users']}) |"
        )
    lines += [
        "",
        f"Paired over test users, {TEXT} − {GENRE_ONLY}:",
        "",
        "| metric | users | difference | Wilcoxon p |",
        "|---|---|---|---|",
    ]
    for metric, t in report["paired"].items():
        lines.append(
            f"| {metric} | {t['users']} | {t['text_minus_genre_only']:+.4f} ± {t['ci95']:.4f} "
            f"| {t['wilcoxon_p']:.2g} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ml-100k")
    parser.add_argument("--folds", type=int, default=None, help="run only the first N folds")
    parser.add_argument("--new-share", type=float, default=0.1, help="share of the catalog made new")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "new_items.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    params = load_params(REPO / "params.yaml", {"source.kind": "movielens"})
    apply_thread_policy(params.run.threads)
    ml, ratings = load(args.data)
    protocol = Protocol(seed=args.seed)
    tasks = assign_roles(eligible_ratings(ratings, protocol), protocol)
    folds = user_folds(sorted(tasks[USER_KEY].unique()), protocol)
    item_ids = sorted(ml.items[ITEM_KEY].astype(str))
    rng = np.random.default_rng([args.seed, 7])
    new = set(rng.choice(item_ids, round(args.new_share * len(item_ids)), replace=False).tolist())
    names = [f.name for f in params.active_features.item if f.kind == "text"]
    table = item_text_table(
        ml.items, names, Workspace(REPO).text_cache, "cpu", params.episodes.text_batch_size
    )
    text = text_lookup(table, names)
    started_load = load_average()
    started = time.perf_counter()
    rows = []
    for fold in range(args.folds or protocol.folds):
        rows += run_fold(fold, params, ml, ratings, tasks, folds, protocol, new, text, args)
        report = {
            "command": "python -m benchmarks.new_items " + " ".join(sys.argv[1:]),
            "folds_run": fold + 1,
            "new_items": len(new),
            "new_share": args.new_share,
            "seconds": time.perf_counter() - started,
            "load_average": started_load,
            **summarize(pd.DataFrame(rows)),
        }
        write_report(args.out, report, markdown(report))
    log.info("wrote %s\n%s", args.out, markdown(report))


if __name__ == "__main__":
    main()

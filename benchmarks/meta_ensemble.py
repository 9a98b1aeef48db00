"""Does averaging meta-learned rankers close their gap to EASE? (issue 14: the seeds' model averaging.)

The same meta ranker trained under another seed lands about ±0.02 away in holdout Recall@20
(`reports/attempts/attempts.md`): a high-variance model, which is what prediction averaging helps. Per
fold, each algorithm of `--algorithms` is meta-trained `--members` times from the fold's one warm-up
(`ml100k_topk.fold_selection`: seed + fold + 1000·k), every member tuned on validation users as the
pipeline tunes its ranker. Then, with each member's scores z-scored per user (`selection/fusion.py`):

- `ensemble_<algorithm>`: the mean of that algorithm's members;
- `ensemble_all`: the mean of every member of every algorithm (with more than one algorithm);
- `chosen_meta`: the single member or ensemble with the best validation Recall@20 — the best meta
  ranker chosen on validation users, as issue 14 asks.

Each is compared with EASE by a Wilcoxon test paired over the 5 folds' test users.

    python -m benchmarks.meta_ensemble --algorithms ridge --members 5
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from benchmarks import ml100k_topk as topk
from metarec_tasks.logs.contract import USER_KEY
from metarec_tasks.ranking.data import eval_users as ranking_eval_users
from metarec_tasks.ranking.scoring import exclusion_mask
from metarec_tasks.selection.fusion import normalise
from metarec_tasks.selection.metrics import mean_recall, recall_per_user

log = logging.getLogger("benchmarks.meta_ensemble")
K = topk.K
BASELINES = ("ease", "ease_dropout")  # what the meta rankers are held against
CHOSEN = "chosen_meta"


def ensembles(z: dict[str, np.ndarray], algorithms: list[str]) -> dict[str, np.ndarray]:
    """The mean z-score of each algorithm's members, and of all members when there are several
    algorithms (members are named `meta_<algorithm>` and `meta_<algorithm>_m<k>`)."""
    members = {a: [n for n in z if n == f"meta_{a}" or n.startswith(f"meta_{a}_m")] for a in algorithms}
    out = {f"ensemble_{a}": np.mean([z[n] for n in names], axis=0) for a, names in members.items()}
    if len(algorithms) > 1:
        out["ensemble_all"] = np.mean([z[n] for names in members.values() for n in names], axis=0)
    return out


def best_meta(validation: dict[str, float]) -> str:
    """The member or ensemble with the best validation Recall@K — the only figures it is given."""
    meta = [n for n in validation if n not in BASELINES]
    return max(meta, key=lambda n: (np.nan_to_num(validation[n], nan=-1.0), n))


def run_fold(fold, tasks, folds, protocol, ratings, catalog, vocab, params, args) -> tuple[list, dict]:
    chosen = topk.fold_selection(
        fold, tasks, folds, protocol, ratings, catalog, vocab, params, args, members=args.members
    )
    candidates, unavailable = chosen.selection.candidates, chosen.ctx.unavailable
    names = [n for n in candidates if n.startswith("meta_")] + list(BASELINES)
    val, val_excluded = chosen.val, exclusion_mask(chosen.val.seen, unavailable).numpy()
    test = ranking_eval_users(chosen.test_tasks, catalog, params)
    excluded = exclusion_mask(test.seen, unavailable).numpy()
    val_z = {n: normalise(candidates[n].val_scores, val_excluded) for n in names}
    test_z = {n: normalise(candidates[n].score(test.support), excluded) for n in names}
    val_z |= ensembles(val_z, args.algorithms)
    test_z |= ensembles(test_z, args.algorithms)
    validation = {n: mean_recall(v, val_excluded, val.relevant, K) for n, v in val_z.items()}
    best = best_meta(validation)
    validation[CHOSEN], test_z[CHOSEN] = validation[best], test_z[best]
    rows = []
    for name, scores in test_z.items():
        recall = recall_per_user(scores, excluded, test.relevant, K)
        rows += [
            {"fold": fold, USER_KEY: user, "model": name, f"recall@{K}": recall[u]}
            for u, user in enumerate(test.support.users)
            if np.isfinite(recall[u])
        ]
    log.info("fold %d: %s chosen on validation users (Recall@%d %.4f)", fold, best, K, validation[best])
    return rows, {"fold": fold, "chosen": best, "validation": validation}


def build_report(frame: pd.DataFrame, infos: list[dict], protocol, params, args, started: float) -> dict:
    chosen = [i["chosen"] for i in infos]
    return topk.probe_report("meta_ensemble", frame, infos, args, started, chosen=chosen)


def markdown(report: dict) -> str:
    lines = [
        "# Seed ensembles of meta-learned rankers, ML-100K top-K protocol",
        "",
        f"Command: `{report['command']}` — {report['folds_run']} fold(s), {report['users']} test users, "
        f"{report['seconds']:.0f} s, load average before the run {report['load_average']}. "
        "`benchmarks/meta_ensemble.py` says what each row is; validation = mean over the folds' "
        "validation users (the only figure a choice reads); p: Wilcoxon, paired over test users, "
        f"against EASE. `{CHOSEN}` per fold: {', '.join(report['chosen'])}.",
        "",
        *topk.against_ease_table(report["overall"]),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = topk.benchmark_parser(__doc__, "meta_ensemble.json")
    parser.add_argument("--algorithms", nargs="+", default=["ridge"])
    parser.add_argument("--members", type=int, default=5, help="seeds per algorithm")
    topk.run_probe(parser, topk.QUICK, run_fold, build_report, markdown)


if __name__ == "__main__":
    main()

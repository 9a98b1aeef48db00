"""How much can fusion of the night's candidates give on ML-100K? (issue 13's target, measured.)

Per fold, the pipeline's candidates are trained and tuned on validation users exactly as in
`benchmarks/ml100k_topk.py`; then, on the fold's test users, every pair of candidates is blended
(per-user z-scores, `selection/fusion.py`) at fixed weights. These rules are compared with EASE by
paired Wilcoxon tests over the 5-fold test users:

- `learned`: the pipeline's blend (greedy forward selection per support bucket, validation users);
- `learned_overall`: the same without per-bucket weights (fewer choices on few validation users);
- `top2_equal`: the two best candidates by validation recall, equal weights (almost no choice);
- `family_equal`: the best baseline and the best meta ranker by validation recall, equal weights:
  an average across model families, whose only choices are its two members;
- `selected`: the pipeline's challenger (the best validation recall of the singles and `learned`);
- `selected_family`: the same choice with `family_equal` in place of `learned` (its validation figure
  is read on the same users, with no weights fitted on them);
- `ceiling`: the pair and weight with the best *test* recall — it reads test users, so it is no
  result, only the most any pair blend of these candidates could give.

    python -m benchmarks.fusion_ceiling --algorithms fomaml ridge
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import pandas as pd

from benchmarks import ml100k_topk as topk
from metarec_tasks.evaluation.metrics import mean_ci95
from metarec_tasks.logs.contract import USER_KEY
from metarec_tasks.ranking.data import eval_users as ranking_eval_users
from metarec_tasks.ranking.scoring import exclusion_mask
from metarec_tasks.selection.fusion import bucket_of, greedy_weights, normalise
from metarec_tasks.selection.metrics import recall_per_user
from metarec_tasks.selection.select import BLEND, Selection, best_of

K = topk.K
PAIR_WEIGHTS = (0.25, 0.5, 1.0, 2.0, 4.0)  # weight of the second candidate; the first at 1
FAMILY = "family_equal"
BLEND_RULES = ("learned", "learned_overall", "top2_equal", FAMILY, "selected", "selected_family")


def recalls(scores: np.ndarray, excluded: np.ndarray, relevant: list[set[int]]) -> np.ndarray:
    return recall_per_user(scores, excluded, relevant, K)


def run_fold(fold, tasks, folds, protocol, ratings, catalog, vocab, params, args) -> tuple[list, dict]:
    chosen = topk.fold_selection(fold, tasks, folds, protocol, ratings, catalog, vocab, params, args)
    selection, sp = chosen.selection, params.selection
    val, val_excluded = chosen.val, exclusion_mask(chosen.val.seen, chosen.ctx.unavailable).numpy()
    val_z = {n: normalise(c.val_scores, val_excluded) for n, c in selection.candidates.items()}

    test = ranking_eval_users(chosen.test_tasks, catalog, params)
    excluded = exclusion_mask(test.seen, chosen.ctx.unavailable).numpy()
    z = {n: normalise(c.score(test.support), excluded) for n, c in selection.candidates.items()}
    buckets = bucket_of(np.asarray([len(items) for items in test.support.items]))

    rules = {name: recalls(values, excluded, test.relevant) for name, values in z.items()}
    blend = selection.blend  # the pipeline's, learned on the validation users
    assert blend is not None, "fusion_ceiling measures the blend: selection.blend must be on"
    rules["learned"] = recalls(blend.combine(z, buckets), excluded, test.relevant)
    overall = greedy_weights(val_z, val_excluded, val.relevant, K, sp)
    rules["learned_overall"] = recalls(sum(w * z[n] for n, w in overall.items()), excluded, test.relevant)
    first, second = sorted(selection.candidates, key=lambda n: -selection.validation[n])[:2]
    rules["top2_equal"] = recalls(z[first] + z[second], excluded, test.relevant)
    family = family_of(selection, len(val.support))
    rules[FAMILY] = recalls(z[family[0]] + z[family[1]], excluded, test.relevant)
    family_val = float(np.nanmean(recalls(val_z[family[0]] + val_z[family[1]], val_excluded, val.relevant)))
    rules["selected"] = rules["learned" if selection.challenger == BLEND else selection.challenger]
    chosen_family = challenger_with(selection, FAMILY, family_val, len(val.support))
    rules["selected_family"] = rules[chosen_family]
    for a, b in itertools.combinations(sorted(z), 2):
        for weight in PAIR_WEIGHTS:
            rules[f"{a}+{weight:g}*{b}"] = recalls(z[a] + weight * z[b], excluded, test.relevant)
    rows = [
        {"fold": fold, USER_KEY: user, "rule": rule, "recall": values[u]}
        for rule, values in rules.items()
        for u, user in enumerate(test.support.users)
        if not np.isnan(values[u])
    ]
    info = {"fold": fold, "top2": [first, second], "family": family, "overall_weights": overall}
    info |= {"blend": blend.to_json(), "selected": selection.challenger, "selected_family": chosen_family}
    info["family_validation"] = family_val
    return rows, info


def family_of(selection: Selection, users: int) -> list[str]:
    """The best baseline and the best meta ranker by validation recall on `users` validation users
    (`select.best_of`'s rule: NaN last, ties to the earlier candidate)."""
    return [
        best_of(
            {n: selection.validation[n] for n, c in selection.candidates.items() if c.kind == kind}, users, K
        )
        for kind in ("baseline", "meta")
    ]


def challenger_with(selection: Selection, name: str, validation: float, users: int) -> str:
    """The pipeline's choice (`select.best_of`) among the single candidates and `name` at `validation`,
    in place of the learned blend."""
    singles = {n: selection.validation[n] for n in selection.candidates}
    return best_of({**singles, name: validation}, users, K)


def build_report(frame: pd.DataFrame, fold_info: list[dict], protocol, params, args, started: float) -> dict:
    wide = frame.pivot_table(index=["fold", USER_KEY], columns="rule", values="recall")
    against_ease = topk.paired_tests(wide, "ease", set())  # ease − each rule
    table = {}
    for rule in wide.columns:
        mean, half = mean_ci95(wide[rule].to_numpy())
        test = against_ease.get(rule)  # none for ease itself
        table[rule] = {
            "recall": mean,
            "ci95": half,
            "minus_ease": -test["mean_difference"] if test else 0.0,
            "wilcoxon_p": test["wilcoxon_p"] if test else 1.0,
        }
    pairs = [r for r in table if "+" in r]
    ceiling = max(pairs, key=lambda r: table[r]["recall"]) if pairs else None
    return {
        "command": "python -m benchmarks.fusion_ceiling " + " ".join(args.argv),
        "folds_run": len(fold_info),
        "users": len(wide),
        "seconds": time.perf_counter() - started,
        "load_average": args.load_average,
        "ceiling_rule": ceiling,
        "rules": table,
        "folds": fold_info,
    }


def markdown(report: dict) -> str:
    t, ceiling = report["rules"], report["ceiling_rule"]
    singles = [r for r in t if "+" not in r and r not in BLEND_RULES]
    shown = [*sorted(singles, key=lambda r: -t[r]["recall"]), *BLEND_RULES]
    shown += sorted((r for r in t if "+" in r), key=lambda r: -t[r]["recall"])[:5]
    lines = [
        "# Fusion ceiling on ML-100K (issue 13)",
        "",
        f"Command: `{report['command']}` — {report['folds_run']} fold(s), {report['users']} test users, "
        f"{report['seconds']:.0f} s, load average before the run {report['load_average']}.",
        "",
        "Candidates are trained and tuned on validation users as in `benchmarks/ml100k_topk.py`. Pair "
        "rows (`a+w*b`: z-scores of a plus w times b's) pick nothing on validation users: the best of them "
        f"(`{ceiling}`) is the **ceiling** of a pair blend, chosen by reading the test users.",
        "",
        f"| rule | Recall@{K} | − EASE | Wilcoxon p |",
        "|---|---|---|---|",
    ]
    for rule in shown:
        e = t[rule]
        lines.append(
            f"| {rule} | {e['recall']:.4f} ± {e['ci95']:.3f} | {e['minus_ease']:+.4f} "
            f"| {e['wilcoxon_p']:.2g} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = topk.benchmark_parser(__doc__, "fusion_ceiling.json")
    parser.add_argument("--algorithms", nargs="+", default=["fomaml", "ridge"])
    topk.run_probe(parser, topk.QUICK, run_fold, build_report, markdown)


if __name__ == "__main__":
    main()

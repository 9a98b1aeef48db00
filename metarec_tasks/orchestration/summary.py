"""What `make run` prints at the end: the night's numbers, read back from reports and the warehouse."""

from __future__ import annotations

import json
from pathlib import Path

from metarec_tasks.evaluation.tables import MODEL, ranked_by
from metarec_tasks.params import EvaluateParams, Params, metric_names
from metarec_tasks.paths import Workspace
from metarec_tasks.publishing.warehouse import count_recommendations, open_warehouse, run_row, top_items
from metarec_tasks.stages import STAGES

# The families of metric shown, each at the last cut-off `evaluate` lists; plus the primary metric.
SUMMARY_STEMS = ("mae", "ndcg", "bin_ndcg", "catalog_recall")


def summary_metrics(ep: EvaluateParams, primary: str | None = None) -> list[str]:
    """The summary's columns, taken from the metrics evaluate computes (`params.metric_names`): the
    last name of each of SUMMARY_STEMS, then the primary metric if it is not one of them."""
    names = metric_names(ep)
    by_stem = {name.split("@")[0]: name for name in names}
    shown = [by_stem[stem] for stem in SUMMARY_STEMS if stem in by_stem]
    primary = ep.primary_metric if primary is None else primary
    return shown if primary in shown else [*shown, primary]


def last_failure(ws: Workspace) -> dict | None:
    """The newest stage outcome (`Workspace.stage_status`), when it is a failure."""
    outcomes = [ws.stage_status(stage) for stage in STAGES]
    recorded = [path for path in outcomes if path.is_file()]
    if not recorded:
        return None
    newest = json.loads(max(recorded, key=lambda path: path.stat().st_mtime).read_text())
    return newest if newest.get("exit_code") else None


def render_summary(params: Params, root: Path, users: int, top: int) -> str:
    ws = Workspace(root)
    failed = last_failure(ws)
    if failed:  # say so first: the numbers below are then an earlier run's
        stage, code = failed["stage"], failed["exit_code"]
        head = f"LAST RUN FAILED at stage {stage} (exit code {code}): {failed.get('error', '')}"
        if not ws.metrics.is_file():
            return head
        return (
            head
            + "\nThe figures below are from the last run that got this far:\n"
            + _render(params, root, users, top)
        )
    return _render(params, root, users, top)


def _render(params: Params, root: Path, users: int, top: int) -> str:
    ws = Workspace(root)
    quality = json.loads(ws.data_quality_report.read_text())
    metrics = json.loads(ws.metrics.read_text())
    engine = open_warehouse(params, root)
    run_id = params.run.run_id
    run = run_row(engine, run_id)
    lines = [f"MetaRec run {run_id} — source {params.source.kind}, {params.source.history_days} days of logs"]
    share = quality["rows_quarantined"] / max(quality["rows_in"], 1)
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(quality["reasons"].items(), key=lambda kv: -kv[1]))
    lines.append(
        f"Validation: {quality['rows_in']:,} rows in, {quality['rows_valid']:,} validated, "
        f"{quality['rows_quarantined']:,} quarantined ({share:.1%}){': ' + reasons if reasons else ''}"
    )

    predictors = metrics["predictors"]
    primary = metrics["primary_metric"]
    columns = [
        c for c in summary_metrics(params.evaluate, primary) if any(c in r for r in predictors.values())
    ]
    lines.append(f"Holdout: {predictors[MODEL]['users']} users (never seen in training); mean over users")
    lines.append(f"  {'predictor':<26}" + "".join(f"{c:>19}" for c in columns))
    for name in ranked_by(predictors, primary):
        r = predictors[name]
        cells = "".join(f"{r[c]:>19.4f}" if c in r else f"{'-':>19}" for c in columns)
        lines.append(f"  {name:<26}{cells}")
    if "global_mean" in predictors:
        base, model = predictors["global_mean"]["mae"], predictors[MODEL]["mae"]
        lines.append(
            f"Meta-learned model vs global mean: MAE {model:.4f} vs {base:.4f} ({(model - base) / base:+.1%})"
        )
    gate = metrics["gate"]
    lines.append(f"Meta model vs the baselines on {primary}: {gate['reason']}")
    if "selection" in gate:
        lines += selection_lines(gate["selection"])
    if run is None:
        lines.append("Warehouse: this run was not recorded (publish did not run)")
        return "\n".join(lines)
    lines.append(f"Publish decision: {run['status']} — {run['gate_reason']}")
    published = count_recommendations(engine, run_id)
    lines.append(
        f"Warehouse: {published:,} recommendations published for {run_id} "
        f"({engine.url.render_as_string(hide_password=True)})"
    )
    if published:
        sample = top_items(engine, run_id, _first_users(engine, run_id, users), top)
        for user, group in sample.groupby("user_id", sort=True):
            shown = ", ".join(f"{r.item_id} ({r.score:.2f})" for r in group.itertuples())
            lines.append(f"  top {top} for {user}: {shown}")
    if ws.run_page.is_file():  # the whole night on one page, charts included
        lines.append(f"Run page: {ws.run_page.resolve().as_uri()}")
    return "\n".join(lines)


def selection_lines(selection: dict) -> list[str]:
    """The night's candidates (validation and holdout Recall@K) and what was chosen, by how much."""
    metric = selection["metric"]
    out = [f"Selection on validation users ({metric}; holdout users only report):"]
    out.append(f"  {'candidate':<26}{'kind':>10}{'validation':>12}{'holdout':>18}")
    for row in sorted(selection["candidates"], key=lambda r: -(r["validation"] or 0)):
        mark = "  <- challenger" if row["candidate"] == selection["challenger"] else ""
        holdout = f"{row['holdout']:.4f} ± {row['holdout_ci95']:.4f}"
        out.append(f"  {row['candidate']:<26}{row['kind']:>10}{row['validation']:>12.4f}{holdout:>18}{mark}")
    best = selection.get("best_single_baseline")
    if best:
        kind = "a baseline" if selection["challenger_is_baseline"] else selection["challenger_kind"]
        out.append(
            f"Challenger {selection['challenger']} ({kind}) vs best single baseline {best} on holdout users: "
            f"{selection['difference']:+.4f} {metric} (Wilcoxon p {selection['wilcoxon_p']:.2g}, "
            f"{selection['paired_users']} users)"
        )
    distill = selection.get("distill")
    if distill:
        d = distill
        out.append(
            f"Student vs its teacher {d['teacher']} on holdout users: {d['student_holdout']:.4f} vs "
            f"{d['teacher_holdout']:.4f} {metric} (Wilcoxon p {d['wilcoxon_p']:.2g}); scoring "
            f"{d['student_ms_per_1000_users']:.0f} vs {d['teacher_ms_per_1000_users']:.0f} ms per 1,000 users"
        )
    return out


def _first_users(engine, run_id: str, n: int) -> list[str]:
    from sqlalchemy import select

    from metarec_tasks.publishing.warehouse import recommendations

    query = (
        select(recommendations.c.user_id)
        .where(recommendations.c.run_id == run_id)
        .distinct()
        .order_by(recommendations.c.user_id)
        .limit(n)
    )
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(query)]


def print_summary(params: Params, root: Path, users: int, top: int) -> None:
    print(render_summary(params, root, users, top))  # noqa: T201 - this command's output is the summary

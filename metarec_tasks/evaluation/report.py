"""The evaluation report a person reads: Markdown with PNG charts, next to the machine-readable JSON."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from metarec_tasks.evaluation.tables import ranked_by
from metarec_tasks.files import atomic_path, write_text
from metarec_tasks.params import EvaluateParams, Params, metric_names
from metarec_tasks.paths import Workspace

log = logging.getLogger(__name__)
FIGURE_DPI = 110


def metric_table(results: dict[str, dict[str, float]], ep: EvaluateParams) -> str:
    """Markdown table, one row per predictor, `mean ± ci` per metric (every metric evaluate computes
    and some predictor has), sorted best first by the primary metric, predictors without it last."""
    shown = [name for name in metric_names(ep) if any(name in r for r in results.values())]
    order = ranked_by(results, ep.primary_metric)
    lines = ["| predictor | users | " + " | ".join(shown) + " |", "|---|---:|" + "---:|" * len(shown)]
    for name in order:
        r = results[name]
        cells = []
        for metric in shown:
            if metric not in r:
                cells.append("–")
                continue
            ci = r.get(f"{metric}_ci95")
            cells.append(f"{r[metric]:.4f} ± {ci:.4f}" if ci == ci and ci is not None else f"{r[metric]:.4f}")
        lines.append(f"| {name} | {r.get('users', '')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def panel_series(breakdown: pd.DataFrame, metric: str) -> dict[str, str]:
    """The `<predictor>.<metric>` columns of a breakdown table with any value, by predictor name."""
    suffix = f".{metric}"
    return {
        column.removesuffix(suffix): column
        for column in breakdown.columns
        if column.endswith(suffix) and breakdown[column].notna().any()
    }


def write_report(
    ws: Workspace,
    params: Params,
    results: dict[str, dict[str, float]],
    decision: dict[str, Any],
    curve: pd.DataFrame,
    scenarios: pd.DataFrame,
) -> None:
    primary = params.evaluate.primary_metric
    charts = _charts(ws, curve, scenarios, primary)
    lines = [
        f"# MetaRec evaluation — run {params.run.run_id}",
        "",
        f"Algorithm **{params.meta.algorithm}** (adapting `{params.meta.adapt}`), source "
        f"`{params.source.kind}`. Holdout users never took part in training.",
        "",
        f"**Meta model vs the baselines: {'passed' if decision.get('passed') else 'failed'}** — "
        f"{decision.get('reason')}.",
        "",
        *selection_section(decision.get("selection"), curve),
        "## Every predictor on the same holdout users (mean ± 95% CI over users)",
        "",
        metric_table(results, params.evaluate),
        "",
        "`ndcg@k`: graded, gain 2^rating − 1 over the query items (MeLU). `bin_*`: the "
        f"{params.evaluate.binary_relevant} highest-rated query items are relevant (RecBole-MetaRec). "
        f"`catalog_*`: every item outside the support set ranked; relevant = query items rated ≥ "
        f"{params.evaluate.relevance_threshold}.",
        "",
    ]
    for title, name in charts:
        lines += [f"## {title}", "", f"![{title}](figures/{name})", ""]
    write_text(ws.report, "\n".join(lines))


def selection_section(selection: dict[str, Any] | None, curve: pd.DataFrame) -> list[str]:
    """The night's candidates on validation and holdout users, the challenger, and per support-size
    bucket the candidates' holdout Recall@K (the cold-start curve's top-K columns)."""
    if not selection:
        return []
    metric = selection["metric"]
    lines = [
        f"## Selection ({metric}): chosen on validation users, reported on holdout users",
        "",
        f"Challenger: **{selection['challenger']}** ({selection['challenger_kind']}"
        + (", a baseline" if selection["challenger_is_baseline"] else "")
        + f"), holdout {metric} {selection['value']:.4f}.",
        "",
    ]
    if selection.get("best_single_baseline"):
        lines += [
            f"Against the best single baseline on validation, `{selection['best_single_baseline']}`: "
            f"{selection['difference']:+.4f} per holdout user (Wilcoxon p {selection['wilcoxon_p']:.2g}, "
            f"{selection['paired_users']} users).",
            "",
        ]
    lines += ["| candidate | kind | validation | holdout (± 95% CI) |", "|---|---|---|---|"]
    for row in sorted(selection["candidates"], key=lambda r: -(r["validation"] or 0)):
        lines.append(
            f"| {row['candidate']} | {row['kind']} | {row['validation']:.4f} | "
            f"{row['holdout']:.4f} ± {row['holdout_ci95']:.4f} |"
        )
    lines += distill_lines(selection.get("distill"), metric)
    columns = [c for c in curve.columns if c.endswith(f".{metric}")]
    if columns and "group" in curve:
        names = [c.removesuffix(f".{metric}") for c in columns]
        lines += ["", f"Holdout {metric} per support-size bucket:", ""]
        lines += ["| support | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for _, row in curve.iterrows():
            cells = " | ".join("" if pd.isna(row[c]) else f"{row[c]:.3f}" for c in columns)
            lines.append(f"| {row['group']} | {cells} |")
    return [*lines, ""]


def distill_lines(distill: dict[str, Any] | None, metric: str) -> list[str]:
    """The student against its teacher on holdout users: quality and scoring time."""
    if not distill:
        return []
    return [
        "",
        f"Distillation: the student `{distill['student']}` learned from `{distill['teacher']}` on training "
        "users (temperature and epochs chosen on validation users). On holdout users:",
        "",
        f"| model | holdout {metric} (± 95% CI) | scoring ms per 1,000 users |",
        "|---|---|---|",
        *(
            f"| {distill[role]} ({role}) | {distill[f'{role}_holdout']:.4f} ± "
            f"{distill[f'{role}_holdout_ci95']:.4f} | {distill[f'{role}_ms_per_1000_users']:.1f} |"
            for role in ("teacher", "student")
        ),
        "",
        f"Student − teacher: {distill['difference']:+.4f} per holdout user (Wilcoxon p "
        f"{distill['wilcoxon_p']:.2g}, {distill['paired_users']} users).",
    ]


def _charts(
    ws: Workspace, curve: pd.DataFrame, scenarios: pd.DataFrame, primary: str
) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    ws.figures.mkdir(parents=True, exist_ok=True)
    if not curve.empty:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, metric in zip(axes, ("mae", primary), strict=True):
            for label, column in panel_series(curve, metric).items():
                ax.plot(curve["group"], curve[column], marker="o", label=label)
            ax.set_xlabel("support-set size (interactions)")
            ax.set_ylabel(metric)
            ax.set_xscale("log")
            ax.set_xticks(list(curve["group"]), [str(g) for g in curve["group"]])
            ax.minorticks_off()
            if ax.get_lines():
                ax.legend(fontsize=7)
        fig.suptitle("Cold-start curve: quality vs. how much we know about the user")
        fig.tight_layout()
        save_figure(fig, ws.figures / "cold_start_curve.png")
        plt.close(fig)
        made.append(("Cold-start curve", "cold_start_curve.png"))
    if not scenarios.empty:
        metrics = [m for m in dict.fromkeys(("mae", primary)) if panel_series(scenarios, m)]
        panels = max(len(metrics), 1)
        fig, axes = plt.subplots(1, panels, figsize=(7 * panels, 4), squeeze=False)
        for ax, metric in zip(axes[0], metrics, strict=False):
            series = panel_series(scenarios, metric)
            frame = scenarios.set_index("group")[list(series.values())]
            frame.index = [str(group).replace("/", "\n") for group in frame.index]
            frame.columns = list(series)
            frame.plot.bar(ax=ax, rot=0)
            ax.set_ylabel(metric)
            ax.set_xlabel("")
            ax.legend(fontsize=7)
        fig.suptitle("By MeLU scenario (user × item: existing / new)")
        fig.tight_layout()
        save_figure(fig, ws.figures / "scenarios.png")
        plt.close(fig)
        made.append(("Cold-start scenarios", "scenarios.png"))
    if ws.train_log.exists():
        log_frame = pd.read_csv(ws.train_log)
        meta = log_frame[log_frame["phase"] != "pretrain"].dropna(subset=["val_mae"])
        if not meta.empty:
            fig, ax = plt.subplots(figsize=(6, 4))
            ax.plot(meta["epoch"], meta["val_mae"], marker="o", label="validation MAE (adapted)")
            ax.plot(meta["epoch"], meta["train_loss"], marker=".", label="meta-train loss (MSE)")
            ax.set_xlabel("epoch")
            ax.legend()
            ax.set_title("Learning curve")
            fig.tight_layout()
            save_figure(fig, ws.figures / "learning_curve.png")
            plt.close(fig)
            made.append(("Learning curve", "learning_curve.png"))
    if ws.rank_train_log.exists():
        made += _ranker_curve(ws, plt)
    return made


def _ranker_curve(ws: Workspace, plt) -> list[tuple[str, str]]:
    """The ranker's (the published model's) learning curve: validation recall of the current and
    of the averaged weights, and the meta-train loss on its own axis."""
    frame = pd.read_csv(ws.rank_train_log)
    recall = next((c for c in frame.columns if c.startswith("val_recall@")), None)
    if recall is None or frame[recall].dropna().empty:
        return []
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(frame["epoch"], frame[recall], marker="o", label=f"validation {recall[4:]} (adapted)")
    if "averaged" in frame and frame["averaged"].notna().any():
        ax.plot(frame["epoch"], frame["averaged"], marker="s", label="... of the averaged weights")
    ax.set_xlabel("epoch")
    ax.set_ylabel(recall[4:])
    loss = ax.twinx()
    loss.plot(frame["epoch"], frame["train_loss"], color="grey", linestyle=":", label="meta-train loss")
    loss.set_ylabel("ranking loss")
    lines = ax.get_lines() + loss.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], fontsize=7)
    ax.set_title("Ranker learning curve")
    fig.tight_layout()
    save_figure(fig, ws.figures / "rank_learning_curve.png")
    plt.close(fig)
    return [("Ranker learning curve", "rank_learning_curve.png")]


def save_figure(fig, path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=FIGURE_DPI, format="png")

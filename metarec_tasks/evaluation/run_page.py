"""The run page: one self-contained HTML file per night, the first thing an operator opens.

What the night decided and why, in one file that works offline — no script, no stylesheet, font or
image from anywhere else; the charts `report.py` draws are embedded as base64 PNGs: the decision,
data quality, the candidates against the baselines with their 95% CIs, what was published, the
charts, and a few users' top items (with titles where the source's item table has them).
`render_run_page` is a pure function of what the run wrote; `publish`, the stage that runs last,
writes it to `reports/run.html` (`write_run_page`).
"""

from __future__ import annotations

import base64
import html
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from metarec_tasks.evaluation.tables import ranked_by
from metarec_tasks.files import write_text
from metarec_tasks.logs.contract import AVAILABLE_COLUMN, ITEM_KEY, USER_KEY
from metarec_tasks.params import Params, metric_names
from metarec_tasks.paths import Workspace

log = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# report.py's charts in reading order, with their titles; any other PNG in reports/figures follows.
FIGURE_TITLES = {
    "learning_curve.png": "Learning curve",
    "cold_start_curve.png": "Cold-start curve: quality vs. how much we know about the user",
    "scenarios.png": "Cold-start scenarios (user × item: existing / new)",
}
# publish.json's status → (what it means for users, the banner's style)
DECISIONS = {
    "published": ("Published", "good"),
    "forced": ("Published, forced past the decision", "warn"),
    "kept": ("Kept: the day's earlier published recommendations stay", "warn"),
    "rejected": ("Rejected: nothing new published", "bad"),
}
TITLE_COLUMN = "title"  # an item side-table column shown as the item's name (MovieLens has it)
SIGNIFICANCE = 0.05  # a paired difference with Wilcoxon p at or above this is called not significant


@dataclass(frozen=True)
class RunFacts:
    """Everything the page shows, as the run wrote it (the JSON files are passed as parsed)."""

    run_id: str
    run_date: str
    source: str
    receipt: dict[str, Any]  # reports/publish.json
    quality: dict[str, Any]  # reports/data_quality.json
    metrics: dict[str, Any]  # reports/metrics.json (its `gate` holds the selection)
    metric_names: list[str]  # the metrics evaluate computes, in report order
    figures: list[tuple[str, bytes]]  # (title, PNG bytes)
    samples: pd.DataFrame  # user_id, rank, item_id, score, about


def write_run_page(
    ws: Workspace,
    params: Params,
    receipt: dict[str, Any],
    quality: dict[str, Any],
    metrics: dict[str, Any],
    recs: pd.DataFrame,
) -> Path:
    """Gather the night's figures and sample lists, render the page, write it atomically."""
    items_file = ws.validated_table("items")
    items = pd.read_parquet(items_file) if items_file.is_file() else pd.DataFrame(columns=[ITEM_KEY])
    facts = RunFacts(
        run_id=params.run.run_id,
        run_date=params.run.run_date.isoformat(),
        source=params.source.kind,
        receipt=receipt,
        quality=quality,
        metrics=metrics,
        metric_names=metric_names(params.evaluate),
        figures=read_figures(ws.figures),
        samples=sample_recommendations(
            recs, items, params.publish.run_page_users, params.publish.run_page_items
        ),
    )
    write_text(ws.run_page, render_run_page(facts))
    return ws.run_page


def read_figures(folder: Path) -> list[tuple[str, bytes]]:
    """The PNG charts in `folder`, known ones first in FIGURE_TITLES order; a file that is not a
    PNG is skipped with a warning (the page must still be written)."""
    if not folder.is_dir():
        return []
    order = {name: i for i, name in enumerate(FIGURE_TITLES)}
    paths = sorted(folder.glob("*.png"), key=lambda path: (order.get(path.name, len(order)), path.name))
    out = []
    for path in paths:
        data = path.read_bytes()
        if not data.startswith(PNG_SIGNATURE):
            log.warning("run page: %s is not a PNG file; left out", path)
            continue
        out.append((FIGURE_TITLES.get(path.name, path.stem.replace("_", " ").capitalize()), data))
    return out


def sample_recommendations(recs: pd.DataFrame, items: pd.DataFrame, users: int, top: int) -> pd.DataFrame:
    """The first `users` users' (by id) top `top` items, each with what the item table says about
    it: its title where there is one, otherwise its feature values."""
    chosen = sorted(recs[USER_KEY].unique())[:users]
    sample = recs[recs[USER_KEY].isin(chosen) & (recs["rank"] <= top)].sort_values([USER_KEY, "rank"])
    return sample.assign(about=sample[ITEM_KEY].map(item_labels(items))).reset_index(drop=True)


def item_labels(items: pd.DataFrame) -> dict[str, str]:
    """item id → its title, or its side-table values joined (`drama · cult|slow`) when untitled."""
    if TITLE_COLUMN in items:
        titles = items[TITLE_COLUMN].astype("string").fillna("")
        return dict(zip(items[ITEM_KEY].astype(str), titles, strict=True))
    shown = [c for c in items.columns if c not in (ITEM_KEY, AVAILABLE_COLUMN)]
    if not shown:
        return {}
    values = items[shown].astype("string").fillna("")
    labels = [" · ".join(v for v in row if v) for row in values.itertuples(index=False)]
    return dict(zip(items[ITEM_KEY].astype(str), labels, strict=True))


def render_run_page(facts: RunFacts) -> str:
    """The whole page as one HTML string (ASCII; anything else as character references)."""
    receipt = facts.receipt
    status = str(receipt.get("status", "unknown"))
    body = [
        f"<h1>MetaRec run {_e(facts.run_id)}</h1>",
        f'<p class="meta">Logs of {_e(facts.run_date)} · source <code>{_e(facts.source)}</code></p>',
        _decision(status, receipt),
        _quality(facts.quality),
        _selection(facts.metrics),
        _predictors(facts.metrics, facts.metric_names),
        _published(receipt),
        _figures(facts.figures),
        _samples(facts.samples),
    ]
    page = PAGE.format(title=_e(f"MetaRec {facts.run_id}: {status}"), body="\n".join(body))
    return page.encode("ascii", "xmlcharrefreplace").decode("ascii")


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any, digits: int = 4, sign: str = "") -> str:
    """A number to `digits` places (`sign="+"`: always signed); a missing or non-finite one as –."""
    if isinstance(value, int | float) and math.isfinite(value):
        return f"{value:{sign}.{digits}f}"
    return "–"


def _p(value: Any) -> str:
    """A p-value as the report and the summary write it (two significant digits)."""
    return f"{value:.2g}" if isinstance(value, int | float) and math.isfinite(value) else "–"


def _table(
    header: list[str] | None,
    rows: list[list[str]],
    numeric_from: int = 1,
    marked: frozenset[int] = frozenset(),
) -> str:
    """An HTML table (no header row for `None`); cells are already escaped. Columns from
    `numeric_from` are right-aligned; rows in `marked` are highlighted."""
    cols = enumerate(header or [])
    head = "".join(f"<th{' class=num' if i >= numeric_from else ''}>{h}</th>" for i, h in cols)
    lines = []
    for n, row in enumerate(rows):
        cells = "".join(f"<td{' class=num' if i >= numeric_from else ''}>{c}</td>" for i, c in enumerate(row))
        lines.append(f"<tr{' class=mark' if n in marked else ''}>{cells}</tr>")
    thead = f"<thead><tr>{head}</tr></thead>" if header else ""
    table = f"<table>{thead}<tbody>{''.join(lines)}</tbody></table>"
    return f'<div class="scroll">{table}</div>'


def _decision(status: str, receipt: dict[str, Any]) -> str:
    label, style = DECISIONS.get(status, (f"Status {status}", "bad"))
    if status == "rejected" and receipt.get("champion"):
        label = f"Rejected: champion {receipt['champion']} kept"
    facts = (
        f"{receipt.get('recommendation_rows', 0):,} recommendation rows written · producer "
        f"{receipt.get('producer') or '–'} · champion before this run: {receipt.get('champion') or 'none'}"
    )
    return (
        f'<section class="decision {style}" id="decision"><h2>Decision: {_e(label)}</h2>'
        f"<p>{_e(receipt.get('reason', 'no reason recorded'))}</p>"
        f'<p class="meta">{_e(facts)}</p></section>'
    )


def _quality(quality: dict[str, Any]) -> str:
    rows_in, quarantined = quality.get("rows_in", 0), quality.get("rows_quarantined", 0)
    share = quarantined / rows_in if rows_in else 0.0
    verdict = "passed" if quality.get("passed", True) else "failed"
    parts = [
        '<section id="quality"><h2>Data quality</h2>',
        f"<p>{rows_in:,} rows in, <b>{quality.get('rows_valid', 0):,} validated</b>, "
        f"{quarantined:,} quarantined ({share:.1%}); batch checks {verdict}.</p>",
    ]
    reasons = sorted(quality.get("reasons", {}).items(), key=lambda kv: -kv[1])
    if reasons:
        parts.append(_table(["quarantine reason", "rows"], [[_e(k), f"{v:,}"] for k, v in reasons]))
    checks = quality.get("checks", [])
    tally: dict[str, list[int]] = {}
    for check in checks:
        counts = tally.setdefault(str(check.get("check")), [0, 0])
        counts[0] += bool(check.get("passed"))
        counts[1] += 1
    if tally:
        parts.append(
            _table(["check", "passed", "of"], [[_e(k), str(p), str(n)] for k, (p, n) in tally.items()])
        )
    failed = [c for c in checks if not c.get("passed")]
    if failed:
        parts.append("<h3>Failed checks</h3>")
        parts.append(
            _table(
                ["check", "scope", "observed", "expected", "detail"],
                [
                    [
                        _e(c.get("check")),
                        _e(c.get("scope")),
                        _e(c.get("observed")),
                        _e(c.get("expected")),
                        _e(c.get("message") or c.get("detail")),
                    ]
                    for c in failed
                ],
                numeric_from=5,
            )
        )
    else:
        parts.append("<p>No check failed.</p>")
    gx = quality.get("gx_success", {})
    if gx:
        shown = ", ".join(f"{_e(k)} {'succeeded' if v else 'failed'}" for k, v in gx.items())
        parts.append(
            f"<p>Great Expectations suites: {shown} (Data Docs: <code>reports/data_docs/</code>).</p>"
        )
    return "".join(parts) + "</section>"


def _selection(metrics: dict[str, Any]) -> str:
    gate = metrics.get("gate", {})
    parts = ['<section id="selection"><h2>Candidates vs baselines</h2>']
    if gate.get("reason"):
        verdict = "passed" if gate.get("passed") else "failed"
        parts.append(f"<p>Meta model vs the gate baselines: <b>{verdict}</b> — {_e(gate['reason'])}.</p>")
    selection = gate.get("selection")
    if not selection:
        return "".join(parts) + "<p>No top-K selection this run.</p></section>"
    metric = _e(selection["metric"])
    kind = selection["challenger_kind"] + (", a baseline" if selection.get("challenger_is_baseline") else "")
    parts.append(
        f"<p>Chosen on validation users, reported on holdout users ({metric}): challenger "
        f"<b>{_e(selection['challenger'])}</b> ({_e(kind)}), holdout {_num(selection.get('value'))}.</p>"
    )
    best = selection.get("best_single_baseline")
    if best:
        p = selection.get("wilcoxon_p")
        significant = isinstance(p, int | float) and p < SIGNIFICANCE
        note = "" if significant else f"; not a significant difference (p ≥ {SIGNIFICANCE})"
        parts.append(
            f"<p>Against the best single baseline <code>{_e(best)}</code>: "
            f"{_num(selection.get('difference'), sign='+')} per holdout user (Wilcoxon p {_p(p)}, "
            f"{_e(selection.get('paired_users', '?'))} users){note}.</p>"
        )
    candidates = sorted(selection.get("candidates", []), key=lambda r: -(r.get("validation") or 0))
    rows = [
        [
            _e(r["candidate"]) + (" ← challenger" if r["candidate"] == selection["challenger"] else ""),
            _e(r["kind"]),
            _num(r.get("validation")),
            f"{_num(r.get('holdout'))} ± {_num(r.get('holdout_ci95'))}",
        ]
        for r in candidates
    ]
    marked = frozenset(i for i, r in enumerate(candidates) if r["candidate"] == selection["challenger"])
    parts.append(
        _table(["candidate", "kind", "validation", "holdout (± 95% CI)"], rows, numeric_from=2, marked=marked)
    )
    return "".join(parts) + "</section>"


def _predictors(metrics: dict[str, Any], names: list[str]) -> str:
    predictors = metrics.get("predictors", {})
    primary = metrics.get("primary_metric", "")
    shown = [m for m in dict.fromkeys([primary, *names]) if any(m in r for r in predictors.values())]
    rows = []
    for name in ranked_by(predictors, primary):
        r = predictors[name]
        cells = [f"{_num(r[m])} ± {_num(r.get(f'{m}_ci95'))}" if m in r else "–" for m in shown]
        rows.append([_e(name), _e(r.get("users", r.get("catalog_users", ""))), *cells])
    return (
        '<section id="predictors"><h2>Every predictor on the holdout users</h2>'
        f"<p>Mean ± 95% CI over users, best first by <code>{_e(primary)}</code> (the primary metric, "
        "first column); – where a predictor has no such metric (top-K candidates rank, they do not "
        "predict ratings).</p>" + _table(["predictor", "users", *map(_e, shown)], rows) + "</section>"
    )


def _published(receipt: dict[str, Any]) -> str:
    rows = [
        ["status", _e(receipt.get("status"))],
        ["recommendation rows", f"{receipt.get('recommendation_rows', 0):,}"],
        ["producer (candidate)", _e(receipt.get("producer") or "–")],
        ["champion before this run", _e(receipt.get("champion") or "none")],
        ["warehouse", f"<code>{_e(receipt.get('warehouse', '–'))}</code>"],
    ]
    return '<section id="published"><h2>Published</h2>' + _table(None, rows, numeric_from=2) + "</section>"


def _figures(figures: list[tuple[str, bytes]]) -> str:
    if not figures:
        return '<section id="charts"><h2>Charts</h2><p>No charts this run.</p></section>'
    shown = "".join(
        f'<figure><img alt="{_e(title)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
        f"<figcaption>{_e(title)}</figcaption></figure>"
        for title, data in figures
    )
    return f'<section id="charts"><h2>Charts</h2>{shown}</section>'


def _samples(samples: pd.DataFrame) -> str:
    if samples.empty:
        return '<section id="samples"><h2>Sample recommendations</h2><p>No recommendations.</p></section>'
    parts = ['<section id="samples"><h2>Sample recommendations</h2>']
    for user, group in samples.groupby(USER_KEY, sort=True):
        rows = [
            [str(r.rank), _e(r.item_id), _e(r.about if isinstance(r.about, str) else ""), _num(r.score, 3)]
            for r in group.itertuples()
        ]
        parts.append(
            f"<h3>{_e(user)}</h3>" + _table(["rank", "item", "about", "score"], rows, numeric_from=3)
        )
    return "".join(parts) + "</section>"


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 72rem; margin: 1.5rem auto; padding: 0 1rem;
  color: #1d2733; line-height: 1.4; }}
h1 {{ margin-bottom: 0.2rem; }}
.meta {{ color: #5b6773; margin-top: 0; }}
section {{ margin: 1.5rem 0; }}
.decision {{ border-left: 0.5rem solid; padding: 0.6rem 1rem; border-radius: 0.3rem; }}
.decision h2 {{ margin: 0 0 0.3rem; }}
.decision p {{ margin: 0; }}
.good {{ background: #e8f6ec; border-color: #2e8b57; }}
.warn {{ background: #fff6e0; border-color: #d39e00; }}
.bad {{ background: #fdecea; border-color: #c0392b; }}
.scroll {{ overflow-x: auto; }}
table {{ border-collapse: collapse; margin: 0.5rem 0; font-size: 0.9rem; }}
th, td {{ padding: 0.25rem 0.6rem; border-bottom: 1px solid #dde3e8; text-align: left; white-space: nowrap; }}
th {{ background: #f3f5f7; }}
.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
tr.mark td {{ background: #eef4ff; font-weight: 600; }}
figure {{ margin: 1rem 0; }}
img {{ max-width: 100%; border: 1px solid #dde3e8; }}
figcaption {{ color: #5b6773; font-size: 0.9rem; }}
</style>
</head>
<body>
{body}
</body>
</html>
"""

"""The run page renders in a real headless Chromium with no console output, works offline, and
shows the run id and the night's decision first; hand-written inputs shaped like a run's files.

Needs Debian's `chromium` (`apt-get install chromium`): skipped, with the reason, only when it is
missing and `CI` is not set; under CI its absence is a failure.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from metarec_tasks.evaluation.run_page import (
    RunFacts,
    item_labels,
    read_figures,
    render_run_page,
    sample_recommendations,
)

RUN_ID = "nightly-2026-10-20"
BROWSER_TIMEOUT_S = 90
# Chromium writes every console message (log, error, an uncaught exception) as `…:CONSOLE(…)] "…"`.
CONSOLE_LINE = re.compile(r":CONSOLE[:(]")


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium is required in CI for the run page test (apt-get install chromium)")
    pytest.skip("chromium not installed (apt-get install chromium); the run page is not browser-tested")


def browse(chromium: str, page: Path, tmp_path: Path, *action: str) -> subprocess.CompletedProcess:
    """Open `page` in headless Chromium (its own profile folder, console messages on stderr)."""
    return subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            *action,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=BROWSER_TIMEOUT_S,
        check=False,
    )


class _Text(HTMLParser):
    """The visible text of a DOM, and every element's tag and attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._skip += tag in ("style", "script", "title")

    def handle_endtag(self, tag):
        self._skip -= tag in ("style", "script", "title")

    def handle_data(self, data):
        if not self._skip and data.strip():
            self.text.append(" ".join(data.split()))


def parsed(dom: str) -> _Text:
    parser = _Text()
    parser.feed(dom)
    return parser


def png(width: int = 60, height: int = 30) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (46, 139, 87)).save(buffer, format="PNG")
    return buffer.getvalue()


def facts(status: str = "rejected", reason: str = "challenger blend worse than champion") -> RunFacts:
    """A night shaped like the files a real run writes, a few of each."""
    selection = {
        "metric": "catalog_recall@20",
        "challenger": "blend",
        "challenger_kind": "blend",
        "challenger_is_baseline": False,
        "value": 0.7541,
        "best_single_baseline": "item_knn",
        "difference": -0.0076,
        "wilcoxon_p": 0.32,
        "paired_users": 22,
        "candidates": [
            {"candidate": "model", "kind": "meta", "validation": 0.64, "holdout": 0.73, "holdout_ci95": 0.07},
            {
                "candidate": "blend",
                "kind": "blend",
                "validation": 0.66,
                "holdout": 0.75,
                "holdout_ci95": 0.07,
            },
            {
                "candidate": "item_knn",
                "kind": "baseline",
                "validation": 0.65,
                "holdout": 0.76,
                "holdout_ci95": 0.1,
            },
        ],
    }
    metrics = {
        "primary_metric": "catalog_recall@20",
        "predictors": {
            "model": {"users": 22, "mae": 0.79, "mae_ci95": 0.06, "catalog_recall@20": 0.738},
            "item_knn": {"catalog_recall@20": 0.762, "catalog_recall@20_ci95": 0.07, "catalog_users": 22},
            "global_mean": {"users": 22, "mae": 0.79, "mae_ci95": 0.05},
        },
        "gate": {
            "passed": True,
            "reason": "model mae 0.7876 beats best baseline global_mean 0.7885",
            "selection": selection,
        },
    }
    quality = {
        "rows_in": 12700,
        "rows_valid": 12575,
        "rows_quarantined": 125,
        "reasons": {"null_value": 28, "unparseable_timestamp": 27, "<script>alert(1)</script>": 1},
        "checks": [
            {
                "check": "min_rows",
                "scope": "date=2026-10-20",
                "observed": 1449,
                "expected": ">= 1",
                "passed": True,
            },
            {
                "check": "volume_anomaly",
                "scope": "date=2026-10-19",
                "observed": 0.1,
                "expected": "between 0.2 and 5.0 x the trailing median",
                "passed": False,
                "detail": "131 rows vs median 1315 of the 7 preceding days",
            },
        ],
        "gx_success": {"events": True, "items": True},
        "passed": True,
    }
    receipt = {
        "run_id": RUN_ID,
        "status": status,
        "published": status == "published",
        "reason": reason,
        "recommendation_rows": 0 if status == "rejected" else 3340,
        "producer": "blend",
        "champion": "nightly-2026-10-19",
        "warehouse": "sqlite:////tmp/warehouse/metarec-synthetic.db",
    }
    recs = pd.DataFrame(
        {
            "user_id": ["u2", "u1", "u1", "u1", "u3"],
            "rank": [1, 2, 1, 3, 1],
            "item_id": ["i9", "i2", "i1", "i3", "i1"],
            "score": [4.0, 3.0, 3.5, 2.0, 1.0],
        }
    )
    items = pd.DataFrame(
        {"item_id": ["i1", "i2", "i9"], "title": ["Toy Story (1995)", "Heat (1995)", "Fargo & Co"]}
    )
    return RunFacts(
        run_id=RUN_ID,
        run_date="2026-10-20",
        source="synthetic",
        receipt=receipt,
        quality=quality,
        metrics=metrics,
        metric_names=["mae", "catalog_recall@20"],
        figures=[("Learning curve", png()), ("Cold-start curve", png(80, 40))],
        samples=sample_recommendations(recs, items, users=2, top=2),
    )


def test_the_page_renders_in_chromium_without_console_output(chromium, tmp_path):
    page = tmp_path / "run.html"
    page.write_text(render_run_page(facts()))
    shown = browse(chromium, page, tmp_path, "--dump-dom")
    assert shown.returncode == 0, shown.stderr[-2000:]
    console = [line for line in shown.stderr.splitlines() if CONSOLE_LINE.search(line)]
    assert not console, console
    dom = parsed(shown.stdout)
    assert dom.text[:5] == [  # the run id and date, then the decision before anything else
        f"MetaRec run {RUN_ID}",
        "Logs of 2026-10-20 · source",
        "synthetic",
        "Decision: Rejected: champion nightly-2026-10-19 kept",
        "challenger blend worse than champion",
    ]
    text = " ".join(dom.text)
    assert "12,575 validated" in text and "<script>alert(1)</script>" in text  # escaped, shown as text
    assert "volume_anomaly date=2026-10-19 0.1" in text  # the failed check, with its scope and value
    assert "blend ← challenger blend 0.6600 0.7500 ± 0.0700" in text
    assert "Toy Story (1995)" in text and "Fargo & Co" in text and "u3" not in text
    images = [attrs for tag, attrs in dom.tags if tag == "img"]
    assert len(images) == 2 and all(a["src"].startswith("data:image/png;base64,") for a in images)
    assert not [tag for tag, _ in dom.tags if tag in ("script", "link", "iframe")]

    shot = tmp_path / "shot.png"
    browse(chromium, page, tmp_path, "--hide-scrollbars", "--window-size=1200,2400", f"--screenshot={shot}")
    from PIL import Image

    assert Image.open(shot).size == (1200, 2400)


def test_the_console_check_catches_an_error(chromium, tmp_path):
    """The check above can fail: a page that logs an error or throws is caught."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><p>x</p><script>console.error('bad'); throw new Error('boom')</script>")
    shown = browse(chromium, page, tmp_path, "--dump-dom")
    console = [line for line in shown.stderr.splitlines() if CONSOLE_LINE.search(line)]
    assert any('"bad"' in line for line in console) and any(
        "Uncaught Error: boom" in line for line in console
    )


def test_the_page_needs_nothing_from_elsewhere():
    html = render_run_page(facts(status="published", reason="within 0.02 of champion"))
    assert html.isascii()  # any encoding reads it; non-ASCII text is character references
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|url\(|@import""", html)
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert [base64.b64decode(data) for data in embedded] == [png(), png(80, 40)]
    assert 'class="decision good"' in html and "Decision: Published" in html


def test_samples_are_the_first_users_top_items_labelled_from_the_item_table():
    recs = pd.DataFrame(
        {
            "user_id": ["b", "a", "a", "c"],
            "rank": [1, 2, 1, 1],
            "item_id": ["x", "y", "x", "z"],
            "score": [1.0] * 4,
        }
    )
    untitled = pd.DataFrame(
        {
            "item_id": ["x", "y"],
            "category": ["drama", None],
            "tags": ["cult|slow", "short"],
            "available": ["true"] * 2,
        }
    )
    sample = sample_recommendations(recs, untitled, users=2, top=5)
    assert sample[["user_id", "item_id"]].values.tolist() == [["a", "x"], ["a", "y"], ["b", "x"]]
    assert sample["about"].tolist() == ["drama · cult|slow", "short", "drama · cult|slow"]
    assert item_labels(pd.DataFrame({"item_id": ["x"]})) == {}


def test_a_figure_that_is_not_a_png_is_left_out(tmp_path, caplog):
    (tmp_path / "cold_start_curve.png").write_bytes(png())
    (tmp_path / "learning_curve.png").write_bytes(png(10, 10))
    (tmp_path / "zz_extra_chart.png").write_bytes(png(5, 5))
    (tmp_path / "scenarios.png").write_text("not a picture")
    titles = [title for title, _ in read_figures(tmp_path)]
    assert titles[:2] == ["Learning curve", "Cold-start curve: quality vs. how much we know about the user"]
    assert titles[2:] == ["Zz extra chart"] and "not a PNG" in caplog.text
    assert read_figures(tmp_path / "missing") == []

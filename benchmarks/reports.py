"""How every benchmark leaves its figures: a JSON report and its Markdown beside it, under reports/."""

from __future__ import annotations

import json
import os
from pathlib import Path


def load_average() -> str:
    """The 1/5/15-minute load average, as the reports print it (a figure names the load it ran under)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def write_report(out: Path, report: dict, markdown: str) -> None:
    """`out` (JSON) and `out` with suffix .md, its folder created."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=float))
    out.with_suffix(".md").write_text(markdown)

"""File- and day-level checks: what makes the whole `validate` task fail (or just get reported).

Each check yields a `BatchCheck` that names the scope (a file or a day), the observed and the expected
value, so the failure message an operator reads at 2 a.m. says exactly what to fix.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, timedelta
from statistics import median
from typing import Any

from metarec_tasks.params import ValidateParams

ERROR, WARN, INFO = "error", "warn", "info"


@dataclass(frozen=True)
class BatchCheck:
    check: str
    scope: str  # a source file, `date=YYYY-MM-DD`, or `all`
    observed: float
    expected: str
    passed: bool
    severity: str  # error: fails the task when not passed; warn/info: reported only
    rows: int = 0
    detail: str = ""

    @property
    def fails_run(self) -> bool:
        return self.severity == ERROR and not self.passed

    def message(self) -> str:
        text = f"check {self.check} failed for {self.scope}: observed {self.observed:g}"
        text += f", expected {self.expected}"
        return f"{text} ({self.detail})" if self.detail else text

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "message": self.message() if not self.passed else ""}


def file_checks(
    files: list[dict[str, Any]], counts: dict[str, dict[str, int]], vp: ValidateParams
) -> list[BatchCheck]:
    """Per delivered file: readable, required columns, bad-row share; re-deliveries and extras reported."""
    out: list[BatchCheck] = []
    for f in files:
        name, rows = f["source_file"], int(f.get("rows", 0))
        if f["status"] == "duplicate":
            out.append(
                BatchCheck(
                    "duplicate_file",
                    name,
                    0,
                    "a new file",
                    True,
                    WARN,
                    0,
                    f"same bytes as {f['duplicate_of']}; not read again",
                )
            )
            continue
        if f["status"] == "unreadable":
            out.append(
                BatchCheck(
                    "readable_file",
                    name,
                    rows,
                    "a complete file",
                    False,
                    ERROR,
                    rows,
                    f"{f['error']} after {rows} rows",
                )
            )
        if f["status"] == "empty":
            out.append(BatchCheck("empty_file", name, 0, "a header and rows", True, WARN))
            continue
        if f.get("missing_columns"):
            detail = f"missing {f['missing_columns']}; found {f['columns']}" + (
                f"; {f['hint']}" if f.get("hint") else ""
            )
            out.append(
                BatchCheck(
                    "required_columns",
                    name,
                    len(f["missing_columns"]),
                    "0 missing columns",
                    False,
                    ERROR,
                    rows,
                    detail,
                )
            )
        if f.get("extra_columns"):
            out.append(
                BatchCheck(
                    "extra_columns",
                    name,
                    len(f["extra_columns"]),
                    "only contract columns",
                    True,
                    WARN,
                    rows,
                    f"ignored {f['extra_columns']}",
                )
            )
        if f["table"] == "events" and name in counts:
            c = counts[name]
            share = c["bad"] / c["rows"] if c["rows"] else 0.0
            detail = f"{c['bad']} of {c['rows']} rows bad"
            if c.get("outside_partition", 0) > c["rows"] / 2:
                detail += "; most timestamps fall outside its day: a file delivered to the wrong date folder?"
            out.append(
                BatchCheck(
                    "max_bad_row_share",
                    name,
                    round(share, 6),
                    f"<= {vp.max_bad_row_share}",
                    share <= vp.max_bad_row_share,
                    ERROR,
                    c["rows"],
                    detail,
                )
            )
    return out


def side_table_checks(summary: dict[str, dict[str, int]], vp: ValidateParams) -> list[BatchCheck]:
    """A delivered side table with too many malformed rows fails the run like an event file would."""
    out = []
    for table, counts in summary.items():
        rows = counts["rows_in"]
        if not rows:
            continue
        share = counts["rows_quarantined"] / rows
        detail = f"{counts['rows_quarantined']} of {rows} rows bad (data/quarantine/{table}.parquet)"
        passed = share <= vp.max_bad_row_share
        out.append(
            BatchCheck(
                "max_bad_row_share",
                f"{table} side table",
                round(share, 6),
                f"<= {vp.max_bad_row_share}",
                passed,
                ERROR,
                rows,
                detail,
            )
        )
    return out


def day_checks(
    rows_per_day: dict[str, int], days: list[date], run_date: date, vp: ValidateParams
) -> list[BatchCheck]:
    """Empty days, and the run date's volume against the median of the preceding days."""
    out = []
    for day in days:
        n = rows_per_day.get(day.isoformat(), 0)
        if n == 0 and vp.allow_empty_days:
            out.append(BatchCheck("min_rows", f"date={day}", 0, "rows (empty days allowed)", True, WARN))
            continue
        out.append(
            BatchCheck(
                "min_rows", f"date={day}", n, f">= {max(vp.min_rows, 1)}", n >= max(vp.min_rows, 1), ERROR, n
            )
        )
    history = [
        rows_per_day.get((run_date - timedelta(days=k)).isoformat(), 0)
        for k in range(1, vp.volume_window_days + 1)
    ]
    history = [n for n in history if n > 0]
    today = rows_per_day.get(run_date.isoformat(), 0)
    if len(history) >= vp.volume_min_history_days and today > 0:
        base = median(history)
        ratio = today / base
        ok = vp.volume_min_ratio <= ratio <= vp.volume_max_ratio
        detail = f"{today} rows vs median {base:g} of the {len(history)} preceding days"
        out.append(
            BatchCheck(
                "volume_anomaly",
                f"date={run_date}",
                round(ratio, 6),
                f"between {vp.volume_min_ratio} and {vp.volume_max_ratio} x the trailing median",
                ok,
                ERROR,
                today,
                detail,
            )
        )
    else:
        out.append(
            BatchCheck(
                "volume_anomaly",
                f"date={run_date}",
                today,
                f"{vp.volume_min_history_days} preceding days with rows",
                True,
                INFO,
                today,
                f"skipped: {len(history)} preceding days with rows",
            )
        )
    return out


def share_check(name: str, scope: str, new: int, total: int) -> BatchCheck:
    """Reported, never failing: how much of the run date is new (first seen in the window that day)."""
    share = new / total if total else 0.0
    return BatchCheck(
        name,
        scope,
        round(share, 6),
        "reported",
        True,
        INFO,
        total,
        f"{new} of {total} distinct ids first seen that day",
    )

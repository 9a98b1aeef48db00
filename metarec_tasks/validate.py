"""The `validate` stage: Great Expectations decides which rows are fit to learn from.

Contract → suite: the expectations are generated from the log contract and `params.yaml`, never
hand-listed per run. Row-level failures are quarantined with their reasons and the valid rows of the
same file are kept; batch-level failures (missing columns, too many bad rows, an empty day) fail the
stage with a message that names the file, the check and the numbers — after the quality report and
the quarantine are written, so the operator woken at 2 a.m. can see exactly what arrived.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from metarec_tasks.errors import DataQualityError
from metarec_tasks.logs.contract import (
    ITEM_KEY,
    LINEAGE_COLUMNS,
    RATING_EVENT,
    REQUIRED_EVENT_COLUMNS,
    USER_KEY,
)
from metarec_tasks.logs.ingest import window_days
from metarec_tasks.params import Params, ValidateParams
from metarec_tasks.paths import Workspace

log = logging.getLogger(__name__)

PARSED_TIME = "event_time"
DUPLICATE_REASON = "exact_duplicate"
MISSING_COLUMN_REASON = "missing_column"


@dataclass
class QualityReport:
    run_date: str
    rows_in: int
    rows_valid: int
    rows_quarantined: int
    reasons: dict[str, int]
    checks: list[dict[str, Any]]
    partitions: list[dict[str, Any]]
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "passed": self.passed}


@dataclass(frozen=True)
class RowCheck:
    """One GX expectation whose failing rows carry `reason` into the quarantine."""

    reason: str
    expectation: Any


def build_event_suite(vp: ValidateParams, run_date: date) -> list[RowCheck]:
    """The row-level expectation suite, generated from the contract and the thresholds."""
    import great_expectations.expectations as gxe

    latest_allowed = datetime.combine(run_date + timedelta(days=1), time(0), tzinfo=UTC)
    checks = [
        RowCheck(f"null_{name}", gxe.ExpectColumnValuesToNotBeNull(column=name))
        for name in REQUIRED_EVENT_COLUMNS
        if name != "timestamp"
    ]
    checks += [
        RowCheck(f"malformed_{key}", gxe.ExpectColumnValuesToMatchRegex(column=key, regex=vp.id_pattern))
        for key in (USER_KEY, ITEM_KEY)
    ]
    checks += [
        RowCheck(
            "unknown_event_type",
            gxe.ExpectColumnValuesToBeInSet(column="event_type", value_set=list(vp.event_types)),
        ),
        RowCheck(
            "rating_out_of_range",
            gxe.ExpectColumnValuesToBeBetween(
                column="value",
                min_value=vp.rating_min,
                max_value=vp.rating_max,
                row_condition=f'event_type=="{RATING_EVENT}"',
                condition_parser="pandas",
            ),
        ),
        RowCheck(
            "implicit_value_not_one",
            gxe.ExpectColumnValuesToBeInSet(
                column="value",
                value_set=[1.0],
                row_condition=f'event_type!="{RATING_EVENT}"',
                condition_parser="pandas",
            ),
        ),
        RowCheck("unparseable_timestamp", gxe.ExpectColumnValuesToNotBeNull(column=PARSED_TIME)),
        RowCheck(
            "timestamp_in_future",
            gxe.ExpectColumnValuesToBeBetween(column=PARSED_TIME, max_value=pd.Timestamp(latest_allowed)),
        ),
    ]
    return checks


def run_suite(frame: pd.DataFrame, checks: list[RowCheck]) -> list[tuple[RowCheck, Any]]:
    """Validate `frame` with an ephemeral GX context; return each check with its GX result."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas("behavior_logs")
        .add_dataframe_asset("events")
        .add_batch_definition_whole_dataframe("run_window")
    )
    suite = context.suites.add(gx.ExpectationSuite(name="behavior_log_contract"))
    for check in checks:
        suite.add_expectation(check.expectation)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="nightly_events", data=batch, suite=suite)
    )
    result = definition.run(
        batch_parameters={"dataframe": frame}, result_format={"result_format": "COMPLETE"}
    )
    by_id = {check.expectation.id: check for check in checks}
    matched = []
    for res in result.results:
        check = by_id[res.expectation_config.id]
        if res.exception_info and res.exception_info.get("raised_exception"):
            raise DataQualityError(
                f"expectation {res.expectation_config.type} could not run: "
                f"{res.exception_info.get('exception_message')}"
            )
        matched.append((check, res))
    return matched


def row_reasons(frame: pd.DataFrame, vp: ValidateParams, run_date: date) -> pd.Series:
    """A `;`-joined reason for every failing row (empty string for valid rows)."""
    reasons: dict[Any, list[str]] = {}
    for check, res in run_suite(frame, build_event_suite(vp, run_date)):
        for index in res.result.get("unexpected_index_list") or []:
            reasons.setdefault(index, []).append(check.reason)
    # GX's uniqueness expectations flag every copy; we keep the first delivery and quarantine repeats.
    duplicated = frame.duplicated(subset=list(REQUIRED_EVENT_COLUMNS), keep="first")
    for index in frame.index[duplicated]:
        reasons.setdefault(index, []).append(DUPLICATE_REASON)
    out = pd.Series("", index=frame.index, dtype="string")
    for index, names in reasons.items():
        out.at[index] = ";".join(names)
    return out


def run_validate(params: Params, root: Path) -> QualityReport:
    ws = Workspace(root)
    vp = params.validate_
    events = pd.read_parquet(ws.raw / "events.parquet")
    rows_in = len(events)
    failures = _missing_column_failures(events)
    if failures:
        report = QualityReport(
            params.run.run_date.isoformat(),
            rows_in,
            0,
            rows_in,
            {MISSING_COLUMN_REASON: rows_in},
            [],
            [],
            failures,
        )
        _write_outputs(ws, events.iloc[0:0], events.assign(reason=MISSING_COLUMN_REASON), report)
        raise DataQualityError("; ".join(failures))

    frame = events.reset_index(drop=True)
    frame[PARSED_TIME] = pd.to_datetime(frame["timestamp"], errors="coerce", utc=True, format="ISO8601")
    reasons = row_reasons(frame, vp, params.run.run_date)
    bad = reasons != ""
    quarantine = frame[bad].drop(columns=[PARSED_TIME]).assign(reason=reasons[bad])
    valid = frame[~bad].drop(columns=["timestamp"]).rename(columns={PARSED_TIME: "timestamp"})

    partitions = _partition_summary(frame, bad, window_days(params))
    failures = _batch_failures(partitions, vp)
    report = QualityReport(
        run_date=params.run.run_date.isoformat(),
        rows_in=rows_in,
        rows_valid=int((~bad).sum()),
        rows_quarantined=int(bad.sum()),
        reasons=_reason_counts(reasons[bad]),
        checks=_check_summary(reasons, frame),
        partitions=partitions,
        failures=failures,
    )
    users, items = _validated_side_tables(ws, vp)
    _write_outputs(ws, valid, quarantine, report, users, items)
    log.info(
        "validated %d rows: %d kept, %d quarantined %s",
        rows_in,
        report.rows_valid,
        report.rows_quarantined,
        report.reasons,
    )
    if failures:
        raise DataQualityError("; ".join(failures))
    return report


def _missing_column_failures(events: pd.DataFrame) -> list[str]:
    missing = [c for c in REQUIRED_EVENT_COLUMNS if c not in events.columns or events[c].isna().all()]
    if not missing or events.empty:
        return []
    files = sorted(events.get("source_file", pd.Series(["<unknown>"])).dropna().unique())
    return [f"check required_columns failed for {', '.join(map(str, files))}: missing {missing}"]


def _partition_summary(frame: pd.DataFrame, bad: pd.Series, days: list[date]) -> list[dict[str, Any]]:
    rows = []
    keyed = frame.assign(_bad=bad.to_numpy())
    for (day, source), group in keyed.groupby(["partition_date", "source_file"], sort=True):
        rows.append(
            {
                "partition_date": str(day),
                "source_file": str(source),
                "rows": len(group),
                "bad_rows": int(group["_bad"].sum()),
                "bad_share": float(group["_bad"].mean()) if len(group) else 0.0,
            }
        )
    seen = {r["partition_date"] for r in rows}
    for day in days:
        if day.isoformat() not in seen:
            rows.append(
                {
                    "partition_date": day.isoformat(),
                    "source_file": None,
                    "rows": 0,
                    "bad_rows": 0,
                    "bad_share": 0.0,
                }
            )
    return sorted(rows, key=lambda r: (r["partition_date"], r["source_file"] or ""))


def _batch_failures(partitions: list[dict[str, Any]], vp: ValidateParams) -> list[str]:
    failures = []
    for part in partitions:
        where = part["source_file"] or f"partition date={part['partition_date']}"
        if part["rows"] < vp.min_rows:
            failures.append(
                f"check min_rows failed for {where}: observed {part['rows']} rows, expected >= {vp.min_rows}"
            )
        elif part["bad_share"] > vp.max_bad_row_share:
            failures.append(
                f"check max_bad_row_share failed for {where}: {part['bad_rows']} of {part['rows']} rows bad "
                f"(observed {part['bad_share']:.3f}, expected <= {vp.max_bad_row_share})"
            )
    return failures


def _reason_counts(reasons: pd.Series) -> dict[str, int]:
    counts: dict[str, int] = {}
    for joined in reasons:
        for reason in str(joined).split(";"):
            counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items()))


def _check_summary(reasons: pd.Series, frame: pd.DataFrame) -> list[dict[str, Any]]:
    counts = _reason_counts(reasons[reasons != ""])
    return [{"check": name, "unexpected_count": n, "rows": len(frame)} for name, n in counts.items()]


def _validated_side_tables(ws: Workspace, vp: ValidateParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Side tables keep only well-formed, unique ids; features stay as delivered strings."""
    out = []
    for name, key in (("users", USER_KEY), ("items", ITEM_KEY)):
        table = pd.read_parquet(ws.raw / f"{name}.parquet").astype("string")
        ok = table[key].notna() & table[key].str.fullmatch(vp.id_pattern).fillna(False)
        dropped = int((~ok).sum())
        if dropped:
            log.warning("dropped %d %s side-table rows with malformed ids", dropped, name)
        out.append(table[ok].drop_duplicates(subset=[key], keep="last").reset_index(drop=True))
    return out[0], out[1]


def _write_outputs(
    ws: Workspace,
    valid: pd.DataFrame,
    quarantine: pd.DataFrame,
    report: QualityReport,
    users: pd.DataFrame | None = None,
    items: pd.DataFrame | None = None,
) -> None:
    for folder in (ws.validated, ws.quarantine, ws.reports):
        folder.mkdir(parents=True, exist_ok=True)
    valid.to_parquet(ws.validated / "events.parquet", index=False)
    if users is not None and items is not None:
        users.to_parquet(ws.validated / "users.parquet", index=False)
        items.to_parquet(ws.validated / "items.parquet", index=False)
    keep = [c for c in (*REQUIRED_EVENT_COLUMNS, *LINEAGE_COLUMNS, "reason") if c in quarantine]
    quarantine[keep].astype("string").to_parquet(ws.quarantine / "events.parquet", index=False)
    ws.data_quality_report.write_text(json.dumps(report.to_json(), indent=2, default=str))

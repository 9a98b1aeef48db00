"""Great Expectations suites generated from the contract, and one GX session per validate run.

Contract → suite: each contract column's *kind* decides its expectations; thresholds come from
`params.yaml`. Every expectation carries the `reason` its failing rows are quarantined with. One
ephemeral context serves the whole run: the suites are built once and validated chunk by chunk, and a
checkpoint action renders every chunk's result into the HTML data docs under `reports/data_docs/`.
GX is imported inside functions only: it takes seconds to import.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metarec_tasks.errors import DataQualityError
from metarec_tasks.logs.contract import (
    EVENT_COLUMNS,
    FLAG_VALUES,
    IMPLICIT_VALUE,
    RATING_EVENT,
    Column,
)
from metarec_tasks.logs.landing import READ_ERROR
from metarec_tasks.params import ValidateParams
from metarec_tasks.quality import rows

log = logging.getLogger(__name__)

DOCS_SITE = "metarec"
# A timestamp with an explicit offset other than UTC (+00:00, +0000, -00:00); RE2-compatible.
NON_UTC_OFFSET = r"[+-](?:0[1-9]|1\d|2[0-3]):?\d\d$|[+-]00:?(?:0[1-9]|[1-5]\d)$"


@dataclass(frozen=True)
class RowCheck:
    """One GX expectation whose failing rows carry `reason` into the quarantine."""

    reason: str
    expectation: Any


def column_checks(column: Column, vp: ValidateParams, now: datetime) -> list[RowCheck]:
    """The expectations one contract column implies, by its kind."""
    import great_expectations.expectations as gxe

    name = column.name
    if column.kind == "id":
        return [
            RowCheck(f"null_{name}", gxe.ExpectColumnValuesToNotBeNull(column=name)),
            RowCheck(
                f"malformed_{name}", gxe.ExpectColumnValuesToMatchRegex(column=name, regex=vp.id_pattern)
            ),
        ]
    if column.kind == "event_type":
        return [
            RowCheck(f"null_{name}", gxe.ExpectColumnValuesToNotBeNull(column=name)),
            RowCheck(
                "unknown_event_type",
                gxe.ExpectColumnValuesToBeInSet(column=name, value_set=list(vp.event_types)),
            ),
        ]
    if column.kind == "value":
        return [
            RowCheck(f"null_{name}", gxe.ExpectColumnValuesToNotBeNull(column=name)),
            RowCheck(
                "rating_out_of_range",
                gxe.ExpectColumnValuesToBeBetween(
                    column=name,
                    min_value=vp.rating_min,
                    max_value=vp.rating_max,
                    row_condition=f'event_type=="{RATING_EVENT}"',
                    condition_parser="pandas",
                ),
            ),
            RowCheck(
                "implicit_value_not_one",
                gxe.ExpectColumnValuesToBeInSet(
                    column=name,
                    value_set=[IMPLICIT_VALUE],
                    row_condition=f'event_type!="{RATING_EVENT}"',
                    condition_parser="pandas",
                ),
            ),
        ]
    if column.kind == "flag":
        return [
            RowCheck(f"bad_{name}", gxe.ExpectColumnValuesToBeInSet(column=name, value_set=list(FLAG_VALUES)))
        ]
    if column.kind == "timestamp":
        low, high = rows.partition_lag_bounds(vp.max_lateness_hours)
        return [
            RowCheck("unparseable_timestamp", gxe.ExpectColumnValuesToNotBeNull(column=rows.EVENT_TIME)),
            RowCheck(
                "timestamp_not_utc", gxe.ExpectColumnValuesToNotMatchRegex(column=name, regex=NON_UTC_OFFSET)
            ),
            RowCheck(
                "timestamp_outside_partition",
                gxe.ExpectColumnValuesToBeBetween(
                    column=rows.PARTITION_LAG, min_value=low, max_value=high, strict_min=True
                ),
            ),
            RowCheck(
                "timestamp_in_future",
                gxe.ExpectColumnValuesToBeBetween(column=rows.EVENT_TIME, max_value=rows.latest_allowed(now)),
            ),
        ]
    return []


def build_event_suite(
    vp: ValidateParams, now: datetime | None = None, side_tables: tuple[str, ...] = ()
) -> list[RowCheck]:
    """The row-level suite for events: the contract's columns, then the row facts of `quality.rows`."""
    import great_expectations.expectations as gxe

    now = now or datetime.now(UTC)
    checks = [check for column in EVENT_COLUMNS for check in column_checks(column, vp, now)]
    checks.append(RowCheck("unreadable_row", gxe.ExpectColumnValuesToBeNull(column=READ_ERROR)))
    checks.append(
        RowCheck("exact_duplicate", gxe.ExpectColumnValuesToBeInSet(column=rows.REPEAT, value_set=[False]))
    )
    for table in side_tables:
        key = "user_id" if table == "users" else "item_id"
        checks.append(
            RowCheck(
                f"unknown_{key}", gxe.ExpectColumnValuesToBeInSet(column=rows.KNOWN[table], value_set=[True])
            )
        )
    return checks


def build_side_suite(columns: tuple[Column, ...], vp: ValidateParams) -> list[RowCheck]:
    now = datetime.now(UTC)
    return [check for column in columns for check in column_checks(column, vp, now)]


class GxSession:
    """One ephemeral GX context for a whole validate run; each `validate` call is one docs page."""

    def __init__(self, docs_dir: Path | None):
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self._gx = gx
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.docs_dir = docs_dir
        if docs_dir is not None:
            self.context.add_data_docs_site(
                site_name=DOCS_SITE,
                site_config={
                    "class_name": "SiteBuilder",
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                    "store_backend": {
                        "class_name": "TupleFilesystemStoreBackend",
                        "base_directory": str(docs_dir.resolve()),
                    },
                },
            )
        self.source = self.context.data_sources.add_pandas("behavior_logs")
        self._checkpoints: dict[str, tuple[Any, dict[str, RowCheck]]] = {}
        self.success: dict[str, bool] = {}  # per suite: did every validated chunk pass (what Data Docs show)

    def register(self, name: str, checks: list[RowCheck], max_bad_share: float) -> None:
        """A suite, its asset and a checkpoint that renders data docs after each run.

        Each row-level expectation succeeds while at most `max_bad_share` of the rows fail it (GX's
        `mostly`, from `validate.max_bad_row_share`), so Data Docs of a normal night — a few rows
        quarantined — read "Succeeded", and a bad night fails there as it fails the run. The failing
        rows are quarantined either way."""
        gx = self._gx
        for check in checks:
            check.expectation.mostly = 1.0 - max_bad_share
        batch = self.source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(f"{name}_chunk")
        suite = self.context.suites.add(gx.ExpectationSuite(name=f"{name}_contract"))
        for check in checks:
            suite.add_expectation(check.expectation)
        definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{name}_validation", data=batch, suite=suite)
        )
        actions = []
        if self.docs_dir is not None:
            actions.append(gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=[DOCS_SITE]))
        checkpoint = self.context.checkpoints.add(
            gx.Checkpoint(
                name=f"{name}_checkpoint",
                validation_definitions=[definition],
                actions=actions,
                result_format={"result_format": "COMPLETE", "include_unexpected_rows": False},
            )
        )
        self._checkpoints[name] = (checkpoint, {c.expectation.id: c for c in checks})

    def failing_rows(self, name: str, frame: pd.DataFrame, run_name: str) -> dict[str, np.ndarray]:
        """Validate `frame` (a RangeIndex is required); {reason: positions of the failing rows}."""
        from great_expectations.core.run_identifier import RunIdentifier

        checkpoint, by_id = self._checkpoints[name]
        result = checkpoint.run(
            batch_parameters={"dataframe": frame}, run_id=RunIdentifier(run_name=run_name)
        )
        failing: dict[str, np.ndarray] = {}
        self.success[name] = self.success.get(name, True) and bool(result.success)
        for validation in result.run_results.values():
            for res in validation.results:
                check = by_id[res.expectation_config.id]
                if res.exception_info and res.exception_info.get("raised_exception"):
                    raise DataQualityError(
                        f"expectation {res.expectation_config.type} on {name} could not run: "
                        f"{res.exception_info.get('exception_message')}"
                    )
                index = res.result.get("unexpected_index_list") or []
                if index:
                    failing[check.reason] = np.asarray(index, dtype=np.int64)
        return failing


def reasons_for(n_rows: int, failing: dict[str, np.ndarray]) -> pd.Series:
    """A `;`-joined reason per row (empty for valid rows), reasons in suite order."""
    out = np.full(n_rows, "", dtype=object)
    for reason, positions in failing.items():
        current = out[positions]
        out[positions] = np.where(current == "", reason, current + ";" + reason)
    return pd.Series(out, dtype="string")

import json

import pandas as pd
import pytest

from metarec_tasks.errors import DataQualityError
from metarec_tasks.logs.contract import REQUIRED_EVENT_COLUMNS
from metarec_tasks.paths import Workspace
from metarec_tasks.quality.suite import build_event_suite
from metarec_tasks.stages import ingest, validate

PLANTED = {
    "null_user_id": {"user_id": None},
    "malformed_item_id": {"item_id": "x'; DROP TABLE runs;--"},
    "unknown_event_type": {"event_type": "hover"},
    "rating_out_of_range": {"value": 7.0},
    "null_value": {"value": float("nan")},
    "unparseable_timestamp": {"timestamp": "last tuesday"},
    "timestamp_in_future": {"timestamp": "2099-01-01T00:00:00Z"},
    "timestamp_not_utc": {"timestamp": "2026-10-20T10:00:00+02:00"},
}


def _raw(tmp_path, params):
    clean = params.model_copy(
        update={"synthetic": params.synthetic.model_copy(update={"bad_row_share": 0.0})}
    )
    ingest.run(clean, Workspace(tmp_path))
    return pd.read_parquet(Workspace(tmp_path).raw / "events.parquet")


def _plant(events: pd.DataFrame) -> pd.DataFrame:
    rows = []
    ratings = events[events["event_type"] == "rating"]  # planted values must break the rating rule
    for i, (reason, change) in enumerate(PLANTED.items()):
        row = ratings.iloc[i].to_dict() | change | {"source_line": 10_000 + i}
        rows.append(row | {"_expected": reason})
    dup = events.iloc[[0]].assign(_expected="exact_duplicate")
    return pd.concat([events.assign(_expected=""), pd.DataFrame(rows), dup], ignore_index=True)


def test_suite_is_generated_from_the_contract(tiny_params):
    checks = build_event_suite(tiny_params.validate_, side_tables=("users",))
    reasons = {c.reason for c in checks}
    for column in REQUIRED_EVENT_COLUMNS:
        if column != "timestamp":
            assert f"null_{column}" in reasons
    assert {"unknown_event_type", "rating_out_of_range", "unparseable_timestamp"} <= reasons
    assert {
        "timestamp_not_utc",
        "timestamp_outside_partition",
        "exact_duplicate",
        "unknown_user_id",
    } <= reasons
    assert "unknown_item_id" not in reasons  # referential integrity only for delivered side tables
    by_reason = {c.reason: c.expectation for c in checks}
    assert by_reason["malformed_user_id"].regex == tiny_params.validate_.id_pattern
    assert set(by_reason["unknown_event_type"].value_set) == set(tiny_params.validate_.event_types)


def test_planted_bad_rows_are_quarantined_and_good_rows_kept(tmp_path, tiny_params):
    events = _raw(tmp_path, tiny_params)
    planted = _plant(events)
    planted.drop(columns="_expected").to_parquet(Workspace(tmp_path).raw / "events.parquet")

    report = validate.run(tiny_params, Workspace(tmp_path))

    ws = Workspace(tmp_path)
    valid = pd.read_parquet(ws.validated / "events.parquet")
    quarantine = pd.read_parquet(ws.quarantine / "events.parquet")
    assert len(valid) == len(events) and report.rows_valid == len(events)
    assert len(quarantine) == len(PLANTED) + 1
    expected = planted.loc[planted["_expected"] != "", "_expected"].tolist()
    for reason in expected:
        assert quarantine["reason"].str.contains(reason).any(), reason
    assert set(quarantine["source_file"].dropna()) <= set(events["source_file"])
    assert str(valid["timestamp"].dtype).startswith("datetime64")
    saved = json.loads(ws.data_quality_report.read_text())
    assert saved["rows_quarantined"] == len(PLANTED) + 1 and saved["passed"]
    # a few bad rows, all quarantined: the Data Docs of this normal night read "Succeeded"
    assert saved["gx_success"] == {"users": True, "items": True, "events": True}


def test_too_many_bad_rows_fail_with_file_check_and_numbers(tmp_path, tiny_params):
    events = _raw(tmp_path, tiny_params)
    day = events["partition_date"].iloc[-1]
    broken = events.copy()
    broken.loc[broken["partition_date"] == day, "event_type"] = "hover"
    broken.to_parquet(Workspace(tmp_path).raw / "events.parquet")

    with pytest.raises(DataQualityError) as err:
        validate.run(tiny_params, Workspace(tmp_path))
    message = str(err.value)
    assert (
        "max_bad_row_share" in message
        and f"date={day}" in message
        and "observed 1, expected <= 0.05" in message
    )
    # The evidence is written before the stage fails — Data Docs fail too.
    quarantine = pd.read_parquet(Workspace(tmp_path).quarantine / "events.parquet")
    assert (quarantine["partition_date"] == day).all() and len(quarantine) > 0
    assert json.loads(Workspace(tmp_path).data_quality_report.read_text())["gx_success"]["events"] is False


def test_missing_column_fails_the_batch(tmp_path, tiny_params):
    events = _raw(tmp_path, tiny_params).drop(columns=["value"])
    events.to_parquet(Workspace(tmp_path).raw / "events.parquet")
    with pytest.raises(DataQualityError, match=r"required_columns failed for events.parquet.*'value'"):
        validate.run(tiny_params, Workspace(tmp_path))


def test_empty_day_fails(tmp_path, tiny_params):
    events = _raw(tmp_path, tiny_params)
    day = events["partition_date"].iloc[0]
    events[events["partition_date"] != day].to_parquet(Workspace(tmp_path).raw / "events.parquet")
    with pytest.raises(DataQualityError, match=f"min_rows failed for date={day}: observed 0"):
        validate.run(tiny_params, Workspace(tmp_path))

"""Bad input, case by case: each has its documented outcome (README, "Bad input") and valid rows survive.

Every case adds files to the run date's landing partition on top of a clean window, then runs the
real ingest and validate. A case either passes with the bad rows quarantined (reason, file, line), or
fails the batch with a DataQualityError that names the file, the check and the numbers, which the CLI
turns into exit code 2 without a traceback. In both, the clean rows are in `data/validated/`.
"""

import gzip
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

import pandas as pd
import pytest

from metarec_tasks.errors import DataQualityError
from metarec_tasks.logs.landing import partition_dir
from tests.landing_util import REPO, clean_landing, good_rows, ingest_and_validate, landing_params

GOOD = 100  # valid rows in each added file: a few bad ones stay under max_bad_row_share (5%)


@dataclass(frozen=True)
class Case:
    write: object  # (folder, good rows) -> None
    passes: bool
    reasons: set[str] = field(default_factory=set)  # quarantine reasons the case must produce
    check: str = ""  # the batch check named in the failure message (or reported as a warning)
    survivors: int = GOOD  # the case's own rows that must reach data/validated


def _csv(frame, folder, name="events_new.csv", **kw):
    frame.to_csv(folder / name, index=False, **kw)


def _append_rows(good, **columns):
    n = len(next(iter(columns.values())))
    extra = good.iloc[:n].copy()
    for name, values in columns.items():
        extra[name] = values
    extra["timestamp"] = [f"{good['timestamp'].iloc[0][:10]}T23:59:{s:02d}Z" for s in range(n)]
    if "timestamp" in columns:
        extra["timestamp"] = columns["timestamp"]
    return pd.concat([good, extra], ignore_index=True)


def truncated_csv(folder, good):
    (folder / "events_new.csv").write_text(good.to_csv(index=False) + "u0000001,i000")


def truncated_jsonl(folder, good):
    text = good.to_json(orient="records", lines=True)
    (folder / "events_new.jsonl").write_text(text + '{"user_id": "u1", "item_')


def truncated_gzip(folder, good):
    data = gzip.compress(good.to_csv(index=False).encode())
    (folder / "events_new.csv.gz").write_bytes(data[: len(data) // 2])


def non_utf8(folder, good):
    row = b"u\xff\xfe01,i00001,click,1.0,2026-10-20T13:00:00Z\n"
    (folder / "events_new.csv").write_bytes(good.to_csv(index=False).encode() + row)


def bad_values(folder, good):
    frame = _append_rows(good, event_type=["rating"] * 5, value=["-1", "nan", "inf", "1e308", "-inf"])
    _csv(frame, folder)


def hostile_ids(folder, good):
    ids = ['u"1', "u;1", "u\n1", "1'; DROP TABLE runs;--"]
    _csv(_append_rows(good, user_id=ids), folder)


def other_timestamps(folder, good):
    stamps = [
        "2026-10-20T10:00:00+02:00",  # another zone: timestamp_not_utc
        "20/10/2026 10:00",  # another format: unparseable
        "1792500000",  # epoch seconds: unparseable
        "2099-01-01T00:00:00Z",  # future (and outside the partition)
        "2026-10-20 10:00:00",  # no offset: UTC by contract, kept
        "2026-10-20T10:00:00.5+00:00",  # explicit UTC with fractions: kept
    ]
    _csv(_append_rows(good, timestamp=stamps), folder)


def wrong_day(folder, good):
    good.assign(timestamp=good["timestamp"].str.replace("2026-10-20", "2026-10-15"))
    _csv(good.assign(timestamp=good["timestamp"].str.replace("2026-10-20", "2026-10-15")), folder)


CASES = {
    "truncated_csv": Case(truncated_csv, True, {"null_event_type", "null_value", "unparseable_timestamp"}),
    "truncated_jsonl": Case(truncated_jsonl, True, {"unreadable_row"}),
    "truncated_gzip": Case(truncated_gzip, False, check="readable_file", survivors=0),
    "wrong_delimiter": Case(
        lambda f, g: _csv(g, f, sep=";"), False, {"null_value"}, "required_columns", survivors=0
    ),
    "missing_column": Case(
        lambda f, g: _csv(g.drop(columns="value"), f), False, {"null_value"}, "required_columns", 0
    ),
    "extra_columns": Case(
        lambda f, g: _csv(g.assign(session="s1", source_file="spoofed"), f), True, check="extra_columns"
    ),
    "non_utf8_bytes": Case(non_utf8, True, {"malformed_user_id", "unknown_user_id"}),
    "empty_file": Case(
        lambda f, g: (f / "events_new.csv").write_bytes(b""), True, check="empty_file", survivors=0
    ),
    "header_only": Case(lambda f, g: _csv(g.iloc[:0], f), True, survivors=0),
    "bad_values": Case(bad_values, True, {"rating_out_of_range", "null_value"}),
    "hostile_ids": Case(hostile_ids, True, {"malformed_user_id"}),
    "other_timestamps": Case(
        other_timestamps,
        True,
        {"timestamp_not_utc", "unparseable_timestamp", "timestamp_in_future", "timestamp_outside_partition"},
        survivors=GOOD + 2,
    ),
    "same_file_twice": Case(
        lambda f, g: shutil.copy(f / "events.csv", f / "events_copy.csv"),
        True,
        check="duplicate_file",
        survivors=0,
    ),
    "wrong_day": Case(wrong_day, False, {"timestamp_outside_partition"}, "max_bad_row_share", survivors=0),
}


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A clean landing window, validated once: the rows every case must keep."""
    root = tmp_path_factory.mktemp("clean")
    params = landing_params(root)
    clean_landing(root, params)
    report, valid, _ = ingest_and_validate(root, params)
    assert report.passed, report
    return root, len(valid)


def _copy(clean_root, tmp_path):
    shutil.copytree(clean_root / "landing", tmp_path / "landing")
    params = landing_params(tmp_path)
    return params, partition_dir(tmp_path / "landing", params.run.run_date)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_outcome(name, clean, tmp_path):
    case = CASES[name]
    params, folder = _copy(clean[0], tmp_path)
    good = good_rows(folder, GOOD, hour=15)
    case.write(folder, good)

    outcome, valid, quarantine = ingest_and_validate(tmp_path, params)

    if case.passes:
        assert not isinstance(outcome, DataQualityError), outcome
        checks = {c["check"] for c in outcome.checks if c["severity"] != "info"}
        assert not case.check or case.check in checks
    else:
        assert isinstance(outcome, DataQualityError)
        assert f"check {case.check} failed for date=2026-10-20/events_new" in str(outcome)
        assert "observed" in str(outcome) and "expected" in str(outcome)
    # Valid rows survive: the clean window's rows and the case's own good rows.
    new = valid["source_file"].str.startswith("date=2026-10-20/events_new")
    assert (~new).sum() == clean[1]
    assert new.sum() == case.survivors
    found = {r for joined in quarantine["reason"] for r in joined.split(";")}
    assert case.reasons <= found, found
    assert quarantine["source_file"].notna().all() and (quarantine["source_line"].astype(int) >= 1).all()


def test_hostile_ids_are_quarantined_verbatim(clean, tmp_path):
    params, folder = _copy(clean[0], tmp_path)
    hostile_ids(folder, good_rows(folder, GOOD))
    _, _, quarantine = ingest_and_validate(tmp_path, params)
    assert set(quarantine["user_id"]) == {'u"1', "u;1", "u\n1", "1'; DROP TABLE runs;--"}


def test_extra_columns_never_override_lineage(clean, tmp_path):
    params, folder = _copy(clean[0], tmp_path)
    _csv(good_rows(folder, GOOD).assign(source_file="spoofed", source_line="0"), folder)
    _, valid, _ = ingest_and_validate(tmp_path, params)
    assert "spoofed" not in set(valid["source_file"]) and "session" not in valid


@pytest.mark.slow
def test_cli_maps_a_batch_failure_to_exit_code_2_without_traceback(clean, tmp_path):
    _, folder = _copy(clean[0], tmp_path)
    _csv(good_rows(folder, GOOD), folder, sep=";")
    env = {"PYTHONPATH": str(REPO), "PATH": f"{sys.prefix}/bin"}
    metarec = [sys.executable, "-m", "metarec_tasks.orchestration.cli", "--root", str(tmp_path)]
    assert subprocess.run([*metarec, "ingest"], env=env, capture_output=True).returncode == 0
    result = subprocess.run([*metarec, "validate"], env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "required_columns failed for date=2026-10-20/events_new.csv" in result.stderr
    assert "';'-delimited" in result.stderr

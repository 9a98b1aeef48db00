"""The landing source: formats, chunking, idempotent reruns, late and re-delivered files."""

import hashlib
import shutil

import pandas as pd
import pytest

from metarec_tasks.logs import landing
from metarec_tasks.logs.synth_landing import write_synthetic_landing, write_table
from metarec_tasks.paths import Workspace
from metarec_tasks.stages import ingest
from tests.landing_util import clean_landing, good_rows, ingest_and_validate, landing_params

CONTRACT = ["user_id", "item_id", "event_type", "value", "timestamp"]


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("fmt", ["csv.gz", "jsonl", "parquet"])
def test_every_format_reads_like_csv(tmp_path, fmt):
    params = landing_params(tmp_path / "csv")
    write_synthetic_landing(params, tmp_path / "csv" / "landing", 2, "csv")
    write_synthetic_landing(params, tmp_path / fmt / "landing", 2, fmt)
    ingest.run(params, Workspace(tmp_path / "csv"))
    ingest.run(params, Workspace(tmp_path / fmt))
    a = pd.read_parquet(Workspace(tmp_path / "csv").raw / "events.parquet")
    b = pd.read_parquet(Workspace(tmp_path / fmt).raw / "events.parquet")
    assert len(a) > 100
    # Parquet keeps float values as numbers; CSV/JSONL text must parse to the same values.
    pd.testing.assert_frame_equal(a[CONTRACT], b[CONTRACT])


def test_small_chunks_give_the_same_result(tmp_path):
    """Chunked reading and validation (300 rows at a time) match one big chunk, duplicates included."""
    results = {}
    for chunk in (300, 1_000_000):
        root = tmp_path / str(chunk)
        params = landing_params(root, **{"source.read_chunk_rows": chunk, "validate.chunk_rows": chunk})
        folder = clean_landing(root, params)
        extra = good_rows(folder, 150)
        pd.concat([extra, extra.iloc[:5]]).to_csv(folder / "events_b.csv", index=False)
        report, valid, quarantine = ingest_and_validate(root, params)
        assert report.passed
        results[chunk] = (valid, quarantine, report.reasons)
    small, big = results[300], results[1_000_000]
    pd.testing.assert_frame_equal(small[0], big[0])
    pd.testing.assert_frame_equal(small[1], big[1])
    assert small[2] == big[2] == {"exact_duplicate": 5}


def test_rerun_with_same_files_changes_nothing_and_late_file_adds_only_its_rows(tmp_path):
    params = landing_params(tmp_path)
    folder = clean_landing(tmp_path, params)
    ws = Workspace(tmp_path)
    ingest.run(params, Workspace(tmp_path))
    first = _md5(ws.raw / "events.parquet"), _md5(ws.raw_manifest)
    ingest.run(params, Workspace(tmp_path))
    assert (_md5(ws.raw / "events.parquet"), _md5(ws.raw_manifest)) == first
    write_synthetic_landing(params, tmp_path / "landing", params.source.history_days)  # same bytes again
    ingest.run(params, Workspace(tmp_path))
    assert (_md5(ws.raw / "events.parquet"), _md5(ws.raw_manifest)) == first

    before = pd.read_parquet(ws.raw / "events.parquet")
    good_rows(folder, 40).to_csv(folder / "events_late.csv", index=False)
    report, valid, _ = ingest_and_validate(tmp_path, params)
    after = pd.read_parquet(ws.raw / "events.parquet")
    assert len(after) == len(before) + 40
    assert not after.duplicated(["source_file", "source_line"]).any()
    taken = after[after["source_file"] != "date=2026-10-20/events_late.csv"].reset_index(drop=True)
    pd.testing.assert_frame_equal(taken, before)  # rows already taken keep content and identity
    assert report.passed and len(valid) == len(after)


def test_redelivered_file_is_read_once(tmp_path):
    params = landing_params(tmp_path)
    folder = clean_landing(tmp_path, params)
    shutil.copy(folder / "events.csv", folder / "events_again.csv")
    yesterday = folder.parent / "date=2026-10-19"
    shutil.copy(yesterday / "events.csv", folder / "resent.csv")  # yesterday's file, sent again today
    report, valid, quarantine = ingest_and_validate(tmp_path, params)
    assert report.passed and quarantine.empty
    assert set(valid["source_file"]) == {f"date=2026-10-{d}/events.csv" for d in (18, 19, 20)}
    dupes = [c for c in report.checks if c["check"] == "duplicate_file"]
    assert {c["scope"] for c in dupes} == {"date=2026-10-20/events_again.csv", "date=2026-10-20/resent.csv"}


def test_ids_stay_text_so_007_and_7_never_collide(tmp_path):
    """A side table delivers "007" (CSV text) and 7 (a JSON number): two different users."""
    params = landing_params(tmp_path)
    folder = clean_landing(tmp_path, params)
    users = pd.read_csv(folder / "users.csv", dtype=str)
    template = users.iloc[0].to_dict()
    write_table(pd.DataFrame([template | {"user_id": "007", "gender": "F"}]), folder / "users_extra.csv")
    (folder / "users_more.jsonl").write_text(
        '{"user_id": 7, "age_bucket": "25-34", "gender": "M", "occupation": "artist"}\n'
    )
    events = good_rows(folder, 40)
    events.loc[0, "user_id"], events.loc[1, "user_id"] = "007", "7"
    events.to_csv(folder / "events_b.csv", index=False)
    report, valid, quarantine = ingest_and_validate(tmp_path, params)
    assert report.passed and quarantine.empty
    validated_users = pd.read_parquet(Workspace(tmp_path).validated / "users.parquet").set_index("user_id")
    assert validated_users.loc["007", "gender"] == "F" and validated_users.loc["7", "gender"] == "M"
    assert {"007", "7"} <= set(valid["user_id"])


def test_manifest_records_each_file(tmp_path):
    params = landing_params(tmp_path)
    clean_landing(tmp_path, params)
    summary = ingest.run(params, Workspace(tmp_path))
    names = {f["source_file"] for f in summary.files}
    assert "date=2026-10-20/users.csv" in names and len(names) == 3 * 3
    assert all(len(f["sha256"]) == 64 and f["status"] == "read" for f in summary.files)
    assert landing.table_of(tmp_path / "items_2.csv") == "items"

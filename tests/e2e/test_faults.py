"""Fault injection: each failure an operator met (the issue "Reliability"), reproduced with real
processes, real files and a real PostgreSQL on 127.0.0.1, and the outcome that must hold now.

| case | fault | outcome |
| 1 | a rerun of a published day fails the gate | the day's rows stay; the rejection is an attempt |
| 2 | a manual trigger with settings | the next run starts from the committed configuration |
| 3 | the warehouse is silent, or refuses | one line, exit 5, bounded by publish.connect_timeout_s |
| 4 | two stages at once; a SIGKILL mid-write | one waits or fails clearly; no torn output |
| 5 | a landing file cannot be read | a failed `readable_file` check for that file; the rest validated |
| 6 | booleans, cut rows, odd entries, bad side tables, .inf, an old logical date | refused |
| 7 | bad configuration on the command line | one line naming the key, exit 2, no traceback |
| 8 | the demo and real data | separate warehouses, champions of the same source only |
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from metarec_tasks.errors import EXIT_BUSY, EXIT_CONFIG, EXIT_WAREHOUSE
from metarec_tasks.logs import landing
from metarec_tasks.orchestration.airflow_tasks import prepare_run
from metarec_tasks.orchestration.dag_test_log import check
from metarec_tasks.params import load_params, update_params_file
from metarec_tasks.paths import Workspace
from metarec_tasks.publishing.warehouse import connect, count_recommendations, open_warehouse, run_row
from tests.helpers import BIN, REPO, TINY, empty_warehouse, free_port, make_workspace, publish_inputs
from tests.landing_util import clean_landing, good_rows, ingest_and_validate, landing_params

PASSED = {"passed": True, "reason": "model beats the baselines"}
FAILED = {"passed": False, "reason": "model does not beat the baselines"}
METRICS = {"model": {"catalog_recall@20": 0.4}}


def metarec(root: Path, *args: str, env: dict | None = None, timeout: float = 120):
    command = [str(BIN / "metarec"), "--root", str(root), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def assert_one_line(result, code: int, *needles: str) -> None:
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert result.returncode == code, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and len(errors) == 1, result.stderr[-2000:]
    for needle in needles:
        assert needle in errors[0], errors[0]


def publish_workspace(root: Path, **overrides) -> Path:
    root.mkdir(parents=True)
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    update_params_file(
        root / "params.yaml", {**TINY, "evaluate.primary_metric": "catalog_recall@20", **overrides}
    )
    return root


# --- 1 ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_1_a_rejected_rerun_keeps_the_published_day(backend, tmp_path, request):
    root = publish_workspace(tmp_path / "ws")
    env = dict(os.environ)
    if backend == "postgresql":
        env["METAREC_WAREHOUSE_URL"] = request.getfixturevalue("postgres_url")
        empty_warehouse(env["METAREC_WAREHOUSE_URL"])
    ws = Workspace(root)
    publish_inputs(ws, METRICS, PASSED, selected=0.40)
    assert metarec(root, "publish", env=env).returncode == 0
    publish_inputs(ws, METRICS, FAILED, selected=0.10)  # the rerun's challenger is much worse
    rerun = metarec(root, "publish", env=env)
    assert rerun.returncode == 0, rerun.stderr
    receipt = json.loads(ws.publish_receipt.read_text())
    assert receipt["status"] == "kept" and receipt["recommendation_rows"] == 2
    params = load_params(root / "params.yaml")
    engine = (
        connect(env["METAREC_WAREHOUSE_URL"]) if backend == "postgresql" else open_warehouse(params, root)
    )
    assert count_recommendations(engine, params.run.run_id) == 2
    assert run_row(engine, params.run.run_id)["status"] == "published"
    engine.dispose()
    if backend == "postgresql":
        empty_warehouse(env["METAREC_WAREHOUSE_URL"])


# --- 2 ----------------------------------------------------------------------------------------------
def test_2_a_manual_trigger_changes_only_its_own_run(tmp_path):
    root = make_workspace(tmp_path / "ws")
    committed = load_params(root / "params.yaml")
    prepare_run(root, {"meta_epochs": 1, "source": "movielens", "run_date": "2026-10-01"}, None)
    triggered = load_params(root / "params.yaml")
    assert (triggered.meta.epochs, triggered.source.kind) == (1, "movielens")
    scheduled = prepare_run(root, {}, pd.Timestamp("2026-10-21T02:00:00Z").to_pydatetime())
    after = load_params(root / "params.yaml")
    assert (after.meta.epochs, after.source.kind) == (committed.meta.epochs, committed.source.kind)
    assert scheduled["run_id"] == "nightly-2026-10-20"
    # what `make run` reads as the next run's date is the committed one, not the trigger's
    prepare_run(root, {"run_date": "2026-10-01"}, None)
    assert metarec(root, "param", "--committed", "run.run_date").stdout.strip() == "2026-10-20"


# --- 3 ----------------------------------------------------------------------------------------------
@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held, stop = [], threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_3_a_silent_or_refusing_warehouse_is_one_line_and_exit_5(tmp_path, silent_server):
    root = publish_workspace(tmp_path / "ws", **{"publish.connect_timeout_s": 2})
    publish_inputs(Workspace(root), METRICS, PASSED)
    for port in (silent_server, free_port()):
        env = {**os.environ, "METAREC_WAREHOUSE_URL": f"postgresql+psycopg2://metarec@127.0.0.1:{port}/x"}
        started = time.monotonic()
        result = metarec(root, "publish", env=env, timeout=60)
        assert_one_line(result, EXIT_WAREHOUSE, "could not", f"127.0.0.1:{port}")
        assert time.monotonic() - started < 60  # bounded by the connect timeout, not hanging


# --- 4 ----------------------------------------------------------------------------------------------
def test_4_a_second_stage_waits_for_the_first_or_fails_clearly(tmp_path):
    root = make_workspace(tmp_path / "ws")
    ws = Workspace(root)
    ws.lock_file.parent.mkdir(parents=True, exist_ok=True)
    with ws.lock_file.open("w") as held:  # another stage holds the workspace
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("stage train (pid 1)")
        held.flush()
        busy = metarec(root, "--set", "run.lock_timeout_s=0.5", "ingest")
    assert_one_line(busy, EXIT_BUSY, "is busy", "stage train (pid 1)", "run.lock_timeout_s")
    assert not ws.raw_events.exists()
    # two ingests started together: one waits for the other, both succeed, the output is whole
    command = [str(BIN / "metarec"), "--root", str(root), "ingest"]
    both = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[1] for p in both]
    assert [p.returncode for p in both] == [0, 0], outputs
    assert len(pd.read_parquet(ws.raw_events)) > 0
    assert any("waiting for the workspace" in out for out in outputs)


@pytest.mark.slow
def test_4_a_sigkill_mid_write_leaves_the_previous_output_whole(tmp_path):
    root = make_workspace(tmp_path / "ws", {"synthetic.initial_users": 4000, "source.history_days": 14})
    ws = Workspace(root)
    assert metarec(root, "ingest", timeout=300).returncode == 0
    before = ws.raw_events.read_bytes()
    update_params_file(root / "params.yaml", {"run.seed": 7})  # a different window to write
    process = subprocess.Popen([str(BIN / "metarec"), "--root", str(root), "ingest"])
    deadline = time.monotonic() + 120
    while (
        not list(ws.raw.glob(".events.parquet.*.tmp"))
        and process.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "ingest finished before it could be killed"
    assert ws.raw_events.read_bytes() == before  # the old output, whole
    assert metarec(root, "validate", timeout=300).returncode == 0  # and the next stage reads it


# --- 5 ----------------------------------------------------------------------------------------------
def test_5_an_unreadable_file_fails_its_own_check_and_the_rest_is_validated(tmp_path, monkeypatch):
    params = landing_params(tmp_path)
    folder = clean_landing(tmp_path, params)
    good_rows(folder, 50).to_csv(folder / "locked.csv", index=False)
    real = landing.file_sha256

    def denied(path: Path) -> str:  # tests run as root, which chmod cannot lock out: raise as the OS would
        if path.name == "locked.csv":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(landing, "file_sha256", denied)
    outcome, valid, _ = ingest_and_validate(tmp_path, params)
    assert "check readable_file failed for " in str(outcome) and "locked.csv" in str(outcome)
    assert "Permission denied" in str(outcome)
    assert len(valid) > 0  # every other file of the window was read and validated
    manifest = json.loads(Workspace(tmp_path).raw_manifest.read_text())
    assert {f["source_file"].rsplit("/", 1)[-1]: f["status"] for f in manifest["files"]}[
        "locked.csv"
    ] == "unreadable"


# --- 6 ----------------------------------------------------------------------------------------------
def test_6_odd_entries_are_reported_not_skipped(tmp_path):
    params = landing_params(tmp_path)
    folder = clean_landing(tmp_path, params)
    (folder / "folder.csv").mkdir()
    (folder / "dangling.csv").symlink_to(folder / "nowhere.csv")
    (folder / "loop.csv").symlink_to(folder / "loop.csv")
    outcome, valid, _ = ingest_and_validate(tmp_path, params)
    manifest = {
        f["source_file"].rsplit("/", 1)[-1]: f
        for f in json.loads(Workspace(tmp_path).raw_manifest.read_text())["files"]
    }
    assert manifest["folder.csv"]["error"].startswith("not a regular file")
    assert manifest["dangling.csv"]["error"].startswith("a dangling symlink")
    assert manifest["loop.csv"]["error"] == "a symlink loop"
    for name in ("folder.csv", "dangling.csv", "loop.csv"):
        assert manifest[name]["status"] == "unreadable" and name in str(outcome)
    assert len(valid) > 0


def test_6_booleans_and_cut_rows_are_quarantined(tmp_path):
    params = landing_params(tmp_path)
    folder = clean_landing(tmp_path, params)
    rows = good_rows(folder, 3).assign(event_type="rating", value=["4", "5", "3"])
    records = rows.to_dict("records")
    records[0]["value"] = True
    (folder / "booleans.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    cut = good_rows(folder, 3, hour=23).to_csv(index=False).rstrip("\n")
    (folder / "cut.csv").write_text(cut[: cut.rindex(":")])  # the upload stopped inside a timestamp
    _, valid, bad = ingest_and_validate(tmp_path, params)
    booleans = bad[bad["source_file"].str.endswith("booleans.jsonl")]
    assert booleans["reason"].str.contains("null_value").tolist() == [True]
    cut_rows = bad[bad["source_file"].str.endswith("cut.csv")]
    assert len(cut_rows) == 1 and cut_rows["reason"].str.contains("unreadable_row").all()
    assert cut_rows["read_error"].str.startswith("truncated_row").all()  # quarantined, not repaired
    assert (valid["source_file"].str.endswith("cut.csv")).sum() == 2


def test_6_a_side_table_of_bad_rows_fails_the_run_and_features_are_not_extra(tmp_path):
    params = landing_params(tmp_path)
    folder = clean_landing(tmp_path, params)
    items = pd.read_csv(folder / "items.csv", dtype=str)
    items.assign(item_id="not an id!").to_csv(folder / "items.csv", index=False)
    outcome, _, _ = ingest_and_validate(tmp_path, params)
    assert "check max_bad_row_share failed for items side table" in str(outcome)
    manifest = json.loads(Workspace(tmp_path).raw_manifest.read_text())["files"]
    assert all(not f["extra_columns"] for f in manifest if f["table"] == "users")  # features are used


def test_6_non_finite_params_and_an_old_logical_date_are_refused(tmp_path):
    root = make_workspace(tmp_path / "ws")
    assert_one_line(
        metarec(root, "--set", "meta.meta_lr=.inf", "ingest"), EXIT_CONFIG, "meta.meta_lr", "finite"
    )
    # a logical date before the DAG's start_date: Airflow says success having run no task
    no_tasks = "DagRun Finished: dag_id=metarec_nightly, state=success, run_type=manual"
    assert check(no_tasks, shards=1) == "the DAG run succeeded with 0 of 9 tasks run"
    every_task = "Task instance state updated new_state=success\n" * 9
    assert check(every_task + no_tasks, shards=1) is None  # one shard: finetune's own, no shard task
    assert check(every_task + no_tasks, shards=2) == "the DAG run succeeded with 9 of 11 tasks run"
    assert check(every_task, shards=1) == "the DAG run did not succeed"
    assert "date -u" in (REPO / "Makefile").read_text()  # make run's logical date is now, not run_date


# --- 7 ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--root", "/nonexistent", "ingest"], ["--root /nonexistent", "no such directory"]),
        (["--set", "meta.epochs=abc", "ingest"], ["meta.epochs", "valid integer", "'abc'"]),
        (["--set", "meta.epocs=3", "ingest"], ["'meta.epocs'", "did you mean 'meta.epochs'"]),
        (["param", "meta.epocs"], ["'meta.epocs'", "did you mean 'meta.epochs'"]),
        (["--set", "run.run_date=2026-13-01", "ingest"], ["run.run_date", "month"]),
        (["--set", "run.device=gpu", "train"], ["run.device", "'auto', 'cpu' or 'cuda'"]),
        (["--set", "meta.epochs", "ingest"], ["--set expects KEY=VALUE"]),
    ],
)
def test_7_configuration_errors_are_one_line_exit_2(tmp_path, args, needles):
    root = tmp_path / "ws"
    root.mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    command = [str(BIN / "metarec"), *(args if args[0] == "--root" else ["--root", str(root), *args])]
    assert_one_line(
        subprocess.run(command, capture_output=True, text=True, timeout=60), EXIT_CONFIG, *needles
    )


def test_7_a_bad_params_file_and_options_after_the_command(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    text = (REPO / "params.yaml").read_text().replace("  epochs: 15", '  epochs: "many"', 1)
    (root / "params.yaml").write_text(text)
    assert_one_line(metarec(root, "ingest"), EXIT_CONFIG, "params.yaml", "meta.epochs", "'many'")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    after = subprocess.run(
        [str(BIN / "metarec"), "param", "run.seed", "--root", str(root), "--set", "run.seed=5"],
        capture_output=True,
        text=True,
    )
    assert after.returncode == 0 and after.stdout.strip() == "5"
    helped = subprocess.run([str(BIN / "metarec"), "validate", "--help"], capture_output=True, text=True)
    assert "Great Expectations decides which rows" in helped.stdout


# --- 8 ----------------------------------------------------------------------------------------------
def test_8_the_demo_and_real_data_never_share_a_default_warehouse(tmp_path):
    params = load_params(REPO / "params.yaml")
    demo = params.publish.url_for(tmp_path, "synthetic")
    real = params.publish.url_for(tmp_path, "landing")
    assert demo != real and demo.endswith("metarec-synthetic.db") and real.endswith("metarec-landing.db")


def test_8_a_forced_model_is_not_the_next_champion(tmp_path):
    root = publish_workspace(tmp_path / "ws")
    ws = Workspace(root)
    champion_file = root / load_params(root / "params.yaml").meta.champion_model
    publish_inputs(ws, METRICS, PASSED, selected=0.40)
    assert metarec(root, "publish").returncode == 0
    assert champion_file.read_bytes() == b"rating model"  # passed: tomorrow's warm start
    publish_inputs(ws, METRICS, FAILED, selected=0.10)
    ws.model_file.write_bytes(b"a worse model")
    assert (
        metarec(root, "--set", "publish.force=true", "--set", "run.run_date=2026-10-21", "publish").returncode
        == 0
    )
    assert json.loads(ws.publish_receipt.read_text())["status"] == "forced"
    assert champion_file.read_bytes() == b"rating model"  # forced past the champion: not promoted

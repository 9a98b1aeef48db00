"""DVC sees the landing folder: same files → nothing re-runs; a late file → ingest re-reads the window."""

import subprocess

import pandas as pd
import pytest

from metarec_tasks.logs.landing import partition_dir
from metarec_tasks.params import load_params
from tests.helpers import make_workspace
from tests.landing_util import good_rows


def _run(root, *args):
    result = subprocess.run(args, cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.mark.slow
def test_dvc_reruns_ingest_only_when_landing_changes(tmp_path):
    root = make_workspace(tmp_path / "ws", {"source.kind": "landing", "synthetic.bad_row_share": 0.0})
    params = load_params(root / "params.yaml")
    _run(root, "metarec", "synth-landing")
    _run(root, "dvc", "repro", "validate")
    raw = pd.read_parquet(root / "data" / "raw" / "events.parquet")

    _run(root, "metarec", "synth-landing")  # the same files delivered again: identical bytes
    assert "up to date" in _run(root, "dvc", "status", "validate")
    assert "skipping" in _run(root, "dvc", "repro", "validate")

    folder = partition_dir(root / "landing", params.run.run_date)
    good_rows(folder, 40).to_csv(folder / "events_late.csv", index=False)
    assert "modified:           landing" in _run(root, "dvc", "status", "ingest")
    _run(root, "dvc", "repro", "validate")
    after = pd.read_parquet(root / "data" / "raw" / "events.parquet")
    assert len(after) == len(raw) + 40
    assert not after.duplicated(["source_file", "source_line"]).any()
    validated = pd.read_parquet(root / "data" / "validated" / "events.parquet")
    assert (validated["source_file"] == f"{folder.name}/events_late.csv").sum() == 40
    assert (root / "reports" / "data_docs" / "index.html").is_file()

"""Helpers for landing-source tests: a clean landing folder from the synthetic world, and good rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from metarec_tasks.errors import DataQualityError
from metarec_tasks.logs.landing import partition_dir
from metarec_tasks.logs.synth_landing import write_synthetic_landing
from metarec_tasks.params import Params, load_params, update_params_file
from metarec_tasks.paths import Workspace
from metarec_tasks.stages import ingest, validate

REPO = Path(__file__).resolve().parents[1]
LANDING = {
    "run.run_date": "2026-10-20",
    "source.kind": "landing",
    "source.history_days": 3,
    "synthetic.initial_users": 120,
    "synthetic.initial_items": 60,
    "synthetic.bad_row_share": 0.0,
}


def landing_params(root: Path, **overrides) -> Params:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    update_params_file(root / "params.yaml", {**LANDING, **overrides})
    return load_params(root / "params.yaml")


def clean_landing(root: Path, params: Params) -> Path:
    """A clean landing folder for the whole window; returns the run date's partition."""
    landing = root / params.source.landing_dir
    write_synthetic_landing(params, landing, params.source.history_days)
    return partition_dir(landing, params.run.run_date)


def good_rows(folder: Path, n: int, hour: int = 12) -> pd.DataFrame:
    """`n` valid click events of known users and items, distinct from every synthetic rating."""
    users = pd.read_csv(folder / "users.csv", dtype=str)["user_id"]
    items = pd.read_csv(folder / "items.csv", dtype=str)["item_id"]
    day = folder.name.removeprefix("date=")
    return pd.DataFrame(
        {
            "user_id": [users.iloc[k % len(users)] for k in range(n)],
            "item_id": [items.iloc[k % len(items)] for k in range(n)],
            "event_type": "click",
            "value": "1.0",
            "timestamp": [f"{day}T{hour:02d}:{k // 60 % 60:02d}:{k % 60:02d}Z" for k in range(n)],
        }
    )


def ingest_and_validate(root: Path, params: Params):
    """(report or the DataQualityError, validated events, quarantined events)."""
    ingest.run(params, Workspace(root))
    try:
        outcome = validate.run(params, Workspace(root))
    except DataQualityError as exc:
        outcome = exc
    ws = Workspace(root)
    return (
        outcome,
        pd.read_parquet(ws.validated / "events.parquet"),
        pd.read_parquet(ws.quarantine / "events.parquet"),
    )

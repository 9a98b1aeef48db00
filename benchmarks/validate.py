"""Validate throughput and peak memory: N synthetic events (default 10 M) over a 14-day window.

    python -m benchmarks.validate              # the measured run (a few minutes)
    python -m benchmarks.validate --rows 20000  # smoke test

Writes `reports/bench_validate.json`: events/s, peak RSS of the validating process, and the seconds
per phase of `metarec validate` (from its own report). The events are generated straight into
`data/raw/` of a throwaway workspace (vectorized, so generation does not dominate), with side tables
and ~0.5% broken rows, then validated in a child process pinned to at most 2 cores, so the peak
memory is validate's alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from metarec_tasks.logs.raw import RawEventWriter  # noqa: E402
from metarec_tasks.params import load_params, update_params_file  # noqa: E402

log = logging.getLogger("bench_validate")
RUN_DATE = date(2026, 11, 1)
DAYS = 14
CORES = 2
EVENT_TYPES = np.array(["rating", "click", "view", "purchase"])
EVENT_P = [0.4, 0.3, 0.25, 0.05]
BAD_SHARE = 0.005
PIECE = 250_000


def overrides(rows: int) -> dict:
    return {
        "run.run_date": RUN_DATE.isoformat(),
        "source.kind": "landing",
        "source.history_days": DAYS,
        "validate.allow_empty_days": False,
    }


def generate(root: Path, rows: int, seed: int = 7) -> dict:
    """`rows` events over DAYS days into root/data/raw (events, users, items, manifest)."""
    rng = np.random.default_rng(seed)
    n_users, n_items = max(rows // 20, 10), max(rows // 200, 10)
    users = pd.Series([f"u{i:07d}" for i in range(n_users)], dtype="string")
    items = pd.Series([f"i{i:06d}" for i in range(n_items)], dtype="string")
    raw = root / "data" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    with RawEventWriter(raw / "events.parquet") as writer:  # renamed into place when complete
        files = []
        per_day = np.full(DAYS, rows // DAYS)
        per_day[: rows - per_day.sum()] += 1
        for k, n in enumerate(per_day):
            day = RUN_DATE - timedelta(days=DAYS - 1 - k)
            stamps = np.array(
                [f"{day.isoformat()}T{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}Z" for s in range(86_400)]
            )
            name = f"bench/date={day.isoformat()}/events.csv"
            for start in range(0, n, PIECE):
                m = min(PIECE, n - start)
                etype = rng.choice(len(EVENT_TYPES), m, p=EVENT_P)
                value = np.where(etype == 0, rng.integers(1, 6, m), 1).astype("float64")
                frame = pd.DataFrame(
                    {
                        "user_id": users.to_numpy()[rng.integers(0, n_users, m)],
                        "item_id": items.to_numpy()[rng.integers(0, n_items, m)],
                        "event_type": EVENT_TYPES[etype],
                        "value": value,
                        "timestamp": stamps[rng.integers(0, 86_400, m)],
                        "partition_date": day.isoformat(),
                        "source_file": name,
                        "source_line": np.arange(start + 2, start + 2 + m),
                    }
                )
                bad = rng.random(m) < BAD_SHARE
                frame.loc[bad & (etype == 0), "value"] = 9.0
                frame.loc[bad & (etype != 0), "user_id"] = "u 1'; DROP TABLE runs;--"
                writer.write(frame)
            files.append(
                {
                    "source_file": name,
                    "partition_date": day.isoformat(),
                    "table": "events",
                    "status": "read",
                    "rows": int(n),
                    "columns": [],
                    "missing_columns": [],
                    "extra_columns": [],
                }
            )
    pd.DataFrame({"user_id": users, "age_bucket": "25-34", "gender": "F", "occupation": "other"}).to_parquet(
        raw / "users.parquet", index=False
    )
    pd.DataFrame({"item_id": items, "category": "drama", "tags": "indie|award"}).to_parquet(
        raw / "items.parquet", index=False
    )
    days = [(RUN_DATE - timedelta(days=DAYS - 1 - k)).isoformat() for k in range(DAYS)]
    (raw / "manifest.json").write_text(json.dumps({"source": "bench", "days": days, "files": files}))
    return {"users": n_users, "items": n_items}


def measure(root: Path) -> None:
    """Child process: validate the workspace and print wall time, peak RSS and the report's phases."""
    from metarec_tasks.errors import DataQualityError
    from metarec_tasks.orchestration.cli import configure_logging
    from metarec_tasks.paths import Workspace
    from metarec_tasks.stages import validate

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:CORES])
    configure_logging(logging.WARNING)
    params = load_params(root / "params.yaml")
    start = time.perf_counter()
    error = None
    try:
        validate.run(params, Workspace(root))
    except DataQualityError as exc:  # the report is written either way
        error = str(exc)
    wall = time.perf_counter() - start
    report = json.loads((root / "reports" / "data_quality.json").read_text())
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {
        "validate_wall_s": round(wall, 2),
        "peak_rss_gib": round(peak_kib / 2**20, 3),
        "rows_in": report["rows_in"],
        "rows_valid": report["rows_valid"],
        "rows_quarantined": report["rows_quarantined"],
        "reasons": report["reasons"],
        "phases_s": report["phases_s"],
        "passed": report["passed"],
        "error": error,
    }
    print(json.dumps(out))  # noqa: T201 - the parent reads this line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--chunk-rows", type=int, default=None, help="default: validate.chunk_rows")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "bench_validate.json")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    root = Path(tempfile.mkdtemp(prefix="bench-validate-"))
    try:
        shutil.copy(REPO / "params.yaml", root / "params.yaml")
        extra = {"validate.chunk_rows": args.chunk_rows} if args.chunk_rows else {}
        update_params_file(root / "params.yaml", {**overrides(args.rows), **extra})
        start = time.perf_counter()
        sizes = generate(root, args.rows)
        generate_s = time.perf_counter() - start
        log.info("generated %d events in %.1f s; validating", args.rows, generate_s)
        child = subprocess.run(
            [sys.executable, __file__, "--measure", str(root)], capture_output=True, text=True, check=False
        )
        if child.returncode != 0:
            raise SystemExit(f"validate child failed:\n{child.stderr[-3000:]}")
        result = json.loads(child.stdout.strip().splitlines()[-1])
        docs = root / "reports" / "data_docs"
        params = load_params(root / "params.yaml")
        summary = {
            "rows": args.rows,
            "days": DAYS,
            **sizes,
            "cores": CORES,
            "chunk_rows": params.validate_.chunk_rows,
            "generate_s": round(generate_s, 2),
            **result,
            "events_per_s": round(result["rows_in"] / result["validate_wall_s"]),
            "data_docs_mib": round(sum(f.stat().st_size for f in docs.rglob("*") if f.is_file()) / 2**20, 2),
            "targets": {"validate_wall_s": 300, "peak_rss_gib": 4},
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2))
        log.info("%s", json.dumps(summary, indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

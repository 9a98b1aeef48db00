"""Publishing N recommendation rows (default 1M) to a warehouse in one transaction: rows/s and the
peak memory the publish adds on top of the frame it publishes.

PostgreSQL takes COPY, streamed in chunks into a fresh partition whose key is built once; SQLite
batched INSERTs (metarec_tasks/publishing/warehouse.py).
Peak RSS is the kernel's high-water mark (VmHWM), reset just before the publish (/proc/self/clear_refs),
minus the resident size right before it.

    python -m benchmarks.publish                         # 1M rows to the local PostgreSQL
    python -m benchmarks.publish --url sqlite:////tmp/w.db --rows 200000
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import create_engine, text

from benchmarks.reports import load_average, write_report
from metarec_tasks.publishing.warehouse import RunRecord, connect, publish_run

REPO = Path(__file__).resolve().parents[1]
ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
TOP_K = 10


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def frame(rows: int) -> pd.DataFrame:
    users = rows // TOP_K
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "user_id": np.repeat([f"u{u:07d}" for u in range(users)], TOP_K),
            "rank": np.tile(np.arange(1, TOP_K + 1), users),
            "item_id": [f"i{i:06d}" for i in rng.integers(0, 50_000, users * TOP_K)],
            "score": rng.random(users * TOP_K),
        }
    )


def record(run_id: str) -> RunRecord:
    return RunRecord(
        run_id,
        date(2026, 11, 21),
        "published",
        True,
        False,
        True,
        "benchmark",
        "catalog_recall@20",
        0.5,
        "bench",
        {"source": {"kind": "benchmark"}},
        {},
        None,
        None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--url", default=None, help="default: a fresh database on the local PostgreSQL")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "bench_publish.json")
    args = parser.parse_args()
    load = load_average()
    url, admin, name = args.url, None, None
    if url is None:
        admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
        name = f"metarec_bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = admin.url.set(database=name).render_as_string(hide_password=False)
    try:
        engine = connect(url)
        recs = frame(args.rows)
        results = []
        for attempt in range(2):  # the second replaces the first: the idempotent rerun of a night
            Path("/proc/self/clear_refs").write_text("5")
            before = rss_kib("VmRSS")
            started = time.perf_counter()
            written = publish_run(engine, record("nightly-bench"), recs, []).rows
            seconds = time.perf_counter() - started
            peak = rss_kib("VmHWM") - before
            results.append(
                {
                    "attempt": attempt,
                    "rows": written,
                    "seconds": seconds,
                    "rows_per_s": written / seconds,
                    "peak_rss_above_mib": peak / 1024,
                }
            )
        engine.dispose()
    finally:
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    report = {
        "command": "python -m benchmarks.publish " + " ".join(sys.argv[1:]),
        "dialect": url.split(":", 1)[0],
        "load_average": load,
        "results": results,
    }
    lines = [
        "# Publish throughput",
        "",
        f"Command: `{report['command']}` ({report['dialect']}), load average before the run {load}.",
        "",
        "| attempt | rows | seconds | rows/s | peak RSS above the frame (MiB) |",
        "|---|---|---|---|---|",
        *(
            f"| {r['attempt']} | {r['rows']:,} | {r['seconds']:.1f} | {r['rows_per_s']:,.0f} "
            f"| {r['peak_rss_above_mib']:.0f} |"
            for r in results
        ),
    ]
    write_report(args.out, report, "\n".join(lines) + "\n")
    print("\n".join(lines))  # noqa: T201 - the benchmark's output


if __name__ == "__main__":
    main()

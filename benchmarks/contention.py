"""How `train` and `finetune` fare on a busy machine: idle, then beside N busy-loop processes.

A pipeline stage on a shared box (a Celery worker running two tasks, a laptop with a browser open)
should take about its fair share of the cores, not spin. For each thread setting (`run.threads`,
default: 1 and the core count) the stage runs in a child process `metarec --set run.threads=T
<stage>` — once on an idle machine, once with as many busy-loop processes as cores — and its wall and
CPU time are measured (`resource.getrusage` of the child). The slowdown is busy wall / idle wall; with
as many busy processes as cores every core is shared by two runnable processes, so a fair share is 2×.

The workspace is the default synthetic world (params.yaml as committed), prepared once by the
ingest → validate → episodes stages; `train` runs before `finetune`, which reads its models.

    python -m benchmarks.contention                 # writes reports/contention.{json,md}
    python -m benchmarks.contention --threads 1     # one setting only
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.reports import load_average, write_report

REPO = Path(__file__).resolve().parents[1]
STAGES = ("train", "finetune")
log = logging.getLogger("benchmarks.contention")


def busy_loop(stop) -> None:  # pragma: no cover - runs in a child process
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def timed(command: list[str], cwd: Path) -> dict[str, float]:
    """Wall and CPU seconds of one child process (its own rusage, children of it included)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu}


def prepare(root: Path) -> None:
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(REPO / name, root / name)
    (root / "landing").mkdir()
    for stage in ("ingest", "validate", "episodes"):
        timed([sys.executable, "-m", "metarec_tasks.orchestration.cli", "--root", str(root), stage], REPO)


def run_stages(root: Path, threads: int) -> dict[str, dict[str, float]]:
    """Train from scratch (no checkpoint of an earlier measurement to resume), then finetune."""
    shutil.rmtree(root / "models", ignore_errors=True)
    out = {}
    for stage in STAGES:
        command = [sys.executable, "-m", "metarec_tasks.orchestration.cli", "--root", str(root)]
        out[stage] = timed([*command, "--set", f"run.threads={threads}", stage], REPO)
        log.info("  %s: %.1f s wall, %.1f s CPU", stage, out[stage]["wall_s"], out[stage]["cpu_s"])
    return out


def measure(root: Path, threads: int, busy: int) -> dict:
    log.info("threads %d, idle", threads)
    idle = run_stages(root, threads)
    stop = multiprocessing.Event()
    loops = [multiprocessing.Process(target=busy_loop, args=(stop,), daemon=True) for _ in range(busy)]
    for p in loops:
        p.start()
    try:
        log.info("threads %d, %d busy processes", threads, busy)
        loaded = run_stages(root, threads)
    finally:
        stop.set()
        for p in loops:
            p.join()
    return {
        stage: {
            "idle": idle[stage],
            "busy": loaded[stage],
            "slowdown": loaded[stage]["wall_s"] / idle[stage]["wall_s"],
        }
        for stage in STAGES
    }


def markdown(report: dict) -> str:
    lines = [
        "# Train and finetune on a busy machine",
        "",
        f"Command: `{report['command']}` on {report['cpu_count']} cores, load average before the run "
        f"{report['load_average']}; busy = {report['busy_processes']} busy-loop processes beside the stage "
        "(a fair share is about 2× the idle wall time).",
        "",
        "| threads | stage | idle wall s | idle CPU s | busy wall s | busy CPU s | slowdown |",
        "|---|---|---|---|---|---|---|",
    ]
    for threads, stages in report["results"].items():
        for stage, r in stages.items():
            lines.append(
                f"| {threads} | {stage} | {r['idle']['wall_s']:.1f} | {r['idle']['cpu_s']:.1f} | "
                f"{r['busy']['wall_s']:.1f} | {r['busy']['cpu_s']:.1f} | {r['slowdown']:.2f}× |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, nargs="+", default=sorted({1, cores}))
    parser.add_argument("--busy", type=int, default=cores, help="busy-loop processes (default: the cores)")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "contention.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    load = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        prepare(root)
        results = {str(t): measure(root, t, args.busy) for t in args.threads}
    report = {
        "command": "python -m benchmarks.contention " + " ".join(sys.argv[1:]),
        "cpu_count": cores,
        "busy_processes": args.busy,
        "load_average": load,
        "platform": platform.platform(),
        "results": results,
    }
    write_report(args.out, report, markdown(report))
    log.info("wrote %s\n%s", args.out, markdown(report))


if __name__ == "__main__":
    main()

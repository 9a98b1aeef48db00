"""How the nightly cost grows with users and items: every stage on synthetic worlds of several sizes.

For each size N (users at the start of the simulated window; items scaled with them, N / 5 clipped to
300..50,000, the default world's 300 at its 1,500 users) a throwaway workspace gets the committed
`params.yaml` with the synthetic world resized, and every stage of `STAGES` runs as the pipeline runs
it, `metarec <stage>`, each in its own child process. Per stage: wall seconds, CPU seconds and the
child's peak RSS. Per stage and measure, the growth exponent is the least-squares slope of
log(cost) on log(users) over the sizes run (1 = linear in users).

    python -m benchmarks.scale                                  # the sizes of the report
    python -m benchmarks.scale --users 10000 100000 1000000     # the issue's sizes (hours on 2 cores)
    python -m benchmarks.scale --users 300 600 --stages ingest validate   # a smoke test
    python -m benchmarks.scale --users 50000 --set ranking.meta.epochs=2   # lighter settings, reported

The Markdown report has a log-log chart of every stage's CPU seconds by users (a .png beside it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.reports import load_average, write_report
from metarec_tasks.stages import STAGES

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("benchmarks.scale")

DEFAULT_USERS = 1500  # the committed world's initial users...
DEFAULT_ITEMS = 300  # ...and items: sizes scale both from here
MAX_ITEMS = 50_000
# Run in the child: the stage through the CLI, then its own peak RSS (KiB on Linux) on stdout's last line.
CHILD = (
    "import resource, sys\n"
    "from metarec_tasks.orchestration.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    "sys.exit(code)\n"
)


def world(users: int) -> dict[str, int]:
    """The synthetic world's size settings for `users` (`--set` overrides)."""
    items = int(np.clip(round(users / 5), DEFAULT_ITEMS, MAX_ITEMS))
    scale = users / DEFAULT_USERS
    return {
        "synthetic.initial_users": users,
        "synthetic.new_users_per_day": max(1, round(30 * scale)),
        "synthetic.initial_items": items,
        "synthetic.new_items_per_day": max(1, round(4 * items / DEFAULT_ITEMS)),
    }


def run_stage(root: Path, stage: str, overrides: dict[str, object]) -> dict[str, float]:
    """Wall, CPU (the child's rusage) and peak RSS of `metarec <stage>` in its own process."""
    sets = [arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}")]
    command = [sys.executable, "-c", CHILD, "--root", str(root), *sets, stage]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if result.returncode != 0:  # a finding of the size, not of the benchmark: recorded, later stages skipped
        lines = result.stderr.strip().splitlines() or ["(no output)"]
        log.error("metarec %s failed (exit %d): %s", stage, result.returncode, lines[-1])
        return {"wall_s": wall, "cpu_s": cpu, "failed": f"exit {result.returncode}: {lines[-1][-300:]}"}
    peak_kib = int(result.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mib": peak_kib / 1024}


def growth(sizes: list[int], values: list[float]) -> float | None:
    """The log-log slope of `values` on `sizes` (None with fewer than two sizes)."""
    if len(sizes) < 2:
        return None
    return float(np.polyfit(np.log(sizes), np.log(np.maximum(values, 1e-9)), 1)[0])


def stage_growth(runs: list[dict], stage: str) -> dict[str, float | None]:
    """Growth exponents of `stage` over the sizes where it completed."""
    done = [r for r in runs if stage in r["stages"] and "failed" not in r["stages"][stage]]
    sizes = [r["users"] for r in done]
    return {m: growth(sizes, [r["stages"][stage][m] for r in done]) for m in ("wall_s", "cpu_s")}


def cell(cost: dict | None) -> str:
    if cost is None:
        return "not run"
    if "failed" in cost:
        return f"**failed** ({cost['failed']})"
    return f"{cost['wall_s']:.1f} / {cost['cpu_s']:.1f} / {cost['peak_rss_mib']:.0f}"


def markdown(report: dict, chart_name: str = "scale.png") -> str:
    sizes = [r["users"] for r in report["runs"]]
    lines = [
        "# Nightly cost by world size",
        "",
        f"Command: `{report['command']}` on {report['cpu_count']} cores, load average before the run "
        f"{report['load_average']}, after it {report['load_average_after']}, {report['seconds']:.0f} s. "
        "Each stage ran as `metarec <stage>` in its own process on a synthetic world of the given "
        "users (items = users / 5, 300..50,000, unless the settings below fix them; the table after it "
        "says how many); growth = the log-log slope over the sizes (1 = linear).",
        "",
        "Settings: "
        + (", ".join(f"`{k}={v}`" for k, v in report["settings"].items()) or "the committed params.yaml")
        + ".",
        "",
        "| stage | "
        + " | ".join(f"{n:,} users wall s / CPU s / peak MiB" for n in sizes)
        + " | growth wall | growth CPU |",
        "|---" * (len(sizes) + 3) + "|",
    ]
    for stage, g in report["growth"].items():
        cells = [cell(r["stages"].get(stage)) for r in report["runs"]]
        slopes = [f"{g[m]:.2f}" if g[m] is not None else "—" for m in ("wall_s", "cpu_s")]
        lines.append(f"| {stage} | " + " | ".join(cells) + " | " + " | ".join(slopes) + " |")
    lines += [
        "",
        "| users | items | events validated | all stages wall s | CPU s | largest stage (share of CPU) |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        done = {s: c for s, c in r["stages"].items() if "failed" not in c}
        wall, cpu = (sum(c[m] for c in done.values()) for m in ("wall_s", "cpu_s"))
        top = max(done, key=lambda s: done[s]["cpu_s"]) if done else None
        largest = f"{top} ({done[top]['cpu_s'] / cpu:.0%})" if top and cpu > 0 else "—"
        lines.append(
            f"| {r['users']:,} | {r['items']:,} | {r['events']:,} | {wall:.0f} | {cpu:.0f} | {largest} |"
        )
    lines += ["", f"![CPU seconds per stage by users, log-log]({chart_name})"]
    return "\n".join(lines) + "\n"


def chart(report: dict, path: Path) -> None:
    """Log-log CPU seconds of every stage by users (one line per stage, the sizes it completed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for stage in report["growth"]:
        done = [r for r in report["runs"] if "cpu_s" in r["stages"].get(stage, {})]
        done = [r for r in done if "failed" not in r["stages"][stage]]
        if done:
            users = [r["users"] for r in done]
            ax.plot(users, [r["stages"][stage]["cpu_s"] for r in done], marker="o", label=stage)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("users")
    ax.set_ylabel("CPU seconds")
    ax.set_title("Nightly cost by world size (python -m benchmarks.scale)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, nargs="+", default=[1500, 3000, 6000])
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "scale.json")
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a params.yaml change for every size (lighter settings for big worlds; in the report)",
    )
    args = parser.parse_args()
    settings = dict(item.split("=", 1) for item in args.settings)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    load, started, runs = load_average(), time.perf_counter(), []
    for users in sorted(args.users):
        overrides = {**world(users), **settings}
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            for name in ("params.yaml", "dvc.yaml"):
                shutil.copy(REPO / name, root / name)
            (root / "landing").mkdir()
            items = int(overrides["synthetic.initial_items"])  # a --set value is a string
            run = {"users": users, "items": items, "events": 0, "stages": {}}
            runs.append(run)
            for stage in args.stages:
                run["stages"][stage] = cost = run_stage(root, stage, overrides)
                log.info("%d users: %s %s", users, stage, cost)
                quality = root / "reports" / "data_quality.json"
                if quality.exists():
                    run["events"] = json.loads(quality.read_text()).get("rows_valid", 0)
                # after every stage: a run cut short (hours at 1M users) keeps the stages it finished
                report = build_report(runs, args.stages, load, started, settings)
                png = args.out.with_suffix(".png")
                write_report(args.out, report, markdown(report, png.name))
                chart(report, png)
                if "failed" in cost:
                    break
    log.info("wrote %s", args.out)


def build_report(
    runs: list[dict], stages: list[str], load: str, started: float, settings: dict[str, str]
) -> dict:
    return {
        "command": "python -m benchmarks.scale " + " ".join(sys.argv[1:]),
        "settings": settings,
        "cpu_count": os.cpu_count(),
        "load_average": load,
        "load_average_after": load_average(),
        "seconds": time.perf_counter() - started,
        "platform": platform.platform(),
        "runs": runs,
        "growth": {stage: stage_growth(runs, stage) for stage in stages},
    }


if __name__ == "__main__":
    main()

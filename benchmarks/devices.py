"""The pipeline's model stages on each device: does `run.device=cuda` give the CPU's results, how fast?

On a copy of a prepared workspace (its `data/` after `metarec ingest`, `validate`, `episodes`), the
train → finetune → evaluate stages run as the pipeline runs them (`metarec --set run.device=D
<stage>`, each a child process), once per device. The report gives wall and CPU time per stage and
what each run ended with: the validation figures of both models' best epochs and the headline
metrics of the holdout users. CPU and CUDA runs of the same seed differ by float rounding only where
the kernels differ, so their metrics should agree closely, not bit for bit.

    python -m benchmarks.devices                                   # cpu and cuda (when present)
    python -m benchmarks.devices --devices cuda --set meta.meta_batch_size=512 --out reports/x.json
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.contention import timed
from benchmarks.reports import load_average, write_report
from metarec_tasks.paths import Workspace

REPO = Path(__file__).resolve().parents[1]
STAGES = ("train", "finetune", "evaluate")
log = logging.getLogger("benchmarks.devices")


def run_device(source: Path, root: Path, device: str, overrides: list[str]) -> dict:
    """Copy the prepared workspace into `root` and run the model stages there on `device`."""
    shutil.copytree(source / "data", root / "data")
    shutil.copy(source / "params.yaml", root / "params.yaml")
    command = [sys.executable, "-m", "metarec_tasks.orchestration.cli", "--root", str(root)]
    command += ["--set", f"run.device={device}"] + [x for o in overrides for x in ("--set", o)]
    stages = {}
    for stage in STAGES:
        stages[stage] = timed([*command, stage], REPO)
        log.info(
            "%s %s: %.1f s wall, %.1f s CPU", device, stage, stages[stage]["wall_s"], stages[stage]["cpu_s"]
        )
    files = Workspace(root)
    return {
        "stages": stages,
        "rating_validation": _best(files.train_log, "val_mae", lower=True),
        "ranker_validation": _best(files.rank_train_log, "val_recall", lower=False),
        "headline": json.loads(files.headline.read_text()),
    }


def _best(history: Path, prefix: str, lower: bool) -> dict:
    """The best meta-epoch of a training log (the column whose name starts with `prefix`)."""
    rows = [row for row in csv.DictReader(history.open()) if row["phase"] == "meta"]
    column = next(name for name in rows[0] if name.startswith(prefix))
    scored = [row for row in rows if row[column] != ""]
    best = (min if lower else max)(scored, key=lambda row: float(row[column]))
    return {"metric": column, "value": float(best[column]), "epoch": int(best["epoch"]), "epochs": len(rows)}


def markdown(report: dict) -> str:
    lines = [
        "# The model stages per device",
        "",
        f"Command: `{report['command']}`; torch {report['torch']}, GPU: {report['cuda'] or 'none'}; "
        f"load average before the run {report['load_average']}.",
        "",
        "| device | stage | wall s | CPU s |",
        "|---|---|---|---|",
    ]
    for device, run in report["results"].items():
        for stage, t in run["stages"].items():
            lines.append(f"| {device} | {stage} | {t['wall_s']:.1f} | {t['cpu_s']:.1f} |")
    lines += [
        "",
        "| device | rating model: best validation | ranker: best validation | holdout: "
        + " | ".join(next(iter(report["results"].values()))["headline"])
        + " |",
        "|---|---|---|" + "---|" * len(next(iter(report["results"].values()))["headline"]),
    ]
    for device, run in report["results"].items():
        cells = [_cell(v) for v in run["headline"].values()]
        rating, ranker = run["rating_validation"], run["ranker_validation"]
        lines.append(
            f"| {device} | {rating['metric']} {rating['value']:.4f} (epoch {rating['epoch']}) | "
            f"{ranker['metric']} {ranker['value']:.4f} (epoch {ranker['epoch']}) | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"], choices=["cpu", "cuda"])
    parser.add_argument("--workspace", type=Path, default=REPO, help="holds data/ from the episodes stage")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "devices.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if not Workspace(args.workspace).tasks_file.exists():
        raise SystemExit(
            f"{Workspace(args.workspace).tasks_file} is missing: run `metarec ingest`, `metarec validate` "
            "and `metarec episodes` there first"
        )
    devices = [d for d in args.devices if d == "cpu" or torch.cuda.is_available()]
    if not devices:
        raise SystemExit("no CUDA device on this machine: run with --devices cpu")
    load = load_average()
    results = {}
    for device in devices:
        with tempfile.TemporaryDirectory() as tmp:
            results[device] = run_device(args.workspace, Path(tmp), device, args.overrides)
    report = {
        "command": "python -m benchmarks.devices " + " ".join(sys.argv[1:]),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": load,
        "overrides": args.overrides,
        "results": results,
    }
    write_report(args.out, report, markdown(report))
    log.info("wrote %s\n%s", args.out, markdown(report))


if __name__ == "__main__":
    main()

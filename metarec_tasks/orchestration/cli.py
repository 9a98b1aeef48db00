"""`metarec <stage>`: the command line every driver calls (dvc.yaml's cmds, Airflow's tasks, people).

Expected failures — bad data, a diverged loss, a foreign model file — end with a one-paragraph
message and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

from metarec_tasks.errors import EXIT_OK, MetaRecError
from metarec_tasks.params import PARAMS_FILE, Params, load_params
from metarec_tasks.paths import Workspace
from metarec_tasks.stages import STAGES, stage_runner
from metarec_tasks.threads import apply_thread_policy

log = logging.getLogger("metarec")

LANDING_FORMATS = ("csv", "csv.gz", "jsonl", "jsonl.gz", "parquet")  # as logs.synth_landing.FORMATS
QUIET_LOGGERS = ("great_expectations", "matplotlib", "alembic", "filelock")


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True
    )
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`--set meta.epochs=3` → {"meta.epochs": 3} (values parsed as YAML scalars)."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metarec", description=__doc__)
    parser.add_argument("--root", type=Path, default=Path("."), help="pipeline workspace (default: .)")
    parser.add_argument("--params", type=Path, default=None, help="params file (default: ROOT/params.yaml)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a parameter for this invocation only (not seen by DVC)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in STAGES:
        sub.add_parser(name, help=f"run the {name} stage")
    summary = sub.add_parser("summary", help="print what the last run did, read back from the warehouse")
    summary.add_argument("--users", type=int, default=2, help="users whose top items to show")
    summary.add_argument("--top", type=int, default=5, help="items per user to show")
    get = sub.add_parser("param", help="print one parameter value (e.g. run.run_date)")
    get.add_argument("key")
    contract = sub.add_parser("contract", help="print the behavior-log contract (README's table)")
    contract.add_argument("--markdown", action="store_true", help="as a Markdown table (the default)")
    synth = sub.add_parser("synth-landing", help="write synthetic logs into the landing layout")
    synth.add_argument(
        "--days", type=int, default=None, help="days ending at run.run_date (default: history)"
    )
    synth.add_argument("--format", default="csv", choices=LANDING_FORMATS, help="file format (default: csv)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    root = args.root.resolve()
    params = load_params(args.params or root / PARAMS_FILE, parse_overrides(args.overrides))
    apply_thread_policy(params.run.threads)  # before any stage imports torch
    if args.command == "param":
        node: Any = params.model_dump(mode="json", by_alias=True)
        for key in args.key.split("."):
            node = node[key]
        print(node)  # noqa: T201 - the value is this command's output
        return 0
    if args.command == "contract":
        from metarec_tasks.logs.contract import contract_markdown

        print(contract_markdown(params.active_features, params.validate_), end="")  # noqa: T201 - the output
        return 0
    if args.command == "synth-landing":
        from metarec_tasks.logs.synth_landing import write_synthetic_landing

        days = args.days or params.source.history_days
        write_synthetic_landing(params, root / params.source.landing_dir, days, args.format)
        return 0
    if args.command == "summary":
        from metarec_tasks.orchestration.summary import print_summary

        print_summary(params, root, users=args.users, top=args.top)
        return 0
    if args.command == "train":  # METAREC_TRAIN_NPROC > 1: data-parallel under torchrun
        from metarec_tasks.training.distributed import relaunch_under_torchrun

        relaunch_under_torchrun(sys.argv[1:] if argv is None else argv)  # returns when not needed
    return run_stage(args.command, params, root)


def run_stage(name: str, params: Params, root: Path) -> int:
    """Run one stage; an expected failure is one log line and its exit code, recorded as data in
    the workspace (`Workspace.stage_status`) for drivers that only see `dvc repro` fail."""
    ws = Workspace(root)
    status = ws.stage_status(name)
    status.parent.mkdir(parents=True, exist_ok=True)
    status.unlink(missing_ok=True)
    try:
        stage_runner(name)(params, ws)
    except MetaRecError as exc:
        log.error("%s %s: %s", name, exc.what, exc)
        status.write_text(json.dumps({"stage": name, "exit_code": exc.exit_code, "error": str(exc)}))
        return exc.exit_code
    status.write_text(json.dumps({"stage": name, "exit_code": EXIT_OK}))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

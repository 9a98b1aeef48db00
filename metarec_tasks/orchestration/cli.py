"""`metarec <stage>`: the command line every driver calls (dvc.yaml's cmds, Airflow's tasks, people).

Expected failures — bad configuration or usage (exit 2), bad data (2), a diverged loss (3), a foreign
model file (4), an unreachable warehouse (5), a busy workspace (6) — end with one line naming the file,
key or check, and the exit code; never a traceback.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

from metarec_tasks.errors import EXIT_OK, ConfigError, MetaRecError
from metarec_tasks.lock import workspace_lock
from metarec_tasks.params import PARAMS_FILE, Params, get_dotted, load_params
from metarec_tasks.paths import Workspace
from metarec_tasks.run_settings import committed_values
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
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE (e.g. meta.epochs=3), got {pair!r}")
        try:
            out[key] = yaml.safe_load(value)
        except (yaml.YAMLError, ValueError):  # e.g. 2026-13-01: not a date; the params check says why
            out[key] = value
    return out


def _global_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """--root, --params and --set, accepted before or after the command (`defaults` only once, on
    the top-level parser, so a subcommand does not reset what was given before it)."""
    keep = argparse.SUPPRESS
    parser.add_argument(
        "--root", type=Path, default=Path(".") if defaults else keep, help="pipeline workspace (default: .)"
    )
    parser.add_argument(
        "--params",
        type=Path,
        default=None if defaults else keep,
        help="params file (default: ROOT/params.yaml)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[] if defaults else keep,
        metavar="KEY=VALUE",
        help="override a parameter for this invocation only (not seen by DVC)",
    )


def _stage_doc(name: str) -> str:
    """A stage module's docstring, read without importing it (stages import torch)."""
    spec = importlib.util.find_spec(f"metarec_tasks.stages.{name}")
    source = Path(spec.origin).read_text() if spec and spec.origin else ""
    return ast.get_docstring(ast.parse(source)) or f"the {name} stage"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metarec", description=__doc__)
    _global_options(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str, description: str | None = None) -> argparse.ArgumentParser:
        formatter = argparse.RawDescriptionHelpFormatter
        child = sub.add_parser(
            name, help=help_text, description=description or help_text, formatter_class=formatter
        )
        _global_options(child, defaults=False)
        return child

    for name in STAGES:
        doc = _stage_doc(name)
        command(name, doc.splitlines()[0], doc)
    shard = command(
        "finetune-shard",
        "compute one user shard of finetune's published top-K (what the DAG's recommend_shard runs)",
    )
    shard.add_argument("index", type=int, help="the shard, 0 to finetune.shards - 1")
    summary = command("summary", "print what the last run did, read back from the warehouse")
    summary.add_argument("--users", type=int, default=2, help="users whose top items to show")
    summary.add_argument("--top", type=int, default=5, help="items per user to show")
    get = command("param", "print one parameter value (e.g. run.run_date)")
    get.add_argument("key")
    get.add_argument(
        "--committed", action="store_true", help="as the next run starts: without the last run's settings"
    )
    contract = command("contract", "print the behavior-log contract (docs/data-contract.md's table)")
    contract.add_argument("--markdown", action="store_true", help="as a Markdown table (the default)")
    synth = command("synth-landing", "write synthetic logs into the landing layout")
    synth.add_argument(
        "--days", type=int, default=None, help="days ending at run.run_date (default: history)"
    )
    synth.add_argument("--format", default="csv", choices=LANDING_FORMATS, help="file format (default: csv)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; configuration and usage errors are one line naming the key, exit code 2."""
    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        return _dispatch(args, argv)
    except MetaRecError as exc:
        log.error("%s %s: %s", args.command, exc.what, exc)
        return exc.exit_code


def _dispatch(args: argparse.Namespace, argv: list[str] | None) -> int:
    root = args.root.resolve()
    if not root.is_dir():
        raise ConfigError(f"--root {args.root}: no such directory")
    overrides = parse_overrides(args.overrides)
    if getattr(args, "committed", False):
        overrides = {**committed_values(Workspace(root)), **overrides}
    params = load_params(args.params or root / PARAMS_FILE, overrides)
    apply_thread_policy(params.run.threads)  # before any stage imports torch
    if args.command == "param":
        print(get_dotted(params.model_dump(mode="json", by_alias=True), args.key))  # noqa: T201 - the output
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
    if args.command == "finetune-shard":  # beside the other shards: a shared hold of the workspace
        from metarec_tasks.stages.finetune import run_shard

        count, ws = params.finetune.shards, Workspace(root)
        if not 0 <= args.index < count:
            raise ConfigError(f"shard {args.index} does not exist: finetune.shards is {count}")
        for needed in (ws.validated_events, ws.tasks_file, ws.model_file, ws.rank_model_file):
            if not needed.exists():  # a shard runs after train, as the DAG orders it
                raise ConfigError(f"{needed} is missing: run the stages up to train first (dvc repro train)")
        with workspace_lock(ws, f"finetune shard {args.index}", params.run.lock_timeout_s, shared=True):
            run_shard(params, ws, args.index)
        return 0
    with workspace_lock(Workspace(root), args.command, params.run.lock_timeout_s) as lock:
        if args.command == "train":  # METAREC_TRAIN_NPROC > 1: data-parallel under torchrun
            from metarec_tasks.training.distributed import relaunch_under_torchrun

            relaunch_under_torchrun(sys.argv[1:] if argv is None else argv, lock)  # returns if not needed
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

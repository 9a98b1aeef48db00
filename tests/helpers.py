"""Test helpers shared by test modules: tiny parameters and throwaway git + DVC workspaces.

Kept apart from conftest.py so that importing them never re-runs conftest's environment set-up.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def imports_dynamo(code: str) -> bool:
    """Whether running `code` in a fresh interpreter (at the repository root) imports torch._dynamo:
    over 800 modules, about a second of CPU in every stage process that does."""
    script = f"import sys\n{code}\nprint('torch._dynamo' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    return out.stdout.strip() == "True"


# Small enough that a whole pipeline runs in seconds, big enough that the model can learn.
TINY = {
    "run.run_date": "2026-10-20",
    "source.history_days": 10,
    "synthetic.initial_users": 220,
    "synthetic.new_users_per_day": 6,
    "synthetic.initial_items": 80,
    "synthetic.new_items_per_day": 1,
    "synthetic.daily_active_share": 0.5,
    "meta.epochs": 3,
    "meta.pretrain_epochs": 2,
    "meta.meta_batch_size": 16,
    "finetune.chunk_size": 64,
    "ranking.meta.epochs": 3,
    "ranking.meta.pretrain_epochs": 1,
    # Tiny worlds are too small for the model to beat every baseline reliably; the gate logic itself
    # is tested in the gate's unit tests, and `make run` uses the full gate.
    "evaluate.primary_metric": "mae",
    "evaluate.gate_baselines": ["global_mean"],
}
TRACKED = (
    "dvc.yaml",
    "params.yaml",
    ".dvcignore",
    ".gitignore",
    ".dvc/config",
    ".dvc/.gitignore",
    "landing/README.md",
)


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


def make_workspace(root: Path, overrides: dict | None = None) -> Path:
    """A fresh git + DVC pipeline workspace with the project's pipeline files and tiny params."""
    from metarec_tasks.params import update_params_file

    for name in TRACKED:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, root / name)
    for folder in ("reports", "reports/plots"):
        if (REPO / folder / ".gitignore").exists():
            (root / folder).mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / folder / ".gitignore", root / folder / ".gitignore")
    # dvc.yaml lists the stage code as deps; a copy makes them resolve inside the workspace.
    shutil.copytree(
        REPO / "metarec_tasks", root / "metarec_tasks", ignore=shutil.ignore_patterns("__pycache__")
    )
    update_params_file(root / "params.yaml", {**TINY, **(overrides or {})})
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "-c", "user.email=ci@metarec", "-c", "user.name=ci", "commit", "-qm", "workspace")
    return root


POSTGRES_ADMIN_URL = os.environ.get(
    "METAREC_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)


def build_episodes_workspace(root: Path) -> Path:
    """A plain folder with tiny params and the ingest → validate → episodes outputs."""
    from metarec_tasks.orchestration.cli import main
    from metarec_tasks.params import update_params_file

    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    update_params_file(root / "params.yaml", TINY)
    for stage in ("ingest", "validate", "episodes"):
        assert main(["--root", str(root), stage]) == 0
    return root


def clone_workspace(src: Path, dst: Path, overrides: dict) -> Path:
    """A copy of a prepared workspace with some parameters changed."""
    from metarec_tasks.params import update_params_file

    shutil.copytree(src, dst)
    update_params_file(dst / "params.yaml", overrides)
    return dst


def kill_train_at_first_checkpoint(root: Path, checkpoints: Path) -> tuple[int, list[str]]:
    """Run `metarec train` in `root`, SIGKILL it as soon as a checkpoint lands in `checkpoints`;
    return (epochs in the newest checkpoint, the command that resumes it)."""
    import signal
    import time

    command = [str(BIN / "metarec"), "--root", str(root), "train"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list(checkpoints.glob("epoch-*.pt")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "training finished before it could be killed"
    return max(int(p.stem.split("-")[1]) for p in checkpoints.glob("epoch-*.pt")), command


QUALITY = {"checks": [], "reasons": {}, "rows_in": 10, "rows_valid": 10, "passed": True}


def publish_inputs(
    ws, metrics: dict, gate: dict, selected: float | None = None, candidate: str = "model"
) -> None:
    """The files publish reads: metrics, gate (with the night's selection when `selected`, the
    challenger's holdout Recall@20), selection, data quality, recommendations, model files, events."""
    ws.reports.mkdir(parents=True, exist_ok=True)
    ws.metrics.write_text(json.dumps({"primary_metric": "x", "predictors": metrics}))
    if selected is not None:
        gate = {
            **gate,
            "selection": {
                "metric": "catalog_recall@20",
                "challenger": candidate,
                "challenger_kind": "meta",
                "challenger_is_baseline": False,
                "value": selected,
                "best_single_baseline": "ease",
                "difference": 0.01,
                "wilcoxon_p": 0.04,
            },
        }
        producer = {
            "candidate": candidate,
            "kind": "meta",
            "parts": {candidate: {"kind": "meta", "knobs": {}}},
        }
        ws.predictions.mkdir(parents=True, exist_ok=True)
        ws.selection.write_text(json.dumps({"challenger": candidate, "producer": producer}))
    ws.gate.write_text(json.dumps(gate))
    ws.data_quality_report.write_text(json.dumps(QUALITY))
    ws.predictions.mkdir(parents=True, exist_ok=True)
    recs = pd.DataFrame(
        {"user_id": ["u1", "u1"], "rank": [1, 2], "item_id": ["i1", "i2"], "score": [2.0, 1.0]}
    )
    recs.to_parquet(ws.recommendations, index=False)
    ws.models.mkdir(parents=True, exist_ok=True)
    ws.model_file.write_bytes(b"rating model")
    ws.rank_model_file.write_bytes(b"ranking model")
    ws.validated.mkdir(parents=True, exist_ok=True)
    ws.validated_events.write_bytes(b"events")


def free_port() -> int:
    """A loopback port nothing listens on (closed right after it is found)."""
    import socket

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def model_weights(path: Path) -> dict:
    """Every tensor a model file holds — network and learned algorithm state — of either kind."""
    from metarec_tasks.errors import ModelFileError
    from metarec_tasks.models.io import load_bundle
    from metarec_tasks.models.ranking import load_rank_model

    try:
        bundle = load_bundle(path)
        network, state = bundle.model.state_dict(), bundle.algorithm_state
    except ModelFileError:
        model, _, state = load_rank_model(path)
        network = model.state_dict()
    return {**network, **{f"alg.{k}": v for k, v in state.items()}}


def assert_same_weights(a: Path, b: Path) -> None:
    import torch

    wa, wb = model_weights(a), model_weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def empty_warehouse(url: str) -> None:
    """Drop every MetaRec table (and the view) of a shared test database: each test starts empty."""
    from sqlalchemy import create_engine, text

    from metarec_tasks.publishing.warehouse import LATEST_VIEW, metadata

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"DROP VIEW IF EXISTS {LATEST_VIEW}"))
    metadata.drop_all(engine)
    engine.dispose()


ML100K = (REPO.parent / "shared" / "data" / "ml-100k").resolve()


def run_quick_ml100k_benchmark(module: str, out: Path, *extra: str) -> dict:
    """`python -m benchmarks.<module> --quick --out OUT EXTRA...` on ML-100K; its JSON report. Skips
    when ML-100K is absent, unless CI is set (then its absence is a failure)."""
    import pytest

    if not (ML100K / "u.data").exists():
        if os.environ.get("CI"):
            pytest.fail(f"ML-100K is required in CI but missing at {ML100K}")
        pytest.skip(f"ML-100K not found at {ML100K}")
    command = [sys.executable, "-m", f"benchmarks.{module}", "--quick", "--data", str(ML100K)]
    result = subprocess.run(
        [*command, "--out", str(out), *extra], capture_output=True, text=True, cwd=REPO, env=dict(os.environ)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())

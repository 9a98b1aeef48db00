"""The thread policy: one intra-op thread by default, and the thread count never changes results
beyond float rounding."""

from __future__ import annotations

import os
import shutil

import torch

from metarec_tasks.models.io import load_bundle
from metarec_tasks.models.ranking import load_rank_model
from metarec_tasks.orchestration.cli import main
from metarec_tasks.params import update_params_file
from metarec_tasks.paths import Workspace
from metarec_tasks.threads import apply_thread_policy
from tests.helpers import build_episodes_workspace


def test_the_cli_applies_run_threads(tmp_path):
    before = torch.get_num_threads()
    try:
        root = build_episodes_workspace(tmp_path)  # runs three stages through the CLI
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
        apply_thread_policy(2)
        assert torch.get_num_threads() == 2
        assert main(["--root", str(root), "--set", "run.threads=1", "param", "run.threads"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_results_do_not_depend_on_the_thread_count(tmp_path):
    """Two threads sum in another order: float32 rounding, compounded over two epochs of Adam steps,
    moves the ranker's text-feature weights by up to about 1e-5 (measured: 0.6-1.1e-5 in four
    runs), so the bound is 1e-4; a change of what is computed moves them by orders of magnitude more
    (the ranker's meta learning rate 0.005 → 0.00501: up to 0.11)."""
    before = torch.get_num_threads()
    fast = {"meta.epochs": 2, "ranking.meta.epochs": 2, "run.device": "cpu"}
    (tmp_path / "one").mkdir()
    one = build_episodes_workspace(tmp_path / "one")
    two = shutil.copytree(one, tmp_path / "two")
    try:
        for root, threads in ((one, 1), (two, 2)):
            update_params_file(root / "params.yaml", {**fast, "run.threads": threads})
            assert main(["--root", str(root), "train"]) == 0
    finally:
        torch.set_num_threads(before)
    a, b = Workspace(one), Workspace(two)
    pairs = [
        (load_bundle(a.model_file).model.state_dict(), load_bundle(b.model_file).model.state_dict()),
        (
            load_rank_model(a.rank_model_file)[0].state_dict(),
            load_rank_model(b.rank_model_file)[0].state_dict(),
        ),
    ]
    for wa, wb in pairs:
        assert wa.keys() == wb.keys()
        for key in wa:
            torch.testing.assert_close(wb[key], wa[key], rtol=1e-4, atol=1e-4, msg=key)


def test_the_cli_starts_without_numpy_so_the_policy_reaches_blas_too():
    """OpenBLAS and MKL read their thread count when numpy is first imported: the CLI must set the
    policy before that, so nothing on its start-up path may import numpy, pandas or torch."""
    import subprocess
    import sys

    probe = (
        "import sys, metarec_tasks.orchestration.cli; "
        "print(sorted({'numpy', 'pandas', 'torch'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"

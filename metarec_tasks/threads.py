"""The thread policy, set once per process before torch does any work (`run.threads`).

Intra-op threads buy nothing for networks of a few thousand weights and spin when the cores are
taken by a neighbour (measured by `benchmarks/contention.py`), so every entry point — the CLI (and so
every DVC stage, DAG task and torchrun worker), the benchmarks — runs with `run.threads` threads,
one by default; parallelism comes from processes (torchrun, sharded finetune, Celery workers).
Kept free of imports of torch, so it can run before torch is first imported.
"""

from __future__ import annotations

import os
import sys

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def apply_thread_policy(threads: int) -> None:
    """Limit this process (and the children it starts) to `threads` intra-op threads."""
    for name in THREAD_ENV:
        os.environ[name] = str(threads)
    if "torch" in sys.modules:  # already imported: the environment is read too late, set it directly
        import torch

        torch.set_num_threads(threads)

"""One stage at a time per workspace: every stage entry point takes an exclusive lock on
`.metarec/lock` (the CLI, and through it every DVC stage and DAG task). A second stage started
meanwhile waits up to `run.lock_timeout_s`, then fails with one line naming the holder — never two
writers interleaving in one `data/` folder. `flock` locks die with their process, so a SIGKILLed
stage never leaves a stale lock behind. User shards of `finetune` (`metarec finetune-shard`) take it
shared: side by side with each other, never beside a stage."""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from metarec_tasks.errors import WorkspaceBusyError
from metarec_tasks.paths import Workspace

log = logging.getLogger(__name__)

HELD_ENV = "METAREC_LOCK_HELD"  # set for torchrun workers: the launcher holds the lock for them
POLL_S = 0.2


@dataclass(frozen=True)
class Lock:
    fd: int | None  # None: held by a parent process

    def pass_to_exec(self) -> None:
        """Keep the lock held across `os.exec*` (torchrun): the new program inherits it."""
        if self.fd is not None:
            os.set_inheritable(self.fd, True)
        os.environ[HELD_ENV] = "1"


@contextmanager
def workspace_lock(ws: Workspace, stage: str, timeout_s: float, shared: bool = False) -> Iterator[Lock]:
    if os.environ.get(HELD_ENV) == "1":
        yield Lock(None)
        return
    ws.lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(ws.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(fd, ws, timeout_s, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(
            fd, f"stage {stage} (pid {os.getpid()}) since {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC".encode()
        )
        yield Lock(fd)
    finally:
        os.close(fd)  # releases the lock


def _acquire(fd: int, ws: Workspace, timeout_s: float, mode: int) -> None:
    deadline = time.monotonic() + timeout_s
    waiting = False
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            holder = ws.lock_file.read_text() or "another stage"
            if time.monotonic() >= deadline:
                raise WorkspaceBusyError(
                    f"workspace {ws.root} is busy: {holder} holds {ws.lock_file} "
                    f"(waited {timeout_s:g} s, run.lock_timeout_s)"
                ) from None
            if not waiting:
                log.info("waiting for the workspace: %s holds it", holder)
                waiting = True
            time.sleep(POLL_S)

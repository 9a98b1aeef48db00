"""The workspace lock: user shards hold it side by side, never beside a stage."""

from __future__ import annotations

import pytest

from metarec_tasks.errors import WorkspaceBusyError
from metarec_tasks.lock import workspace_lock
from metarec_tasks.paths import Workspace


def test_shards_share_the_workspace_and_keep_stages_out(tmp_path):
    ws = Workspace(tmp_path)
    with (
        workspace_lock(ws, "finetune shard 0", 1, shared=True),
        workspace_lock(ws, "finetune shard 1", 1, shared=True),
    ):
        with pytest.raises(WorkspaceBusyError, match="is busy"), workspace_lock(ws, "finetune", 0.3):
            pass
    with workspace_lock(ws, "finetune", 1):
        with (
            pytest.raises(WorkspaceBusyError, match="stage finetune"),
            workspace_lock(ws, "shard", 0.3, shared=True),
        ):
            pass

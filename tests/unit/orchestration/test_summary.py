"""`metarec summary` after a failed run says so first, naming the stage and why."""

from __future__ import annotations

import json

from metarec_tasks.orchestration.summary import last_failure, render_summary
from metarec_tasks.paths import Workspace


def test_a_failed_stage_is_the_summarys_first_line(tiny_params, tmp_path):
    ws = Workspace(tmp_path)
    assert last_failure(ws) is None
    ws.stage_status("ingest").parent.mkdir(parents=True)
    ws.stage_status("ingest").write_text(json.dumps({"stage": "ingest", "exit_code": 0}))
    assert last_failure(ws) is None
    failure = {"stage": "validate", "exit_code": 2, "error": "check readable_file failed for x.csv"}
    ws.stage_status("validate").write_text(json.dumps(failure))
    text = render_summary(tiny_params, tmp_path, users=1, top=1)
    assert text.splitlines()[0] == (
        "LAST RUN FAILED at stage validate (exit code 2): check readable_file failed for x.csv"
    )

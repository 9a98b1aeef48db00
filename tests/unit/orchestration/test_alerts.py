"""Alerts reach a real SMTP server (aiosmtpd on 127.0.0.1): a failed task, and a night whose
challenger was kept out; a silent night sends nothing, an unreachable server fails nothing."""

from __future__ import annotations

import email
import email.policy
import json
import shutil
from types import SimpleNamespace

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Sink

from metarec_tasks.orchestration.alerts import DecisionAlert, TaskFailedAlert, send_alert
from metarec_tasks.params import load_params, update_params_file
from metarec_tasks.paths import Workspace
from tests.helpers import REPO, free_port


class Inbox(Sink):
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"


@pytest.fixture
def smtp():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield inbox, controller.port
    controller.stop()


@pytest.fixture
def root(tmp_path, smtp):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    update_params_file(
        tmp_path / "params.yaml",
        {
            "alerts.smtp_host": "127.0.0.1",
            "alerts.smtp_port": smtp[1],
            "alerts.recipients": ["team@example.com"],
        },
    )
    return tmp_path


def context(task_id: str, error: str | None = None) -> dict:
    return {
        "ti": SimpleNamespace(dag_id="metarec_nightly", task_id=task_id),
        "dag_run": SimpleNamespace(run_id="scheduled__2026-11-22"),
        "exception": error,
    }


def test_a_failed_task_mails_the_team(root, smtp):
    TaskFailedAlert(root).notify(context("validate", "check readable_file failed for x.csv"))
    (mail,) = smtp[0].messages
    assert mail["Subject"] == "MetaRec task failed: metarec_nightly/scheduled__2026-11-22/validate"
    assert mail["To"] == "team@example.com"
    assert "check readable_file failed for x.csv" in mail.get_content()


@pytest.mark.parametrize(("status", "mails"), [("rejected", 1), ("kept", 1), ("published", 0)])
def test_a_night_that_publishes_nothing_new_mails_the_team(root, smtp, status, mails):
    ws = Workspace(root)
    ws.reports.mkdir()
    receipt = {"run_id": "nightly-2026-11-21", "status": status, "reason": "worse than the champion"}
    ws.publish_receipt.write_text(json.dumps(receipt))
    DecisionAlert(root).notify(context("publish"))
    assert len(smtp[0].messages) == mails
    if mails:
        assert (
            smtp[0].messages[0]["Subject"] == f"MetaRec nightly-2026-11-21: {status}, nothing new published"
        )


def test_an_unreachable_mail_server_is_logged_not_raised(root):
    ap = load_params(root / "params.yaml").alerts.model_copy(
        update={"smtp_port": free_port(), "timeout_s": 2}
    )
    assert send_alert(ap, "subject", "body") is False

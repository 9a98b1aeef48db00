"""Alerts: a failed task, and a night whose challenger was not published, reach someone.

Airflow 3's notifier mechanism (`BaseNotifier`): `TaskFailedAlert` on every task's failure,
`DecisionAlert` after `publish` when the decision is `rejected` or `kept` (the DAG run stays green —
the pipeline worked — but nothing new reached users). Every alert is logged at WARNING; with
`alerts.smtp_host` set it is also mailed to `alerts.recipients` (a local relay, or an SMTP service).
"""

from __future__ import annotations

import json
import logging
import smtplib
from email.message import EmailMessage
from typing import Any

from airflow.sdk import BaseNotifier

from metarec_tasks.params import AlertParams, load_params
from metarec_tasks.paths import Workspace

log = logging.getLogger(__name__)

NOT_PUBLISHED = ("rejected", "kept")


def send_alert(ap: AlertParams, subject: str, body: str) -> bool:
    """Log the alert; mail it when SMTP is configured. Returns whether a mail was sent."""
    log.warning("ALERT %s — %s", subject, body.replace("\n", " | "))
    if not ap.smtp_host or not ap.recipients:
        return False
    message = EmailMessage()
    message["Subject"], message["From"], message["To"] = subject, ap.sender, ", ".join(ap.recipients)
    message.set_content(body)
    try:
        with smtplib.SMTP(ap.smtp_host, ap.smtp_port, timeout=ap.timeout_s) as smtp:
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:  # an alert must never fail the task it reports
        log.error("alert not mailed to %s:%s: %s", ap.smtp_host, ap.smtp_port, exc)
        return False
    return True


def _where(context: dict[str, Any]) -> str:
    ti = context.get("ti") or context.get("task_instance")
    run = context.get("dag_run")
    dag, task = getattr(ti, "dag_id", "metarec_nightly"), getattr(ti, "task_id", "?")
    return f"{dag}/{getattr(run, 'run_id', '?')}/{task}"


class WorkspaceNotifier(BaseNotifier):
    """A notifier of the pipeline workspace at `root`, whose params.yaml says where alerts go."""

    template_fields = ()

    def __init__(self, root) -> None:
        super().__init__()
        self.root = root


class TaskFailedAlert(WorkspaceNotifier):
    """on_failure_callback: the task, the run and the error."""

    def notify(self, context: dict[str, Any]) -> None:
        ap = load_params(Workspace(self.root).root / "params.yaml").alerts
        error = context.get("exception")
        send_alert(ap, f"MetaRec task failed: {_where(context)}", f"{_where(context)} failed: {error}")


class DecisionAlert(WorkspaceNotifier):
    """on_success_callback of publish: alert when the night's challenger was not published."""

    def notify(self, context: dict[str, Any]) -> None:
        ws = Workspace(self.root)
        receipt = json.loads(ws.publish_receipt.read_text()) if ws.publish_receipt.is_file() else {}
        if receipt.get("status") in NOT_PUBLISHED:
            ap = load_params(ws.root / "params.yaml").alerts
            subject = f"MetaRec {receipt['run_id']}: {receipt['status']}, nothing new published"
            send_alert(ap, subject, f"{_where(context)}: {receipt['reason']}")

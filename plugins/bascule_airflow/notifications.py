"""E-mail through Airflow's notifier interface (the SMTP provider's ``SmtpNotifier``), per manifest.

The approvers are told when the cutover gate opens (the gate's HITL ``notifiers``), the
operators when a run fails (the DAG's ``on_failure_callback``). Each message carries the
link to the workload's control-room page. A mail that cannot be sent is logged by the
notifier and never fails the task.
"""

from __future__ import annotations

from typing import Any

from bascule_airflow.links import workload_url


def _smtp(notifications: dict[str, Any], to: list[str], subject: str, html: str) -> Any:
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    return SmtpNotifier(
        to=to, from_email=notifications.get("from_email"), subject=subject, html_content=html,
        smtp_conn_id=notifications["smtp_conn_id"],
    )  # fmt: skip


def gate_notifiers(workload: dict[str, Any]) -> list[Any]:
    notifications = workload.get("notifications") or {}
    if not notifications.get("approvers"):
        return []
    page = workload_url(workload["id"])
    return [
        _smtp(
            notifications, notifications["approvers"],
            f"[Bascule] approval needed: cutover of {workload['id']} to Scaleway",
            f"<p>The cutover gate of <b>{workload['id']}</b> is open (run <code>{{{{ run_id }}}}</code>): "
            f"{workload['approvals']['required']} approval(s) needed.</p>"
            f'<p>Review the evidence and approve or reject: <a href="{page}">{page}</a></p>',
        )
    ]  # fmt: skip


def failure_notifiers(workload: dict[str, Any]) -> list[Any]:
    notifications = workload.get("notifications") or {}
    if not notifications.get("on_failure"):
        return []
    page = workload_url(workload["id"])
    return [
        _smtp(
            notifications, notifications["on_failure"],
            f"[Bascule] run failed: {workload['id']}",
            f"<p>The migration run <code>{{{{ run_id }}}}</code> of <b>{workload['id']}</b> failed.</p>"
            f'<p>What failed and the runbook: <a href="{page}">{page}</a></p>',
        )
    ]  # fmt: skip

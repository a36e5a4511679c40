"""E-mail through Airflow's notifier interface (the SMTP provider's ``SmtpNotifier``), per manifest.

The approvers are told when the cutover gate opens (the gate's HITL ``notifiers``), the
operators when a run fails (the DAG's ``on_failure_callback``). Each message carries the
link to the workload's control-room page. A mail that cannot be sent is logged by the
notifier and never fails the task.
"""

from __future__ import annotations

from typing import Any

from bascule_airflow.links import workload_url


def _notifiers(workload: dict[str, Any], audience: str, subject: str, what: str) -> list[Any]:
    """One SmtpNotifier to the manifest's ``audience`` addresses, or none when the list is empty."""
    notifications = workload.get("notifications") or {}
    if not notifications.get(audience):
        return []
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    page = workload_url(workload["id"])
    html = f'<p>{what}</p><p>Open the workload in the control room: <a href="{page}">{page}</a></p>'
    return [
        SmtpNotifier(
            to=notifications[audience], from_email=notifications.get("from_email"), subject=subject,
            html_content=html, smtp_conn_id=notifications["smtp_conn_id"],
        )
    ]  # fmt: skip


def gate_notifiers(workload: dict[str, Any]) -> list[Any]:
    """For the approvers, when the cutover gate opens."""
    return _notifiers(
        workload, "approvers", f"[Bascule] approval needed: cutover of {workload['id']} to Scaleway",
        f"The cutover gate of <b>{workload['id']}</b> is open (run <code>{{{{ run_id }}}}</code>): "
        f"{workload['approvals']['required']} approval(s) needed. Review the evidence, then approve or reject.",
    )  # fmt: skip


def failure_notifiers(workload: dict[str, Any]) -> list[Any]:
    """For the operators, when a run fails."""
    return _notifiers(
        workload, "on_failure", f"[Bascule] run failed: {workload['id']}",
        f"The migration run <code>{{{{ run_id }}}}</code> of <b>{workload['id']}</b> failed: the page shows "
        "which phase and links its runbook section.",
    )  # fmt: skip

"""E-mail notifications through Airflow's SmtpNotifier to a real SMTP server (aiosmtpd on a free port)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from email import message_from_bytes
from typing import Any

import pytest

import devstack

pytestmark = pytest.mark.integration

WORKLOAD = {
    "id": "snds_extracts",
    "approvals": {"approvers": ["approver1", "approver2"], "required": 2},
    "notifications": {
        "smtp_conn_id": "bascule_smtp",
        "from_email": "bascule@hospital.example",
        "approvers": ["approver1@hospital.example", "approver2@hospital.example"],
        "on_failure": ["oncall@hospital.example"],
    },
}


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def inbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbox]:
    from aiosmtpd.controller import Controller

    handler = Inbox()
    port = devstack.free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    connection = {"conn_type": "smtp", "host": "127.0.0.1", "port": port,
                  "extra": {"disable_ssl": True, "disable_tls": True}}  # fmt: skip
    monkeypatch.setenv("AIRFLOW_CONN_BASCULE_SMTP", json.dumps(connection))
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://airflow.hospital.example")
    try:
        yield handler
    finally:
        controller.stop()


def _wait(inbox: Inbox, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(inbox.messages) < count and time.monotonic() < deadline:
        time.sleep(0.1)


def test_approvers_are_mailed_when_the_gate_opens(inbox: Inbox) -> None:
    from bascule_airflow.notifications import gate_notifiers

    (notifier,) = gate_notifiers(WORKLOAD)
    notifier({"run_id": "manual__2026-12-04"})
    _wait(inbox, 1)
    ((rcpt, message),) = inbox.messages
    assert rcpt == ["approver1@hospital.example", "approver2@hospital.example"]
    assert message["Subject"] == "[Bascule] approval needed: cutover of snds_extracts to Scaleway"
    body = message.get_payload()[0].get_payload(decode=True).decode()
    assert "manual__2026-12-04" in body and "2 approval(s) needed" in body
    assert "http://airflow.hospital.example/bascule/workloads/snds_extracts" in body


def test_the_operators_are_mailed_when_a_run_fails(inbox: Inbox) -> None:
    from bascule_airflow.notifications import failure_notifiers

    (notifier,) = failure_notifiers(WORKLOAD)
    notifier({"run_id": "manual__failed"})
    _wait(inbox, 1)
    ((rcpt, message),) = inbox.messages
    assert rcpt == ["oncall@hospital.example"] and "run failed: snds_extracts" in message["Subject"]


def test_no_address_no_notifier() -> None:
    from bascule_airflow.notifications import failure_notifiers, gate_notifiers

    quiet = {**WORKLOAD, "notifications": {"smtp_conn_id": "smtp_default", "approvers": [], "on_failure": []}}
    assert gate_notifiers(quiet) == [] and failure_notifiers(quiet) == []

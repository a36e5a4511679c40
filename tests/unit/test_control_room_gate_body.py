"""The middleware that keeps the gate's HITL body current: what it lets through and when it writes.

It sits in front of every request the API server gets, so its plumbing is tested here:
the upsert reaches Airflow byte for byte, the answer reaches the task unchanged and only
after the body is written, and nothing else is touched. The write itself (Airflow's
HITLDetail row, through Airflow's API) is proven against a real Airflow in
tests/e2e/test_control_room.py::test_gate_body_in_required_actions_shows_quorum_and_evidence.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from uuid import UUID

import pytest

from bascule_airflow.control_room import gate_body

pytestmark = pytest.mark.unit

TI = UUID("0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")
PAYLOAD = json.dumps({"ti_id": str(TI), "subject": "s", "body": "**Quorum: 1 of 2 ...**", "options": ["Approve"]})


class Airflow:
    """Stands for the API server behind the middleware: reads the whole request, answers ``status``."""

    def __init__(self, status: int):
        self.status = status
        self.received = b""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            self.received += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": self.status, "headers": [(b"x-from", b"airflow")]})
        await send({"type": "http.response.body", "body": b'{"answer": true}'})


def _call(app: Any, method: str, path: str, chunks: list[bytes], events: list[Any]) -> list[Any]:
    inbox = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent: list[Any] = []

    async def receive() -> Any:
        return inbox.pop(0) if inbox else {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        events.append(("sent", message["type"]))
        sent.append(message)

    asyncio.run(app({"type": "http", "method": method, "path": path}, receive, send))
    return sent


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    events: list[Any] = []
    monkeypatch.setattr(gate_body, "refresh_gate_body", lambda ti, payload: events.append(("write", ti, payload)))
    return events


def test_an_accepted_upsert_is_passed_on_whole_and_answered_after_the_body_is_written(writes: list[Any]) -> None:
    airflow = Airflow(201)
    half = len(PAYLOAD) // 2
    chunks = [PAYLOAD[:half].encode(), PAYLOAD[half:].encode()]
    sent = _call(gate_body.GateBodyRefresh(airflow), "POST", f"/execution/hitlDetails/{TI}", chunks, writes)
    assert airflow.received == PAYLOAD.encode()
    assert writes == [("write", TI, PAYLOAD.encode()), ("sent", "http.response.start"), ("sent", "http.response.body")]
    assert sent[0]["status"] == 201 and sent[0]["headers"] == [(b"x-from", b"airflow")]
    assert sent[1]["body"] == b'{"answer": true}'


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", f"/execution/hitlDetails/{TI}", 409),  # refused by Airflow: nothing written
        ("POST", f"/execution/hitlDetails/{TI}", 401),
        ("PATCH", f"/execution/hitlDetails/{TI}", 200),  # the response part, Airflow's own business
        ("POST", f"/api/v2/dags/d/dagRuns/r/taskInstances/{TI}/hitlDetails", 201),
        ("POST", "/execution/xcoms/d/r/t/k", 201),
    ],
)
def test_anything_else_passes_through_untouched(writes: list[Any], method: str, path: str, status: int) -> None:
    airflow = Airflow(status)
    sent = _call(gate_body.GateBodyRefresh(airflow), method, path, [PAYLOAD.encode()], writes)
    assert airflow.received == PAYLOAD.encode()
    assert [e for e in writes if e[0] == "write"] == [] and sent[0]["status"] == status


def test_a_failed_write_still_answers_the_task(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(ti: UUID, payload: bytes) -> None:
        raise RuntimeError("database is locked")

    monkeypatch.setattr(gate_body, "refresh_gate_body", refuse)
    sent = _call(gate_body.GateBodyRefresh(Airflow(201)), "POST", f"/execution/hitlDetails/{TI}", [b"{}"], [])
    assert sent[0]["status"] == 201


def test_the_plugin_registers_it_and_names_the_gate_operator() -> None:
    from bascule_control_room import BasculeControlRoomPlugin

    from bascule_airflow.approval import CutoverApprovalOperator

    assert BasculeControlRoomPlugin.fastapi_root_middlewares[0]["middleware"] is gate_body.GateBodyRefresh
    # Airflow stores the operator's class name on the task instance; only the gate's rows are written.
    assert gate_body.GATE_OPERATOR == CutoverApprovalOperator.__name__

"""Keeps the gate's HITL request body current, so Required Actions shows the quorum as it is now.

Why this exists: the gate asks again in the same task instance after each approval and
re-sends its request with the new body ("1 of 2 approvals: approver1; waiting for one more
of: approver2"). Airflow 3.3.2 has no supported way to change a request's body once written:

- the Task SDK's only call, ``upsert_hitl_detail``, posts to the execution API's
  ``POST /execution/hitlDetails/{ti_id}``, which writes ``body`` (and subject, options,
  params, assignees) only when it *creates* the row; for an existing row it only clears the
  response (``airflow/api_fastapi/execution_api/routes/hitl.py``);
- the other calls (``PATCH`` there, ``PATCH /api/v2/.../hitlDetails``) write the response only;
- a new try does not start a fresh request either: ``hitl_detail.ti_id`` follows the task
  instance's new id (``ON UPDATE CASCADE``), so the first try's body stays.

Upstream calls this a bug (reviewers approving stale content: apache/airflow#72155, #72159)
and apache/airflow#73235 (open) makes the upsert refresh the request columns. This is that
change, for Bascule's gate only, as a root middleware of the API server (the plugin
interface ``fastapi_root_middlewares``): after the execution API has *accepted* an upsert
(HTTP 201, so Airflow has already checked that the caller's token is that task instance's
own), it writes the body from the same payload into that task instance's row. It gives no
one a power they lacked: the task sets any body it likes when it first asks. It touches
nothing but ``body``, nothing but rows whose task is a ``CutoverApprovalOperator``, and is
a no-op where the execution API is served without the core API (the plugin is not loaded
there); the body then says when it was written, and the control room stays live. Remove it
when Airflow's upsert refreshes the request (docs/security.md#approval-gates).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from uuid import UUID

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

# The execution API's upsert route, wherever the API server's root path puts it.
UPSERT_PATH = re.compile(r"/execution/hitlDetails/(?P<ti_id>[0-9a-fA-F-]{32,36})/?$")
GATE_OPERATOR = "CutoverApprovalOperator"
log = logging.getLogger(__name__)


def refresh_gate_body(ti_id: UUID, payload: bytes) -> bool:
    """Write the accepted upsert's body into the gate's request; True if it changed."""
    from airflow.models.hitl import HITLDetail
    from airflow.utils.session import create_session
    from sqlalchemy import select

    body = json.loads(payload).get("body")
    with create_session() as session:
        detail = session.scalar(select(HITLDetail).where(HITLDetail.ti_id == ti_id))
        if detail is None or detail.task_instance is None or detail.task_instance.operator != GATE_OPERATOR:
            return False
        if detail.body == body:
            return False
        detail.body = body
    return True


def _refresh_or_log(ti_id: UUID, payload: bytes) -> None:
    # A body left stale is the state this replaces; an upsert answered with an error would fail the gate.
    try:
        refresh_gate_body(ti_id, payload)
    except Exception:
        log.warning("could not refresh the HITL body of task instance %s; it shows the previous round", ti_id,
                    exc_info=True)  # fmt: skip


class GateBodyRefresh:
    """Pure ASGI: every request but the execution API's HITL upsert passes straight through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        match = UPSERT_PATH.search(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        payload = await _read_body(receive)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: the client's disconnect, as usual
            replayed = True
            return {"type": "http.request", "body": payload, "more_body": False}

        # Hold the answer until the body is written, so the task parks on a request that reads right.
        held: list[Message] = []

        async def hold(message: Message) -> None:
            held.append(message)

        await self.app(scope, replay, hold)
        if any(m["type"] == "http.response.start" and m["status"] == 201 for m in held):
            from starlette.concurrency import run_in_threadpool

            await run_in_threadpool(_refresh_or_log, UUID(match["ti_id"]), payload)
        for message in held:
            await send(message)


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)

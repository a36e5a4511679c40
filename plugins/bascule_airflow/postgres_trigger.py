"""The catch-up's trigger: polls a postgres workload's replication lag in the triggerer.

It runs in the triggerer, not on a worker: the catch-up task defers to it and holds no
worker slot while the replica catches up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class ReplicationCaughtUpTrigger(BaseTrigger):
    """Polls replication lag in the triggerer; fires when under threshold and past the copies' overlap."""

    def __init__(
        self, workload: dict[str, Any], overlap_end_lsn: str, deadline: float, poll_seconds: float = 5.0,
        lag_history: list[list[float]] | None = None,
    ):  # fmt: skip
        super().__init__()
        self.workload = workload
        self.overlap_end_lsn = overlap_end_lsn
        self.deadline = deadline
        self.poll_seconds = poll_seconds
        # [[time, lag_bytes], ...], bounded: handed back in the event, since the triggerer writes no
        # XCom and the page reads the catch-up's progress from one (docs/architecture.md).
        self.lag_history = list(lag_history or [])

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "bascule_airflow.postgres_trigger.ReplicationCaughtUpTrigger",
            {
                "workload": self.workload,
                "overlap_end_lsn": self.overlap_end_lsn,
                "deadline": self.deadline,
                "poll_seconds": self.poll_seconds,
                "lag_history": self.lag_history,
            },
        )

    def _poll(self) -> dict[str, Any]:
        from bascule.postgres.phases import replication_status
        from bascule.workload import PostgresWorkload
        from bascule_airflow import clients

        workload = PostgresWorkload.model_validate(self.workload)
        return replication_status(workload, clients.postgres_sides(workload), self.overlap_end_lsn)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from asgiref.sync import sync_to_async

        from bascule.exceptions import BasculeError
        from bascule.progress import keep_lag_sample

        last: dict[str, Any] = {}
        while True:
            try:
                # Connection lookups are synchronous: run them off the event loop.
                last = await sync_to_async(self._poll)()
            except BasculeError as exc:
                yield TriggerEvent({"status": "error", "message": str(exc)})
                return
            except Exception as exc:  # an unreachable server: keep polling until the deadline
                self.log.warning("replication status unavailable (will retry): %s", str(exc).splitlines()[0])
            else:
                self.lag_history = keep_lag_sample(self.lag_history, time.time(), last["lag_bytes"])
                self.log.info(
                    "replication lag: %d bytes, %s s; overlap replayed: %s",
                    last["lag_bytes"], last["lag_seconds"], last["overlap_replayed"],
                )  # fmt: skip
                if last["ready"]:
                    yield TriggerEvent({"status": "ready", **last, "lag_history": self.lag_history})
                    return
            if time.time() > self.deadline:
                yield TriggerEvent(
                    {"status": "timeout", "lag_bytes": last.get("lag_bytes"), **last, "lag_history": self.lag_history}
                )
                return
            await asyncio.sleep(self.poll_seconds)

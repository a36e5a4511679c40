"""What Airflow's metadata DB knows of a workload's runs, read inside the API server.

Only named fields leave this module: run and task states and times, and the small XComs
the phases return (counts, verdicts, keys). Nothing here reads a connection or a Variable
other than the routing mirror, whose value is ``{"live", "location"}``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from bascule_airflow.progress import PROGRESS_XCOM_KEY

PHASE_XCOMS = ("snapshot", "validate", "shadow_run", "approve_cutover", "cutover", "verify_evidence", "catch_up")
GATE_TASK = "approve_cutover"
ROUTING_TASKS = ("cutover", "rollback_requested", "rollback_after_failed_cutover")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _run_row(run: Any) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "state": str(run.state) if run.state else None,
        "triggered_by": getattr(run, "triggering_user_name", None),
        "start_date": _iso(run.start_date),
        "end_date": _iso(run.end_date),
        "run_after": _iso(run.run_after),
    }


def latest_run(session: Any, dag_id: str) -> Any:
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    return session.scalar(select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.run_after.desc()).limit(1))


def find_run(session: Any, dag_id: str, run_id: str | None) -> Any:
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    if not run_id:
        return latest_run(session, dag_id)
    return session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))


def recent_runs(session: Any, dag_id: str, limit: int = 10) -> list[dict[str, Any]]:
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    runs = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.run_after.desc()).limit(limit))
    return [_run_row(r) for r in runs]


def task_instances(session: Any, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import select

    tis = session.scalars(
        select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
    ).all()
    rows = [
        {
            "task_id": ti.task_id,
            "map_index": ti.map_index,
            "state": str(ti.state) if ti.state else None,
            "try_number": ti.try_number,
            "start_date": _iso(ti.start_date),
            "end_date": _iso(ti.end_date),
            "duration": ti.duration,
        }
        for ti in tis
    ]
    return sorted(rows, key=lambda r: (r["start_date"] or "9999", r["task_id"], r["map_index"]))


def xcoms(session: Any, dag_id: str, run_id: str) -> dict[tuple[str, str, int], Any]:
    """(task, key, map index) -> value, for the phases' results and the progress and gate records."""
    from airflow.models.xcom import XComModel
    from sqlalchemy import or_, select

    rows = session.scalars(
        select(XComModel).where(
            XComModel.dag_id == dag_id,
            XComModel.run_id == run_id,
            or_(
                XComModel.key.in_((PROGRESS_XCOM_KEY, "bascule_gate")),
                (XComModel.key == "return_value") & XComModel.task_id.in_(PHASE_XCOMS),
            ),
        )
    ).all()
    return {(x.task_id, x.key, x.map_index): XComModel.deserialize_value(x) for x in rows}


def gate_request(session: Any, dag_id: str, run_id: str) -> dict[str, Any] | None:
    """The open HITL request of the gate, if any: who is assigned, when it was asked."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import select

    detail = session.scalar(
        select(HITLDetail)
        .join(TaskInstance, HITLDetail.ti_id == TaskInstance.id)
        .where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id, TaskInstance.task_id == GATE_TASK)
    )
    if detail is None:
        return None
    return {
        "assigned": [u.get("id") for u in (detail.assignees or [])],
        "asked_at": _iso(detail.created_at),
        "response_received": detail.responded_at is not None,
        "body": detail.body,
    }


def routing(session: Any, dag_id: str, workload_id: str) -> dict[str, Any]:
    """Where consumers are routed (the Variable the cutover mirrors) and since when (the last switch)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.variable import Variable
    from sqlalchemy import select

    variable = session.scalar(select(Variable).where(Variable.key == f"bascule_routing_{workload_id}"))
    live = "azure"
    location = None
    if variable is not None:
        try:
            doc = json.loads(variable.val or "{}")
            live, location = str(doc.get("live", "azure")), doc.get("location")
        except ValueError:
            live = "unknown"
    switch = session.scalar(
        select(TaskInstance)
        .where(TaskInstance.dag_id == dag_id, TaskInstance.task_id.in_(ROUTING_TASKS), TaskInstance.state == "success")
        .order_by(TaskInstance.end_date.desc())
        .limit(1)
    )
    return {"live": live, "location": location, "since": _iso(switch.end_date) if switch else None}


def run_summary(session: Any, dag_id: str, run: Any) -> dict[str, Any]:
    return {**_run_row(run), "tasks": task_instances(session, dag_id, run.run_id)}

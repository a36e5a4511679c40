"""The programme view of the manifests: what each workload moves, who owns it, when it may cut over.

Plain data for the control room (and anyone else): it reads only what the project's own
loader (``workload.load_manifests``) returns, so an invalid manifest shows the very error
the DAG factory shows.
"""

from __future__ import annotations

from typing import Any

import pendulum

from bascule.window_schedule import next_window_opening
from bascule.workload import LoadedManifest, ObjectStoreWorkload, PostgresWorkload


def dag_id_for(workload_id: str) -> str:
    return f"migrate_{workload_id}"


def endpoints(workload: ObjectStoreWorkload | PostgresWorkload) -> tuple[str, str]:
    """``source -> target`` as an operator names them (never a connection's credentials)."""
    if isinstance(workload, ObjectStoreWorkload):
        source = f"Azure Blob {workload.source.container}/{workload.source.prefix}"
        target = f"Scaleway S3 {workload.target.bucket}/{workload.target.prefix} ({workload.target.region})"
    else:
        source = f"Azure PostgreSQL {workload.source.database} ({', '.join(workload.source.schemas)})"
        target = f"Scaleway PostgreSQL {workload.target.database} ({workload.target.region})"
    return source, target


def window_summary(workload: ObjectStoreWorkload | PostgresWorkload, now: pendulum.DateTime) -> dict[str, Any]:
    """The next opening in UTC and in the manifest's zone; the viewer's zone is the browser's business."""
    window = workload.cutover.window
    opening = next_window_opening(window, now)
    return {
        "timezone": window.timezone,
        "days": list(window.days),
        "start": window.start.strftime("%H:%M"),
        "end": window.end.strftime("%H:%M"),
        "open_now": opening <= now,  # next_window_opening returns ``now`` itself while the window is open
        "next_opening_utc": opening.in_timezone("UTC").isoformat(),
        "next_opening_local": opening.in_timezone(window.timezone).format("ddd YYYY-MM-DD HH:mm zz"),
    }


def manifest_summary(manifest: LoadedManifest, now: pendulum.DateTime) -> dict[str, Any]:
    """One row of the programme: a valid workload's facts, or the file and the loader's error."""
    if manifest.workload is None:
        return {"file": manifest.path.name, "valid": False, "error": str(manifest.error)}
    workload = manifest.workload
    source, target = endpoints(workload)
    return {
        "file": manifest.path.name,
        "valid": True,
        "id": workload.id,
        "dag_id": dag_id_for(workload.id),
        "kind": workload.kind,
        "description": workload.description,
        "owner": workload.owner,
        "source": source,
        "target": target,
        "approvers": list(workload.approvals.approvers),
        "required": workload.approvals.required,
        "window": window_summary(workload, now),
    }

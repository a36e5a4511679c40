"""Each workload as an Airflow Asset: the cutover says "live on Scaleway at Y", a rollback "back on Azure at Y".

Downstream DAGs (the platform's own pipelines) schedule on ``workload_asset(id)`` and read
the event's ``extra`` (``live``: ``scaleway`` or ``azure``, ``location``) to know where
to read from; ``include/examples/bascule_consumers.py`` is an example consumer.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset


def workload_asset(workload_id: str) -> Asset:
    # Name only: an Asset URI with a scheme makes Airflow load every provider's URI handlers
    # (boto3 among them) while the DAG file is parsed.
    return Asset(name=f"bascule_workload_{workload_id}", group="bascule")


def record_routing_event(workload_id: str, live: str, location: str) -> None:
    """Put where the workload now lives on the task's asset event (sent when the task succeeds)."""
    from airflow.sdk import get_current_context

    context: Any = get_current_context()
    asset = workload_asset(workload_id)
    if asset not in (context["task"].outlets or []):
        return  # a task without the outlet (tests, hand-built DAGs): nothing to announce
    context["outlet_events"][asset].extra = {
        "workload": workload_id, "live": live, "location": location, "run_id": context["run_id"],
        "summary": f"workload {workload_id} live on {'Scaleway' if live == 'scaleway' else 'Azure'} at {location}",
    }  # fmt: skip

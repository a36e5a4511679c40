"""A DAG scheduled on a workload's Asset: it logs (and returns) where the workload now lives."""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, task


def follow_workload(asset: Asset) -> DAG:
    with DAG(
        dag_id=f"follow_{asset.name}",
        description="Downstream of a Bascule workload: runs when it goes live on Scaleway (or rolls back)",
        schedule=[asset],
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        tags=["bascule", "consumer"],
    ) as dag:

        @task
        def read_location(triggering_asset_events: Any = None) -> dict[str, Any]:
            events = [e for evs in (triggering_asset_events or {}).values() for e in evs]
            latest = events[-1].extra if events else {}
            print(latest.get("summary", "no event"))  # noqa: T201 - the task log is the demo's output
            return {"live": latest.get("live"), "location": latest.get("location")}

        read_location()
    return dag

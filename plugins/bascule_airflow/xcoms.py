"""Reading the results of a mapped task the same way whatever its number of map indexes."""

from __future__ import annotations

from typing import Any


def mapped_results(ti: Any, task_id: str) -> list[Any]:
    """Every non-empty return value of the mapped task ``task_id``, as a list.

    Airflow 3 hands back the lone value itself, not a one-element list, when a mapped
    task ran with a single map index (a workload with ``shards: 1``, a database with one
    table), so a caller that iterates the pull would walk a dict's keys instead.
    """
    value = ti.xcom_pull(task_ids=task_id)
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    return [v for v in value if v]

"""What the distributed tests share besides fixtures: the workload, its names, who ran what."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from airflow_stack import Api

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = yaml.safe_load((ROOT / "include" / "workloads" / "snds_extracts.yaml").read_text())
OBJECT_WORKLOAD = "dist_objects"
REDIS_DB = 11


def container_name(workload: str) -> str:
    return workload.replace("_", "-") + "-src"


def bucket_name(workload: str) -> str:
    return workload.replace("_", "-") + "-dst"


def object_manifest() -> dict:
    data = json.loads(json.dumps(TEMPLATE))
    data["id"] = OBJECT_WORKLOAD
    data["source"]["container"] = container_name(OBJECT_WORKLOAD)
    data["target"]["bucket"] = bucket_name(OBJECT_WORKLOAD)
    # Four shards over two workers of two slots; two threads each keep a shard slow enough
    # for a worker to be killed in the middle of it.
    data["transfer"] = {"shards": 4, "concurrency": 2, "part_size_mib": 5}
    # Two distinct approvers: one approval is recorded before the scheduler restart, one after.
    data["approvals"] = {"approvers": ["approver1", "approver2"], "required": 2, "timeout_minutes": 60}
    return data


def who_ran_what(api: Api, dag_id: str, run_id: str) -> list[dict]:
    """Each task instance of the run with the worker (its recorded hostname) that ran it; printed."""
    answer = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=500")
    rows = sorted(answer["task_instances"], key=lambda ti: (ti.get("start_date") or "", ti["map_index"]))
    print(f"\n{dag_id} {run_id}: which worker ran what")
    for ti in rows:
        name = ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{ti['map_index']}]"
        print(f"  {name:<28} try {ti['try_number']}  {ti['state'] or '-':<15} {ti.get('hostname') or '-'}")
    return rows

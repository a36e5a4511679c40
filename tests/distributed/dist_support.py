"""What the distributed tests share besides fixtures: the workload, its names, who ran what."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = yaml.safe_load((ROOT / "include" / "workloads" / "snds_extracts.yaml").read_text())
OBJECT_WORKLOAD = "dist_objects"
REDIS_DB = 11


CONTAINER, BUCKET, EVIDENCE_BUCKET = "dist-objects-src", "dist-objects-dst", "dist-objects-evidence"


def object_manifest() -> dict:
    data = json.loads(json.dumps(TEMPLATE))
    data["id"] = OBJECT_WORKLOAD
    data["source"]["container"], data["target"]["bucket"] = CONTAINER, BUCKET
    data["evidence"]["bucket"] = EVIDENCE_BUCKET
    # Four shards over two workers of two slots; two threads each keep a shard slow enough
    # for a worker to be killed in the middle of it.
    data["transfer"] = {"shards": 4, "concurrency": 2, "part_size_mib": 5}
    # Two distinct approvers: one approval is recorded before the scheduler restart, one after.
    data["approvals"] = {"approvers": ["approver1", "approver2"], "required": 2, "timeout_minutes": 60}
    # A container of a few objects and no application writer: leases freeze it in a few requests.
    # The stored-access-policy freeze the demo manifest uses is covered by the object e2e and
    # tests/integration/objects/test_freeze_access_policy.py.
    data["cutover"]["freeze"] = {"method": "leases"}
    return data

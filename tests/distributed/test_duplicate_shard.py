"""Two executions of one shard at once against the same target (a task instance that Airflow
runs twice: a worker thought lost that was only slow, a redelivered Celery message).

No Celery here: the shard's callable, ``transfer_shard``, runs twice in parallel on real
Azurite and moto, as two workers would run it, and the target must hold each object
once, whole, with the source's bytes.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from bascule.exceptions import BasculeError
from bascule.governance.evidence.store import EvidenceStore
from bascule.objects.phases import take_snapshot, transfer_shard
from bascule.storage.azure_blob import AzureBlobContainer
from bascule.storage.s3 import S3Bucket
from bascule.synthetic.documents import DocumentsSpec, generate_migration_demo
from bascule.synthetic.snds import SMALL, upload_to_azure
from bascule.workload import parse_manifest

pytestmark = pytest.mark.distributed

MANIFEST = Path(__file__).parents[2] / "include" / "workloads" / "snds_extracts.yaml"


def test_one_shard_run_twice_at_once_stays_idempotent(blob_service, s3_client, standins) -> None:
    container = blob_service.get_container_client("dup-shard-src")
    objects = list(generate_migration_demo(SMALL, DocumentsSpec(documents=120, large_files=1, large_size=6 * 2**20)))
    upload_to_azure(container, objects)
    for bucket in ("dup-shard-dst", "dup-shard-ev"):
        s3_client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "fr-par"})
    manifest = yaml.safe_load(MANIFEST.read_text())
    manifest["source"]["container"], manifest["target"]["bucket"] = "dup-shard-src", "dup-shard-dst"
    manifest["transfer"] = {"shards": 1, "concurrency": 4, "part_size_mib": 5}
    workload = parse_manifest(MANIFEST, yaml.safe_dump(manifest, allow_unicode=True))
    source, target = AzureBlobContainer(blob_service, "dup-shard-src"), S3Bucket(s3_client, "dup-shard-dst")
    evidence = EvidenceStore(s3_client, "dup-shard-ev", workload.id)
    snapshot = take_snapshot(workload, source, evidence, "dup-try1")

    def run(_: int) -> dict | BasculeError:
        # The same try number: a duplicate execution, not a retry.
        try:
            return transfer_shard(workload, source, target, evidence, snapshot, 0, 1)
        except BasculeError as exc:  # e.g. the write-once evidence refusing the second report
            return exc

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(run, range(2)))
    print(f"\ntwo executions of shard 0 at once: {outcomes}")

    listed = [
        item["Key"]
        for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket="dup-shard-dst")
        for item in page.get("Contents", ())
    ]
    assert sorted(listed) == sorted(o.key for o in objects), "each source object exactly once on the target"
    for obj in objects:
        body = s3_client.get_object(Bucket="dup-shard-dst", Key=obj.key)["Body"].read()
        assert hashlib.md5(body).digest() == hashlib.md5(obj.body).digest(), f"{obj.key} differs from the source"
    reports = [o for o in outcomes if isinstance(o, dict)]
    assert reports, f"at least one execution completes: {outcomes}"
    for report in reports:
        assert report["failed"] == 0 and report["copied"] + report["skipped"] == len(objects), report
    # A rerun after both finds everything verified and copies nothing.
    again = transfer_shard(workload, source, target, evidence, snapshot, 0, 2)
    assert (again["copied"], again["skipped"]) == (0, len(objects)), again

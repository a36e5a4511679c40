"""The demo's object writer against Azurite and moto: a SAS of the stored access policy, cut off by the freeze.

The writer holds only a container SAS bound to the policy the platform's ops created;
the cutover phases (snapshot, transfer, cutover) run while it writes. Every write it saw
acknowledged must be on the target afterwards, and every write after the freeze refused.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import devstack
from bascule.governance.evidence.store import EvidenceStore
from bascule.governance.routing import RoutingRegistry
from bascule.objects.freeze_access_policy import read_policies
from bascule.objects.phases import cutover, take_snapshot, transfer_shard
from bascule.storage.azure_blob import AzureBlobContainer
from bascule.storage.s3 import S3Bucket
from bascule.synthetic.blob_writer import (
    WRITER_PERMISSION,
    BlobWriter,
    acknowledged_writes,
    check_blob_target,
    create_writer_policy,
    writer_sas,
)
from bascule.synthetic.writes_log import read_log
from bascule.workload import parse_manifest

pytestmark = pytest.mark.integration

MANIFEST = """\
id: sas_writer
kind: object_store
description: An application writing through a SAS while the workload cuts over.
owner: data-platform
source: {{conn_id: hdh_azure_blob, container: {container}}}
target: {{conn_id: hdh_scaleway_s3, bucket: {bucket}, prefix: migrated/, region: fr-par}}
evidence: {{conn_id: hdh_scaleway_s3, bucket: {bucket}-evidence, region: fr-par}}
transfer: {{shards: 1}}
approvals: {{approvers: [approver1], required: 1}}
cutover:
  window: {{timezone: Europe/Paris, days: [sunday], start: "02:00", end: "05:00"}}
  freeze: {{method: stored_access_policy, policy_id: app-writers, probe_timeout_seconds: 10}}
"""


def test_the_sas_writer_is_cut_off_by_the_freeze_and_every_acknowledged_write_is_on_the_target(
    blob_service, s3_client, tmp_path: Path
) -> None:
    name, bucket = "sas-writer-src", "sas-writer-dst"
    container = blob_service.get_container_client(name)
    container.create_container()
    for i in range(5):
        container.upload_blob(f"extracts/{i}.csv", b"a,b\n1,2\n")
    create_writer_policy(container, "app-writers")  # as the platform's ops do, once
    assert read_policies(container)[1]["app-writers"].permission == WRITER_PERMISSION
    for made in (bucket, f"{bucket}-evidence"):
        s3_client.create_bucket(Bucket=made, CreateBucketConfiguration={"LocationConstraint": "fr-par"})
    workload = parse_manifest(Path("sas_writer.yaml"), MANIFEST.format(container=name, bucket=bucket))
    source, target = AzureBlobContainer(blob_service, name), S3Bucket(s3_client, bucket)
    evidence = EvidenceStore(s3_client, workload.evidence.bucket, workload.id)
    routing = RoutingRegistry(s3_client, workload.evidence.bucket)

    sas = writer_sas(devstack.AZURITE_ACCOUNT, devstack.AZURITE_KEY, name, "app-writers")
    assert "si=app-writers" in sas and "sp=" not in sas, "the policy, not the token, holds the permissions"
    log = tmp_path / "blob-writes.jsonl"
    writer = BlobWriter(blob_service.url, name, sas, log, interval=0.02, refused_interval=0.05)
    with writer:
        writer.wait_for(lambda s: s.acknowledged >= 5)
        snapshot = take_snapshot(workload, source, evidence, "snap1")
        transfer_shard(workload, source, target, evidence, snapshot, 0, 1)
        writer.wait_for(lambda s: s.acknowledged >= snapshot["objects"] + 5)  # writes the delta must carry
        record = cutover(
            workload, container_client=container, source=source, target=target, target_for=lambda _: target,
            evidence=evidence, routing=routing, snapshot=snapshot, run_id="r1", attempt=1, context={}, log=print,
        )  # fmt: skip
        stats = writer.wait_for(lambda s: s.refused >= 3)

    assert record["freeze_method"] == "stored_access_policy" and routing.read("sas_writer")[0].live == "scaleway"
    records = read_log(log)
    acknowledged = list(acknowledged_writes(log))
    assert stats.acknowledged == len(acknowledged) >= 10
    # The freeze shows in the log as the moment acknowledgements stop and refusals start.
    first_refused = next(i for i, r in enumerate(records) if r["status"] == "refused")
    assert all(r["status"] != "acknowledged" for r in records[first_refused:]), "no write lands after the freeze"
    assert all(r["status"] in ("acknowledged", "refused") for r in records), [r for r in records if "error" in r][:3]
    assert "HTTP 403" in records[first_refused]["error"]
    assert record["delta"]["new"] > 0, "writes after the snapshot reached the target through the delta sync"
    assert check_blob_target(s3_client, bucket, log, target_key=workload.target_key) == []

    # The check is not vacuous: a write missing on the target is named.
    first = acknowledged[0]["key"]
    s3_client.delete_object(Bucket=bucket, Key=workload.target_key(first))
    [problem] = check_blob_target(s3_client, bucket, log, target_key=workload.target_key)
    assert problem.startswith(f"'migrated/{first}': acknowledged at ") and problem.endswith("missing on the target")

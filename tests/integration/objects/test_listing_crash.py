"""A listing killed with SIGKILL mid-way, in a child process running the project's own phase function.

The snapshot's inventory and the cutover's delta listing both stream: the inventory is
uploaded only once the listing ends, and the delta's changes flow to the copier page by
page. A kill after a few pages must leave no partial evidence file, and the rerun (the
next task attempt) must start the listing over, copy nothing twice (PUTs counted with
botocore's event hooks) and leave a complete inventory and records that prove parity.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

import devstack
from bascule.governance.evidence.store import EvidenceStore
from bascule.objects.inventory import read_inventory, write_inventory
from bascule.objects.phases import prove_parity, sync_delta, take_snapshot, transfer_shard
from bascule.storage.azure_blob import AzureBlobContainer
from bascule.storage.s3 import S3Bucket
from bascule.workload import parse_manifest

pytestmark = pytest.mark.integration

PAGE = 50  # names per listing page in the child, so that a few thousand blobs make many pages
BEFORE, AFTER = 20, 800  # blobs in the snapshot; blobs added after it (the delta to copy): 17 pages
KILL_AFTER_PAGES = 4

MANIFEST = """\
id: listing_crash
kind: object_store
description: A listing interrupted by SIGKILL.
owner: data-platform
source: {conn_id: hdh_azure_blob, container: listing-crash-src}
target: {conn_id: hdh_scaleway_s3, bucket: listing-crash-dst, region: fr-par}
evidence: {conn_id: hdh_scaleway_s3, bucket: listing-crash-evidence, region: fr-par}
transfer: {shards: 1, concurrency: 4}
approvals: {approvers: [approver1], required: 1}
cutover:
  window: {timezone: Europe/Paris, days: [sunday], start: "02:00", end: "05:00"}
"""

# The child: the phase function with a smaller page, announcing each listing page it got and
# pausing on it, so the parent's SIGKILL lands mid-listing, with objects in flight.
CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import boto3
    from azure.storage.blob import BlobServiceClient
    import bascule.storage.azure_blob as azure_blob
    from bascule.governance.evidence.store import EvidenceStore
    from bascule.objects import phases
    from bascule.storage.s3 import S3Bucket
    from bascule.workload import parse_manifest

    args = json.loads(sys.argv[1])
    azure_blob.LIST_PAGE_SIZE = args["page"]
    pages = 0

    def on_response(response):
        global pages
        if "comp=list" in response.http_request.url:
            pages += 1
            print(f"page {pages}", flush=True)
            time.sleep(0.3)

    service = BlobServiceClient(args["azure_url"], credential=args["credential"], raw_response_hook=on_response)
    s3 = boto3.client("s3", endpoint_url=args["s3_url"], region_name="fr-par", aws_access_key_id="x",
                      aws_secret_access_key="y")
    workload = parse_manifest(Path("listing_crash.yaml"), args["manifest"])
    source = azure_blob.AzureBlobContainer(service, args["container"])
    target, evidence = S3Bucket(s3, args["bucket"]), EvidenceStore(s3, workload.evidence.bucket, workload.id)
    if args["phase"] == "snapshot":
        phases.take_snapshot(workload, source, evidence, "killed-try1")
    else:
        phases.sync_delta(workload, source, target, evidence, args["snapshot"], args["base"], 1, print)
    print("finished", flush=True)
    """
)


def _run_and_kill(standins: devstack.Ports, **args) -> str:
    """Run the child until it has listed KILL_AFTER_PAGES pages, then SIGKILL it; its output."""
    payload = {
        "azure_url": devstack.azurite_url(standins.azurite),
        "credential": {"account_name": devstack.AZURITE_ACCOUNT, "account_key": devstack.AZURITE_KEY},
        "s3_url": f"http://127.0.0.1:{standins.moto}",
        "container": "listing-crash-src",
        "bucket": "listing-crash-dst",
        "manifest": MANIFEST,
        "page": PAGE,
        **args,
    }
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(payload)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seen: list[str] = []
    assert child.stdout is not None
    deadline = time.monotonic() + 120
    for line in child.stdout:
        seen.append(line.rstrip())
        if line.strip() == f"page {KILL_AFTER_PAGES}":
            os.kill(child.pid, signal.SIGKILL)
            break
        assert time.monotonic() < deadline, seen[-20:]
    child.wait(30)
    assert child.returncode == -signal.SIGKILL, "\n".join(seen[-20:])
    assert "finished" not in seen, "the kill must land mid-listing"
    return "\n".join(seen)


def _data_keys(s3_client, bucket: str) -> set[str]:
    keys: set[str] = set()
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.update(o["Key"] for o in page.get("Contents", ()))  # data only: the evidence has its own bucket
    return keys


def test_a_listing_killed_mid_way_is_started_over_and_copies_nothing_twice(
    standins: devstack.Ports, s3_client, tmp_path: Path
) -> None:
    credential = {"account_name": devstack.AZURITE_ACCOUNT, "account_key": devstack.AZURITE_KEY}
    service = BlobServiceClient(devstack.azurite_url(standins.azurite), credential=credential)
    container = service.create_container("listing-crash-src")
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: container.upload_blob(f"a/{i:05d}.csv", b"x,y\n"), range(BEFORE)))
    for bucket in ("listing-crash-dst", "listing-crash-evidence"):
        s3_client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "fr-par"})
    workload = parse_manifest(Path("listing_crash.yaml"), MANIFEST)
    source, target = AzureBlobContainer(service, "listing-crash-src"), S3Bucket(s3_client, "listing-crash-dst")
    evidence = EvidenceStore(s3_client, "listing-crash-evidence", workload.id)
    with ThreadPoolExecutor(16) as pool:  # after the snapshot below: the delta
        list(pool.map(lambda i: container.upload_blob(f"b/{i:05d}.csv", f"{i}\n".encode()), range(AFTER)))

    # The snapshot listing killed: no inventory in the evidence, and a rerun lists everything.
    _run_and_kill(standins, phase="snapshot")
    assert not [k for k, _ in evidence.keys("snapshots/killed-try1/")], "no partial inventory is ever published"
    snapshot = take_snapshot(workload, source, evidence, "snap-try2")
    assert snapshot["objects"] == BEFORE + AFTER

    # The delta needs a snapshot without the b/ blobs: an inventory of the a/ ones only.
    a_only = (o for o in read_inventory(evidence, snapshot["inventory_key"]) if o.key.startswith("a/"))
    small = write_inventory(a_only, evidence, "snapshots/delta-crash/source-inventory.jsonl.gz")
    base_snapshot = {"snapshot_id": "delta-crash", "inventory_key": small.key, "objects": small.count}
    transfer_shard(workload, source, target, evidence, base_snapshot, 0, 1)
    assert _data_keys(s3_client, "listing-crash-dst") == {f"a/{i:05d}.csv" for i in range(BEFORE)}

    # The delta listing killed after a few pages, with some of the new objects copied.
    base = "snapshots/delta-crash/cutover-try1"
    _run_and_kill(standins, phase="delta", snapshot=base_snapshot, base=base)
    copied_before_kill = _data_keys(s3_client, "listing-crash-dst") - {f"a/{i:05d}.csv" for i in range(BEFORE)}
    assert 0 < len(copied_before_kill) < AFTER, len(copied_before_kill)
    assert not evidence.exists(f"{base}/final-inventory.jsonl.gz"), "the killed listing published no inventory"

    # The rerun (the task's next attempt): starts over, and PUTs only what the kill left uncopied.
    puts: list[str] = []

    def count_put(params, **_) -> None:
        if params["Bucket"] == "listing-crash-dst":  # data writes; the evidence goes to its own bucket
            puts.append(params["Key"])

    s3_client.meta.events.register("before-parameter-build.s3.PutObject", count_put)
    try:
        synced = sync_delta(
            workload, source, target, evidence, base_snapshot, "snapshots/delta-crash/cutover-try2", 2, print
        )
    finally:  # the session's client is shared with other tests
        s3_client.meta.events.unregister("before-parameter-build.s3.PutObject", count_put)
    data_puts = puts
    assert len(data_puts) == len(set(data_puts)) == AFTER - len(copied_before_kill), "nothing copied twice"
    assert not set(data_puts) & copied_before_kill, "what the killed attempt copied is skipped, not copied again"
    assert synced["objects"] == BEFORE + AFTER, "the rerun listed from the start, every page"
    assert synced["delta"]["new"] == AFTER
    assert _data_keys(s3_client, "listing-crash-dst") == {o.key for o in source.iter_objects("")}

    # Inventory and records are consistent: parity holds over the rerun's final listing.
    final = read_inventory(evidence, synced["final_inventory_key"])
    parity = prove_parity(workload, final, target, evidence, "snapshots/delta-crash/validate-after-crash", {})
    assert parity.success and parity.rows == BEFORE + AFTER and parity.readbacks == 0, parity.summary

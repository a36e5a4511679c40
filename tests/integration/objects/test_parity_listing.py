"""Delta sync from one listing and parity without a HEAD per object, on Azurite and moto."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from bascule.governance.evidence.store import EvidenceStore
from bascule.objects.merge_join import azure_order, s3_order
from bascule.objects.phases import prove_parity, sync_delta, take_snapshot, transfer_shard
from bascule.storage.azure_blob import AzureBlobContainer
from bascule.storage.s3 import S3Bucket
from bascule.workload import parse_manifest

pytestmark = pytest.mark.integration

MANIFEST = Path(__file__).parents[3] / "include" / "workloads" / "snds_extracts.yaml"
# Awkward names as the demo has them: accents, spaces, %, +, mixed case, an emoji.
NAMES = [f"docs/{i % 7}/résultat 100% {i:03d}{'+É' if i % 5 == 0 else ''}.txt" for i in range(240)] + [
    f"Stays/Year=2024/part-{i:02d}.csv" for i in range(50)
] + ["docs/😀 smiley.txt", "docs/ßtraße.txt", "docs/Zeta.txt", "docs/alpha.txt"]
BIG = "imaging/série IRM 01.dcm"  # multipart at 5 MiB parts, committed from blocks: no Content-MD5


def _body(name: str, version: int = 0) -> bytes:
    return f"{name}|v{version}|".encode() * 3


@pytest.fixture
def env(blob_service, s3_client, standins, request: pytest.FixtureRequest) -> dict[str, Any]:
    suffix = abs(hash(request.node.name)) % 10**8
    container = blob_service.create_container(f"parity-{suffix}")
    for name in NAMES:
        container.upload_blob(name, _body(name))
    blob = container.get_blob_client(BIG)
    blob.stage_block("b1", b"\x01" * (6 * 1024 * 1024))
    blob.stage_block("b2", b"\x02" * (5 * 1024 * 1024))
    blob.commit_block_list(["b1", "b2"])
    bucket, evidence_bucket = f"parity-{suffix}", f"parity-ev-{suffix}"
    for name in (bucket, evidence_bucket):
        s3_client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "fr-par"})
    manifest = yaml.safe_load(MANIFEST.read_text())
    manifest["source"]["container"], manifest["target"]["bucket"] = container.container_name, bucket
    manifest["transfer"] = {"shards": 2, "concurrency": 4, "part_size_mib": 5}
    workload = parse_manifest(MANIFEST, yaml.safe_dump(manifest, allow_unicode=True))
    # The target's own client, so that its requests (and only its) are counted.
    client = boto3.client(
        "s3", endpoint_url=s3_client.meta.endpoint_url, region_name="fr-par",
        aws_access_key_id="x", aws_secret_access_key="y",
    )  # fmt: skip
    calls: collections.Counter[str] = collections.Counter()
    client.meta.events.register("before-call.s3.*", lambda model, **_: calls.update([model.name]))
    source = AzureBlobContainer(blob_service, container.container_name)
    target = S3Bucket(client, bucket)
    evidence = EvidenceStore(s3_client, evidence_bucket, workload.id)
    snapshot = take_snapshot(workload, source, evidence, "snap-try1")
    for shard in range(2):
        transfer_shard(workload, source, target, evidence, snapshot, shard, 1)
    calls.clear()
    return {"workload": workload, "container": container, "source": source, "target": target,
            "client": client, "evidence": evidence, "snapshot": snapshot, "calls": calls}  # fmt: skip


def _parity(env: dict[str, Any], inventory_key: str, name: str) -> Any:
    from bascule.objects.inventory import read_inventory

    evidence = env["evidence"]
    return prove_parity(env["workload"], read_inventory(evidence, inventory_key), env["target"], evidence, name, {})


def test_each_stand_in_lists_in_the_order_its_merge_join_assumes(env: dict[str, Any]) -> None:
    listed = [b.name for b in env["container"].list_blobs()]
    assert listed == sorted(NAMES + [BIG], key=azure_order)
    keys = [o.key for o in env["target"].iter_objects()]
    assert keys == sorted(NAMES + [BIG], key=s3_order)


def test_parity_of_a_clean_copy_needs_no_get_and_no_head(env: dict[str, Any]) -> None:
    outcome = _parity(env, env["snapshot"]["inventory_key"], "snapshots/snap-try1/validate-try1")
    assert outcome.success, outcome.summary
    assert outcome.rows == len(NAMES) + 1 and outcome.problem_count == 0
    calls = env["calls"]
    assert calls["GetObject"] == 0 and calls["HeadObject"] == 0, calls
    assert calls["ListObjectsV2"] == 1  # 295 keys: one page of 1,000


def test_parity_names_a_corrupted_a_missing_and_an_extra_object(env: dict[str, Any]) -> None:
    client, bucket = env["client"], env["target"].bucket
    corrupted, missing, extra = NAMES[3], NAMES[100], "docs/not in the source.txt"
    original = client.get_object(Bucket=bucket, Key=corrupted)
    body = bytearray(original["Body"].read())
    body[len(body) // 2] ^= 0x01  # one bit; the recorded hash and provenance are kept
    client.put_object(Bucket=bucket, Key=corrupted, Body=bytes(body), Metadata=original["Metadata"])
    client.delete_object(Bucket=bucket, Key=missing)
    client.put_object(Bucket=bucket, Key=extra, Body=b"?")
    env["calls"].clear()
    outcome = _parity(env, env["snapshot"]["inventory_key"], "snapshots/snap-try1/validate-try2")
    assert not outcome.success
    assert sorted(p["key"] for p in outcome.problems) == sorted([corrupted, missing, extra])
    assert outcome.problem_count == 3
    assert env["calls"]["HeadObject"] == 0
    assert env["calls"]["GetObject"] == 1  # the rewritten object only: its ETag no longer matches the record
    for key in (corrupted, missing, extra):
        assert key in outcome.summary


def test_delta_sync_copies_exactly_what_changed_from_one_listing(env: dict[str, Any]) -> None:
    container, source = env["container"], env["source"]
    modified, added, deleted = [NAMES[7], NAMES[250], BIG], ["docs/Nouveau é.txt", "zz/added.txt"], [NAMES[1], NAMES[290]]
    for name in modified[:2]:
        container.upload_blob(name, _body(name, 1), overwrite=True)
    container.get_blob_client(BIG).set_blob_metadata({"touched": "yes"})  # a property write moves the ETag
    for name in added:
        container.upload_blob(name, _body(name))
    for name in deleted:
        container.delete_blob(name)
    listings = []
    real = source.iter_objects
    source.iter_objects = lambda prefix="": listings.append(prefix) or real(prefix)  # type: ignore[method-assign]
    base = "snapshots/snap-try1/cutover-try1"
    synced = sync_delta(env["workload"], source, env["target"], env["evidence"], env["snapshot"], base, 1, print)
    assert listings == [""]  # one listing of the source
    delta = synced["delta"]
    assert sorted(delta["changed"]) == sorted(modified + added)
    assert (delta["new"], delta["modified"], sorted(delta["deleted"])) == (2, 3, sorted(deleted))
    assert synced["objects"] == len(NAMES) + 1 + len(added) - len(deleted)
    calls = env["calls"]
    assert calls["HeadObject"] <= len(modified) + len(added) and calls["ListObjectsV2"] == 0, calls
    assert env["target"].read_all(NAMES[7]) == _body(NAMES[7], 1)
    assert env["target"].head(deleted[0]) is None
    calls.clear()
    outcome = _parity(env, synced["final_inventory_key"], base)
    assert outcome.success, outcome.summary
    assert calls["GetObject"] == 0 and calls["HeadObject"] == 0, calls  # the delta's records prove its copies


def test_parity_checks_the_storage_class_of_every_listed_object(env: dict[str, Any]) -> None:
    client, bucket, cold = env["client"], env["target"].bucket, NAMES[7]
    clean = _parity(env, env["snapshot"]["inventory_key"], "snapshots/snap-try1/validate-try3")
    assert clean.success and clean.storage_classes == {"STANDARD": len(NAMES) + 1}, clean.storage_classes
    # Moved to Scaleway's archive class after the copy (a lifecycle rule, a hand): same bytes, same ETag.
    client.copy_object(Bucket=bucket, Key=cold, CopySource={"Bucket": bucket, "Key": cold}, StorageClass="GLACIER")
    outcome = _parity(env, env["snapshot"]["inventory_key"], "snapshots/snap-try1/validate-try4")
    assert not outcome.success and f"{cold} (GLACIER)" in outcome.summary
    assert outcome.storage_classes == {"STANDARD": len(NAMES), "GLACIER": 1}

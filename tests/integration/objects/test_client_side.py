"""Client-side encryption through the real copy path, parity and readers, on Azurite and moto.

moto stores exactly what it is sent, so here (unlike SSE-C) the stand-in proves the point
directly: the bytes read raw from moto are the sealed frames, not the source's.
"""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from azure.storage.blob import BlobServiceClient, ContentSettings
from botocore.config import Config

import devstack
from bascule.governance.bucket_rules import check_encryption_at_rest
from bascule.governance.encryption_sample import check_client_side_sample
from bascule.governance.evidence.store import EvidenceStore
from bascule.objects.copy_config import CopyConfig, RetryPolicy, recommended_s3_config
from bascule.objects.inventory import read_inventory
from bascule.objects.parity import readback_md5
from bascule.objects.phases import TransferIncomplete, dataset_readers, prove_parity, take_snapshot, transfer_shard
from bascule.objects.rekey import rewrap_client_side_key
from bascule.objects.shard import copy_shard
from bascule.objects.transfer_records import TransferRecord, latest_records, record_files
from bascule.storage.azure_blob import AzureBlobContainer
from bascule.storage.base import MD5_KEY
from bascule.storage.client_side import FORMAT, FRAME_SIZE, CiphertextError, ClientSideKey, sealed_size
from bascule.storage.encryption import EncryptionKeyError
from bascule.storage.s3 import S3Bucket
from bascule.workload import parse_manifest

pytestmark = pytest.mark.integration

MANIFEST = Path(__file__).parents[3] / "include" / "workloads" / "snds_extracts.yaml"
KEK = ClientSideKey(bytes(range(32)), "hdh_scaleway_cse")
OTHER = ClientSideKey(bytes(range(1, 33)), "hdh_scaleway_cse_other")
MiB = 1024 * 1024


def _client(endpoint: str) -> Any:
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="fr-par", aws_access_key_id="x", aws_secret_access_key="y",
        config=Config(**recommended_s3_config(4)),
    )  # fmt: skip


@pytest.fixture
def env(standins: devstack.Ports, blob_service: BlobServiceClient) -> Iterator[dict[str, Any]]:
    name = f"cse-{uuid.uuid4().hex[:16]}"
    container = blob_service.create_container(name)
    client = _client(f"http://127.0.0.1:{standins.moto}")
    target = S3Bucket(client, name, client_side=KEK)
    target.create("fr-par", health_data=True)  # with the default encryption client-side encryption asks for
    client.create_bucket(Bucket=f"{name}-ev", CreateBucketConfiguration={"LocationConstraint": "fr-par"})
    data = {
        "empty.csv": b"",
        "one.csv": b"1",
        "frame-1.bin": os.urandom(FRAME_SIZE - 1),
        "frame+1.bin": os.urandom(FRAME_SIZE + 1),
        "blocks.bin": os.urandom(11 * MiB + 7),  # multipart at 5 MiB parts, committed from blocks: no Content-MD5
    }
    for key, body in data.items():
        if key == "blocks.bin":
            blob = container.get_blob_client(key)
            ids = [base64.b64encode(f"{n:04d}".encode()).decode() for n in range(-(-len(body) // (4 * MiB)))]
            for block_id, start in zip(ids, range(0, len(body), 4 * MiB), strict=True):
                blob.stage_block(block_id, body[start : start + 4 * MiB])
            blob.commit_block_list(ids)
        else:
            md5 = bytearray(hashlib.md5(body).digest()) if body else None  # Azurite refuses an MD5 on no bytes
            container.upload_blob(key, body, content_settings=ContentSettings(content_md5=md5, content_type="text/csv"))
    manifest = yaml.safe_load(MANIFEST.read_text())
    manifest["source"].update(container=name, prefix="")
    manifest["target"].update(bucket=name, prefix="", encryption={"method": "client_side", "key_conn_id": KEK.conn_id})
    manifest["transfer"] = {"shards": 1, "concurrency": 2, "part_size_mib": 5}
    manifest["evidence"]["bucket"] = f"{name}-ev"  # the evidence's own bucket, never the data bucket
    workload = parse_manifest(MANIFEST, yaml.safe_dump(manifest))
    source = AzureBlobContainer(blob_service, name)
    evidence = EvidenceStore(client, workload.evidence.bucket, workload.id)
    try:
        yield {"name": name, "client": client, "target": target, "source": source, "evidence": evidence,
               "workload": workload, "data": data, "container": container}  # fmt: skip
    finally:
        container.delete_container()


def _transfer(env: dict[str, Any], target: S3Bucket, snapshot_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    snapshot = take_snapshot(env["workload"], env["source"], env["evidence"], snapshot_id)
    result = transfer_shard(env["workload"], env["source"], target, env["evidence"], snapshot, 0, 1)
    return snapshot, result


def _parity(env: dict[str, Any], snapshot: dict[str, Any], target: S3Bucket, name: str) -> Any:
    evidence = env["evidence"]
    inventory = read_inventory(evidence, snapshot["inventory_key"])
    return prove_parity(env["workload"], inventory, target, evidence, f"snapshots/{snapshot['snapshot_id']}/{name}", {})


def test_copy_stores_ciphertext_and_parity_and_readers_see_the_plaintext(env: dict[str, Any]) -> None:
    client, name, data, target = env["client"], env["name"], env["data"], env["target"]
    snapshot, result = _transfer(env, target, "snap-try1")
    assert result["copied"] == len(data) and result["failed"] == 0, result

    for key, plaintext in data.items():
        raw = client.get_object(Bucket=name, Key=key)
        stored = raw["Body"].read()
        assert len(stored) == sealed_size(len(plaintext)) and stored != plaintext, key
        assert plaintext[:32] not in stored or len(plaintext) < 32, key
        metadata = raw["Metadata"]
        assert metadata["bascule-cse"] == FORMAT and metadata["bascule-cse-kek"] == KEK.fingerprint, key
        assert MD5_KEY not in metadata  # no plaintext digest in clear for Scaleway to see
        # What readers see through the bucket: plaintext, plaintext size, the MD5 unsealed.
        assert target.read_all(key) == plaintext, key
        head = target.head(key)
        assert head is not None and head.size == len(plaintext)
        assert head.metadata[MD5_KEY] == base64.b64encode(hashlib.md5(plaintext).digest()).decode(), key

    evidence = env["evidence"]
    records = list(latest_records(evidence, record_files(evidence, "snapshots/snap-try1/")))
    assert {(r.client_side_kek, r.server_check) for r in records} == {(KEK.fingerprint, "content-md5")}
    assert {r.key: r.md5 for r in records} == {k: base64.b64encode(hashlib.md5(v).digest()).decode()
                                                for k, v in data.items()}  # fmt: skip
    assert next(r for r in records if r.key == "blocks.bin").multipart

    parity = _parity(env, snapshot, target, "validate-try1")
    assert parity.success, parity.summary
    assert parity.readbacks == 0  # the records proved every object: plaintext MD5 + server-checked ciphertext
    assert readback_md5(target)("blocks.bin") == base64.b64encode(hashlib.md5(data["blocks.bin"]).digest()).decode()
    _, target_reader = dataset_readers(env["workload"], env["source"], target, evidence, snapshot)
    assert target_reader.read("one.csv") == b"1"  # content suites and shadow jobs read the plaintext

    # A second run skips every object: HEAD unseals the recorded MD5, sizes are the plaintext's.
    _, again = _transfer(env, target, "snap-try2")
    assert again["skipped"] == len(data), again


def test_wrong_kek_fails_naming_the_connection_and_writes_nothing(env: dict[str, Any]) -> None:
    client, name = env["client"], env["name"]
    _transfer(env, env["target"], "snap-try1")
    before = {o["Key"]: o["ETag"] for o in client.list_objects_v2(Bucket=name)["Contents"]}
    with pytest.raises(TransferIncomplete) as failed:
        _transfer(env, S3Bucket(client, name, client_side=OTHER), "snap-try2")
    assert f"{len(env['data'])} object(s) failed, 0 copied" in str(failed.value)
    assert "'hdh_scaleway_cse_other'" in str(failed.value) and KEK.fingerprint in str(failed.value)
    assert {o["Key"]: o["ETag"] for o in client.list_objects_v2(Bucket=name)["Contents"]} == before


def test_policy_needs_default_encryption_and_every_object_sealed(env: dict[str, Any]) -> None:
    client, name, target = env["client"], env["name"], env["target"]
    snapshot, _ = _transfer(env, target, "snap-try1")
    passed = check_encryption_at_rest(client, name, sse_customer_key=None, health_data=True, client_side_kek=KEK.key)
    assert passed.ok and passed.evidence["method"] == "client_side", passed.detail
    assert passed.evidence["client_side_kek_md5"] == KEK.fingerprint and KEK.key.hex() not in str(passed.evidence)
    assert check_client_side_sample(client, name, KEK.key).ok

    client.delete_bucket_encryption(Bucket=name)
    refused = check_encryption_at_rest(client, name, sse_customer_key=None, health_data=True, client_side_kek=KEK.key)
    assert not refused.ok and "no default encryption" in refused.detail and "put-bucket-encryption" in refused.detail

    # An object stored in clear next to the sealed ones: the sample and parity both name it.
    client.put_object(Bucket=name, Key="one.csv", Body=b"1", Metadata={"bascule-source-etag": "x"})
    sample = check_client_side_sample(client, name, KEK.key)
    assert not sample.ok and "one.csv" in sample.detail
    assert not check_client_side_sample(client, name, OTHER.key).ok
    parity = _parity(env, snapshot, target, "validate-try2")
    assert not parity.success and "one.csv" in parity.summary
    assert [p["key"] for p in parity.problems] == ["one.csv"]  # its size is no sealed size: -1
    with pytest.raises(CiphertextError, match="'one.csv' is not client-side encrypted"):
        target.read_all("one.csv")


def test_streamed_sealed_parts_and_a_clear_object_overwritten(env: dict[str, Any]) -> None:
    """Parts above max_buffered_part_size stream through the sealing stream (hashed once, then sent)."""
    client, name, target, data = env["client"], env["name"], env["target"], env["data"]
    client.put_object(Bucket=name, Key="blocks.bin", Body=b"stale clear copy")  # overwritten, not trusted
    config = CopyConfig(
        preferred_part_size=5 * MiB, multipart_threshold=10 * MiB, chunk_size=MiB, max_buffered_part_size=4 * MiB,
        retry=RetryPolicy(max_attempts=2, base_delay_s=0.01, max_delay_s=0.02),
    )  # fmt: skip
    records: list[TransferRecord] = []
    objects = [o for o in env["source"].iter_objects("") if o.key == "blocks.bin"]
    report = copy_shard(
        objects, env["source"], target, target_prefix="", source_prefix="", snapshot_id="s1", concurrency=1,
        config=config, records=records.append, target_keys=None,
    )  # fmt: skip
    assert (report.copied, report.failed) == (1, 0), report.to_dict()
    assert records[0].multipart and records[0].server_check == "content-md5"
    assert target.read_all("blocks.bin") == data["blocks.bin"]
    assert client.head_object(Bucket=name, Key="blocks.bin")["ContentLength"] == sealed_size(len(data["blocks.bin"]))


def test_records_without_client_side_encryption_fail_parity_by_name(env: dict[str, Any]) -> None:
    client, name = env["client"], env["name"]
    plain = S3Bucket(client, name)  # the same workload copied before it asked for client-side encryption
    snapshot, _ = _transfer(env, plain, "snap-try1")
    parity = _parity(env, snapshot, env["target"], "validate-try1")
    assert not parity.success
    assert "client-side encryption" in parity.summary and "one.csv" in parity.summary


def test_kek_rotation_rewraps_data_keys_without_rewriting_the_frames(env: dict[str, Any]) -> None:
    client, name, data = env["client"], env["name"], env["data"]
    _transfer(env, env["target"], "snap-try1")
    frames = {key: client.get_object(Bucket=name, Key=key)["Body"].read() for key in data}
    rotated = S3Bucket(client, name, client_side=OTHER)

    result = rewrap_client_side_key(rotated, KEK)
    assert (result["rewrapped"], result["failed_count"]) == (len(data), 0), result["failed"]
    assert (result["old_kek_md5"], result["new_kek_md5"]) == (KEK.fingerprint, OTHER.fingerprint)
    for key, plaintext in data.items():
        assert client.get_object(Bucket=name, Key=key)["Body"].read() == frames[key]  # frames untouched
        assert rotated.read_all(key) == plaintext
        head = rotated.head(key)
        assert head is not None and head.size == len(plaintext)
        if key != "blocks.bin":  # the blobs uploaded whole carry a content type: the rewrap keeps it
            assert head.content_type == "text/csv"
    assert rotated.head("one.csv").metadata[MD5_KEY] == base64.b64encode(hashlib.md5(b"1").digest()).decode()
    with pytest.raises(EncryptionKeyError, match="'hdh_scaleway_cse'"):
        env["target"].head("one.csv")  # the old key no longer opens it
    again = rewrap_client_side_key(rotated, KEK)  # idempotent
    assert (again["rewrapped"], again["already_under_new_key"]) == (0, len(data))

"""Evidence under Object Lock on moto, which implements it: created locked, records locked, the lock checked.

moto enforces Object Lock retention on deletion (a locked version cannot be deleted), so
that is a real refusal, not a configuration read. It does not refuse a shortened
COMPLIANCE retention, which S3 and Scaleway do: that part rests on the provider.
"""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from bascule.exceptions import ManifestError
from bascule.governance.evidence.chain import EvidenceChain
from bascule.governance.evidence.lock import check_evidence_object_lock
from bascule.governance.evidence.verify import verify
from bascule.storage.s3 import S3Bucket
from bascule.workload import EvidenceLocation, parse_manifest

pytestmark = pytest.mark.integration


def _location(bucket: str, **fields: object) -> EvidenceLocation:
    return EvidenceLocation(conn_id="hdh_scaleway_s3", bucket=bucket, region="fr-par", **fields)


def test_a_created_evidence_bucket_locks_every_record_and_refuses_deleting_or_shortening(s3_client) -> None:
    bucket = f"ev-lock-{uuid.uuid4().hex[:12]}"
    S3Bucket(s3_client, bucket).create("fr-par", object_lock=("COMPLIANCE", 1))
    check = check_evidence_object_lock(s3_client, _location(bucket, retention_days=1), "w.yaml")
    retention = check.evidence["default_retention"]
    assert check.ok and (retention["Mode"], retention["Days"]) == ("COMPLIANCE", 1), check.detail

    chain = EvidenceChain(s3_client, bucket, "w", "run1", lock_mode="COMPLIANCE")
    chain.append("inventory", "snapshot", {"objects": 3})
    key = chain.prefix + "000001.json"
    head = s3_client.head_object(Bucket=bucket, Key=key)
    assert head["ObjectLockMode"] == "COMPLIANCE" and head["ObjectLockRetainUntilDate"] is not None

    with pytest.raises(ClientError) as deleted:
        s3_client.delete_object(Bucket=bucket, Key=key, VersionId=head["VersionId"])
    assert deleted.value.response["Error"]["Code"] == "AccessDenied"
    # (moto 5.2.5 accepts a shortened COMPLIANCE retention, which S3 and Scaleway refuse: not testable here.)
    # An overwrite is only a new version on top: the locked original stays, and the verifier sees it.
    s3_client.put_object(Bucket=bucket, Key=key, Body=b'{"forged": true}')
    original = s3_client.get_object(Bucket=bucket, Key=key, VersionId=head["VersionId"])["Body"].read()
    assert b'"objects":3' in original
    result = verify(s3_client, bucket, "w", "run1")
    assert not result.ok and result.first_broken == 1
    assert [lock["mode"] for lock in result.locks] == ["COMPLIANCE", None]  # the forged version is not locked


def test_verifier_reports_each_record_lock(s3_client) -> None:
    bucket = f"ev-lock-{uuid.uuid4().hex[:12]}"
    S3Bucket(s3_client, bucket).create("fr-par", object_lock=("GOVERNANCE", 1))
    chain = EvidenceChain(s3_client, bucket, "w", "run2", lock_mode="GOVERNANCE")
    chain.append("inventory", "snapshot", {"objects": 1})
    chain.seal("verify_evidence")
    result = verify(s3_client, bucket, "w", "run2")
    assert result.ok, result.reason
    assert [lock["mode"] for lock in result.locks] == ["GOVERNANCE"] * 3
    assert all(lock["retain_until"] for lock in result.locks)
    assert result.chain[0].payload["lock_mode"] == "GOVERNANCE"


def test_an_existing_bucket_without_lock_is_refused_unless_justified(s3_client) -> None:
    bucket = f"ev-nolock-{uuid.uuid4().hex[:12]}"
    S3Bucket(s3_client, bucket).create("fr-par")
    refused = check_evidence_object_lock(s3_client, _location(bucket), "hdh_registry.yaml")
    assert not refused.ok and f"evidence bucket '{bucket}' has no Object Lock" in refused.detail
    assert "evidence.object_lock: false with an evidence.justification in hdh_registry.yaml" in refused.detail

    justified = _location(bucket, object_lock=False, justification="legacy bucket, DPO ticket 7")
    passed = check_evidence_object_lock(s3_client, justified, "hdh_registry.yaml")
    assert passed.ok and "NO Object Lock" in passed.detail
    assert passed.evidence["justification"] == "legacy bucket, DPO ticket 7"


def test_no_lock_without_justification_is_a_manifest_error() -> None:
    path = Path(__file__).parents[3] / "include" / "workloads" / "hdh_registry.yaml"
    text = path.read_text().replace("  create_if_missing: true\ntransfer:", "  create_if_missing: true\n  object_lock: false\ntransfer:")
    assert "object_lock: false" in text
    with pytest.raises(ManifestError, match="evidence.object_lock: false needs an evidence.justification"):
        parse_manifest(path, text)


def test_every_writer_into_a_locked_evidence_bucket_sends_the_content_md5_it_requires(s3_client) -> None:
    # S3 (and moto) refuse a write without Content-MD5 or a checksum into an Object Lock bucket; with
    # the connections' request_checksum_calculation="when_required", botocore adds no checksum itself.
    import boto3
    from botocore.config import Config

    from bascule.governance.evidence.store import EvidenceExists, EvidenceStore
    from bascule.governance.routing import Location, RoutingRegistry
    from bascule.objects.copy_config import recommended_s3_config

    s3_client = boto3.client(
        "s3", endpoint_url=s3_client.meta.endpoint_url, region_name="fr-par", aws_access_key_id="x",
        aws_secret_access_key="y", config=Config(**recommended_s3_config(2)),
    )  # fmt: skip
    bucket = f"ev-lock-{uuid.uuid4().hex[:12]}"
    S3Bucket(s3_client, bucket).create("fr-par", object_lock=("COMPLIANCE", 1))
    store = EvidenceStore(s3_client, bucket, "w")
    store.put_json("a.json", {"ok": True})
    # Inventories and transfer records (an object workload's, spooled files) go the same way, write-once.
    key = store.put_file("inventory.jsonl.gz", io.BytesIO(b"spooled inventory"), "application/gzip")
    assert s3_client.get_object(Bucket=bucket, Key=key)["Body"].read() == b"spooled inventory"
    with pytest.raises(EvidenceExists):
        store.put_file("inventory.jsonl.gz", io.BytesIO(b"another"), "application/gzip")
    routing = RoutingRegistry(s3_client, bucket)
    azure = Location("azure", "https://a.blob.core.windows.net", "c", "")
    scaleway = Location("scaleway", "https://s3.fr-par.scw.cloud", bucket, "")
    routing.ensure("w", azure, scaleway, "run1")
    _, switched = routing.switch("w", "scaleway", "run1", "cutover")
    assert switched and routing.read("w")[0].live == "scaleway"

"""Sovereignty/HDS policy rules on real stand-ins: moto buckets configured with boto3, and a
PostgreSQL cluster with TLS (this module's own) next to the plain ``pg_pair`` target.

Each rule meets one compliant and one non-compliant configuration.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

import devstack
import pgclusters
from bascule.exceptions import PolicyViolation, StoreAccessError
from bascule.governance.bucket_rules import (
    check_encryption_at_rest,
    check_guard_policy,
    check_no_lifecycle,
    check_not_public,
    check_storage_classes,
    sse_customer_key_md5,
)
from bascule.governance.database_policy import (
    check_database_tls,
    enforce_postgres_target_policy,
    evaluate_postgres_target_policy,
)
from bascule.governance.object_policy import enforce_object_target_policy, evaluate_object_target_policy
from bascule.objects.preflight import preflight_object_store
from bascule.storage.azure_blob import AzureBlobContainer
from bascule.storage.bucket_guard import guard_policy
from bascule.storage.s3 import S3Bucket
from bascule.workload import parse_manifest

pytestmark = pytest.mark.integration

HTTPS_ENDPOINT = "https://s3.fr-par.scw.cloud"
SSE_C_KEY = os.urandom(32)


def _bucket(s3, name: str):
    """The bucket in fr-par, created if absent (moto starts empty each session; names are per rule)."""
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if name not in existing:
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "fr-par"})
    return name


def _guarded(s3, name: str) -> str:
    """A health-data bucket as Bascule creates one: default encryption and the guard policy."""
    _encrypted(s3, name)
    s3.put_bucket_policy(Bucket=name, Policy=json.dumps(guard_policy(name)))
    return name


def _encrypted(s3, name: str) -> str:
    _bucket(s3, name)
    s3.put_bucket_encryption(
        Bucket=name,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    return name


def _endpoint(s3) -> str:
    return str(s3.meta.endpoint_url)


# -- TLS -----------------------------------------------------------------------------------


def test_tls_https_endpoint_passes_in_production(s3_client) -> None:
    bucket = _encrypted(s3_client, "policy-tls")
    checks = evaluate_object_target_policy(
        s3_client, bucket, HTTPS_ENDPOINT, deployment="production", sse_customer_key=None
    )
    assert [(c.name, c.ok) for c in checks] == [
        ("policy_tls", True),
        ("policy_encryption_at_rest", True),
        ("policy_no_lifecycle", True),
        ("policy_not_public", True),
    ], [c.detail for c in checks]


def test_tls_plain_http_loopback_is_refused_in_production_naming_the_endpoint(s3_client) -> None:
    bucket = _encrypted(s3_client, "policy-tls")
    with pytest.raises(PolicyViolation) as refused:
        enforce_object_target_policy(
            s3_client, bucket, _endpoint(s3_client), deployment="production", sse_customer_key=None
        )
    message = str(refused.value)
    assert f"policy_tls: bucket 'policy-tls' would be reached at {_endpoint(s3_client)} without TLS" in message
    # Only the transport is wrong: the bucket itself complies.
    assert message.count("  - ") == 1


def test_tls_plain_http_loopback_is_allowed_and_flagged_in_local_development(s3_client) -> None:
    bucket = _encrypted(s3_client, "policy-tls")
    report = enforce_object_target_policy(
        s3_client,
        bucket,
        _endpoint(s3_client),
        deployment="local-development",
        sse_customer_key=None,
        expected_region="fr-par",
    )
    assert report.ok and report.local_development_exemptions == ["policy_tls"]
    record = json.loads(json.dumps(report.to_json()))
    assert record["local_development"] is True and record["deployment"] == "local-development"
    tls = record["checks"][0]
    assert tls["evidence"]["local_development"] is True and tls["detail"].startswith("LOCAL DEVELOPMENT:")
    assert record["checks"][1] == {
        "name": "target_bucket_region",
        "ok": True,
        "detail": "bucket 'policy-tls' is in region 'fr-par'",
    }


# -- encryption at rest ------------------------------------------------------------------


def test_bucket_default_encryption_passes_and_is_recorded(s3_client) -> None:
    result = check_encryption_at_rest(s3_client, _encrypted(s3_client, "policy-enc-default"), sse_customer_key=None)
    assert result.ok, result.detail
    assert result.evidence == {"bucket_default_encryption": ["AES256"], "sse_c": False}


def test_no_default_encryption_and_no_key_is_refused_with_the_fix(s3_client) -> None:
    result = check_encryption_at_rest(s3_client, _bucket(s3_client, "policy-enc-none"), sse_customer_key=None)
    assert not result.ok
    assert "bucket 'policy-enc-none' has no default encryption and no SSE-C key was provided" in result.detail
    assert "32-byte SSE-C key in the Airflow connection" in result.detail and "put-bucket-encryption" in result.detail


def test_sse_c_key_passes_without_bucket_encryption_and_records_its_fingerprint_only(s3_client) -> None:
    bucket = _bucket(s3_client, "policy-enc-ssec")
    # The writer sends the same key with every PUT; moto accepts (and ignores) it.
    s3_client.put_object(Bucket=bucket, Key="probe", Body=b"x", SSECustomerAlgorithm="AES256", SSECustomerKey=SSE_C_KEY)
    result = check_encryption_at_rest(s3_client, bucket, sse_customer_key=SSE_C_KEY)
    assert result.ok, result.detail
    assert result.evidence["sse_c"] is True and result.evidence["sse_c_key_md5"] == sse_customer_key_md5(SSE_C_KEY)
    assert SSE_C_KEY.hex() not in json.dumps(result.evidence) and SSE_C_KEY.hex() not in result.detail


def test_a_short_sse_c_key_is_refused(s3_client) -> None:
    result = check_encryption_at_rest(s3_client, _bucket(s3_client, "policy-enc-ssec"), sse_customer_key=b"k" * 16)
    assert not result.ok and "is 16 bytes; SSE-C (AES256) needs exactly 32" in result.detail


# -- archive classes ---------------------------------------------------------------------


def _with_lifecycle(s3, name: str, rules: list[dict]) -> str:
    bucket = _bucket(s3, name)
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})
    return bucket


def test_lifecycle_rules_all_disabled_pass_and_are_counted(s3_client) -> None:
    bucket = _with_lifecycle(s3_client, "policy-lc-off", [
        {"ID": "off", "Status": "Disabled", "Filter": {"Prefix": ""},
         "Transitions": [{"Days": 1, "StorageClass": "GLACIER"}]},
    ])  # fmt: skip
    result = check_no_lifecycle(s3_client, bucket)
    assert result.ok, result.detail
    assert result.detail == "bucket 'policy-lc-off' has 1 lifecycle rule(s), all disabled"
    assert check_no_lifecycle(s3_client, _bucket(s3_client, "policy-lc-none")).ok


def test_any_enabled_lifecycle_rule_is_refused_naming_bucket_and_rules(s3_client) -> None:
    # Not only archive transitions: an infrequent-access move or an expiration is refused too (HDS).
    bucket = _with_lifecycle(s3_client, "policy-lc-ia", [
        {"ID": "ia", "Status": "Enabled", "Filter": {"Prefix": "old/"},
         "Transitions": [{"Days": 30, "StorageClass": "ONEZONE_IA"}]},
        {"ID": "expire", "Status": "Enabled", "Filter": {"Prefix": "tmp/"}, "Expiration": {"Days": 7}},
        {"ID": "off", "Status": "Disabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 1}},
    ])  # fmt: skip
    result = check_no_lifecycle(s3_client, bucket)
    assert not result.ok and result.name == "policy_no_lifecycle"
    assert "bucket 'policy-lc-ia' has enabled lifecycle rule(s) 'ia', 'expire':" in result.detail
    assert "docs/runbooks.md#policy-no-lifecycle" in result.detail and "'off'" not in result.detail
    assert result.evidence["enabled_rules"] == ["ia", "expire"]


def test_lifecycle_moving_data_to_glacier_is_refused_naming_the_rule(s3_client) -> None:
    bucket = _with_lifecycle(s3_client, "policy-lc-archive", [
        {"ID": "to-archive", "Status": "Enabled", "Filter": {"Prefix": "stays/"},
         "Transitions": [{"Days": 90, "StorageClass": "GLACIER"}]},
    ])  # fmt: skip
    result = check_no_lifecycle(s3_client, bucket)
    assert not result.ok
    assert "rule 'to-archive' moves prefix 'stays/' to GLACIER after 90 day(s)" in result.detail
    assert "allows no active lifecycle rule" in result.detail


def test_guard_policy_is_required_on_health_data_buckets_and_checked_again(s3_client) -> None:
    bucket = _guarded(s3_client, "policy-guarded")
    result = check_guard_policy(s3_client, bucket)
    assert result.ok, result.detail
    assert check_not_public(s3_client, bucket).ok  # a Deny to '*' makes nothing public
    # Someone replaces the policy during the migration: the cutover's re-check refuses.
    weakened = guard_policy(bucket)
    weakened["Statement"] = weakened["Statement"][:1]
    s3_client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(weakened))
    refused = evaluate_object_target_policy(
        s3_client, bucket, HTTPS_ENDPOINT, deployment="production", sse_customer_key=SSE_C_KEY, health_data=True
    )
    failed = {c.name: c.detail for c in refused if not c.ok}
    assert list(failed) == ["policy_denies_prohibited"]
    assert "BasculeHdsDenyOtherStorageClasses (Deny s3:PutObject)" in failed["policy_denies_prohibited"]
    s3_client.delete_bucket_policy(Bucket=bucket)
    assert not check_guard_policy(s3_client, bucket).ok


def test_a_bucket_bascule_creates_carries_the_guard_policy_and_writes_standard(s3_client) -> None:
    target = S3Bucket(s3_client, "policy-created-hds")
    target.create("fr-par", health_data=True)
    assert check_guard_policy(s3_client, "policy-created-hds").ok
    target.put_object("a.csv", b"a")
    (listed,) = target.iter_objects("")
    assert listed.access_tier == "STANDARD"


def test_storage_classes_of_written_objects(s3_client) -> None:
    bucket = _bucket(s3_client, "policy-classes")
    s3_client.put_object(Bucket=bucket, Key="ok/a.csv", Body=b"a")
    s3_client.put_object(Bucket=bucket, Key="ok/b.csv", Body=b"b", StorageClass="ONEZONE_IA")
    s3_client.put_object(Bucket=bucket, Key="cold/c.csv", Body=b"c", StorageClass="GLACIER")
    target = S3Bucket(s3_client, bucket)

    assert check_storage_classes(target.iter_objects("ok/"), bucket=bucket).ok
    refused = check_storage_classes(target.iter_objects(""), bucket=bucket)
    assert not refused.ok and "cold/c.csv (GLACIER)" in refused.detail
    # The same rule over a sample, as preflight runs it.
    _encrypted(s3_client, bucket)
    sampled = evaluate_object_target_policy(
        s3_client, bucket, HTTPS_ENDPOINT, deployment="production", sse_customer_key=None, sample_prefix="cold/"
    )[-1]
    assert sampled.name == "policy_no_archive_storage_class" and not sampled.ok
    assert sampled.evidence["storage_classes"] == {"GLACIER": 1}


# -- public access -----------------------------------------------------------------------


def test_private_bucket_with_a_named_principal_policy_passes(s3_client) -> None:
    bucket = _bucket(s3_client, "policy-private")
    s3_client.put_bucket_policy(
        Bucket=bucket,
        Policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "MigrationApp",
                        "Effect": "Allow",
                        "Principal": {"AWS": "arn:aws:iam::123456789012:user/bascule"},
                        "Action": "s3:*",
                        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
                    }
                ],
            }
        ),
    )
    block = {
        name: True for name in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
    }
    s3_client.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=block)
    result = check_not_public(s3_client, bucket)
    assert result.ok, result.detail
    assert "public access block fully on" in result.detail
    assert result.evidence["public_access_block"] == block and result.evidence["policy_status_public"] is False


def test_a_wildcard_principal_in_the_bucket_policy_is_refused(s3_client) -> None:
    bucket = _bucket(s3_client, "policy-public-policy")
    s3_client.put_bucket_policy(
        Bucket=bucket,
        Policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Sid": "Anyone", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                     "Resource": f"arn:aws:s3:::{bucket}/*"}
                ],
            }
        ),
    )  # fmt: skip
    result = check_not_public(s3_client, bucket)
    assert not result.ok
    assert (
        "bucket 'policy-public-policy' is public: bucket policy statement 'Anyone' allows s3:GetObject to Principal '*'"
        in result.detail
    )
    assert "remove wildcard principals" in result.detail


@pytest.mark.parametrize(("acl", "group"), [("public-read", "AllUsers"), ("authenticated-read", "AuthenticatedUsers")])
def test_public_acl_grants_are_refused(s3_client, acl: str, group: str) -> None:
    bucket = _bucket(s3_client, f"policy-public-acl-{group.lower()}")
    s3_client.put_bucket_acl(Bucket=bucket, ACL=acl)
    result = check_not_public(s3_client, bucket)
    assert not result.ok and f"ACL grant: {group} has READ" in result.detail


# -- preflight -----------------------------------------------------------------------------


MANIFEST = """
id: policy_preflight
kind: object_store
description: Policy rules in preflight.
owner: data-platform
source: {{conn_id: hdh_azure_blob, container: policy-src}}
target: {{conn_id: hdh_scaleway_s3, bucket: {bucket}, region: fr-par, create_if_missing: true}}
evidence: {{conn_id: hdh_scaleway_s3, bucket: {bucket}-evidence, region: fr-par, create_if_missing: true{evidence}}}
approvals: {{approvers: [approver1], required: 1}}
cutover:
  window: {{timezone: Europe/Paris, days: [sunday], start: "02:00", end: "05:00"}}
"""


@pytest.fixture(scope="module")
def policy_source(blob_service) -> AzureBlobContainer:
    container = blob_service.get_container_client("policy-src")
    if not container.exists():
        container.create_container()
    container.upload_blob("a.csv", b"id\n1\n", overwrite=True)
    return AzureBlobContainer(blob_service, "policy-src")


def _preflight(s3, source: AzureBlobContainer, bucket: str, evidence: str = "", **kwargs):
    text = MANIFEST.format(bucket=bucket, evidence=evidence)
    workload = parse_manifest(Path("include/workloads/policy_preflight.yaml"), text)
    evidence = S3Bucket(s3, workload.evidence.bucket)
    return preflight_object_store(workload, "policy_preflight.yaml", source, S3Bucket(s3, bucket), evidence, **kwargs)


def test_preflight_without_deployment_reports_the_rules_as_not_evaluated(s3_client, policy_source) -> None:
    report = _preflight(s3_client, policy_source, _bucket(s3_client, "policy-enc-none"))
    assert report.ok and report.policy is None
    (note,) = [c for c in report.checks if c.name == "policy_not_evaluated"]
    assert "were NOT evaluated" in note.detail


def test_object_preflight_creates_its_evidence_bucket_locked_and_refuses_one_without_lock(
    s3_client, policy_source
) -> None:
    created = _preflight(s3_client, policy_source, "policy-lock-new")
    assert created.ok, created.summary()
    lock = s3_client.get_object_lock_configuration(Bucket="policy-lock-new-evidence")["ObjectLockConfiguration"]
    retention = lock["Rule"]["DefaultRetention"]
    assert lock["ObjectLockEnabled"] == "Enabled" and (retention["Mode"], retention["Days"]) == ("COMPLIANCE", 2190)
    assert {c.name for c in created.checks} >= {"evidence_bucket", "evidence_object_lock"}

    unlocked = _bucket(s3_client, "policy-lock-old-evidence")  # an existing bucket, created without Object Lock
    refused = _preflight(s3_client, policy_source, "policy-lock-old")
    failed = {c.name: c.detail for c in refused.checks if not c.ok}
    assert set(failed) == {"evidence_object_lock"}, failed
    assert f"evidence bucket '{unlocked}' has no Object Lock" in failed["evidence_object_lock"]
    assert "policy_preflight.yaml" in failed["evidence_object_lock"] and not refused.retryable
    assert not s3_client.list_objects_v2(Bucket=unlocked).get("Contents"), "nothing is written before the refusal"

    reason = "a test bucket; the chain stays tamper-evident"
    justified = _preflight(
        s3_client, policy_source, "policy-lock-old", evidence=f", object_lock: false, justification: {reason}"
    )
    assert justified.ok, justified.summary()
    (check,) = [c for c in justified.checks if c.name == "evidence_object_lock"]
    assert check.evidence["justification"] == reason and check.evidence["object_lock"] is False


def test_preflight_in_production_refuses_plain_http_before_creating_the_bucket(s3_client, policy_source) -> None:
    report = _preflight(s3_client, policy_source, "policy-never-created", deployment="production")
    failed = {c.name: c.detail for c in report.checks if not c.ok}
    # No SSE-C key either: the HDS rule refuses too, and says why (a data bucket needs object encryption).
    # The evidence bucket's connection is refused the same way, before it is created.
    assert set(failed) == {"policy_tls", "target_location_exists", "policy_encryption_at_rest", "evidence_policy_tls"}
    assert not report.retryable
    assert "will not be created while the region, TLS or encryption check fails" in failed["target_location_exists"]
    buckets = {b["Name"] for b in s3_client.list_buckets()["Buckets"]}
    assert "policy-never-created" not in buckets and "policy-never-created-evidence" not in buckets


def test_preflight_in_local_development_evaluates_the_bucket_rules(s3_client, policy_source) -> None:
    compliant = _preflight(
        s3_client, policy_source, _guarded(s3_client, "policy-guarded-tls"), deployment="local-development",
        sse_customer_key=SSE_C_KEY,
    )  # fmt: skip
    assert compliant.ok, compliant.summary()
    summary = json.loads(json.dumps(compliant.summary()))
    assert summary["policy"]["local_development"] is True
    assert [c["name"] for c in summary["policy"]["checks"]] == [
        "policy_tls",
        "policy_encryption_at_rest",
        "policy_no_lifecycle",
        "policy_not_public",
        "policy_denies_prohibited",
        "policy_no_archive_storage_class",
        "policy_sse_c_sampled",
    ]

    # A bucket default encryption alone is Scaleway's deletion mechanism, not HDS object encryption.
    unencrypted = _bucket(s3_client, "policy-guarded-none")  # guarded, but no default encryption
    s3_client.put_bucket_policy(Bucket=unencrypted, Policy=json.dumps(guard_policy(unencrypted)))
    for bucket in (unencrypted, _guarded(s3_client, "policy-guarded-tls")):
        refused = _preflight(s3_client, policy_source, bucket, deployment="local-development")
        assert [c.name for c in refused.checks if not c.ok] == ["policy_encryption_at_rest"] and not refused.retryable
        with pytest.raises(Exception, match=f"policy_encryption_at_rest: objects in bucket '{bucket}' would not be"):
            refused.raise_for_failures()
    with_key = _preflight(
        s3_client,
        policy_source,
        "policy-guarded-none",
        deployment="local-development",
        sse_customer_key=SSE_C_KEY,
    )
    assert with_key.ok, with_key.summary()


def test_a_bucket_preflight_creates_is_encrypted_by_default(s3_client, policy_source) -> None:
    keyed = {"deployment": "local-development", "sse_customer_key": SSE_C_KEY}
    dry = _preflight(s3_client, policy_source, "policy-dry-new", dry_run=True, **keyed)
    assert dry.ok, dry.summary()
    detail = {c.name: c.detail for c in dry.checks}["policy_encryption_at_rest"]
    assert "would be created with default encryption (AES256); objects would also be written with SSE-C" in detail
    assert "policy-dry-new" not in {b["Name"] for b in s3_client.list_buckets()["Buckets"]}

    # Without a key, neither the dry run nor the real one passes, and no bucket is created.
    for dry_run in (True, False):
        unkeyed = _preflight(s3_client, policy_source, "policy-dry-new", deployment="local-development", dry_run=dry_run)
        assert "policy_encryption_at_rest" in {c.name for c in unkeyed.checks if not c.ok}
    assert "policy-dry-new" not in {b["Name"] for b in s3_client.list_buckets()["Buckets"]}

    created = _preflight(s3_client, policy_source, "policy-dry-new", **keyed)
    assert created.ok, created.summary()
    rules = s3_client.get_bucket_encryption(Bucket="policy-dry-new")["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"


# -- database TLS ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pgclusters.PgCluster]:
    cluster = pgclusters.PgCluster("policy-tls", tmp_path_factory.mktemp("policy-pg") / "tls", devstack.free_port())
    cluster.create(tls=True)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


def _connect(cluster: pgclusters.PgCluster, options: str):
    import psycopg2

    conn = psycopg2.connect(f"{cluster.dsn()} {options}")
    conn.autocommit = True
    return conn


def test_database_tls_verify_full_passes_and_records_the_session(tls_cluster) -> None:
    options = f"sslmode=verify-full sslrootcert={tls_cluster.data_dir / 'server.crt'}"
    with closing(_connect(tls_cluster, options)) as conn:
        report = enforce_postgres_target_policy(conn, host="127.0.0.1", deployment="production")
    (check,) = report.checks
    assert check.name == "policy_database_tls" and check.ok
    assert check.evidence["ssl"] is True and check.evidence["sslmode"] == "verify-full"
    assert str(check.evidence["tls_version"]).startswith("TLSv1.")
    assert check.detail.startswith("the session to PostgreSQL server '127.0.0.1' is encrypted (TLSv1.")


def test_database_tls_require_passes_but_says_the_certificate_is_not_checked(tls_cluster) -> None:
    with closing(_connect(tls_cluster, "sslmode=require")) as conn:
        (check,) = evaluate_postgres_target_policy(conn, host="127.0.0.1", deployment="production")
    assert check.ok and "not checked (sslmode=require)" in check.detail


@pytest.mark.parametrize(
    ("sslmode", "reason"),
    [
        ("prefer", "is encrypted, but sslmode=prefer lets a later connection fall back to plain text"),
        ("disable", "is not encrypted (sslmode=disable) although the server offers TLS"),
    ],
)
def test_database_sessions_that_can_be_plain_are_refused(tls_cluster, sslmode: str, reason: str) -> None:
    with closing(_connect(tls_cluster, f"sslmode={sslmode}")) as conn:
        check = check_database_tls(conn, host="127.0.0.1", deployment="production")
    assert not check.ok and reason in check.detail and "sslmode=verify-full" in check.detail


def test_database_without_tls_is_refused_in_production_and_flagged_in_local_development(pg_pair) -> None:
    _, target = pg_pair
    with closing(target.connect()) as conn:
        with pytest.raises(PolicyViolation) as refused:
            enforce_postgres_target_policy(conn, host="127.0.0.1", deployment="production")
        allowed = enforce_postgres_target_policy(conn, host="127.0.0.1", deployment="local-development")
    assert "PostgreSQL server '127.0.0.1' does not offer TLS (ssl=off)" in str(refused.value)
    assert "turn TLS on at the server" in str(refused.value)
    assert allowed.ok and allowed.local_development_exemptions == ["policy_database_tls"]
    assert allowed.checks[0].detail.startswith("LOCAL DEVELOPMENT: the session to PostgreSQL server '127.0.0.1'")


def test_an_endpoint_that_does_not_answer_is_retryable_not_a_verdict() -> None:
    import boto3
    from botocore.config import Config

    nowhere = f"http://127.0.0.1:{devstack.free_port()}"
    client = boto3.client(
        "s3",
        endpoint_url=nowhere,
        region_name="fr-par",
        aws_access_key_id="x",
        aws_secret_access_key="y",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2),
    )
    with pytest.raises(StoreAccessError) as unreachable:
        evaluate_object_target_policy(
            client, "policy-tls", nowhere, deployment="local-development", sse_customer_key=None
        )
    assert unreachable.value.retryable
    assert "bucket 'policy-tls': reading its default encryption failed, endpoint unreachable" in str(unreachable.value)

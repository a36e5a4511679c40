"""Policy rules' pure logic: parsing bucket policies, ACLs and lifecycle rules, and the TLS verdicts."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from botocore.handlers import sse_md5

from bascule.exceptions import PolicyViolation
from bascule.governance.bucket_rules import (
    archive_transitions,
    check_storage_classes,
    default_encryption_algorithms,
    public_acl_grants,
    public_policy_statements,
    sse_customer_key_md5,
    sse_customer_key_problem,
)
from bascule.governance.object_policy import check_endpoint_tls
from bascule.governance.policy import CheckResult, PolicyReport, is_local_standin_host, parse_deployment
from bascule.storage.base import ObjectInfo

pytestmark = pytest.mark.unit


def _statement(**fields: object) -> dict[str, object]:
    return {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*", **fields}


@pytest.mark.parametrize(
    "principal",
    ["*", {"AWS": "*"}, {"AWS": ["arn:aws:iam::123:root", "*"]}, {"SCW": "*"}],
    ids=["star", "aws-star", "aws-list-with-star", "scw-star"],
)
def test_a_wildcard_principal_that_allows_is_public(principal: object) -> None:
    policy = json.dumps({"Version": "2012-10-17", "Statement": [_statement(Sid="Open", Principal=principal)]})
    assert public_policy_statements(policy) == ["statement 'Open' allows s3:GetObject to Principal '*'"]


def test_named_principals_and_denies_are_not_public() -> None:
    policy = {
        "Statement": [
            _statement(Principal={"SCW": "application_id:4c2d1f7e-0000-0000-0000-000000000000"}),
            {"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": "arn:aws:s3:::b/*"},
        ]
    }
    assert public_policy_statements(policy) == []


def test_a_single_statement_object_a_condition_and_not_principal_are_all_read() -> None:
    single = {"Statement": _statement(Principal="*", Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}})}
    assert public_policy_statements(single) == ["statement #1 allows s3:GetObject to Principal '*' (with a Condition)"]
    inverted = {"Statement": [_statement(NotPrincipal={"AWS": "arn:aws:iam::123:root"})]}
    (found,) = public_policy_statements(inverted)
    assert "to everyone except" in found and "NotPrincipal" in found


def test_a_policy_that_is_not_json_cannot_be_shown_private() -> None:
    with pytest.raises(ValueError):
        public_policy_statements("{not json")
    with pytest.raises(ValueError, match="not a JSON object"):
        public_policy_statements("[]")


def test_public_acl_grants_are_the_all_users_and_authenticated_users_groups() -> None:
    grants = [
        {"Grantee": {"Type": "CanonicalUser", "ID": "owner"}, "Permission": "FULL_CONTROL"},
        {"Grantee": {"Type": "Group", "URI": "http://acs.amazonaws.com/groups/global/AllUsers"}, "Permission": "READ"},
        {
            "Grantee": {"Type": "Group", "URI": "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"},
            "Permission": "WRITE",
        },
        {"Grantee": {"Type": "Group", "URI": "http://acs.amazonaws.com/groups/s3/LogDelivery"}, "Permission": "WRITE"},
    ]
    assert public_acl_grants(grants) == ["AllUsers has READ", "AuthenticatedUsers has WRITE"]


def test_enabled_transitions_to_archive_classes_are_found_with_their_scope() -> None:
    rules = [
        {"ID": "cold", "Status": "Enabled", "Filter": {"Prefix": "stays/"}, "Transitions": [{"Days": 30, "StorageClass": "GLACIER"}]},
        {
            "ID": "old-versions",
            "Status": "Enabled",
            "Filter": {},
            "NoncurrentVersionTransitions": [{"NoncurrentDays": 7, "StorageClass": "DEEP_ARCHIVE"}],
        },
        # Some servers still answer with the deprecated single-transition form, in any case.
        {"Status": "Enabled", "Prefix": "logs/", "Transition": {"Date": "2027-01-01T00:00:00Z", "StorageClass": "glacier"}},
    ]  # fmt: skip
    assert archive_transitions(rules) == [
        "rule 'cold' moves prefix 'stays/' to GLACIER after 30 day(s)",
        "rule 'old-versions' moves noncurrent versions the whole bucket to DEEP_ARCHIVE after 7 day(s)",
        "rule '#3' moves prefix 'logs/' to GLACIER on 2027-01-01T00:00:00Z",
    ]


def test_disabled_rules_infrequent_access_and_expiration_are_not_archiving() -> None:
    rules = [
        {"ID": "off", "Status": "Disabled", "Transitions": [{"Days": 1, "StorageClass": "GLACIER"}]},
        {"ID": "ia", "Status": "Enabled", "Transitions": [{"Days": 30, "StorageClass": "ONEZONE_IA"}]},
        {"ID": "expire-tmp", "Status": "Enabled", "Filter": {"Prefix": "tmp/"}, "Expiration": {"Days": 7}},
    ]
    assert archive_transitions(rules) == []


def test_default_encryption_algorithms_are_read_from_the_configuration() -> None:
    configuration = {
        "Rules": [
            {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "k"}},
            {"BucketKeyEnabled": False},
        ]
    }
    assert default_encryption_algorithms(configuration) == ["aws:kms"]
    assert default_encryption_algorithms({}) == []


def _object(key: str, storage_class: str | None) -> ObjectInfo:
    return ObjectInfo(key, 1, "e", datetime(2026, 1, 1, tzinfo=UTC), access_tier=storage_class)


def test_storage_classes_refuse_archived_objects_and_name_them() -> None:
    ok = check_storage_classes([_object("a", None), _object("b", "STANDARD"), _object("c", "ONEZONE_IA")], bucket="hdh")
    assert ok.ok and ok.evidence["storage_classes"] == {"STANDARD": 2, "ONEZONE_IA": 1}
    refused = check_storage_classes([_object("a", None), _object("x/y.csv", "GLACIER")], bucket="hdh")
    assert not refused.ok and refused.name == "policy_no_archive_storage_class"
    assert "1 of 2 object(s) checked in bucket 'hdh' are in an archive class, e.g. x/y.csv (GLACIER)" in refused.detail


def test_https_passes_in_production() -> None:
    result = check_endpoint_tls("https://s3.fr-par.scw.cloud", "hdh", deployment="production")
    assert result.ok and result.name == "policy_tls" and "local_development" not in result.evidence


def test_plain_http_is_refused_in_production_naming_the_endpoint_and_the_way_out() -> None:
    result = check_endpoint_tls("http://127.0.0.1:9090", "hdh", deployment="production")
    assert not result.ok
    assert "bucket 'hdh' would be reached at http://127.0.0.1:9090 without TLS" in result.detail
    assert "bascule_deployment" in result.detail and "https" in result.detail


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9090", "http://localhost:9000", "http://minio:9000"])
def test_plain_http_to_a_local_standin_passes_only_as_local_development_and_says_so(endpoint: str) -> None:
    result = check_endpoint_tls(endpoint, "hdh", deployment="local-development")
    assert result.ok and result.evidence["local_development"] is True
    assert result.detail.startswith("LOCAL DEVELOPMENT:") and endpoint in result.detail


def test_local_development_does_not_excuse_plain_http_to_a_public_host() -> None:
    result = check_endpoint_tls("http://s3.fr-par.scw.cloud", "hdh", deployment="local-development")
    assert not result.ok and "not a local stand-in host" in result.detail


def test_an_unknown_deployment_is_refused_not_treated_as_lenient() -> None:
    with pytest.raises(PolicyViolation, match="unknown deployment 'dev'"):
        check_endpoint_tls("http://127.0.0.1:9090", "hdh", deployment="dev")  # type: ignore[arg-type]


def test_local_standin_hosts() -> None:
    assert all(map(is_local_standin_host, ["127.0.0.1", "::1", "[::1]", "localhost", "moto", "10.1.2.3"]))
    assert not any(map(is_local_standin_host, ["s3.fr-par.scw.cloud", "51.159.1.1", ""]))


def test_deployment_variable_parsing_fails_closed() -> None:
    assert parse_deployment(None) == "production"
    assert parse_deployment("  ") == "production"
    assert parse_deployment(" Local-Development ") == "local-development"
    for typo in ("local", "dev", "prod"):
        with pytest.raises(PolicyViolation, match="bascule_deployment"):
            parse_deployment(typo)


def test_sse_c_keys_must_be_32_random_looking_bytes() -> None:
    assert sse_customer_key_problem(bytes(range(32)), "hdh") is None
    assert "is 16 bytes" in (sse_customer_key_problem(b"k" * 16, "hdh") or "")
    assert "placeholder" in (sse_customer_key_problem(b"\0" * 32, "hdh") or "")
    # The fingerprint is the one botocore sends as x-amz-server-side-encryption-customer-key-MD5.
    key = bytes(range(32))
    params = {"SSECustomerKey": key}
    sse_md5(params)
    assert sse_customer_key_md5(key) == params["SSECustomerKeyMD5"]


def test_policy_report_is_json_and_refuses_with_every_violation() -> None:
    checks = (
        CheckResult("policy_tls", True, "LOCAL DEVELOPMENT: ...", {"local_development": True}),
        CheckResult("policy_encryption_at_rest", False, "bucket 'hdh' has no default encryption", {"sse_c": False}),
        CheckResult("policy_not_public", False, "bucket 'hdh' is public: ACL grant: AllUsers has READ"),
    )
    report = PolicyReport("S3 bucket 'hdh' at http://127.0.0.1:9090", "local-development", checks)
    record = json.loads(json.dumps(report.to_json()))
    assert record["ok"] is False and record["local_development"] is True
    assert record["local_development_exemptions"] == ["policy_tls"]
    assert record["checks"][1] == {
        "name": "policy_encryption_at_rest",
        "ok": False,
        "detail": "bucket 'hdh' has no default encryption",
        "evidence": {"sse_c": False},
    }
    with pytest.raises(PolicyViolation) as refused:
        report.raise_for_violations()
    message = str(refused.value)
    assert "policy_encryption_at_rest: bucket 'hdh' has no default encryption" in message
    assert "policy_not_public: bucket 'hdh' is public" in message and "policy_tls" not in message


def _workload(region: str, allowed: str) -> object:
    from pathlib import Path

    from bascule.workload import parse_manifest

    text = (Path(__file__).parents[3] / "include" / "workloads" / "snds_extracts.yaml").read_text()
    text = text.replace("region: fr-par", f"region: {region}", 1).replace("\npolicy:\n  allowed_regions: [fr-par]\n", "\n")
    text += f"\npolicy:\n  allowed_regions: {allowed}\n  justification: reference data, DPO ticket 42\n"
    return parse_manifest(Path("snds_extracts.yaml"), text)


@pytest.mark.parametrize(
    ("region", "allowed", "ok", "expected"),
    [
        ("fr-par", "[fr-par]", True, "is in the allow-list ['fr-par'] (HDS: fr-par)"),
        # Justified, and still refused: health data has no HDS home in Amsterdam or Warsaw.
        ("nl-ams", "[fr-par, nl-ams]", False, "allows ['nl-ams'] for health data, which no justification"),
        ("fr-par", "[fr-par, pl-waw]", False, "allows ['pl-waw'] for health data"),
        ("pl-waw", "[fr-par]", False, "target region 'pl-waw' is not in the allow-list ['fr-par']"),
    ],
)
def test_only_fr_par_is_accepted_for_health_data(region: str, allowed: str, ok: bool, expected: str) -> None:
    from bascule.governance.policy import check_target_region

    result = check_target_region(_workload(region, allowed), "snds_extracts.yaml")  # type: ignore[arg-type]
    assert result.ok is ok and expected in result.detail, result.detail
    if not ok:
        assert "nl-ams and pl-waw are not HDS regions" in result.detail

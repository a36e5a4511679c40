"""The SSE-C key as the glue reads it: from an Airflow connection, masked, refused before any request."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from bascule.storage.encryption import EncryptionKeyError, key_fingerprint

ROOT = Path(__file__).resolve().parents[2]
KEY = os.urandom(32)


def test_the_key_comes_from_the_connection_password_and_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    import airflow.sdk.log

    from bascule_airflow import clients

    secret = base64.b64encode(KEY).decode()
    monkeypatch.setenv("AIRFLOW_CONN_TEST_SSE_C", f'{{"conn_type": "generic", "password": "{secret}"}}')
    masked: list[str] = []
    monkeypatch.setattr(airflow.sdk.log, "mask_secret", masked.append)
    key = clients.sse_c_key("test_sse_c")
    assert key.key == KEY and key.fingerprint == key_fingerprint(KEY)
    assert masked == [secret]  # registered with Airflow's masker before anything could log it
    assert secret not in repr(key) + str(key)


@pytest.mark.parametrize(
    ("password", "expected"),
    [(None, "could not be read"), ("", "has no password"), ("c2hvcnQ=", "is 5 bytes")],
)
def test_a_missing_or_malformed_key_names_the_connection(
    monkeypatch: pytest.MonkeyPatch, password: str | None, expected: str
) -> None:
    from bascule_airflow import clients

    if password is not None:
        monkeypatch.setenv("AIRFLOW_CONN_BAD_SSE_C", f'{{"conn_type": "generic", "password": "{password}"}}')
    with pytest.raises(EncryptionKeyError) as refused:
        clients.sse_c_key("bad_sse_c")
    assert "'bad_sse_c'" in str(refused.value) and expected in str(refused.value)


def test_preflight_refuses_a_missing_key_before_creating_anything(standins, s3_client) -> None:
    from bascule_airflow.preflight import _object_store_report

    manifest = yaml.safe_load((ROOT / "include" / "workloads" / "snds_extracts.yaml").read_text())
    manifest["target"]["bucket"] = "sse-c-never-created"
    manifest["target"]["encryption"]["key_conn_id"] = "no_such_key_connection"
    with pytest.raises(EncryptionKeyError, match="'no_such_key_connection'.*Nothing was written"):
        _object_store_report(manifest | {"kind": "object_store"}, "snds_extracts.yaml", False)
    assert "sse-c-never-created" not in {b["Name"] for b in s3_client.list_buckets()["Buckets"]}


def test_the_client_side_kek_comes_from_its_connection_masked_and_the_bucket_decrypts(
    monkeypatch: pytest.MonkeyPatch, standins: object
) -> None:
    import airflow.sdk.log

    from bascule_airflow import clients

    secret = base64.b64encode(KEY).decode()
    monkeypatch.setenv("AIRFLOW_CONN_TEST_CSE", f'{{"conn_type": "generic", "password": "{secret}"}}')
    masked: list[str] = []
    monkeypatch.setattr(airflow.sdk.log, "mask_secret", masked.append)
    manifest = yaml.safe_load((ROOT / "include" / "workloads" / "snds_extracts.yaml").read_text())
    manifest["target"]["encryption"] = {"method": "client_side", "key_conn_id": "test_cse"}
    bucket = clients.target_bucket(clients.workload_model(manifest | {"kind": "object_store"}))
    assert bucket.client_side.key == KEY and bucket.sse_c is None and not bucket.etag_is_md5
    assert masked[0] == secret  # registered first, before the S3 connection's own secrets
    with pytest.raises(EncryptionKeyError, match="'no_such_kek'.*key-encryption key.*client-side-key-missing-or-wrong"):
        clients.client_side_key("no_such_kek")


def test_preflight_of_a_client_side_workload_creates_the_bucket_with_default_encryption(
    monkeypatch: pytest.MonkeyPatch, standins: object, s3_client: Any
) -> None:
    from bascule_airflow.preflight import _object_store_report

    secret = base64.b64encode(KEY).decode()
    monkeypatch.setenv("AIRFLOW_CONN_TEST_CSE_PF", f'{{"conn_type": "generic", "password": "{secret}"}}')
    monkeypatch.setenv("AIRFLOW_VAR_BASCULE_DEPLOYMENT", "local-development")  # moto speaks plain HTTP
    manifest = yaml.safe_load((ROOT / "include" / "workloads" / "snds_extracts.yaml").read_text())
    bucket = f"cse-pf-{os.urandom(4).hex()}"
    manifest["target"].update(bucket=bucket, encryption={"method": "client_side", "key_conn_id": "test_cse_pf"})
    report = _object_store_report(manifest | {"kind": "object_store"}, "snds_extracts.yaml", False)
    checks = {c.name: c for c in report.checks}
    at_rest = checks["policy_encryption_at_rest"]
    assert at_rest.ok and at_rest.evidence["method"] == "client_side", at_rest.detail
    assert at_rest.evidence["client_side_kek_md5"] == key_fingerprint(KEY)
    assert checks["policy_client_side_sampled"].ok  # nothing written yet: passes and says so
    rules = s3_client.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert secret not in str(report.summary())

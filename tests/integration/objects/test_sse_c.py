"""SSE-C end to end, proved where moto cannot: a request recorder and a strict stand-in.

moto ignores SSE-C, so two independent proofs stand in for Scaleway here:

- a botocore ``before-send`` recorder on the copier's own client: every object request
  to the target carried the three SSE-C headers with the workload key's fingerprint;
- the strict stand-in (scripts/ssec_standin.py) between that client and moto: it refuses
  a write without a valid key (400), answers a HEAD without the key with 400 and with
  another key with 403, and shows SSE-C ETags that are not MD5s, so parity can only pass
  on the transfer records' server-verified Content-MD5s.
"""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from azure.storage.blob import BlobServiceClient, ContentSettings
from botocore.config import Config
from botocore.exceptions import ClientError
from ssec_standin import SseCStandIn, strict_proxy

import devstack
from bascule.governance.encryption_sample import check_sse_c_sample
from bascule.objects.compare import compare
from bascule.objects.copy_config import CopyConfig, RetryPolicy, recommended_s3_config
from bascule.objects.parts import MiB
from bascule.objects.rekey import rotate_sse_c_key
from bascule.objects.shard import copy_shard
from bascule.objects.transfer_records import TransferRecord
from bascule.storage.azure_blob import AzureBlobContainer
from bascule.storage.encryption import EncryptionKeyError, SseCKey, key_fingerprint
from bascule.storage.s3 import S3Bucket

pytestmark = pytest.mark.integration

KEY = SseCKey(bytes(range(32)), "hdh_scaleway_sse_c")
OTHER = SseCKey(bytes(range(1, 33)), "hdh_scaleway_sse_c_new")
# Parts of 5 MiB (moto's minimum); objects above 10 MiB go multipart, one above 6 MiB
# with a Content-MD5 streams as a single PUT, parts above 5 MiB stream too.
CONFIG = CopyConfig(
    preferred_part_size=5 * MiB,
    multipart_threshold=10 * MiB,
    chunk_size=MiB,
    max_buffered_part_size=4 * MiB,
    retry=RetryPolicy(max_attempts=2, base_delay_s=0.01, max_delay_s=0.02),
)
OBJECT_OPERATIONS = {"PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "CopyObject",
                     "HeadObject", "GetObject"}  # fmt: skip


def _client(endpoint: str) -> Any:
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="fr-par", aws_access_key_id="x", aws_secret_access_key="y",
        config=Config(**recommended_s3_config(4)),
    )  # fmt: skip


class Recorder:
    """Every request the client sends: operation, path and the SSE-C headers (values as sent)."""

    def __init__(self, client: Any):
        self.sent: list[tuple[str, str, dict[str, str]]] = []
        client.meta.events.register("before-send.s3.*", self._record)

    def _record(self, request: Any, event_name: str, **_: Any) -> None:
        headers = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        ssec = {k: v for k, v in headers.items() if "server-side-encryption-customer" in k}
        self.sent.append((event_name.rsplit(".", 1)[-1], request.url, ssec))


@pytest.fixture
def setup(standins: devstack.Ports, blob_service: BlobServiceClient) -> Iterator[dict[str, Any]]:
    name = f"ssec-{uuid.uuid4().hex[:16]}"
    container = blob_service.create_container(name)
    moto = _client(f"http://127.0.0.1:{standins.moto}")
    moto.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "fr-par"})
    proxy, standin = strict_proxy(standins.moto, name)
    client = _client(proxy.url)
    recorder = Recorder(client)
    try:
        yield {"name": name, "container": container, "moto": moto, "client": client, "standin": standin,
               "recorder": recorder, "source": AzureBlobContainer(blob_service, name), "proxy": proxy}  # fmt: skip
    finally:
        proxy.stop()
        container.delete_container()
        for item in moto.list_objects_v2(Bucket=name).get("Contents", []):
            moto.delete_object(Bucket=name, Key=item["Key"])


def _upload_source(setup: dict[str, Any]) -> dict[str, bytes]:
    data = {
        "small.csv": b"id;value\n1;2\n",  # one buffered PUT
        "streamed.bin": os.urandom(6 * MiB + 3),  # a single streamed PUT (it has a Content-MD5)
        "blocks.bin": os.urandom(11 * MiB),  # multipart from blocks, no Content-MD5: md5chksum by CopyObject
    }
    container = setup["container"]
    for key in ("small.csv", "streamed.bin"):
        md5 = hashlib.md5(data[key]).digest()
        container.upload_blob(key, data[key], content_settings=ContentSettings(content_md5=bytearray(md5)))
    blob = container.get_blob_client("blocks.bin")
    ids = []
    for index, start in enumerate(range(0, len(data["blocks.bin"]), 2 * MiB)):
        block_id = base64.b64encode(f"{index:08d}".encode()).decode()
        blob.stage_block(block_id, data["blocks.bin"][start : start + 2 * MiB])
        ids.append(block_id)
    blob.commit_block_list(ids)
    return data


def _copy(setup: dict[str, Any], target: S3Bucket) -> tuple[Any, list[TransferRecord]]:
    records: list[TransferRecord] = []
    objects = list(setup["source"].iter_objects(""))
    report = copy_shard(
        objects, setup["source"], target, target_prefix="", source_prefix="", snapshot_id="s1", concurrency=2,
        config=CONFIG, records=records.append, target_keys=None,
    )  # fmt: skip
    return report, records


def test_every_target_request_carries_the_key_and_parity_rests_on_verified_md5s(setup: dict[str, Any]) -> None:
    data = _upload_source(setup)
    target = S3Bucket(setup["client"], setup["name"], sse_c=KEY)
    report, records = _copy(setup, target)
    assert (report.copied, report.failed) == (3, 0), report.to_dict()

    sent = [(op, ssec) for op, _, ssec in setup["recorder"].sent if op in OBJECT_OPERATIONS]
    operations = {op for op, _ in sent}
    assert {"PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "CopyObject",
            "HeadObject"} <= operations  # fmt: skip
    for op, ssec in sent:
        assert ssec.get("x-amz-server-side-encryption-customer-algorithm") == "AES256", op
        assert ssec.get("x-amz-server-side-encryption-customer-key-md5") == KEY.fingerprint, op
    copies = [ssec for op, ssec in sent if op == "CopyObject"]
    assert all(c.get("x-amz-copy-source-server-side-encryption-customer-key-md5") == KEY.fingerprint for c in copies)
    assert setup["standin"].refused == []

    # Every record says the server verified a Content-MD5 on each request, under this key.
    assert {(r.server_check, r.sse_c_key_md5) for r in records} == {("content-md5", KEY.fingerprint)}
    # The stand-in's ETags are not MD5s (as on Scaleway): only the records can prove parity.
    listing = sorted(target.iter_objects(""), key=lambda o: o.key)
    assert all(o.etag != hashlib.md5(data[o.key]).hexdigest() for o in listing)
    readbacks: list[str] = []
    rows = list(
        compare(
            sorted(setup["source"].iter_objects(""), key=lambda o: o.key), listing, source_prefix="",
            target_prefix="", readback_md5=lambda key: readbacks.append(key) or "", etag_is_md5=False,
            records=sorted(records, key=lambda r: r.key),
        )
    )  # fmt: skip
    assert [r.verified for r in rows] == [True, True, True] and readbacks == []
    # And the bytes read back through the key are the source's.
    assert target.read_all("streamed.bin") == data["streamed.bin"]


def test_strict_standin_refuses_what_scaleway_refuses(setup: dict[str, Any]) -> None:
    client, name = setup["client"], setup["name"]
    with pytest.raises(ClientError) as refused:
        client.put_object(Bucket=name, Key="clear.csv", Body=b"x")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError):
        setup["moto"].head_object(Bucket=name, Key="clear.csv")  # nothing was stored

    client.put_object(Bucket=name, Key="enc.csv", Body=b"x", **KEY.request_params())
    for params, status in (({}, 400), (OTHER.request_params(), 403)):
        with pytest.raises(ClientError) as head:
            client.head_object(Bucket=name, Key="enc.csv", **params)
        assert head.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    answer = client.head_object(Bucket=name, Key="enc.csv", **KEY.request_params())
    assert answer["SSECustomerKeyMD5"] == KEY.fingerprint


def test_policy_sample_requires_the_400(setup: dict[str, Any]) -> None:
    client, name, moto = setup["client"], setup["name"], setup["moto"]
    empty = check_sse_c_sample(client, name, KEY.key)
    assert empty.ok and empty.evidence["sampled"] == 0
    for index in range(3):
        client.put_object(Bucket=name, Key=f"data/{index}.csv", Body=b"x", **KEY.request_params())
    good = check_sse_c_sample(client, name, KEY.key, prefix="data/")
    assert good.ok and good.evidence["head_without_key_400"] == 3, good.detail

    wrong = check_sse_c_sample(client, name, OTHER.key, prefix="data/")
    assert not wrong.ok and "not readable with key" in wrong.detail

    moto.put_object(Bucket=name, Key="data/clear.csv", Body=b"x")  # around the stand-in: stored in clear
    mixed = check_sse_c_sample(client, name, KEY.key, prefix="data/")
    assert not mixed.ok and "data/clear.csv" in mixed.detail and "readable without the key" in mixed.detail
    # On bare moto, which ignores SSE-C, the rule refuses: no pass on a stand-in that proves nothing.
    bare = check_sse_c_sample(moto, name, KEY.key, prefix="data/")
    assert not bare.ok


def test_wrong_key_fails_naming_the_connection_and_writes_nothing(setup: dict[str, Any]) -> None:
    _upload_source(setup)
    _copy(setup, S3Bucket(setup["client"], setup["name"], sse_c=KEY))
    setup["container"].upload_blob("small.csv", b"id;value\n1;3\n", overwrite=True)
    before = {o["Key"]: o["ETag"] for o in setup["moto"].list_objects_v2(Bucket=setup["name"])["Contents"]}

    report, _ = _copy(setup, S3Bucket(setup["client"], setup["name"], sse_c=OTHER))
    assert report.failed == 3
    reasons = " ".join(f.reason for f in report.failures)
    assert "hdh_scaleway_sse_c_new" in reasons and OTHER.fingerprint in reasons
    after = {o["Key"]: o["ETag"] for o in setup["moto"].list_objects_v2(Bucket=setup["name"])["Contents"]}
    assert after == before


def test_key_rotation_reencrypts_in_place_and_records_both_fingerprints(setup: dict[str, Any]) -> None:
    data = _upload_source(setup)
    _copy(setup, S3Bucket(setup["client"], setup["name"], sse_c=KEY))
    new = S3Bucket(setup["client"], setup["name"], sse_c=OTHER)

    result = rotate_sse_c_key(new, KEY)
    assert (result["rotated"], result["failed_count"]) == (3, 0), result["failed"]
    assert result["old_key_md5"] == KEY.fingerprint and result["new_key_md5"] == OTHER.fingerprint
    assert new.read_all("streamed.bin") == data["streamed.bin"]
    with pytest.raises(EncryptionKeyError):
        S3Bucket(setup["client"], setup["name"], sse_c=KEY).head("small.csv")
    assert check_sse_c_sample(setup["client"], setup["name"], OTHER.key).ok
    again = rotate_sse_c_key(new, KEY)  # idempotent: an interrupted rotation is simply run again
    assert (again["rotated"], again["already_under_new_key"]) == (0, 3)


def test_key_from_connection_text_names_the_connection() -> None:
    for text, expected in ((None, "has no password"), ("not base64!", "not base64"),
                           (base64.b64encode(b"k" * 16).decode(), "is 16 bytes")):  # fmt: skip
        with pytest.raises(EncryptionKeyError) as refused:
            SseCKey.from_base64(text, "hdh_scaleway_sse_c")
        assert "hdh_scaleway_sse_c" in str(refused.value) and expected in str(refused.value)
        assert "docs/runbooks.md#sse-c-key-missing-or-wrong" in str(refused.value)
    key = SseCKey.from_base64(base64.b64encode(bytes(range(32))).decode(), "c")
    assert key.fingerprint == key_fingerprint(bytes(range(32)))
    assert bytes(range(32)).hex() not in repr(key) and str(bytes(range(32))) not in repr(key) + str(key)


def test_standin_is_strict_only_on_its_bucket() -> None:
    standin = SseCStandIn("b")
    from faultproxy import Request

    assert standin.before(Request("PUT", "/other/k", {}), {}, b"x") == ({}, b"x")

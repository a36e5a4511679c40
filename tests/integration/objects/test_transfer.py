"""The copy engine between a real Azurite and a real moto server, with faults injected by a proxy.

Every test uses its own container and bucket. moto holds everything in memory, so
the whole module stays under ~200 MiB of object data.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import random
import tracemalloc
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient, ContentSettings
from botocore.config import Config

import devstack
from bascule.objects.copy_config import CopyConfig, RetryPolicy, recommended_s3_config
from bascule.objects.copy_engine import copy_object
from bascule.objects.copy_report import Progress
from bascule.objects.parts import MiB
from bascule.objects.provenance import SNAPSHOT_KEY, SOURCE_ETAG_KEY
from bascule.objects.shard import copy_shard
from bascule.storage.azure_blob import AzureBlobContainer
from bascule.storage.base import MD5_KEY, ObjectInfo
from bascule.storage.s3 import S3Bucket
from faultproxy import Fault, FaultProxy

pytestmark = pytest.mark.integration

FAST_RETRY = RetryPolicy(max_attempts=6, base_delay_s=0.02, max_delay_s=0.1)
# Small parts so that a ~20 MiB object goes multipart; 5 MiB is moto's (and S3's) minimum.
SMALL_PARTS = CopyConfig(preferred_part_size=5 * MiB, multipart_threshold=10 * MiB, chunk_size=MiB, retry=FAST_RETRY)


def b64md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def s3_client(endpoint: str, **overrides: Any) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="fr-par",
        aws_access_key_id="x",
        aws_secret_access_key="y",
        config=Config(**{**recommended_s3_config(8), **overrides}),
    )


@dataclass
class Pair:
    container: ContainerClient
    source: AzureBlobContainer
    client: Any  # boto3 S3 client (direct to moto, for checks)
    target: S3Bucket
    name: str

    def upload(self, key: str, data: bytes, **kwargs: Any) -> None:
        self.container.upload_blob(key, data, overwrite=True, **kwargs)

    def upload_blocks(self, key: str, data: bytes, block: int = 2 * MiB) -> None:
        """Commit from staged blocks, as large-file uploaders do: the blob gets no Content-MD5."""
        blob = self.container.get_blob_client(key)
        ids = []
        for index, start in enumerate(range(0, len(data), block)):
            block_id = base64.b64encode(f"{index:08d}".encode()).decode()
            blob.stage_block(block_id, data[start : start + block])
            ids.append(block_id)
        blob.commit_block_list(ids)

    def snapshot(self, prefix: str = "") -> list[ObjectInfo]:
        return list(self.source.iter_objects(prefix))

    def through(self, endpoint: str) -> S3Bucket:
        return S3Bucket(s3_client(endpoint), self.name)

    def uploads(self) -> list[dict[str, Any]]:
        return list(self.client.list_multipart_uploads(Bucket=self.name).get("Uploads", []))

    def keys(self, prefix: str = "") -> set[str]:
        return {o.key for o in self.target.iter_objects(prefix)}


@pytest.fixture(scope="module")
def azure(standins: devstack.Ports) -> BlobServiceClient:
    return BlobServiceClient(
        devstack.azurite_url(standins.azurite),
        credential={"account_name": devstack.AZURITE_ACCOUNT, "account_key": devstack.AZURITE_KEY},
    )


@pytest.fixture(scope="module")
def moto_url(standins: devstack.Ports) -> str:
    return f"http://127.0.0.1:{standins.moto}"


@pytest.fixture
def pair(azure: BlobServiceClient, moto_url: str) -> Iterator[Pair]:
    name = f"t-{uuid.uuid4().hex[:20]}"
    container = azure.create_container(name)
    client = s3_client(moto_url)
    client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "fr-par"})
    yield Pair(container, AzureBlobContainer(azure, name), client, S3Bucket(client, name), name)
    container.delete_container()
    # Free moto's memory: it keeps every object of every bucket until it exits.
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=item["Key"])
    for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
        client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])


@pytest.fixture
def proxy(standins: devstack.Ports) -> Iterator[FaultProxy]:
    with FaultProxy(standins.moto, lifetime_s=120) as running:
        yield running


def rand(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


# -- the happy path, then idempotency ---------------------------------------------------


def test_copy_a_mix_reads_back_identical_then_skips_everything(pair: Pair) -> None:
    csv = ContentSettings(content_type="text/csv; charset=utf-8")
    gz = ContentSettings(content_type="application/x-ndjson", content_encoding="gzip")
    blobs = {
        "exports/zero.bin": b"",
        "exports/one.txt": b"1",
        "exports/with space/file name.csv": b"a,b\n1,2\n",
        "exports/unicodé/ñandú €.txt": "données de santé".encode(),
        "exports/100%/a+b=c.csv": rand(3000, 1),
        "exports/q?x=1&y#frag;'quote'.txt": b"?#",
        "exports/double//slash/日本語.txt": b"//",
        "exports/nested/a/b/c/deep.json.gz": rand(70_000, 2),
        "exports/streamed.bin": rand(7 * MiB, 3),  # > part size, Content-MD5 known: one streamed PUT
        "exports/multipart.bin": rand(20 * MiB + 17, 4),  # 5 parts of 5 MiB
    }
    for key, data in blobs.items():
        settings = gz if key.endswith(".gz") else csv
        pair.upload(key, data, content_settings=settings, metadata={"Producer": "pmsi-export", "Batch": "42"})
    blocks = rand(6 * MiB + 5, 5)  # no Content-MD5: goes multipart, MD5 recorded afterwards
    pair.upload_blocks("exports/blocks.bin", blocks)
    blobs["exports/blocks.bin"] = blocks

    snapshot = pair.snapshot("exports/")
    assert {o.key for o in snapshot} == set(blobs)
    assert next(o for o in snapshot if o.key == "exports/blocks.bin").content_md5 is None
    # Azure metadata cannot hold non-ASCII; what S3 gets can (RFC 2047), so test that leg directly.
    snapshot = [
        dataclasses.replace(o, metadata={**o.metadata, "Auteur": "Zoé Lefèvre"}) if "one.txt" in o.key else o
        for o in snapshot
    ]
    beats: list[Progress] = []

    report = copy_shard(
        snapshot,
        pair.source,
        pair.target,
        source_prefix="exports/",
        target_prefix="hdh/raw/",
        snapshot_id="snap-001",
        config=SMALL_PARTS,
        progress=beats.append,
        progress_interval_s=0.05,
    )

    assert report.failures == []
    assert (report.copied, report.skipped, report.failed) == (len(blobs), 0, 0)
    assert report.bytes_copied == sum(len(d) for d in blobs.values())
    assert beats and beats[-1].objects_done == len(blobs) and beats[-1].bytes_done == report.bytes_copied
    assert pair.uploads() == []
    assert pair.keys() == {"hdh/raw/" + k[len("exports/") :] for k in blobs}
    by_key = {o.key: o for o in snapshot}
    for key, data in blobs.items():
        target_key = "hdh/raw/" + key[len("exports/") :]
        assert pair.target.read_all(target_key) == data, key
        head = pair.target.head(target_key)
        assert head is not None and head.size == len(data)
        assert head.metadata[MD5_KEY] == b64md5(data), key
        assert head.content_md5 == b64md5(data)
        assert head.metadata[SNAPSHOT_KEY] == "snap-001"
        assert head.metadata[SOURCE_ETAG_KEY] == by_key[key].etag
        if key == "exports/blocks.bin":
            assert head.content_type == "application/octet-stream"  # what Azure gave the block blob
            continue
        expected_type = gz if key.endswith(".gz") else csv
        assert head.content_type == expected_type.content_type
        assert head.content_encoding == expected_type.content_encoding
        assert head.metadata["producer"] == "pmsi-export" and head.metadata["batch"] == "42"
    assert pair.target.head("hdh/raw/one.txt").metadata["auteur"] == "Zoé Lefèvre"  # type: ignore[union-attr]
    raw = pair.client.head_object(Bucket=pair.name, Key="hdh/raw/one.txt")["Metadata"]["auteur"]
    assert raw.startswith("=?UTF-8?B?")

    again = copy_shard(
        snapshot,
        pair.source,
        pair.target,
        source_prefix="exports/",
        target_prefix="hdh/raw/",
        snapshot_id="snap-001",
        config=SMALL_PARTS,
    )
    assert (again.copied, again.skipped, again.failed) == (0, len(blobs), 0)


# -- integrity, changed sources ------------------------------------------------------------


def test_a_wrong_content_md5_fails_that_object_and_leaves_nothing_visible(pair: Pair) -> None:
    good = rand(1000, 10)
    bad = {"bad/small.csv": rand(1000, 11), "bad/streamed.bin": rand(6 * MiB, 12), "bad/multi.bin": rand(11 * MiB, 13)}
    pair.upload("good.csv", good)
    for key, data in bad.items():
        pair.upload(key, data)
        pair.container.get_blob_client(key).set_http_headers(
            ContentSettings(content_type="text/csv", content_md5=bytearray(hashlib.md5(b"not it").digest()))
        )
    snapshot = pair.snapshot()  # after set_http_headers, which changes the ETag

    report = copy_shard(
        snapshot, pair.source, pair.target, source_prefix="", target_prefix="", snapshot_id="s", config=SMALL_PARTS
    )

    assert (report.copied, report.failed) == (1, 3)
    assert report.retries == 0  # integrity failures are not retried
    reasons = {f.key: f.reason for f in report.failures}
    assert set(reasons) == set(bad)
    for key, data in bad.items():
        assert "integrity check failed" in reasons[key] and key in reasons[key]
        assert b64md5(b"not it") in reasons[key] and b64md5(data) in reasons[key]
    assert pair.keys() == {"good.csv"}
    assert pair.uploads() == []
    assert pair.target.read_all("good.csv") == good


def test_blobs_changed_or_deleted_after_the_snapshot_are_not_copied(pair: Pair) -> None:
    for key in ("keep.csv", "rewritten.csv", "deleted.csv", "big-rewritten.bin"):
        pair.upload(key, rand(12 * MiB if key.startswith("big") else 500, hash(key) % 1000))
    snapshot = pair.snapshot()
    pair.upload("rewritten.csv", b"a newer version")
    pair.upload("big-rewritten.bin", rand(12 * MiB, 99))
    pair.container.delete_blob("deleted.csv")

    report = copy_shard(
        snapshot, pair.source, pair.target, source_prefix="", target_prefix="", snapshot_id="s", config=SMALL_PARTS
    )

    assert (report.copied, report.failed, report.retries) == (1, 3, 0)
    for failure in report.failures:
        assert "changed since snapshot" in failure.reason and failure.key in failure.reason
    assert pair.keys() == {"keep.csv"}
    assert pair.uploads() == []


# -- transient faults ---------------------------------------------------------------------


def test_slowdowns_and_resets_are_retried_and_nothing_is_lost(pair: Pair, proxy: FaultProxy) -> None:
    blobs = {f"f/{i:02d}.csv": rand(1000 * i, i) for i in range(12)}
    blobs["f/streamed.bin"] = rand(6 * MiB, 20)
    blobs["f/multi.bin"] = rand(11 * MiB, 21)  # 3 parts
    for key, data in blobs.items():
        pair.upload(key, data)
    proxy.add(Fault("slowdown", times=6))
    proxy.add(Fault("reset", times=3))
    proxy.add(Fault("slowdown", times=1, match=lambda r: r.part_number == 2))

    report = copy_shard(
        pair.snapshot(),
        pair.source,
        pair.through(proxy.url),
        source_prefix="",
        target_prefix="",
        snapshot_id="s",
        config=SMALL_PARTS,
        target_keys=None,  # every request is one the engine retries, so counts match exactly
    )

    assert report.failures == [] and report.copied == len(blobs)
    assert proxy.injected == {"slowdown": 7, "reset": 3}
    assert report.retries == proxy.total_injected
    # Per-part retry: part 2 went twice, the others once.
    assert proxy.count(lambda r: r.part_number == 1) == 1
    assert proxy.count(lambda r: r.part_number == 2) == 2
    assert proxy.count(lambda r: r.part_number == 3) == 1
    for key, data in blobs.items():
        assert pair.target.read_all(key) == data, key
    assert pair.uploads() == []


def test_a_multipart_upload_failing_for_good_is_aborted(pair: Pair, proxy: FaultProxy) -> None:
    data = rand(16 * MiB, 30)  # 4 parts
    pair.upload("dump.bin", data)
    proxy.add(Fault("error500", match=lambda r: (r.part_number or 0) >= 3))
    config = dataclasses.replace(SMALL_PARTS, retry=dataclasses.replace(FAST_RETRY, max_attempts=3))

    report = copy_shard(
        pair.snapshot(),
        pair.source,
        pair.through(proxy.url),
        source_prefix="",
        target_prefix="",
        snapshot_id="s",
        config=config,
    )

    assert report.failed == 1 and report.copied == 0
    reason = report.failures[0].reason
    assert "dump.bin" in reason and "gave up after 3 attempts" in reason and "InternalError" in reason
    assert report.retries == 2
    assert pair.uploads() == []
    assert pair.keys() == set()


def test_an_upload_left_behind_by_a_crashed_attempt_is_aborted_by_the_next(pair: Pair, proxy: FaultProxy) -> None:
    data = rand(16 * MiB, 31)
    pair.upload("dump.bin", data)
    snapshot = pair.snapshot()
    # Everything after part 2 fails, the abort too: as if the worker died mid-upload.
    proxy.add(Fault("error500", after=4, match=lambda r: r.operation != "Head"))
    config = dataclasses.replace(SMALL_PARTS, retry=dataclasses.replace(FAST_RETRY, max_attempts=2))
    via_proxy = pair.through(proxy.url)

    first = copy_object(snapshot[0], pair.source, via_proxy, snapshot_id="s", config=config)

    assert first.status == "failed"
    leftovers = pair.uploads()
    assert [u["Key"] for u in leftovers] == ["dump.bin"]
    assert pair.keys() == set()

    proxy.clear()
    second = copy_object(snapshot[0], pair.source, via_proxy, snapshot_id="s", config=config)

    assert second.status == "copied", second.reason
    assert pair.uploads() == []
    assert pair.target.read_all("dump.bin") == data


# -- memory -----------------------------------------------------------------------------


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # resets VmHWM, the peak resident set size (Linux >= 4.0)
        return True
    except OSError:
        return False


@pytest.mark.parametrize(
    ("size", "config"),
    [
        (64 * MiB, CopyConfig()),  # the default path: one streamed PUT
        (24 * MiB, CopyConfig(preferred_part_size=8 * MiB, multipart_threshold=16 * MiB)),  # 3 buffered parts
    ],
    ids=["streamed-64MiB", "multipart-24MiB"],
)
def test_memory_stays_bounded_whatever_the_size(pair: Pair, size: int, config: CopyConfig) -> None:
    data = os.urandom(size)
    pair.upload("large.bin", data, max_concurrency=4)
    pair.container.get_blob_client("large.bin").set_http_headers(
        ContentSettings(content_md5=bytearray(hashlib.md5(data).digest()))
    )
    expected_md5 = b64md5(data)
    del data
    info = pair.snapshot()[0]
    assert info.content_md5 == expected_md5
    if not _reset_peak_rss():
        pytest.skip("cannot reset the peak RSS (/proc/self/clear_refs): not Linux, or not allowed")
    rss_before = _status_mib("VmRSS")

    tracemalloc.start()
    try:
        outcome = copy_object(info, pair.source, pair.target, snapshot_id="s", config=config)
        _, traced_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss_growth = _status_mib("VmHWM") - rss_before

    assert outcome.status == "copied", outcome.reason
    assert outcome.multipart is (size < 64 * MiB)
    # The bound that matters: resident memory, within 3 parts of 8 MiB.
    assert rss_growth < 3 * 8, f"peak RSS grew {rss_growth:.1f} MiB copying a {size / MiB:.0f} MiB object"
    # tracemalloc over-counts here: azure-core's download generator has __len__ = the
    # response length, so the SDK's list(response) reserves 8 bytes of pointers per
    # byte (32 MiB for a 4 MiB chunk) that are never touched, hence never resident.
    # It still proves the object was never held whole.
    assert traced_peak < 48 * MiB, f"Python allocations peaked at {traced_peak / MiB:.1f} MiB"
    head = pair.target.head("large.bin")
    assert head is not None and head.size == size and head.metadata[MD5_KEY] == expected_md5
    if not outcome.multipart:
        assert head.etag == base64.b64decode(expected_md5).hex()  # single PUT: the ETag is the MD5


def test_the_public_sdk_read_path_copies_the_same_bytes(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback used if azure-storage-blob stops exposing its pipeline (see _raw_sender)."""
    import bascule.storage.azure_blob as azure_blob

    monkeypatch.setattr(azure_blob, "_raw_sender", lambda blob: None)
    monkeypatch.setattr(azure_blob, "_PUBLIC_CHUNK_SIZE", MiB)
    blobs = {"zero": b"", "gz.json.gz": rand(5000, 40), "streamed.bin": rand(6 * MiB + 3, 41)}
    blobs["multi.bin"] = rand(11 * MiB, 42)
    for key, data in blobs.items():
        pair.upload(key, data, content_settings=ContentSettings(content_encoding="gzip" if "gz" in key else None))
    pair.upload_blocks("blocks.bin", rand(6 * MiB, 43))
    blobs["blocks.bin"] = rand(6 * MiB, 43)
    snapshot = pair.snapshot()
    pair.upload("changed.bin", b"late")  # not in the snapshot: must not matter
    changed = pair.snapshot()
    pair.upload("changed.bin", b"later")

    report = copy_shard(
        snapshot + [o for o in changed if o.key == "changed.bin"],
        pair.source,
        pair.target,
        source_prefix="",
        target_prefix="",
        snapshot_id="s",
        config=SMALL_PARTS,
    )

    assert report.copied == len(blobs) and report.failed == 1
    assert "changed since snapshot" in report.failures[0].reason
    for key, data in blobs.items():
        assert pair.target.read_all(key) == data, key
        assert pair.target.head(key).metadata[MD5_KEY] == b64md5(data)  # type: ignore[union-attr]


def test_botocore_own_retries_rewind_a_streamed_body(pair: Pair, proxy: FaultProxy) -> None:
    """With a client that keeps botocore's retries, a reset mid-PUT restarts the stream from the source."""
    data = rand(6 * MiB, 50)
    pair.upload("streamed.bin", data)
    proxy.add(Fault("reset", times=1, match=lambda r: r.operation == "Put"))
    proxy.add(Fault("slowdown", times=1, match=lambda r: r.operation == "Put"))
    target = S3Bucket(s3_client(proxy.url, retries={"mode": "standard", "total_max_attempts": 3}), pair.name)
    sent: list[int] = []

    outcome = copy_object(
        pair.snapshot()[0], pair.source, target, snapshot_id="s", config=SMALL_PARTS, on_bytes=sent.append
    )

    assert outcome.status == "copied" and not outcome.multipart, outcome.reason
    assert outcome.retries == 0  # botocore absorbed both faults
    assert proxy.count(lambda r: r.operation == "Put") == 3
    assert sum(sent) == len(data)
    assert pair.target.read_all("streamed.bin") == data

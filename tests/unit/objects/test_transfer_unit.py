"""The copy engine against in-memory fakes of the storage seam: every path, fault and count."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import random
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.config import Config

from bascule.exceptions import BasculeError, StoreAccessError
from bascule.objects.copy_config import CopyConfig, RetryPolicy, recommended_s3_config
from bascule.objects.copy_engine import copy_object
from bascule.objects.copy_report import Progress
from bascule.objects.parts import MAX_OBJECT_SIZE, MiB
from bascule.objects.provenance import SNAPSHOT_KEY, SOURCE_ETAG_KEY, already_copied, target_metadata
from bascule.objects.shard import copy_shard, target_key_for
from bascule.storage.azure_blob import SourceChangedError
from bascule.storage.base import MD5_KEY, ObjectInfo
from bascule.storage.s3 import MultipartUpload, S3Bucket, UploadedPart, decode_metadata, encode_metadata

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 28, tzinfo=UTC)
PART = 5 * MiB


def b64md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


# -- fakes --------------------------------------------------------------------------------


class Faults:
    """Exceptions to raise on the next calls of an operation, in order."""

    def __init__(self) -> None:
        self._queued: dict[str, list[BaseException]] = {}
        self._lock = threading.Lock()

    def queue(self, operation: str, *errors: BaseException) -> None:
        with self._lock:
            self._queued.setdefault(operation, []).extend(errors)

    def always(self, operation: str, error: BaseException, times: int = 1000) -> None:
        self.queue(operation, *([error] * times))

    def maybe_raise(self, operation: str) -> None:
        with self._lock:
            queued = self._queued.get(operation)
            error = queued.pop(0) if queued else None
        if error is not None:
            raise error


def transient(what: str = "HTTP 503 SlowDown") -> StoreAccessError:
    return StoreAccessError(what, retryable=True)


class FakeSource:
    def __init__(self) -> None:
        self.blobs: dict[str, tuple[bytes, str]] = {}
        self.faults = Faults()
        self.chunk_reads = 0
        self._etags = itertools.count(1)

    def describe(self) -> str:
        return "fake container 'src'"

    def add(
        self,
        key: str,
        data: bytes,
        *,
        md5: str | None | bool = True,
        content_type: str | None = "text/csv",
        content_encoding: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> ObjectInfo:
        etag = f"0x{next(self._etags):015X}"
        self.blobs[key] = (data, etag)
        content_md5 = b64md5(data) if md5 is True else (None if md5 is False else md5)
        return ObjectInfo(
            key=key,
            size=len(data),
            etag=etag,
            last_modified=NOW,
            content_md5=content_md5,
            content_type=content_type,
            content_encoding=content_encoding,
            metadata=dict(metadata or {}),
        )

    def rewrite(self, key: str, data: bytes) -> None:
        self.blobs[key] = (data, f"0x{next(self._etags):015X}")

    def _data(self, key: str, etag: str) -> bytes:
        if key not in self.blobs:
            raise SourceChangedError(self.describe(), key, etag, "the blob no longer exists")
        data, current = self.blobs[key]
        if current != etag:
            raise SourceChangedError(self.describe(), key, etag, "the If-Match condition failed")
        return data

    def read_into(self, key: str, offset: int, buffer: memoryview, *, etag: str, chunk_size: int = 4 * MiB) -> None:
        self.faults.maybe_raise("read")
        data = self._data(key, etag)
        buffer[:] = data[offset : offset + len(buffer)]

    def iter_chunks(
        self, key: str, *, etag: str, chunk_size: int = 4 * MiB, offset: int = 0, length: int | None = None
    ) -> Iterator[bytes]:
        data = self._data(key, etag)
        end = len(data) if length is None else offset + length
        for start in range(offset, end, chunk_size):
            self.faults.maybe_raise("chunk")
            self.chunk_reads += 1
            yield self._data(key, etag)[start : min(end, start + chunk_size)]


@dataclass
class Stored:
    data: bytes
    content_type: str | None
    content_encoding: str | None
    metadata: dict[str, str]
    etag: str


@dataclass
class Upload:
    key: str
    content_type: str | None
    content_encoding: str | None
    metadata: dict[str, str]
    parts: dict[int, bytes] = field(default_factory=dict)


class FakeTarget:
    """S3 semantics that matter here: Content-MD5 checked, uploads invisible until completed."""

    sse_c = None

    def __init__(self, *, stream: bool = True, etag_is_md5: bool = True) -> None:
        self.stream = stream
        self.etag_is_md5 = etag_is_md5  # False: as on SSE-C, a part's ETag proves nothing
        self.part_md5s: list[str | None] = []  # the Content-MD5 each UploadPart carried
        self.objects: dict[str, Stored] = {}
        self.uploads: dict[str, Upload] = {}
        self.faults = Faults()
        self.calls: list[tuple[str, str, Any]] = []
        self.cut_short: list[int] = []  # bytes received of streamed bodies that raised mid-way
        self.rewind_once = False  # like botocore's retry: read part of a body, seek(0), read again
        self.delay_s = 0.0
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def describe(self) -> str:
        return "fake bucket 'dst'"

    def can_stream_uploads(self, *, with_content_md5: bool) -> bool:
        return self.stream

    def _call(self, operation: str, key: str, extra: Any = None) -> None:
        with self._lock:
            self.calls.append((operation, key, extra))
        if self.delay_s:
            time.sleep(self.delay_s)
        self.faults.maybe_raise(operation)

    def count(self, operation: str, extra: Any = None) -> int:
        return sum(1 for op, _, x in self.calls if op == operation and (extra is None or x == extra))

    def _drain(self, body: Any, length: int | None) -> bytes:
        if isinstance(body, bytes | bytearray | memoryview):
            return bytes(body)
        assert length is not None, "a streamed body needs content_length"
        if self.rewind_once:
            self.rewind_once = False
            body.read(min(length, 100_000))
            body.seek(0)
        received = bytearray()
        try:
            while len(received) < length:
                block = body.read(16384)  # what http.client asks for
                if not block:
                    break
                received += block
        except BaseException:
            self.cut_short.append(len(received))
            raise
        return bytes(received)

    def head(self, key: str) -> ObjectInfo | None:
        self._call("head", key)
        stored = self.objects.get(key)
        if stored is None:
            return None
        return ObjectInfo(
            key=key,
            size=len(stored.data),
            etag=stored.etag,
            last_modified=NOW,
            content_md5=stored.metadata.get(MD5_KEY),
            content_type=stored.content_type,
            content_encoding=stored.content_encoding,
            metadata=dict(stored.metadata),
        )

    def put_object(
        self,
        key: str,
        body: Any,
        *,
        content_length: int | None = None,
        content_type: str | None = None,
        content_encoding: str | None = None,
        metadata: Mapping[str, str] | None = None,
        content_md5: str | None = None,
        if_none_match: bool = False,
    ) -> str:
        self._call("put", key, "stream" if hasattr(body, "read") else "bytes")
        data = self._drain(body, content_length)
        if content_md5 is not None and content_md5 != b64md5(data):
            raise StoreAccessError(f"PUT '{key}': BadDigest (HTTP 400)", retryable=True)
        etag = hashlib.md5(data).hexdigest()
        self.objects[key] = Stored(data, content_type, content_encoding, dict(metadata or {}), etag)
        return etag

    def create_multipart(
        self,
        key: str,
        *,
        content_type: str | None = None,
        content_encoding: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        self._call("create", key)
        upload_id = f"up-{next(self._ids)}"
        self.uploads[upload_id] = Upload(key, content_type, content_encoding, dict(metadata or {}))
        return upload_id

    def upload_part(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        body: Any,
        *,
        content_length: int | None = None,
        content_md5: str | None = None,
    ) -> str:
        self._call("part", key, part_number)
        self.part_md5s.append(content_md5)
        data = self._drain(body, content_length)
        if content_md5 is not None and content_md5 != b64md5(data):
            raise StoreAccessError("BadDigest", retryable=True)
        self.uploads[upload_id].parts[part_number] = data
        return hashlib.md5(data).hexdigest()

    def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[UploadedPart], *, if_none_match: bool = False
    ) -> str:
        self._call("complete", key)
        upload = self.uploads.get(upload_id)
        if upload is None:
            raise StoreAccessError(f"CompleteMultipartUpload '{key}': NoSuchUpload (HTTP 404)", retryable=False)
        assert [p.part_number for p in parts] == sorted(upload.parts)
        for part in parts:
            assert part.etag == hashlib.md5(upload.parts[part.part_number]).hexdigest()
        data = b"".join(upload.parts[p.part_number] for p in parts)
        del self.uploads[upload_id]
        etag = f"{hashlib.md5(b''.join(hashlib.md5(upload.parts[p.part_number]).digest() for p in parts)).hexdigest()}-{len(parts)}"
        self.objects[key] = Stored(data, upload.content_type, upload.content_encoding, upload.metadata, etag)
        self.faults.maybe_raise("complete-answer")  # the work is done, the answer gets lost
        return etag

    def abort_multipart(self, key: str, upload_id: str) -> None:
        self._call("abort", key)
        self.uploads.pop(upload_id, None)

    def list_multipart_uploads(self, prefix: str = "") -> Iterator[MultipartUpload]:
        self._call("list-uploads", prefix)
        for upload_id, upload in list(self.uploads.items()):
            if upload.key.startswith(prefix):
                yield MultipartUpload(upload.key, upload_id, NOW)

    def replace_metadata(
        self,
        key: str,
        *,
        if_etag: str,
        content_type: str | None = None,
        content_encoding: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        self._call("replace-metadata", key)
        stored = self.objects[key]
        if stored.etag != if_etag:
            raise StoreAccessError("PreconditionFailed (HTTP 412)", retryable=False)
        etag = hashlib.md5(stored.data).hexdigest()
        self.objects[key] = Stored(stored.data, content_type, content_encoding, dict(metadata or {}), etag)
        return etag

    def iter_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._call("list", prefix)
        for key in sorted(self.objects):
            if key.startswith(prefix):
                yield ObjectInfo(key, len(self.objects[key].data), self.objects[key].etag, NOW)


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def config(sleeps: Sleeps) -> CopyConfig:
    return CopyConfig(preferred_part_size=PART, multipart_threshold=3 * PART, chunk_size=1 * MiB, sleep=sleeps, seed=7)


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


# -- one object: the paths ----------------------------------------------------------------


def test_small_object_is_one_buffered_put_with_content_md5_and_full_metadata(config: CopyConfig) -> None:
    source, target = FakeSource(), FakeTarget()
    data = payload(70_000)
    info = source.add("in/a.csv", data, content_encoding="gzip", metadata={"Owner": "team-x"})

    outcome = copy_object(info, source, target, snapshot_id="snap-1", target_key="out/a.csv", config=config)

    assert outcome.status == "copied", outcome.reason
    assert (outcome.key, outcome.target_key, outcome.bytes, outcome.retries) == ("in/a.csv", "out/a.csv", 70_000, 0)
    assert outcome.md5_b64 == b64md5(data)
    stored = target.objects["out/a.csv"]
    assert stored.data == data
    assert (stored.content_type, stored.content_encoding) == ("text/csv", "gzip")
    assert stored.metadata == {
        "owner": "team-x",
        MD5_KEY: b64md5(data),
        SNAPSHOT_KEY: "snap-1",
        SOURCE_ETAG_KEY: info.etag,
    }
    assert target.count("put", "bytes") == 1 and target.count("create") == 0


def test_zero_byte_object(config: CopyConfig) -> None:
    source, target = FakeSource(), FakeTarget()
    info = source.add("empty", b"")
    outcome = copy_object(info, source, target, snapshot_id="s", config=config)
    assert outcome.status == "copied"
    assert target.objects["empty"].data == b""
    assert target.objects["empty"].metadata[MD5_KEY] == "1B2M2Y8AsgTpgAmY7PhCfg=="


def test_mid_size_object_with_known_md5_is_streamed_in_one_put(config: CopyConfig) -> None:
    source, target = FakeSource(), FakeTarget()
    data = payload(2 * PART + 123)
    info = source.add("mid.bin", data)
    outcome = copy_object(info, source, target, snapshot_id="s", config=config)
    assert outcome.status == "copied" and not outcome.multipart
    assert target.count("put", "stream") == 1
    assert target.objects["mid.bin"].data == data
    assert target.objects["mid.bin"].metadata[MD5_KEY] == b64md5(data)
    assert source.chunk_reads == 11  # 1 MiB chunks: streamed, never read whole


def test_mid_size_object_without_md5_goes_multipart_and_records_the_computed_md5(config: CopyConfig) -> None:
    source, target = FakeSource(), FakeTarget()
    data = payload(2 * PART + 5)
    info = source.add("blocks.bin", data, md5=False)
    outcome = copy_object(info, source, target, snapshot_id="s", config=config)
    assert outcome.status == "copied" and outcome.multipart, outcome.reason
    assert outcome.md5_b64 == b64md5(data)
    assert target.count("part") == 3
    assert target.count("replace-metadata") == 1
    assert target.objects["blocks.bin"].metadata[MD5_KEY] == b64md5(data)
    assert target.objects["blocks.bin"].data == data
    assert not target.uploads


def test_large_object_goes_multipart_with_a_content_md5_per_part(config: CopyConfig) -> None:
    source, target = FakeSource(), FakeTarget()
    data = payload(3 * PART + 1)
    info = source.add("large.bin", data, content_encoding="identity", metadata={"k": "v"})
    outcome = copy_object(info, source, target, snapshot_id="s", config=config)
    assert outcome.status == "copied" and outcome.multipart
    assert [x for op, _, x in target.calls if op == "part"] == [1, 2, 3, 4]
    assert target.count("replace-metadata") == 0  # known MD5: recorded when the upload was created
    stored = target.objects["large.bin"]
    assert stored.data == data and stored.metadata[MD5_KEY] == b64md5(data) and stored.metadata["k"] == "v"
    assert stored.content_encoding == "identity"


def test_parts_above_the_buffer_limit_are_streamed_and_checked_by_etag(sleeps: Sleeps) -> None:
    config = CopyConfig(
        preferred_part_size=PART, multipart_threshold=PART, chunk_size=MiB, max_buffered_part_size=MiB, sleep=sleeps
    )
    source, target = FakeSource(), FakeTarget()
    data = payload(2 * PART + 7)
    info = source.add("streamed-parts.bin", data, md5=False)
    outcome = copy_object(info, source, target, snapshot_id="s", config=config)
    assert outcome.status == "copied", outcome.reason
    assert target.objects["streamed-parts.bin"].data == data
    assert target.objects["streamed-parts.bin"].metadata[MD5_KEY] == b64md5(data)


def test_streamed_parts_carry_a_content_md5_where_etags_are_not_md5s(sleeps: Sleeps) -> None:
    config = CopyConfig(
        preferred_part_size=PART, multipart_threshold=PART, chunk_size=MiB, max_buffered_part_size=MiB, sleep=sleeps
    )
    source, target = FakeSource(), FakeTarget(etag_is_md5=False)
    data = payload(2 * PART + 7)
    sent: list[int] = []
    outcome = copy_object(
        source.add("sse-c-parts.bin", data, md5=False), source, target, snapshot_id="s", config=config,
        on_bytes=sent.append,
    )  # fmt: skip
    assert outcome.status == "copied" and outcome.server_check == "content-md5", outcome.reason
    assert target.objects["sse-c-parts.bin"].data == data
    assert len(target.part_md5s) == 3 and all(target.part_md5s)  # each part sent with its Content-MD5
    assert sum(sent) == len(data)  # the hashing pass is not counted as bytes sent


def test_a_client_that_cannot_stream_gets_buffered_parts_instead(config: CopyConfig) -> None:
    source, target = FakeSource(), FakeTarget(stream=False)
    data = payload(2 * PART)
    outcome = copy_object(source.add("x", data), source, target, snapshot_id="s", config=config)
    assert outcome.status == "copied" and outcome.multipart
    assert target.count("put") == 0 and target.count("part") == 2


def test_a_rewound_stream_starts_over_and_progress_is_not_counted_twice(config: CopyConfig) -> None:
    source, target = FakeSource(), FakeTarget()
    target.rewind_once = True
    data = payload(2 * PART)
    sent: list[int] = []
    outcome = copy_object(source.add("r", data), source, target, snapshot_id="s", config=config, on_bytes=sent.append)
    assert outcome.status == "copied"
    assert target.objects["r"].data == data
    assert sum(sent) == len(data)
    assert any(n < 0 for n in sent)  # the rewind took back what had been counted


# -- integrity -----------------------------------------------------------------------------


WRONG_MD5 = base64.b64encode(bytes(16)).decode()


@pytest.mark.parametrize(
    ("size", "path"),
    [(1000, "buffered PUT"), (2 * PART, "streamed PUT"), (3 * PART + 10, "multipart")],
)
def test_a_wrong_source_md5_fails_loudly_and_leaves_nothing(config: CopyConfig, size: int, path: str) -> None:
    source, target = FakeSource(), FakeTarget()
    info = source.add("patients/2024.csv", payload(size), md5=WRONG_MD5)

    outcome = copy_object(info, source, target, snapshot_id="s", config=config)

    assert outcome.status == "failed", path
    assert "patients/2024.csv" in outcome.reason and "integrity" in outcome.reason
    assert WRONG_MD5 in outcome.reason and b64md5(payload(size)) in outcome.reason
    assert outcome.retries == 0  # re-reading gives the same bytes: no retry storm
    assert target.objects == {} and target.uploads == {}
    if path == "streamed PUT":
        assert target.cut_short and target.cut_short[0] < size  # the last bytes were withheld
    if path == "multipart":
        assert target.count("abort") == 1 and target.count("complete") == 0


def test_source_changed_since_snapshot_is_not_copied(config: CopyConfig) -> None:
    source, target = FakeSource(), FakeTarget()
    small = source.add("small", payload(10))
    big = source.add("big", payload(3 * PART + 1))
    gone = source.add("gone", payload(10))
    source.rewrite("small", b"new")
    source.rewrite("big", payload(3 * PART + 1, seed=9))
    del source.blobs["gone"]
    for info in (small, big, gone):
        outcome = copy_object(info, source, target, snapshot_id="s", config=config)
        assert outcome.status == "failed"
        assert "changed since snapshot" in outcome.reason and info.key in outcome.reason
        assert outcome.retries == 0
    assert target.objects == {} and target.uploads == {}


def test_a_blob_rewritten_mid_copy_aborts_the_upload(config: CopyConfig) -> None:
    source, target = FakeSource(), FakeTarget()
    info = source.add("moving", payload(3 * PART + 1))
    original = target.upload_part

    def rewrite_after_first_part(*args: Any, **kwargs: Any) -> str:
        etag = original(*args, **kwargs)
        source.rewrite("moving", payload(3 * PART + 1, seed=5))
        return etag

    target.upload_part = rewrite_after_first_part  # type: ignore[method-assign]
    outcome = copy_object(info, source, target, snapshot_id="s", config=config)
    assert outcome.status == "failed" and "changed since snapshot" in outcome.reason
    assert target.uploads == {} and "moving" not in target.objects


def test_an_object_above_five_terabytes_is_refused() -> None:
    source, target = FakeSource(), FakeTarget()
    info = ObjectInfo("dumps/huge.bak", MAX_OBJECT_SIZE + 1, "0x1", NOW)
    outcome = copy_object(info, source, target, snapshot_id="s")
    assert outcome.status == "failed"
    assert "dumps/huge.bak" in outcome.reason and "5 TB" in outcome.reason
    assert target.calls == []


# -- retries ------------------------------------------------------------------------------


def test_transient_faults_are_retried_with_growing_jittered_backoff(config: CopyConfig, sleeps: Sleeps) -> None:
    source, target = FakeSource(), FakeTarget()
    data = payload(1000)
    target.faults.queue("head", transient())
    source.faults.queue("read", transient("Azure 503 ServerBusy"), transient("connection reset"))
    target.faults.queue("put", transient(), transient())
    outcome = copy_object(source.add("k", data), source, target, snapshot_id="s", config=config)
    assert outcome.status == "copied" and outcome.retries == 5
    assert target.objects["k"].data == data
    # Per operation: 1st retry waits 0.25-0.5 s, 2nd 0.5-1 s.
    assert [0.25 <= d <= 0.5 for d in sleeps.delays] == [True, True, False, True, False]
    assert 0.5 <= sleeps.delays[2] <= 1.0 and 0.5 <= sleeps.delays[4] <= 1.0


def test_retries_are_bounded_and_the_reason_says_so(config: CopyConfig, sleeps: Sleeps) -> None:
    source, target = FakeSource(), FakeTarget()
    target.faults.always("put", transient("HTTP 503 SlowDown"))
    outcome = copy_object(source.add("k", b"x"), source, target, snapshot_id="s", config=config)
    assert outcome.status == "failed"
    assert "gave up after 6 attempts" in outcome.reason and "SlowDown" in outcome.reason
    assert outcome.retries == 5 and len(sleeps.delays) == 5
    assert sum(sleeps.delays) <= 60
    assert target.objects == {}


def test_the_default_policy_waits_at_most_a_minute() -> None:
    policy, rng = RetryPolicy(), random.Random(1)
    for _ in range(200):
        delays = [policy.delay(n, rng) for n in range(1, policy.max_attempts)]
        assert sum(delays) <= policy.max_total_delay_s
        assert all(policy.base_delay_s / 2 <= d <= policy.max_delay_s for d in delays)


def test_the_backoff_budget_cuts_retries_short(sleeps: Sleeps) -> None:
    config = CopyConfig(retry=RetryPolicy(max_attempts=50, base_delay_s=1, max_total_delay_s=5), sleep=sleeps, seed=3)
    source, target = FakeSource(), FakeTarget()
    target.faults.always("put", transient())
    outcome = copy_object(source.add("k", b"x"), source, target, snapshot_id="s", config=config)
    assert outcome.status == "failed" and sum(sleeps.delays) <= 5 and outcome.retries < 10


@pytest.mark.parametrize(
    "error",
    [
        StoreAccessError("PUT 'k': access denied (AccessDenied)", retryable=False),
        SourceChangedError("fake", "k", "0x1", "the If-Match condition failed"),
    ],
)
def test_non_retryable_errors_fail_at_once(config: CopyConfig, sleeps: Sleeps, error: BasculeError) -> None:
    source, target = FakeSource(), FakeTarget()
    target.faults.queue("put", error)
    outcome = copy_object(source.add("k", b"x"), source, target, snapshot_id="s", config=config)
    assert outcome.status == "failed" and outcome.retries == 0 and sleeps.delays == []
    assert str(error) in outcome.reason


def test_a_failed_part_is_uploaded_again_alone(config: CopyConfig) -> None:
    source, target = FakeSource(), FakeTarget()
    target.faults.queue("part", transient())  # part 1 fails once
    original = target.upload_part
    seen: list[int] = []

    def fail_part_two_twice(key: str, upload_id: str, number: int, body: Any, **kwargs: Any) -> str:
        seen.append(number)
        if number == 2 and seen.count(2) <= 2:
            raise transient("connection reset by peer")
        return original(key, upload_id, number, body, **kwargs)

    target.upload_part = fail_part_two_twice  # type: ignore[method-assign]
    data = payload(3 * PART + 1)
    outcome = copy_object(source.add("k", data), source, target, snapshot_id="s", config=config)
    assert outcome.status == "copied" and outcome.retries == 3
    assert seen.count(3) == 1 and seen.count(4) == 1 and seen.count(2) == 3
    assert target.objects["k"].data == data


def test_a_multipart_upload_that_keeps_failing_is_aborted(config: CopyConfig) -> None:
    source, target = FakeSource(), FakeTarget()
    original = target.upload_part

    def parts_after_two_fail(key: str, upload_id: str, number: int, body: Any, **kwargs: Any) -> str:
        if number > 2:
            raise transient("HTTP 500 InternalError")
        return original(key, upload_id, number, body, **kwargs)

    target.upload_part = parts_after_two_fail  # type: ignore[method-assign]
    outcome = copy_object(source.add("k", payload(3 * PART + 1)), source, target, snapshot_id="s", config=config)
    assert outcome.status == "failed" and "gave up" in outcome.reason
    assert target.count("abort") == 1 and target.uploads == {} and target.objects == {}


def test_leftover_uploads_of_the_same_key_are_aborted_first(config: CopyConfig) -> None:
    source, target = FakeSource(), FakeTarget()
    stale = target.create_multipart("data/a")
    other = target.create_multipart("data/ab")  # same prefix, another key: not ours to touch
    data = payload(3 * PART)
    outcome = copy_object(source.add("data/a", data), source, target, snapshot_id="s", config=config)
    assert outcome.status == "copied"
    assert stale not in target.uploads and other in target.uploads
    assert target.objects["data/a"].data == data


def test_a_lost_complete_answer_is_recognised_as_success(config: CopyConfig) -> None:
    source, target = FakeSource(), FakeTarget()
    target.faults.queue("complete-answer", transient("read timeout"))
    data = payload(3 * PART)
    outcome = copy_object(source.add("k", data), source, target, snapshot_id="s", config=config)
    assert outcome.status == "copied", outcome.reason
    assert target.objects["k"].data == data and outcome.retries == 1


# -- idempotency ---------------------------------------------------------------------------


def test_a_second_copy_is_skipped_without_reading_the_source(config: CopyConfig) -> None:
    source, target = FakeSource(), FakeTarget()
    infos = [source.add("a", payload(10)), source.add("b", payload(3 * PART), md5=False)]
    for info in infos:
        assert copy_object(info, source, target, snapshot_id="s1", config=config).status == "copied"
    calls = len(target.calls)
    reads = source.chunk_reads
    for info in infos:
        again = copy_object(info, source, target, snapshot_id="s2", config=config)
        assert again.status == "skipped" and again.md5_b64 == target.objects[info.key].metadata[MD5_KEY]
    assert [op for op, _, _ in target.calls[calls:]] == ["head", "head"]
    assert source.chunk_reads == reads


def existing(info: ObjectInfo, **changes: Any) -> ObjectInfo:
    metadata = target_metadata(info, "s1", info.content_md5 or "computed==")
    base = replace(info, metadata=metadata, etag="target-etag")
    return replace(base, **changes)


BLOB = ObjectInfo("k", 10, "0xA", NOW, content_md5="md5==", content_type="text/csv", metadata={"Owner": "x"})
BLOCK_BLOB = replace(BLOB, content_md5=None)


@pytest.mark.parametrize(
    ("target", "source", "skip"),
    [
        (existing(BLOB), BLOB, True),
        (existing(BLOB), replace(BLOB, etag="0xB"), True),  # rewritten, same bytes and properties
        (existing(BLOB), replace(BLOB, etag="0xB", content_type="text/plain"), False),
        (existing(BLOB), replace(BLOB, etag="0xB", metadata={"Owner": "y"}), False),
        (existing(BLOB), replace(BLOB, etag="0xB", content_md5="other=="), False),
        (existing(BLOB, size=11), BLOB, False),
        (existing(BLOB, metadata={}), BLOB, False),  # copied by another tool: no record
        (existing(BLOCK_BLOB), BLOCK_BLOB, True),
        (existing(BLOCK_BLOB), replace(BLOCK_BLOB, etag="0xB"), False),  # nothing else proves the bytes
    ],
)
def test_already_copied(target: ObjectInfo, source: ObjectInfo, skip: bool) -> None:
    assert already_copied(target, source) is skip


def test_reserved_metadata_from_the_source_is_replaced_by_ours() -> None:
    info = replace(BLOB, metadata={"MD5CHKSUM": "stale", "bascule-snapshot": "old", "Keep": "1"})
    assert target_metadata(info, "s9", "fresh") == {
        "keep": "1",
        MD5_KEY: "fresh",
        SNAPSHOT_KEY: "s9",
        SOURCE_ETAG_KEY: "0xA",
    }


# -- metadata encoding ---------------------------------------------------------------------


def test_non_ascii_metadata_is_rfc2047_encoded_and_decodes_back() -> None:
    original = {
        "Auteur": "Zoé Lefèvre",
        "plain": "abc-123",
        "padded": " leading blank",
        "lookalike": "=?UTF-8?B?notours?=",
        "emoji": "🩺",
    }
    encoded = encode_metadata(original)
    assert all(value.isascii() and value.isprintable() for value in encoded.values())
    assert encoded["plain"] == "abc-123"
    assert encoded["auteur"] == "=?UTF-8?B?" + base64.b64encode("Zoé Lefèvre".encode()).decode() + "?="
    assert decode_metadata(encoded) == {k.lower(): v for k, v in original.items()}


def test_metadata_names_outside_the_http_token_set_are_percent_encoded() -> None:
    assert list(encode_metadata({"clé": "v", "a b": "v"})) == ["cl%C3%A9", "a%20b"]


# -- keys and configuration -------------------------------------------------------------


def test_target_key_for() -> None:
    assert target_key_for("exports/2024/a b.csv", "exports/", "hdh/raw/") == "hdh/raw/2024/a b.csv"
    assert target_key_for("x", "", "") == "x"
    with pytest.raises(ValueError, match="not under the source prefix"):
        target_key_for("other/x", "exports/", "t/")


def test_recommended_s3_config_lets_uploads_stream_over_plain_http() -> None:
    def bucket(endpoint: str, **config: Any) -> S3Bucket:
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="fr-par",
            aws_access_key_id="x",
            aws_secret_access_key="y",
            config=Config(**config),
        )
        return S3Bucket(client, "b")

    tuned = bucket("http://127.0.0.1:1", **recommended_s3_config(32))
    assert tuned.client.meta.config.max_pool_connections >= 32
    assert tuned.can_stream_uploads(with_content_md5=True) and tuned.can_stream_uploads(with_content_md5=False)
    assert not bucket("http://127.0.0.1:1").can_stream_uploads(with_content_md5=True)
    assert bucket("https://s3.fr-par.scw.cloud").can_stream_uploads(with_content_md5=True)
    signed = bucket("https://s3.fr-par.scw.cloud", request_checksum_calculation="when_required")
    assert signed.can_stream_uploads(with_content_md5=True) and not signed.can_stream_uploads(with_content_md5=False)


def test_invalid_configuration_is_refused_up_front() -> None:
    with pytest.raises(ValueError, match="preferred_part_size"):
        CopyConfig(preferred_part_size=MiB)
    with pytest.raises(ValueError, match="chunk_size"):
        CopyConfig(chunk_size=0)


# -- a shard ------------------------------------------------------------------------------


def test_a_shard_collects_failures_and_never_raises(config: CopyConfig) -> None:
    source, target = FakeSource(), FakeTarget()
    names = ["a b.csv", "unicodé/ñ.txt", "100%/x+y.bin", "empty", "nested/deep/er/z"]
    infos = [source.add("src/" + n, payload(i * 997, seed=i)) for i, n in enumerate(names)]
    infos.append(source.add("src/bad-md5", payload(50), md5=WRONG_MD5))
    infos.append(ObjectInfo("elsewhere/x", 1, "0x9", NOW))  # not under the source prefix
    changed = source.add("src/changed", payload(5))
    source.rewrite("src/changed", b"other")
    infos.append(changed)

    report = copy_shard(
        infos,
        source,
        target,
        source_prefix="src/",
        target_prefix="dst/",
        snapshot_id="s1",
        concurrency=3,
        config=config,
    )

    assert (report.copied, report.skipped, report.failed, report.objects) == (5, 0, 3, 8)
    assert report.bytes_copied == sum(i * 997 for i in range(5))
    assert {f.key for f in report.failures} == {"src/bad-md5", "elsewhere/x", "src/changed"}
    reasons = {f.key: f.reason for f in report.failures}
    assert "integrity" in reasons["src/bad-md5"]
    assert "not under the source prefix" in reasons["elsewhere/x"]
    assert "changed since snapshot" in reasons["src/changed"]
    for i, name in enumerate(names):
        assert target.objects["dst/" + name].data == payload(i * 997, seed=i)
    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["copied"] == 5 and as_json["failures"][0]["reason"] and as_json["ok"] is False
    assert "failed 3" in report.summary()

    again = copy_shard(
        infos[:5], source, target, source_prefix="src/", target_prefix="dst/", snapshot_id="s1", config=config
    )
    assert (again.copied, again.skipped, again.failed) == (0, 5, 0) and again.ok


def test_keys_absent_from_a_fresh_listing_skip_the_head(config: CopyConfig) -> None:
    source, target = FakeSource(), FakeTarget()
    infos = [source.add(f"k{i}", payload(10, seed=i)) for i in range(20)]
    report = copy_shard(infos, source, target, source_prefix="", target_prefix="", snapshot_id="s", config=config)
    assert report.copied == 20 and target.count("head") == 0 and target.count("list") == 1
    target.calls.clear()
    report = copy_shard(infos, source, target, source_prefix="", target_prefix="", snapshot_id="s", config=config)
    assert report.skipped == 20 and target.count("head") == 20
    target.calls.clear()
    copy_shard(iter(infos), source, target, source_prefix="", target_prefix="", snapshot_id="s", target_keys=None)
    assert target.count("list") == 0 and target.count("head") == 20


def test_a_target_prefix_much_larger_than_the_shard_is_not_listed_to_the_end(config: CopyConfig) -> None:
    source, target = FakeSource(), FakeTarget()
    for i in range(1100):
        target.objects[f"other/{i}"] = Stored(b"", None, None, {}, "e")
    info = source.add("k", b"x")
    report = copy_shard([info], source, target, source_prefix="", target_prefix="", snapshot_id="s", config=config)
    assert report.copied == 1 and target.count("head") == 1


def test_the_shard_pulls_objects_through_a_bounded_window(config: CopyConfig) -> None:
    source, target = FakeSource(), FakeTarget()
    target.delay_s = 0.002
    infos = [source.add(f"k{i}", b"x") for i in range(200)]
    pulled = 0
    max_ahead = 0

    def lazily() -> Iterator[ObjectInfo]:
        nonlocal pulled, max_ahead
        for info in infos:
            pulled += 1
            max_ahead = max(max_ahead, pulled - len(target.objects))
            yield info

    report = copy_shard(
        lazily(), source, target, source_prefix="", target_prefix="", snapshot_id="s", concurrency=4, config=config
    )
    assert report.copied == 200
    assert max_ahead <= 2 * 4 + 1


def test_progress_arrives_at_a_steady_cadence_and_once_at_the_end(config: CopyConfig) -> None:
    source, target = FakeSource(), FakeTarget()
    target.delay_s = 0.01
    infos = [source.add(f"k{i}", payload(1000, seed=i)) for i in range(60)]
    beats: list[Progress] = []
    report = copy_shard(
        infos,
        source,
        target,
        source_prefix="",
        target_prefix="",
        snapshot_id="s",
        concurrency=2,
        config=config,
        progress=beats.append,
        progress_interval_s=0.05,
    )
    assert report.copied == 60
    assert len(beats) >= 3
    assert [b.objects_done for b in beats] == sorted(b.objects_done for b in beats)
    last = beats[-1]
    assert (last.objects_done, last.objects_total, last.bytes_total, last.bytes_done) == (60, 60, 60_000, 60_000)
    assert last.rate_mb_s > 0 and last.eta_s == 0
    assert "60/60 objects (copied 60, skipped 0, failed 0)" in last.describe()


def test_a_broken_progress_callback_does_not_fail_the_shard(config: CopyConfig) -> None:
    source, target = FakeSource(), FakeTarget()

    def broken(_: Progress) -> None:
        raise RuntimeError("log sink down")

    infos = [source.add("k", b"x")]
    report = copy_shard(
        infos, source, target, source_prefix="", target_prefix="", snapshot_id="s", progress=broken, config=config
    )
    assert report.copied == 1


def test_cancel_stops_the_shard_and_aborts_uploads_in_flight(config: CopyConfig) -> None:
    source, target = FakeSource(), FakeTarget()
    cancel = threading.Event()
    original = target.upload_part

    def cancel_during_part_two(key: str, upload_id: str, number: int, body: Any, **kwargs: Any) -> str:
        if number == 2:
            cancel.set()
        return original(key, upload_id, number, body, **kwargs)

    target.upload_part = cancel_during_part_two  # type: ignore[method-assign]
    infos = [source.add("big", payload(3 * PART + 1))] + [source.add(f"k{i}", b"x") for i in range(50)]
    report = copy_shard(
        infos,
        source,
        target,
        source_prefix="",
        target_prefix="",
        snapshot_id="s",
        concurrency=1,
        config=config,
        cancel=cancel,
    )
    assert report.failed == 51 and report.copied == 0
    assert "cancelled" in report.failures[0].reason
    assert target.uploads == {} and target.objects == {}


def test_a_run_of_failures_stops_the_shard_early(config: CopyConfig) -> None:
    source, target = FakeSource(), FakeTarget()
    target.faults.always("put", StoreAccessError("PUT: access denied (AccessDenied)", retryable=False), 10_000)
    pulled = 0

    def lazily() -> Iterator[ObjectInfo]:
        nonlocal pulled
        for i in range(1000):
            pulled += 1
            yield source.add(f"k{i}", b"x")

    report = copy_shard(
        lazily(),
        source,
        target,
        source_prefix="",
        target_prefix="",
        snapshot_id="s",
        concurrency=2,
        config=config,
        target_keys=None,
        stop_after_failures=10,
    )
    assert report.stopped is not None and "10 failures in a row" in report.stopped and "AccessDenied" in report.stopped
    assert not report.ok and pulled < 30
    assert "something systemic" in report.summary()
    assert report.to_dict()["stopped"] == report.stopped


def test_a_malformed_source_md5_fails_the_object_clearly(config: CopyConfig) -> None:
    source, target = FakeSource(), FakeTarget()
    outcome = copy_object(source.add("k", b"x", md5="not-base64!"), source, target, snapshot_id="s", config=config)
    assert outcome.status == "failed" and "not an MD5" in outcome.reason and "'k'" in outcome.reason
    assert target.objects == {}

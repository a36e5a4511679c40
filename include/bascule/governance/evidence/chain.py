"""A run's evidence as a tamper-evident, hash-chained sequence of records in its bucket.

Layout: ``s3://<evidence bucket>/_bascule/<workload>/runs/<run_key>/chain/NNNNNN.json``,
one JSON object per record, ``NNNNNN`` the zero-padded sequence number; what a record
holds and how it is hashed and linked is in :mod:`bascule.governance.evidence.records`.
``seal()`` appends a final ``seal`` record whose payload holds the digest of everything
before it and the record count; nothing can be appended after it.

Why the object name carries only the sequence number (not ``NNNNNN-<kind>.json``): S3's
``If-None-Match: *`` is a per-key condition. With the kind in the name, two tasks appending
different kinds at the same moment would both "win" sequence 5 under two names and fork the
chain. One name per sequence number makes the conditional write an exclusive claim; the loser
re-reads the head and retries. The kind is in the record and in the auditor report.

Appends come from separate Airflow task processes: each append lists the chain to find the
head, so no state is shared but the bucket. An ``idempotency_key`` (e.g. ``<task_id>:<map_index>``)
makes an Airflow retry return the record its first attempt wrote instead of appending twice.

Object Lock: when the bucket has Object Lock enabled, every record is written in COMPLIANCE
mode until ``at + retention`` (nobody, root included, can delete or shorten it), and the
artifacts a record binds are locked the same way. The default retention is six years
(:data:`DEFAULT_RETENTION`): a policy choice, not a legal figure. It spans two full three-year
HDS certification cycles, so the evidence of a migration is still there for the audits of the
cycle it happened in and of the next one, and it outlasts the five-year general limitation
period of French civil law (art. 2224 Code civil) for claims about the hosting contract. The
health data itself follows its own (longer) retention rules; this is evidence about moving
it. COMPLIANCE retention cannot be shortened once written: choose ``retention`` deliberately.
Without Object Lock, records are written normally and the genesis and seal say
``"object_lock": false``: the chain is then tamper-*evident* (any change is detected, except
removal of the trailing records of an unsealed chain) but not tamper-*proof*.

:func:`bascule.governance.evidence.verify.verify` recomputes every hash, link, sequence
number, artifact digest and the seal, and on a versioned bucket also reads the chain's
version history, which shows records rewritten or deleted after they were written (with
Object Lock the original versions remain readable).
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from botocore.exceptions import BotoCoreError, ClientError

from bascule.exceptions import BasculeError, StoreAccessError
from bascule.governance.evidence.records import (
    FORMAT,
    MAX_SEQ,
    RECORD_NAME,
    MalformedRecord,
    Record,
    StoredRecord,
    artifact_entry,
    chain_prefix,
    check_links,
    genesis_prev,
    parse_record_bytes,
    record_name,
)

DEFAULT_RETENTION = timedelta(days=6 * 365 + 2)  # six years, leap days included
MAX_RECORD_BYTES = 256 * 1024
KIND_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
RESERVED_KINDS = frozenset({"genesis", "seal"})
SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}$")
_CHUNK = 1024 * 1024


class ChainSealed(BasculeError):
    """The run's evidence chain is sealed: nothing can be added to it any more."""


class ChainBroken(BasculeError):
    """The chain in the bucket does not verify; appending to it would hide the break."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- the chain in a bucket ------------------------------------------------------------------


def error_code(exc: ClientError) -> tuple[str, int | None]:
    """The S3 error code and HTTP status of a refusal."""
    return exc.response.get("Error", {}).get("Code", ""), exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def store_error(exc: Exception, what: str) -> StoreAccessError:
    """The StoreAccessError to raise for a failed S3 call; retryable unless the server refused for good."""
    if isinstance(exc, ClientError):
        code, status = error_code(exc)
        return StoreAccessError(
            f"evidence chain: {what}: {code or 'error'} (HTTP {status})",
            retryable=status is None or status >= 500 or status == 429,
        )
    return StoreAccessError(f"evidence chain: {what}: {exc}", retryable=True)


def is_missing(exc: ClientError) -> bool:
    """Whether the refusal says the object is not there."""
    code, status = error_code(exc)
    return code in ("NoSuchKey", "404") or status == 404


def sha256_and_size(body: IO[bytes]) -> tuple[str, int]:
    """The SHA-256 and length of a streamed object body, read a chunk at a time."""
    digest, size = hashlib.sha256(), 0
    for chunk in iter(lambda: body.read(_CHUNK), b""):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def list_objects(client: Any, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        yield from page.get("Contents", [])


def bucket_object_lock(client: Any, bucket: str) -> bool:
    """Whether the bucket has Object Lock enabled (records are then written in COMPLIANCE mode)."""
    try:
        answer = client.get_object_lock_configuration(Bucket=bucket)
    except ClientError as exc:
        code, _ = error_code(exc)
        if code in ("ObjectLockConfigurationNotFoundError", "ObjectLockConfigurationNotFound"):
            return False
        raise store_error(exc, f"reading the Object Lock configuration of bucket '{bucket}'") from None
    except BotoCoreError as exc:
        raise store_error(exc, f"reading the Object Lock configuration of bucket '{bucket}'") from None
    return answer.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"


def _check_segment(name: str, value: str) -> None:
    if not SAFE_SEGMENT.match(value):
        raise ValueError(
            f"{name} '{value}' is not a safe path segment (letters, digits, _ . -): use run_key_for() for run ids"
        )


class EvidenceChain:
    """One run's chain: ``s3://<evidence bucket>/_bascule/<workload>/runs/<run_key>/chain/``.

    Safe to use from several processes at once: each instance reads the head from the
    bucket on every append, and a write only succeeds if its sequence number is free.
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        workload_id: str,
        run_key: str,
        *,
        retention: timedelta = DEFAULT_RETENTION,
        run_id: str | None = None,
        max_attempts: int = 200,
        lock_mode: str = "COMPLIANCE",
    ):
        _check_segment("workload id", workload_id)
        _check_segment("run key", run_key)
        self._client = client
        self.bucket = bucket
        self.workload_id = workload_id
        self.run_key = run_key
        self.prefix = chain_prefix(workload_id, run_key)
        self.retention = retention
        self.lock_mode = lock_mode  # COMPLIANCE (nobody can shorten it) or GOVERNANCE (a privileged bypass can)
        self.run_id = run_id
        self.max_attempts = max_attempts
        self._object_lock: bool | None = None
        self._cache: dict[str, tuple[str, Record]] = {}  # key -> (ETag, record)

    @property
    def client(self) -> Any:
        return self._client

    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def object_lock(self) -> bool:
        if self._object_lock is None:
            self._object_lock = bucket_object_lock(self._client, self.bucket)
        return self._object_lock

    # -- reading

    def records(self) -> list[Record]:
        """The chain as stored now, in order (read fresh from the bucket)."""
        try:
            listed = [
                o
                for o in list_objects(self._client, self.bucket, self.prefix)
                if RECORD_NAME.match(o["Key"][len(self.prefix) :])
            ]
        except (ClientError, BotoCoreError) as exc:
            raise store_error(exc, f"listing {self.uri()}") from None
        records = []
        for item in sorted(listed, key=lambda o: o["Key"]):
            key, etag = item["Key"], item.get("ETag", "")
            cached = self._cache.get(key)
            if cached is None or cached[0] != etag:
                body, etag = self._get(key)
                try:
                    record = Record.from_dict(parse_record_bytes(body))
                except MalformedRecord as exc:
                    raise ChainBroken(f"{self.uri()}{key[len(self.prefix) :]} is not a chain record: {exc}") from None
                cached = (etag, record)
                self._cache[key] = cached
            records.append(cached[1])
        return records

    def head(self) -> Record | None:
        records = self.records()
        return records[-1] if records else None

    def find(self, idempotency_key: str) -> Record | None:
        """The record an earlier attempt appended under this key, if any (a retry can reuse its result)."""
        return next((r for r in self.records() if r.idempotency_key == idempotency_key), None)

    def digest(self) -> str | None:
        """The head record's hash: it commits to every record before it."""
        head = self.head()
        return head.hash if head else None

    def _get(self, key: str) -> tuple[bytes, str]:
        try:
            answer = self._client.get_object(Bucket=self.bucket, Key=key)
            with answer["Body"] as body:
                return body.read(), answer.get("ETag", "")
        except (ClientError, BotoCoreError) as exc:
            raise store_error(exc, f"reading s3://{self.bucket}/{key}") from None

    # -- artifacts

    def artifact(self, key: str) -> dict[str, Any]:
        """``{key, sha256, size}`` of an object already in the bucket, hashed while streaming.

        On an Object Lock bucket, the very version that was hashed is also locked in
        COMPLIANCE mode for the chain's retention, so the file the chain binds cannot vanish.
        """
        try:
            answer = self._client.get_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise store_error(exc, f"reading artifact s3://{self.bucket}/{key}") from None
        with answer["Body"] as body:
            digest, size = sha256_and_size(body)
        if self.object_lock and answer.get("VersionId"):
            self._lock_version(key, answer["VersionId"], answer.get("ObjectLockRetainUntilDate"))
        return {"key": key, "sha256": digest, "size": size}

    def _lock_version(self, key: str, version_id: str, current_until: datetime | None) -> None:
        until = _utc_now() + self.retention
        if current_until is not None and current_until >= until:
            return
        try:
            self._client.put_object_retention(
                Bucket=self.bucket,
                Key=key,
                VersionId=version_id,
                Retention={"Mode": self.lock_mode, "RetainUntilDate": until},
            )
        except (ClientError, BotoCoreError) as exc:
            raise store_error(exc, f"locking artifact s3://{self.bucket}/{key}") from None

    # -- writing

    def append(
        self,
        kind: str,
        actor: str,
        payload: Mapping[str, Any] | None = None,
        artifacts: Iterable[Mapping[str, Any] | str] = (),
        *,
        idempotency_key: str | None = None,
    ) -> Record:
        """Append a record at the head; returns it (or, for a known idempotency key, the earlier one).

        ``artifacts`` are ``artifact(key)`` entries or plain keys (hashed here).
        Raises ChainSealed after ``seal()``, ChainBroken if the stored chain does not verify.
        """
        if kind in RESERVED_KINDS:
            raise ValueError(f"kind '{kind}' is written by the chain itself")
        return self._append(kind, actor, payload or {}, artifacts, idempotency_key)

    def seal(self, actor: str) -> Record:
        """The final record: the digest of the chain before it and its record count.

        Sealing a sealed chain returns the existing seal (an Airflow retry is harmless).
        """
        return self._append("seal", actor, None, (), None)

    def _append(
        self,
        kind: str,
        actor: str,
        payload: Mapping[str, Any] | None,
        artifacts: Iterable[Mapping[str, Any] | str],
        idempotency_key: str | None,
    ) -> Record:
        if not KIND_PATTERN.match(kind):
            raise ValueError(f"kind '{kind}' must be lowercase letters, digits and _ (e.g. 'table_diff')")
        if not actor:
            raise ValueError("actor (task id or user) is required")
        entries = [self.artifact(a) if isinstance(a, str) else artifact_entry(a) for a in artifacts]
        for attempt in range(self.max_attempts):
            records = self.records()
            self._require_intact(records)
            earlier = next(
                (r for r in records if idempotency_key is not None and r.idempotency_key == idempotency_key), None
            )
            if earlier is not None:
                return earlier
            if not records:
                if self._write(self._genesis(actor)) is None:
                    self._back_off(attempt)
                continue
            head = records[-1]
            if head.kind == "seal":
                return self._existing_seal(head, kind, actor)
            written = self._write(self._next(head, kind, actor, payload, entries, idempotency_key))
            if written is not None:
                return written
            self._back_off(attempt)
        raise StoreAccessError(
            f"evidence chain {self.uri()}: could not append '{kind}' after {self.max_attempts} attempts "
            "(other writers kept taking the next sequence number)",
            retryable=True,
        )

    def _existing_seal(self, seal: Record, kind: str, actor: str) -> Record:
        """Sealing again returns the seal (an Airflow retry is harmless); anything else is refused."""
        if kind == "seal":
            return seal
        raise ChainSealed(
            f"the evidence chain {self.uri()} was sealed at record {seal.seq} by {seal.actor} at {seal.at}; "
            f"'{kind}' from {actor} cannot be appended"
        )

    def _next(
        self,
        head: Record,
        kind: str,
        actor: str,
        payload: Mapping[str, Any] | None,
        artifacts: list[dict[str, Any]],
        idempotency_key: str | None,
    ) -> Record:
        """The record that follows ``head``; a seal's payload is the digest of the chain before it."""
        if head.seq >= MAX_SEQ:
            raise ChainBroken(f"the evidence chain {self.uri()} is full ({MAX_SEQ} records)")
        record_payload = (
            {"digest": head.hash, "records": head.seq + 1, "object_lock": self.object_lock}
            if kind == "seal"
            else payload or {}
        )
        return Record.build(
            seq=head.seq + 1,
            kind=kind,
            at=_iso(_utc_now()),
            actor=actor,
            payload=record_payload,
            artifacts=artifacts,
            prev=head.hash,
            idempotency_key=idempotency_key,
        )

    def _genesis(self, actor: str) -> Record:
        payload: dict[str, Any] = {
            "format": FORMAT,
            "workload": self.workload_id,
            "run_key": self.run_key,
            "run_id": self.run_id,
            "bucket": self.bucket,
            "object_lock": self.object_lock,
        }
        if self.object_lock:
            payload["retention_days"] = self.retention.days
            payload["lock_mode"] = self.lock_mode
        return Record.build(
            seq=0,
            kind="genesis",
            at=_iso(_utc_now()),
            actor=actor,
            payload=payload,
            artifacts=(),
            prev=genesis_prev(self.workload_id, self.run_key),
            idempotency_key=None,
        )

    def _require_intact(self, records: list[Record]) -> None:
        stored = [StoredRecord(r.seq, self.prefix + record_name(r.seq), r) for r in records]
        if not stored:
            return
        broken, _, _ = check_links(stored, self.workload_id, self.run_key)
        if broken is not None:
            raise ChainBroken(
                f"the evidence chain {self.uri()} does not verify ({broken.reason}); nothing was appended. "
                f"Run scripts/verify_evidence.py {self.uri().rsplit('chain/', 1)[0]} and investigate"
            )

    def _write(self, record: Record) -> Record | None:
        """Write a record if its sequence number is still free; None if another writer took it."""
        body = record.to_bytes()
        if len(body) > MAX_RECORD_BYTES:
            raise ValueError(
                f"record '{record.kind}' is {len(body):,} bytes (limit {MAX_RECORD_BYTES:,}): store the detail "
                "as an evidence file and bind it through artifacts"
            )
        key = self.prefix + record_name(record.seq)
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "Body": body,
            "ContentType": "application/json; charset=utf-8",
            "ContentMD5": base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode(),
            "IfNoneMatch": "*",
        }
        if self.object_lock:
            params["ObjectLockMode"] = self.lock_mode
            params["ObjectLockRetainUntilDate"] = _utc_now() + self.retention
        try:
            answer = self._client.put_object(**params)
        except ClientError as exc:
            code, status = error_code(exc)
            # 412: the sequence number is taken; 409: a concurrent conditional write is in flight.
            if status in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict"):
                return None
            raise store_error(exc, f"writing s3://{self.bucket}/{key}") from None
        except BotoCoreError as exc:
            raise store_error(exc, f"writing s3://{self.bucket}/{key}") from None
        self._cache[key] = (answer.get("ETag", ""), record)
        return record

    @staticmethod
    def _back_off(attempt: int) -> None:
        time.sleep(random.uniform(0, min(1.0, 0.02 * (attempt + 1))))

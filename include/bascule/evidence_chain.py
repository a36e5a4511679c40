"""A run's evidence as a tamper-evident, hash-chained sequence of records.

Layout: ``s3://<evidence bucket>/_bascule/<workload>/runs/<run_key>/chain/NNNNNN.json``,
one JSON object per record, ``NNNNNN`` the zero-padded sequence number. A record::

    {"seq": 3, "kind": "approval", "at": "2025-06-01T10:00:00.000Z", "actor": "alice",
     "payload": {...small JSON...},
     "artifacts": [{"key": "_bascule/w/snapshots/s1/source-inventory.jsonl.gz", "sha256": "…", "size": 1234}],
     "idempotency_key": "approve_cutover:try1" | null,
     "prev": "<hash of record 2>", "hash": "<sha256 of this record without 'hash'>"}

- ``hash`` is the SHA-256 of the record's *canonical JSON* without the ``hash`` field:
  ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)``
  encoded as UTF-8. (This is not RFC 8785: floats use Python's shortest repr and keys sort
  by code point. Payloads are counts, sizes, strings and booleans, for which both agree.)
- ``prev`` is the previous record's ``hash``; record 0 (kind ``genesis``, written by the
  first append) links to :func:`genesis_prev`, a fixed value derived from the workload id and
  the run key, so a chain copied under another run does not verify.
- ``artifacts`` bind the content of larger evidence files (inventories, GX HTML reports,
  transfer reports) already in the same bucket: changing one byte of them breaks verification.
- ``seal()`` appends a final ``seal`` record whose payload holds the digest of everything
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

``verify()`` recomputes every hash, link, sequence number, artifact digest and the seal, and
on a versioned bucket also reads the chain's version history, which shows records rewritten
or deleted after they were written (with Object Lock the original versions remain readable).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
import random
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from bascule.evidence import EVIDENCE_ROOT
from bascule.exceptions import BasculeError, StoreAccessError

FORMAT = "bascule-evidence-chain/1"
DEFAULT_RETENTION = timedelta(days=6 * 365 + 2)  # six years, leap days included
MAX_RECORD_BYTES = 256 * 1024
KIND_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
RESERVED_KINDS = frozenset({"genesis", "seal"})
SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}$")
RECORD_NAME = re.compile(r"^(\d{6})\.json$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
RECORD_FIELDS = ("seq", "kind", "at", "actor", "payload", "artifacts", "idempotency_key", "prev", "hash")
MAX_SEQ = 999_999
_CHUNK = 1024 * 1024


class ChainSealed(BasculeError):
    """The run's evidence chain is sealed: nothing can be added to it any more."""


class ChainBroken(BasculeError):
    """The chain in the bucket does not verify; appending to it would hide the break."""


class MalformedRecord(ValueError):
    """A stored record is not a well-formed chain record."""


# -- canonical form ----------------------------------------------------------------------


def canonical_bytes(document: Any) -> bytes:
    """The one byte form a record is hashed in (see the module docstring)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 of the record's canonical JSON without its ``hash`` field."""
    return sha256_hex(canonical_bytes({k: v for k, v in record.items() if k != "hash"}))


def genesis_prev(workload_id: str, run_key: str) -> str:
    """The fixed ``prev`` of record 0: binds the chain to its workload and run."""
    return sha256_hex(canonical_bytes({"chain": FORMAT, "workload": workload_id, "run_key": run_key}))


def run_key_for(run_id: str) -> str:
    """A filesystem/S3-safe, collision-free form of an Airflow run id.

    Unsafe characters become ``_``; when anything was replaced, 8 hex digits of the run
    id's SHA-256 are appended so that ``a:b`` and ``a_b`` never share a chain.
    """
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id).lstrip(".-")[:180] or "run"
    if safe != run_id:
        safe = f"{safe}-{sha256_hex(run_id.encode())[:8]}"
    return safe


def chain_prefix(workload_id: str, run_key: str) -> str:
    return f"{EVIDENCE_ROOT}{workload_id}/runs/{run_key}/chain/"


def record_name(seq: int) -> str:
    return f"{seq:06d}.json"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json_value(value: Any) -> Any:
    """The JSON the record will hold: what is hashed is exactly what is stored."""
    return json.loads(json.dumps(value, default=str, allow_nan=False))


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Parsers disagree on which duplicate wins: a record with one is ambiguous evidence.
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise MalformedRecord(f"duplicate field '{key}'")
        seen[key] = value
    return seen


def parse_record_bytes(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedRecord(f"not valid UTF-8 JSON ({exc})") from None
    if not isinstance(document, dict):
        raise MalformedRecord("not a JSON object")
    return document


# -- records -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    seq: int
    kind: str
    at: str
    actor: str
    payload: dict[str, Any]
    artifacts: tuple[dict[str, Any], ...]
    prev: str
    hash: str
    idempotency_key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "kind": self.kind,
            "at": self.at,
            "actor": self.actor,
            "payload": self.payload,
            "artifacts": [dict(a) for a in self.artifacts],
            "idempotency_key": self.idempotency_key,
            "prev": self.prev,
            "hash": self.hash,
        }

    def to_bytes(self) -> bytes:
        return canonical_bytes(self.to_dict())

    @classmethod
    def build(
        cls,
        *,
        seq: int,
        kind: str,
        at: str,
        actor: str,
        payload: Mapping[str, Any],
        artifacts: Iterable[Mapping[str, Any]],
        prev: str,
        idempotency_key: str | None,
    ) -> Record:
        body = {
            "seq": seq,
            "kind": kind,
            "at": at,
            "actor": actor,
            "payload": _json_value(dict(payload)),
            "artifacts": [_artifact_entry(a) for a in artifacts],
            "idempotency_key": idempotency_key,
            "prev": prev,
        }
        return cls.from_dict({**body, "hash": record_hash(body)})

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> Record:
        """A record as stored; raises MalformedRecord naming the first bad field."""
        missing = [f for f in RECORD_FIELDS if f not in document]
        if missing:
            raise MalformedRecord(f"missing field(s) {', '.join(missing)}")
        extra = sorted(set(document) - set(RECORD_FIELDS))
        if extra:
            raise MalformedRecord(f"unexpected field(s) {', '.join(extra)}")
        seq, artifacts = document["seq"], document["artifacts"]
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ:
            raise MalformedRecord(f"seq {seq!r} is not a sequence number")
        for name in ("kind", "at", "actor", "prev", "hash"):
            if not isinstance(document[name], str):
                raise MalformedRecord(f"field '{name}' is not a string")
        if not isinstance(document["payload"], dict):
            raise MalformedRecord("payload is not a JSON object")
        if document["idempotency_key"] is not None and not isinstance(document["idempotency_key"], str):
            raise MalformedRecord("idempotency_key is neither a string nor null")
        if not isinstance(artifacts, list):
            raise MalformedRecord("artifacts is not a list")
        try:
            entries = tuple(_artifact_entry(a) for a in artifacts)
        except ValueError as exc:
            raise MalformedRecord(str(exc)) from None
        return cls(
            seq=seq,
            kind=document["kind"],
            at=document["at"],
            actor=document["actor"],
            payload=document["payload"],
            artifacts=entries,
            prev=document["prev"],
            hash=document["hash"],
            idempotency_key=document["idempotency_key"],
        )

    def label(self) -> str:
        return f"record {self.seq} ({self.kind})"


def _artifact_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(entry, Mapping):
        raise ValueError(f"artifact {entry!r} is not an object with key, sha256 and size")
    key, digest, size = entry.get("key"), entry.get("sha256"), entry.get("size")
    if not isinstance(key, str) or not key:
        raise ValueError(f"artifact {dict(entry)!r} has no key")
    if not isinstance(digest, str) or not SHA256_HEX.match(digest):
        raise ValueError(f"artifact '{key}' has no lowercase hex sha256")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"artifact '{key}' has no size in bytes")
    return {"key": key, "sha256": digest, "size": size}


# -- checking a chain (pure) ----------------------------------------------------------------


@dataclass(frozen=True)
class StoredRecord:
    """One object of the chain folder as read: its sequence number by name, and content."""

    name_seq: int
    key: str
    record: Record | None
    problem: str | None = None  # why ``record`` could not be read
    lock_known: bool = False  # whether ``lock_mode`` was read with the object
    lock_mode: str | None = None


@dataclass(frozen=True)
class Break:
    seq: int
    reason: str


def check_links(
    stored: Sequence[StoredRecord],
    workload_id: str,
    run_key: str,
    artifact_problem: Callable[[Record], str | None] | None = None,
) -> tuple[Break | None, bool, str | None]:
    """Walk the chain in name order; the first break, whether it is sealed, and the head hash.

    ``artifact_problem(record) -> str | None`` checks a record's artifacts; it is called
    only for records that are intact themselves.
    """
    expected, prev, sealed_at = 0, genesis_prev(workload_id, run_key), None
    previous: Record | None = None
    locked: bool | None = None
    for item in sorted(stored, key=lambda s: s.name_seq):
        if item.name_seq != expected:
            if expected == 0:
                return Break(0, f"record 0 (genesis) missing: the chain starts at {item.name_seq}"), False, None
            return (
                Break(expected, f"record {expected} missing: sequence jumps from {expected - 1} to {item.name_seq}"),
                False,
                None,
            )
        record = item.record
        if record is None:
            return Break(expected, f"record {expected} ({item.key}): unreadable — {item.problem}"), False, None
        if record.seq != item.name_seq:
            return (
                Break(
                    expected,
                    f"record {expected}: {item.key} holds {record.label()} — records reordered or moved",
                ),
                False,
                None,
            )
        if record_hash(record.to_dict()) != record.hash:
            return Break(expected, f"{record.label()}: content changed — hash mismatch"), False, None
        if record.prev != prev:
            if expected == 0:
                reason = f"{record.label()}: prev is not the genesis value of workload '{workload_id}' run '{run_key}'"
            else:
                reason = f"{record.label()} prev does not match record {expected - 1}"
            return Break(expected, reason), False, None
        if sealed_at is not None:
            return Break(expected, f"{record.label()} appended after the seal (record {sealed_at})"), False, None
        if (expected == 0) != (record.kind == "genesis"):
            where = "record 0 is not a genesis record" if expected == 0 else "a second genesis record"
            return Break(expected, f"{record.label()}: {where}"), False, None
        if expected == 0:
            locked = bool(record.payload.get("object_lock"))
        if locked and item.lock_known and item.lock_mode != "COMPLIANCE":
            return (
                Break(expected, f"{record.label()}: not under Object Lock although the chain was opened with it"),
                False,
                None,
            )
        if record.kind == "seal":
            digest, count = record.payload.get("digest"), record.payload.get("records")
            if previous is None or digest != previous.hash or count != record.seq:
                return (
                    Break(expected, f"{record.label()}: seal digest does not match the chain before it"),
                    False,
                    None,
                )
            sealed_at = record.seq
        if artifact_problem is not None:
            problem = artifact_problem(record)
            if problem:
                return Break(expected, f"{record.label()}: {problem}"), False, None
        previous, prev, expected = record, record.hash, expected + 1
    if previous is None:
        return Break(0, "no records: the chain is empty"), False, None
    return None, sealed_at is not None, previous.hash


# -- the chain in a bucket ------------------------------------------------------------------


def _error_code(exc: ClientError) -> tuple[str, int | None]:
    return exc.response.get("Error", {}).get("Code", ""), exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def _store_error(exc: Exception, what: str) -> StoreAccessError:
    if isinstance(exc, ClientError):
        code, status = _error_code(exc)
        return StoreAccessError(
            f"evidence chain: {what}: {code or 'error'} (HTTP {status})",
            retryable=status is None or status >= 500 or status == 429,
        )
    return StoreAccessError(f"evidence chain: {what}: {exc}", retryable=True)


def bucket_object_lock(client: Any, bucket: str) -> bool:
    """Whether the bucket has Object Lock enabled (records are then written in COMPLIANCE mode)."""
    try:
        answer = client.get_object_lock_configuration(Bucket=bucket)
    except ClientError as exc:
        code, _ = _error_code(exc)
        if code in ("ObjectLockConfigurationNotFoundError", "ObjectLockConfigurationNotFound"):
            return False
        raise _store_error(exc, f"reading the Object Lock configuration of bucket '{bucket}'") from None
    except BotoCoreError as exc:
        raise _store_error(exc, f"reading the Object Lock configuration of bucket '{bucket}'") from None
    return answer.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"


def _check_segment(name: str, value: str) -> None:
    if not SAFE_SEGMENT.match(value):
        raise ValueError(
            f"{name} '{value}' is not a safe path segment (letters, digits, _ . -): use run_key_for() for run ids"
        )


def _list(client: Any, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        yield from page.get("Contents", [])


class EvidenceChain:
    """One run's chain: ``s3://bucket/_bascule/<workload>/runs/<run_key>/chain/``.

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
    ):
        _check_segment("workload id", workload_id)
        _check_segment("run key", run_key)
        self._client = client
        self.bucket = bucket
        self.workload_id = workload_id
        self.run_key = run_key
        self.prefix = chain_prefix(workload_id, run_key)
        self.retention = retention
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
                for o in _list(self._client, self.bucket, self.prefix)
                if RECORD_NAME.match(o["Key"][len(self.prefix) :])
            ]
        except (ClientError, BotoCoreError) as exc:
            raise _store_error(exc, f"listing {self.uri()}") from None
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
            raise _store_error(exc, f"reading s3://{self.bucket}/{key}") from None

    # -- artifacts

    def artifact(self, key: str) -> dict[str, Any]:
        """``{key, sha256, size}`` of an object already in the bucket, hashed while streaming.

        On an Object Lock bucket, the very version that was hashed is also locked in
        COMPLIANCE mode for the chain's retention, so the file the chain binds cannot vanish.
        """
        try:
            answer = self._client.get_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise _store_error(exc, f"reading artifact s3://{self.bucket}/{key}") from None
        digest, size = hashlib.sha256(), 0
        with answer["Body"] as body:
            for chunk in iter(lambda: body.read(_CHUNK), b""):
                digest.update(chunk)
                size += len(chunk)
        if self.object_lock and answer.get("VersionId"):
            self._lock_version(key, answer["VersionId"], answer.get("ObjectLockRetainUntilDate"))
        return {"key": key, "sha256": digest.hexdigest(), "size": size}

    def _lock_version(self, key: str, version_id: str, current_until: datetime | None) -> None:
        until = _utc_now() + self.retention
        if current_until is not None and current_until >= until:
            return
        try:
            self._client.put_object_retention(
                Bucket=self.bucket,
                Key=key,
                VersionId=version_id,
                Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until},
            )
        except (ClientError, BotoCoreError) as exc:
            raise _store_error(exc, f"locking artifact s3://{self.bucket}/{key}") from None

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
        entries = [self.artifact(a) if isinstance(a, str) else _artifact_entry(a) for a in artifacts]
        for attempt in range(self.max_attempts):
            records = self.records()
            self._require_intact(records)
            if idempotency_key is not None:
                for record in records:
                    if record.idempotency_key == idempotency_key:
                        return record
            head = records[-1] if records else None
            if head is not None and head.kind == "seal":
                if kind == "seal":
                    return head
                raise ChainSealed(
                    f"the evidence chain {self.uri()} was sealed at record {head.seq} by {head.actor} at {head.at}; "
                    f"'{kind}' from {actor} cannot be appended"
                )
            if head is None:
                if self._write(self._genesis(actor)) is None:
                    self._back_off(attempt)
                continue
            if head.seq >= MAX_SEQ:
                raise ChainBroken(f"the evidence chain {self.uri()} is full ({MAX_SEQ} records)")
            record_payload = (
                {"digest": head.hash, "records": head.seq + 1, "object_lock": self.object_lock}
                if kind == "seal"
                else payload or {}
            )
            record = Record.build(
                seq=head.seq + 1,
                kind=kind,
                at=_iso(_utc_now()),
                actor=actor,
                payload=record_payload,
                artifacts=entries,
                prev=head.hash,
                idempotency_key=idempotency_key,
            )
            written = self._write(record)
            if written is not None:
                return written
            self._back_off(attempt)
        raise StoreAccessError(
            f"evidence chain {self.uri()}: could not append '{kind}' after {self.max_attempts} attempts "
            "(other writers kept taking the next sequence number)",
            retryable=True,
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
            params["ObjectLockMode"] = "COMPLIANCE"
            params["ObjectLockRetainUntilDate"] = _utc_now() + self.retention
        try:
            answer = self._client.put_object(**params)
        except ClientError as exc:
            code, status = _error_code(exc)
            # 412: the sequence number is taken; 409: a concurrent conditional write is in flight.
            if status in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict"):
                return None
            raise _store_error(exc, f"writing s3://{self.bucket}/{key}") from None
        except BotoCoreError as exc:
            raise _store_error(exc, f"writing s3://{self.bucket}/{key}") from None
        self._cache[key] = (answer.get("ETag", ""), record)
        return record

    @staticmethod
    def _back_off(attempt: int) -> None:
        time.sleep(random.uniform(0, min(1.0, 0.02 * (attempt + 1))))


# -- verification ----------------------------------------------------------------------------


@dataclass
class VerifyResult:
    ok: bool
    records: int
    first_broken: int | None
    reason: str
    sealed: bool
    digest: str | None
    object_lock: bool | None = None
    notes: list[str] = field(default_factory=list)
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    chain: list[Record] = field(default_factory=list)
    uri: str = ""

    def summary(self) -> str:
        if self.ok:
            seal = "sealed" if self.sealed else "NOT sealed (records may still be appended)"
            return f"OK: {self.records} record(s), {seal}, digest {self.digest}"
        where = f" at record {self.first_broken}" if self.first_broken is not None else ""
        return f"BROKEN{where}: {self.reason}"


class _ArtifactChecker:
    def __init__(self, client: Any, bucket: str):
        self._client = client
        self._bucket = bucket
        self.seen: dict[str, dict[str, Any]] = {}

    def __call__(self, record: Record) -> str | None:
        for entry in record.artifacts:
            key = entry["key"]
            if key not in self.seen:
                self.seen[key] = {"key": key, "record": record.seq, **self._stored(key)}
            stored = self.seen[key]
            if stored["status"] == "missing":
                return f"artifact {key} missing from the bucket"
            if stored["sha256"] != entry["sha256"] or stored["size"] != entry["size"]:
                stored["status"] = "differs"
                return (
                    f"artifact {key} sha256 differs (recorded {entry['sha256'][:16]}… {entry['size']} bytes, "
                    f"stored {stored['sha256'][:16]}… {stored['size']} bytes)"
                )
        return None

    def _stored(self, key: str) -> dict[str, Any]:
        try:
            answer = self._client.get_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            code, status = _error_code(exc)
            if code in ("NoSuchKey", "404") or status == 404:
                return {"status": "missing", "sha256": None, "size": None}
            raise _store_error(exc, f"reading artifact s3://{self._bucket}/{key}") from None
        digest, size = hashlib.sha256(), 0
        with answer["Body"] as body:
            for chunk in iter(lambda: body.read(_CHUNK), b""):
                digest.update(chunk)
                size += len(chunk)
        return {"status": "ok", "sha256": digest.hexdigest(), "size": size}


def _version_history(client: Any, bucket: str, prefix: str) -> tuple[dict[int, str], list[str]]:
    """Records rewritten or deleted after they were written, from a versioned bucket's history."""
    try:
        status = client.get_bucket_versioning(Bucket=bucket).get("Status")
    except ClientError as exc:
        return {}, [f"version history not checked: {_error_code(exc)[0]}"]
    if status not in ("Enabled", "Suspended"):
        return {}, []
    versions: dict[str, int] = {}
    markers: dict[str, int] = {}
    latest_is_marker: set[str] = set()
    try:
        for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
            for version in page.get("Versions", []):
                versions[version["Key"]] = versions.get(version["Key"], 0) + 1
            for marker in page.get("DeleteMarkers", []):
                markers[marker["Key"]] = markers.get(marker["Key"], 0) + 1
                if marker.get("IsLatest"):
                    latest_is_marker.add(marker["Key"])
    except ClientError as exc:
        return {}, [f"version history not checked: {_error_code(exc)[0]}"]
    anomalies: dict[int, str] = {}
    for key in set(versions) | set(markers):
        match = RECORD_NAME.match(key[len(prefix) :])
        if not match:
            continue
        seq, kept = int(match.group(1)), versions.get(key, 0)
        if key in latest_is_marker:
            anomalies[seq] = (
                f"record {seq} deleted after it was written (a delete marker hides it; "
                f"{kept} earlier version(s) still in the bucket)"
            )
        elif kept > 1 or key in markers:
            anomalies[seq] = f"record {seq} rewritten after it was written ({kept} versions of {key})"
    return anomalies, []


def verify(
    client: Any,
    bucket: str,
    workload_id: str,
    run_key: str,
    *,
    check_artifacts: bool = True,
    check_history: bool = True,
) -> VerifyResult:
    """Check a stored chain end to end; reports the FIRST broken record and why.

    Raises StoreAccessError when the bucket cannot be read (as opposed to a broken chain).
    """
    prefix = chain_prefix(workload_id, run_key)
    uri = f"s3://{bucket}/{prefix}"
    notes: list[str] = []
    stored: list[StoredRecord] = []
    try:
        listed = list(_list(client, bucket, prefix))
    except (ClientError, BotoCoreError) as exc:
        raise _store_error(exc, f"listing {uri}") from None
    for item in listed:
        name = item["Key"][len(prefix) :]
        match = RECORD_NAME.match(name)
        if not match:
            notes.append(f"ignored object {item['Key']}: not a record name")
            continue
        stored.append(_read_stored(client, bucket, item["Key"], int(match.group(1))))
    history, history_notes = _version_history(client, bucket, prefix) if check_history else ({}, [])
    notes += history_notes
    artifacts = _ArtifactChecker(client, bucket) if check_artifacts else None
    broken, sealed, digest = check_links(stored, workload_id, run_key, artifacts)
    chain = [s.record for s in sorted(stored, key=lambda s: s.name_seq) if s.record is not None]
    genesis = chain[0] if chain and chain[0].kind == "genesis" else None
    object_lock = bool(genesis.payload.get("object_lock")) if genesis else None
    if object_lock and any(s.record is not None and not s.lock_known for s in stored):
        notes.append("the Object Lock mode of some records could not be read (needs s3:GetObjectRetention)")
    if history:
        first = min(history)
        if broken is None or first < broken.seq:
            broken = Break(first, history[first])
        elif first == broken.seq:
            broken = Break(first, f"{broken.reason}; {history[first]}")
    if not stored and not history:
        reason = f"no evidence chain under {uri}"
    elif broken is not None:
        reason = broken.reason
    else:
        reason = "every record, link, artifact" + (" and the seal" if sealed else "") + " verified"
    return VerifyResult(
        ok=broken is None and bool(stored),
        records=len(stored),
        first_broken=broken.seq if broken is not None and (stored or history) else None,
        reason=reason,
        sealed=sealed and broken is None,
        digest=digest if broken is None else None,
        object_lock=object_lock,
        notes=notes,
        artifacts=artifacts.seen if artifacts else {},
        chain=chain,
        uri=uri,
    )


def _read_stored(client: Any, bucket: str, key: str, name_seq: int) -> StoredRecord:
    try:
        answer = client.get_object(Bucket=bucket, Key=key)
        with answer["Body"] as body:
            raw = body.read()
    except ClientError as exc:
        code, status = _error_code(exc)
        if code in ("NoSuchKey", "404") or status == 404:
            return StoredRecord(name_seq, key, None, "deleted while verifying")
        raise _store_error(exc, f"reading s3://{bucket}/{key}") from None
    except BotoCoreError as exc:
        raise _store_error(exc, f"reading s3://{bucket}/{key}") from None
    try:
        record = Record.from_dict(parse_record_bytes(raw))
    except MalformedRecord as exc:
        return StoredRecord(name_seq, key, None, str(exc))
    # Without s3:GetObjectRetention, S3 omits the lock headers: unknown is not "unlocked".
    return StoredRecord(
        name_seq, key, record, lock_known="ObjectLockMode" in answer, lock_mode=answer.get("ObjectLockMode")
    )


def list_runs(client: Any, bucket: str, workload_id: str) -> list[tuple[str, int]]:
    """``(run_key, records)`` of every chain of a workload."""
    base = f"{EVIDENCE_ROOT}{workload_id}/runs/"
    counts: dict[str, int] = {}
    try:
        for item in _list(client, bucket, base):
            run_key, _, rest = item["Key"][len(base) :].partition("/")
            if rest.startswith("chain/") and RECORD_NAME.match(rest[len("chain/") :]):
                counts[run_key] = counts.get(run_key, 0) + 1
    except (ClientError, BotoCoreError) as exc:
        raise _store_error(exc, f"listing s3://{bucket}/{base}") from None
    return sorted(counts.items())


# -- auditor report ------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem;color:#1d2330;max-width:1100px}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #d5d9e0}
table{border-collapse:collapse;width:100%;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid #d5d9e0;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f1f3f7}code,.hash{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.8rem;word-break:break-all}
.verdict{padding:1rem;border-radius:6px;font-weight:600;margin:1rem 0}
.ok{background:#e3f4e6;border:1px solid #3b8a4a}.bad{background:#fbe4e4;border:1px solid #b53737}
.unknown{background:#f5f0dd;border:1px solid #a58a2a}.muted{color:#5d6575}
.pass{color:#2f7a3d;font-weight:600}.fail{color:#b53737;font-weight:600}
"""

_MOVE_FIELDS = ("tables", "objects", "rows", "bytes", "copied", "skipped", "failed")
_CHECK_KINDS = ("validation", "table_diff", "shadow_run", "policy")


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _as_dict(record: Record | Mapping[str, Any]) -> dict[str, Any]:
    return record.to_dict() if isinstance(record, Record) else dict(record)


def _outcome(payload: Mapping[str, Any]) -> bool | None:
    for name in ("success", "ok", "passed"):
        if isinstance(payload.get(name), bool):
            return bool(payload[name])
    return None


def _compact(payload: Mapping[str, Any], limit: int = 400) -> str:
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + "…"


def _number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _moved_totals(records: list[dict[str, Any]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for record in records:
        if record["kind"] != "transfer_report":
            continue
        for name in _MOVE_FIELDS:
            value = record["payload"].get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                totals[name] = totals.get(name, 0) + value
    return totals


def render_report(
    records: Sequence[Record | Mapping[str, Any]],
    artifacts_meta: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    verification: VerifyResult | None = None,
    title: str | None = None,
) -> str:
    """A self-contained HTML page for an auditor (inline CSS, no script, no external asset).

    Reads these payload fields where present (every record is also listed in full):
    transfer_report/inventory ``tables, objects, rows, bytes, copied, skipped, failed``;
    validation/table_diff/shadow_run/policy ``success`` (or ``ok``/``passed``) and ``summary``;
    approval ``user`` (or ``approver``), ``at, decision, reason, evidence_digest`` — i.e.
    ``bascule.approvals.Response.to_json()``, one approval record per response; cutover ``frozen_at, switched_at``;
    rollback ``reason``. ``artifacts_meta`` is ``VerifyResult.artifacts``.
    """
    rows = [_as_dict(r) for r in records]
    artifacts_meta = artifacts_meta or {}
    genesis = next((r for r in rows if r["kind"] == "genesis"), None)
    workload = genesis["payload"].get("workload") if genesis else None
    run = (genesis["payload"].get("run_id") or genesis["payload"].get("run_key")) if genesis else None
    heading = title or f"Evidence of migration run {run or '?'} — workload {workload or '?'}"
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(heading)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(heading)}</h1>",
    ]
    if verification is None:
        out.append('<div class="verdict unknown">Chain not verified for this report.</div>')
    else:
        css = "ok" if verification.ok else "bad"
        out.append(f'<div class="verdict {css}">{_e(verification.summary())}</div>')
        out.append(
            "<table><tr><th>Chain</th><td><code>"
            + _e(verification.uri)
            + "</code></td></tr><tr><th>Records</th><td>"
            + _e(verification.records)
            + "</td></tr><tr><th>Sealed</th><td>"
            + ("yes" if verification.sealed else "no")
            + "</td></tr><tr><th>Object Lock</th><td>"
            + _e({True: "yes (COMPLIANCE)", False: "no", None: "unknown"}[verification.object_lock])
            + '</td></tr><tr><th>Chain digest</th><td class="hash">'
            + _e(verification.digest or "—")
            + "</td></tr></table>"
        )
        for note in verification.notes:
            out.append(f'<p class="muted">{_e(note)}</p>')
    if genesis:
        lock = genesis["payload"].get("object_lock")
        out.append(
            f"<p>Chain opened {_e(genesis['at'])} by <code>{_e(genesis['actor'])}</code>; bucket "
            f"<code>{_e(genesis['payload'].get('bucket'))}</code>; Object Lock at opening: "
            f"{'yes' if lock else 'no'}.</p>"
        )

    totals = _moved_totals(rows)
    out.append("<h2>What moved</h2>")
    transfers = [r for r in rows if r["kind"] in ("inventory", "transfer_report")]
    if totals:
        out.append(
            "<table><tr>"
            + "".join(f"<th>{_e(k)}</th>" for k in totals)
            + "</tr><tr>"
            + "".join(f"<td>{_e(_number(v))}</td>" for v in totals.values())
            + "</tr></table>"
        )
    if transfers:
        out.append("<table><tr><th>#</th><th>Kind</th><th>At</th><th>By</th><th>Figures</th></tr>")
        for r in transfers:
            figures = ", ".join(
                f"{name} {_number(r['payload'][name])}" for name in _MOVE_FIELDS if name in r["payload"]
            )
            label = r["payload"].get("table") or r["payload"].get("shard") or ""
            out.append(
                f"<tr><td>{_e(r['seq'])}</td><td>{_e(r['kind'])}</td><td>{_e(r['at'])}</td>"
                f"<td>{_e(r['actor'])}</td><td>{_e(label)} {_e(figures)}</td></tr>"
            )
        out.append("</table>")
    else:
        out.append('<p class="muted">No inventory or transfer record.</p>')

    out.append("<h2>Validation outcomes</h2>")
    checks = [r for r in rows if r["kind"] in _CHECK_KINDS]
    if checks:
        out.append("<table><tr><th>#</th><th>Check</th><th>At</th><th>Outcome</th><th>Summary</th></tr>")
        for r in checks:
            outcome = _outcome(r["payload"])
            verdict = {
                True: '<span class="pass">passed</span>',
                False: '<span class="fail">FAILED</span>',
                None: "—",
            }[outcome]
            summary = r["payload"].get("summary") or r["payload"].get("failure_summary") or ""
            out.append(
                f"<tr><td>{_e(r['seq'])}</td><td>{_e(r['kind'])}</td><td>{_e(r['at'])}</td>"
                f"<td>{verdict}</td><td>{_e(summary)}</td></tr>"
            )
        out.append("</table>")
    else:
        out.append('<p class="muted">No validation record.</p>')

    out.append("<h2>Approvals</h2>")
    approvals = [r for r in rows if r["kind"] == "approval"]
    if approvals:
        out.append(
            "<table><tr><th>#</th><th>Who</th><th>When</th><th>Decision</th><th>Reason</th>"
            "<th>Evidence digest approved</th></tr>"
        )
        for r in approvals:
            p = r["payload"]
            out.append(
                f"<tr><td>{_e(r['seq'])}</td><td>{_e(p.get('user') or p.get('approver') or r['actor'])}</td>"
                f"<td>{_e(p.get('at') or r['at'])}</td>"
                f"<td>{_e(p.get('decision'))}</td><td>{_e(p.get('reason'))}</td>"
                f'<td class="hash">{_e(p.get("evidence_digest"))}</td></tr>'
            )
        out.append("</table>")
    else:
        out.append('<p class="muted">No approval record.</p>')

    out.append("<h2>Cutover and rollback</h2>")
    switches = [r for r in rows if r["kind"] in ("cutover", "rollback")]
    if switches:
        out.append("<table><tr><th>#</th><th>Event</th><th>Recorded at</th><th>By</th><th>Details</th></tr>")
        for r in switches:
            p = r["payload"]
            details = [f"{k}: {p[k]}" for k in ("frozen_at", "switched_at", "reason") if k in p]
            out.append(
                f"<tr><td>{_e(r['seq'])}</td><td>{_e(r['kind'])}</td><td>{_e(r['at'])}</td>"
                f"<td>{_e(r['actor'])}</td><td>{_e('; '.join(details))}</td></tr>"
            )
        out.append("</table>")
    else:
        out.append('<p class="muted">No cutover or rollback record.</p>')

    out.append("<h2>Artifacts bound by the chain</h2>")
    bound = [(r["seq"], a) for r in rows for a in r.get("artifacts", [])]
    if bound:
        out.append("<table><tr><th>#</th><th>Object</th><th>Size</th><th>SHA-256 recorded</th><th>Stored</th></tr>")
        for seq, a in bound:
            meta = artifacts_meta.get(a["key"])
            if meta is None:
                state = "not checked"
            elif meta.get("status") == "ok" and meta.get("sha256") == a["sha256"]:
                state = '<span class="pass">matches</span>'
            else:
                state = f'<span class="fail">{_e(meta.get("status"))}</span>'
            out.append(
                f"<tr><td>{_e(seq)}</td><td><code>{_e(a['key'])}</code></td><td>{_e(_number(a['size']))}</td>"
                f'<td class="hash">{_e(a["sha256"])}</td><td>{state}</td></tr>'
            )
        out.append("</table>")
    else:
        out.append('<p class="muted">No artifact.</p>')

    out.append("<h2>The chain, record by record</h2>")
    out.append("<table><tr><th>#</th><th>Kind</th><th>At</th><th>Actor</th><th>Payload</th><th>Hash</th></tr>")
    for r in rows:
        out.append(
            f"<tr><td>{_e(r['seq'])}</td><td>{_e(r['kind'])}</td><td>{_e(r['at'])}</td><td>{_e(r['actor'])}</td>"
            f'<td><code>{_e(_compact(r["payload"]))}</code></td><td class="hash">{_e(r["hash"])}</td></tr>'
        )
    out.append("</table>")
    out.append(
        '<p class="muted">Each record\'s hash is the SHA-256 of its canonical JSON (sorted keys, no spaces, UTF-8) '
        "without the hash field; each record's prev is the previous record's hash. "
        f"Format {_e(FORMAT)}.</p></body></html>"
    )
    return "\n".join(out)


def _md(value: Any) -> str:
    return html.escape(str(value if value is not None else ""), quote=False).replace("|", "\\|").replace("\n", " ")


def render_markdown(records: Sequence[Record | Mapping[str, Any]], verification: VerifyResult | None = None) -> str:
    """The same evidence as a Markdown table, for a ticket or a pull request."""
    rows = [_as_dict(r) for r in records]
    lines = [f"**Verification:** {_md(verification.summary()) if verification else 'not verified'}", ""]
    totals = _moved_totals(rows)
    if totals:
        lines += ["**Moved:** " + ", ".join(f"{k} {_number(v)}" for k, v in totals.items()), ""]
    lines += ["| # | kind | at | actor | payload | hash |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['seq']} | {_md(r['kind'])} | {_md(r['at'])} | {_md(r['actor'])} | "
            f"`{_md(_compact(r['payload'], 200))}` | `{r['hash'][:16]}…` |"
        )
    return "\n".join(lines) + "\n"


# -- command line ----------------------------------------------------------------------------------

_RUN_URI = re.compile(r"^s3://(?P<bucket>[^/]+)/_bascule/(?P<workload>[^/]+)/runs/(?P<run>[^/]+)(?:/(?:chain/?)?)?$")
_WORKLOAD_URI = re.compile(r"^s3://(?P<bucket>[^/]+)/_bascule/(?P<workload>[^/]+)(?:/(?:runs/?)?)?$")


def main(argv: Sequence[str] | None = None) -> int:
    """``verify_evidence.py s3://bucket/_bascule/<workload>/runs/<run_key>/`` — exit 0 OK, 1 broken, 2 usage/access."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["verify"]:
        args_in = args_in[1:]
    elif args_in[:1] == ["list"]:
        args_in = ["--list", *args_in[1:]]
    parser = argparse.ArgumentParser(
        prog="verify_evidence.py",
        description="Verify a Bascule run's hash-chained evidence (exit 0 OK, 1 broken, 2 usage or access error).",
    )
    parser.add_argument(
        "uri", help="s3://bucket/_bascule/<workload>/runs/<run_key>/ (with --list: s3://bucket/_bascule/<workload>/)"
    )
    parser.add_argument("--list", action="store_true", help="list the runs of a workload that have a chain")
    parser.add_argument("--endpoint-url", help="S3 endpoint (default: boto3's, e.g. AWS_ENDPOINT_URL)")
    parser.add_argument("--region", help="S3 region (default: boto3's)")
    parser.add_argument("--report", help="write the auditor report (HTML) to this file")
    parser.add_argument("--markdown", help="write a Markdown summary to this file")
    parser.add_argument("--skip-artifacts", action="store_true", help="do not re-hash the artifact files")
    parser.add_argument("--require-seal", action="store_true", help="an unsealed chain counts as broken")
    try:
        args = parser.parse_args(args_in)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2

    pattern = _WORKLOAD_URI if args.list else _RUN_URI
    match = pattern.match(args.uri)
    if not match:
        expected = (
            "s3://bucket/_bascule/<workload>/" if args.list else "s3://bucket/_bascule/<workload>/runs/<run_key>/"
        )
        print(f"error: '{args.uri}' is not of the form {expected}", file=sys.stderr)
        return 2
    try:
        import boto3

        client = boto3.client("s3", endpoint_url=args.endpoint_url, region_name=args.region)
        if args.list:
            runs = list_runs(client, match["bucket"], match["workload"])
            for run_key, count in runs:
                print(
                    f"{run_key}\t{count} record(s)\ts3://{match['bucket']}/{chain_prefix(match['workload'], run_key)}"
                )
            if not runs:
                print(
                    f"no evidence chain under s3://{match['bucket']}/_bascule/{match['workload']}/runs/",
                    file=sys.stderr,
                )
            return 0
        result = verify(
            client, match["bucket"], match["workload"], match["run"], check_artifacts=not args.skip_artifacts
        )
    except (StoreAccessError, BotoCoreError, ClientError) as exc:
        print(f"error: cannot read the evidence: {exc}", file=sys.stderr)
        return 2
    if result.records == 0 and result.first_broken is None:
        print(f"error: {result.reason} (--list shows a workload's runs)", file=sys.stderr)
        return 2
    print(result.summary())
    for note in result.notes:
        print(f"note: {note}")
    if args.report:
        with open(args.report, "w", encoding="utf-8") as out:
            out.write(render_report(result.chain, result.artifacts, verification=result))
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as out:
            out.write(render_markdown(result.chain, result))
    if not result.ok:
        return 1
    if args.require_seal and not result.sealed:
        print("the chain is not sealed (--require-seal)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The records of a run's evidence chain: their one hashed form, and the rules that link them.

A record, stored as ``chain/NNNNNN.json`` (``NNNNNN`` its zero-padded sequence number)::

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
- a final ``seal`` record's payload holds the digest of everything before it and the record
  count; nothing can follow it.

Everything here is pure: :func:`check_links` walks records already read, so the writer
(:mod:`bascule.governance.evidence.chain`) and the verifier
(:mod:`bascule.governance.evidence.verify`) apply the same rules.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bascule.governance.evidence.store import EVIDENCE_ROOT

FORMAT = "bascule-evidence-chain/1"
RECORD_NAME = re.compile(r"^(\d{6})\.json$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
RECORD_FIELDS = ("seq", "kind", "at", "actor", "payload", "artifacts", "idempotency_key", "prev", "hash")
MAX_SEQ = 999_999


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
            "artifacts": [artifact_entry(a) for a in artifacts],
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
            entries = tuple(artifact_entry(a) for a in artifacts)
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


def artifact_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The ``{key, sha256, size}`` a record binds an artifact by; raises ValueError naming what is wrong."""
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
    retain_until: str | None = None  # ISO date the record is locked until, as the server reported it


@dataclass(frozen=True)
class Break:
    seq: int
    reason: str


class _Broken(Exception):
    """The first problem found ends the walk: its reason becomes the Break."""


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
    locked, mode = False, "COMPLIANCE"
    try:
        for item in sorted(stored, key=lambda s: s.name_seq):
            record = _record_in_place(item, expected)
            _check_link(record, prev, workload_id, run_key)
            _check_order(record, sealed_at)
            if expected == 0:
                locked = bool(record.payload.get("object_lock"))
                mode = str(record.payload.get("lock_mode") or "COMPLIANCE")
            if locked and item.lock_known and item.lock_mode != mode:
                raise _Broken(f"{record.label()}: not under Object Lock although the chain was opened with it")
            if record.kind == "seal":
                _check_seal(record, previous)
                sealed_at = record.seq
            if artifact_problem is not None and (problem := artifact_problem(record)):
                raise _Broken(f"{record.label()}: {problem}")
            previous, prev, expected = record, record.hash, expected + 1
    except _Broken as broken:
        return Break(expected, str(broken)), False, None
    if previous is None:
        return Break(0, "no records: the chain is empty"), False, None
    return None, sealed_at is not None, previous.hash


def _record_in_place(item: StoredRecord, expected: int) -> Record:
    """The record of the object named ``expected``, if that is the object and it holds that record."""
    if item.name_seq != expected:
        if expected == 0:
            raise _Broken(f"record 0 (genesis) missing: the chain starts at {item.name_seq}")
        raise _Broken(f"record {expected} missing: sequence jumps from {expected - 1} to {item.name_seq}")
    record = item.record
    if record is None:
        raise _Broken(f"record {expected} ({item.key}): unreadable — {item.problem}")
    if record.seq != item.name_seq:
        raise _Broken(f"record {expected}: {item.key} holds {record.label()} — records reordered or moved")
    return record


def _check_link(record: Record, prev: str, workload_id: str, run_key: str) -> None:
    """The record's content is what was hashed, and it links to the record before it."""
    if record_hash(record.to_dict()) != record.hash:
        raise _Broken(f"{record.label()}: content changed — hash mismatch")
    if record.prev != prev:
        if record.seq == 0:
            raise _Broken(
                f"{record.label()}: prev is not the genesis value of workload '{workload_id}' run '{run_key}'"
            )
        raise _Broken(f"{record.label()} prev does not match record {record.seq - 1}")


def _check_order(record: Record, sealed_at: int | None) -> None:
    """Nothing after the seal, and a genesis record first and only first."""
    if sealed_at is not None:
        raise _Broken(f"{record.label()} appended after the seal (record {sealed_at})")
    if (record.seq == 0) != (record.kind == "genesis"):
        where = "record 0 is not a genesis record" if record.seq == 0 else "a second genesis record"
        raise _Broken(f"{record.label()}: {where}")


def _check_seal(seal: Record, previous: Record | None) -> None:
    digest, count = seal.payload.get("digest"), seal.payload.get("records")
    if previous is None or digest != previous.hash or count != seal.seq:
        raise _Broken(f"{seal.label()}: seal digest does not match the chain before it")

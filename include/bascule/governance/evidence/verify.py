"""Verifying a run's evidence chain from what the bucket holds, end to end.

Every hash, link, sequence number and the seal (the rules of
:func:`bascule.governance.evidence.records.check_links`), every artifact's digest, and on a
versioned bucket the chain's version history, which shows records rewritten or deleted after
they were written even when the current files look consistent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from bascule.governance.evidence.chain import error_code, is_missing, list_objects, sha256_and_size, store_error
from bascule.governance.evidence.records import (
    RECORD_NAME,
    Break,
    MalformedRecord,
    Record,
    StoredRecord,
    chain_prefix,
    check_links,
    parse_record_bytes,
)
from bascule.governance.evidence.store import EVIDENCE_ROOT


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
    # Per record, as the server reported it: {"seq", "mode", "retain_until"} (mode None: not locked or unknown).
    locks: list[dict[str, Any]] = field(default_factory=list)

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
            if is_missing(exc):
                return {"status": "missing", "sha256": None, "size": None}
            raise store_error(exc, f"reading artifact s3://{self._bucket}/{key}") from None
        with answer["Body"] as body:
            digest, size = sha256_and_size(body)
        return {"status": "ok", "sha256": digest, "size": size}


def _version_history(client: Any, bucket: str, prefix: str) -> tuple[dict[int, str], list[str]]:
    """Records rewritten or deleted after they were written, from a versioned bucket's history."""
    try:
        status = client.get_bucket_versioning(Bucket=bucket).get("Status")
    except ClientError as exc:
        return {}, [f"version history not checked: {error_code(exc)[0]}"]
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
        return {}, [f"version history not checked: {error_code(exc)[0]}"]
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
        listed = list(list_objects(client, bucket, prefix))
    except (ClientError, BotoCoreError) as exc:
        raise store_error(exc, f"listing {uri}") from None
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
        locks=[
            {"seq": s.name_seq, "mode": s.lock_mode, "retain_until": s.retain_until, "known": s.lock_known}
            for s in sorted(stored, key=lambda s: s.name_seq)
        ],
    )


def _read_stored(client: Any, bucket: str, key: str, name_seq: int) -> StoredRecord:
    try:
        answer = client.get_object(Bucket=bucket, Key=key)
        with answer["Body"] as body:
            raw = body.read()
    except ClientError as exc:
        if is_missing(exc):
            return StoredRecord(name_seq, key, None, "deleted while verifying")
        raise store_error(exc, f"reading s3://{bucket}/{key}") from None
    except BotoCoreError as exc:
        raise store_error(exc, f"reading s3://{bucket}/{key}") from None
    try:
        record = Record.from_dict(parse_record_bytes(raw))
    except MalformedRecord as exc:
        return StoredRecord(name_seq, key, None, str(exc))
    # Without s3:GetObjectRetention, S3 omits the lock headers: unknown is not "unlocked".
    until = answer.get("ObjectLockRetainUntilDate")
    return StoredRecord(
        name_seq, key, record, lock_known="ObjectLockMode" in answer, lock_mode=answer.get("ObjectLockMode"),
        retain_until=until.isoformat() if until is not None else None,
    )  # fmt: skip


def list_runs(client: Any, bucket: str, workload_id: str) -> list[tuple[str, int]]:
    """``(run_key, records)`` of every chain of a workload."""
    base = f"{EVIDENCE_ROOT}{workload_id}/runs/"
    counts: dict[str, int] = {}
    try:
        for item in list_objects(client, bucket, base):
            run_key, _, rest = item["Key"][len(base) :].partition("/")
            if rest.startswith("chain/") and RECORD_NAME.match(rest[len("chain/") :]):
                counts[run_key] = counts.get(run_key, 0) + 1
    except (ClientError, BotoCoreError) as exc:
        raise store_error(exc, f"listing s3://{bucket}/{base}") from None
    return sorted(counts.items())

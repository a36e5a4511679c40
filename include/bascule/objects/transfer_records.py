"""Per-object transfer records: what the copier verified of each object, for parity to rely on.

Each shard attempt (and the cutover's delta sync) writes one gzip JSON Lines file in
the evidence, one :class:`TransferRecord` per copied or skipped object, sorted by key
in S3's order so that parity merge-joins them with the listings
(:func:`latest_records` heap-merges every file of a snapshot). Records arrive in the
order copies finish, so they are spooled to a temporary file and sorted in flat
memory when the shard ends (:class:`RecordSpool`).

A *copied* record is proof: the copier hashed the bytes as they passed (checked
against the source's Content-MD5 when it has one), the server accepted each PUT or
part with its Content-MD5 (``server_check="content-md5"``) or a streamed part by its
ETag (``"etag"``, only where ETags are MD5s), and the record keeps the ETag the target
answered. On an SSE-C target (``sse_c_key_md5`` set, the key's fingerprint) the ETag
is not an MD5: only ``content-md5`` records prove, and the ETag serves only to tell
that the object was not rewritten since. The same holds on a client-side target
(``client_side_kek`` set): ``md5`` is the plaintext's, hashed as it was sealed.
A *skipped* record is not proof: the copier only saw the target's metadata, which a
rewrite can keep while changing the bytes.
"""

from __future__ import annotations

import heapq
import json
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

from bascule.governance.evidence.store import EvidenceStore
from bascule.objects.inventory import InventoryWriter, read_jsonl
from bascule.objects.merge_join import s3_order, sorted_records
from bascule.storage.base import ObjectInfo

RECORDS_SUFFIX = "-records.jsonl.gz"
_ATTEMPT = re.compile(r"-try(\d+)" + re.escape(RECORDS_SUFFIX) + "$")


@dataclass(frozen=True)
class TransferRecord:
    key: str  # the source key
    target_key: str
    status: Literal["copied", "skipped"]
    size: int
    source_etag: str
    md5: str | None  # base64: the source's Content-MD5 it was checked against, or the MD5 computed in transit
    md5_checked_at_source: bool  # True when ``md5`` is the source's own Content-MD5 (checked, not just computed)
    target_etag: str | None  # what the target answered for the write (skipped: what its HEAD said)
    multipart: bool
    # Defaults: records written before these fields existed read as "unknown check, no SSE-C".
    server_check: str | None = None  # "content-md5" or "etag": how the server checked the bytes at upload
    sse_c_key_md5: str | None = None  # fingerprint of the SSE-C key the copy was written with
    # Client-side encryption: fingerprint of the key-encryption key that wraps the object's data key.
    # ``md5`` is then the plaintext's, computed while sealing; the stored bytes hash to something else.
    client_side_kek: str | None = None

    def describes(self, info: ObjectInfo) -> bool:
        """True if this record is about the very version ``info`` of the source blob."""
        return self.source_etag == info.etag and self.size == info.size

    def proves(self, listed_etag: str, md5_b64: str) -> bool:
        """True if the copy this records holds ``md5_b64`` and the target still holds that copy.

        An SSE-C or client-side copy proves only if the server verified a Content-MD5 on every
        request that carried its bytes: its ETag is no hash of the plaintext.
        """
        encrypted = self.sse_c_key_md5 is not None or self.client_side_kek is not None
        if encrypted and self.server_check != "content-md5":
            return False
        return (
            self.status == "copied"
            and self.md5 == md5_b64
            and self.target_etag is not None
            and self.target_etag.strip('"') == listed_etag.strip('"')
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransferRecord:
        return cls(**data)


def _sort_key(record: dict[str, Any]) -> str:
    return s3_order(str(record["key"]))


class RecordSpool:
    """Records in the order copies finish, spooled to disk; :meth:`publish` writes them sorted to the evidence."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115 - closed in publish/close
        self.count = 0

    def add(self, record: TransferRecord) -> None:
        self._file.write(json.dumps(record.to_dict(), ensure_ascii=False, separators=(",", ":")) + "\n")
        self.count += 1

    def publish(self, store: EvidenceStore, name: str) -> str:
        """Sort (external merge sort, flat memory) into the write-once evidence file ``name``; returns its key."""
        try:
            self._file.seek(0)
            writer = InventoryWriter(store, name)
            for record in sorted_records((json.loads(line) for line in self._file), _sort_key):
                writer.add_record(record)
            return writer.close().key
        finally:
            self.close()

    def close(self) -> None:
        self._file.close()


def records_name(base: str, attempt: int) -> str:
    return f"{base}-try{attempt}{RECORDS_SUFFIX}"


def record_files(store: EvidenceStore, name_prefix: str) -> list[str]:
    """Keys of the record files under ``name_prefix``, oldest first (later ones supersede).

    The shards' records come first, by attempt; then the cutover delta syncs', by
    attempt: a blob copied again at cutover was changed after the snapshot.
    """
    keys = [key for key, _ in store.keys(name_prefix) if key.endswith(RECORDS_SUFFIX)]

    def attempt(key: str) -> tuple[int, int, str]:
        found = _ATTEMPT.search(key)
        return (0 if "/transfer/" in key else 1, int(found.group(1)) if found else 0, key)

    return sorted(keys, key=attempt)


def latest_records(store: EvidenceStore, keys: Iterable[str]) -> Iterator[TransferRecord]:
    """One record per source key, in S3's order: of several, the one from the file listed last,
    except that a later *skipped* record of the same blob version does not replace a
    *copied* one (a retried shard skips what its first attempt copied and proved).

    Each file is sorted; a heap merge of all of them holds one record per file.
    """

    def tagged(generation: int, key: str) -> Iterator[tuple[str, int, dict[str, Any]]]:
        return ((_sort_key(r), generation, r) for r in read_jsonl(store, key))

    streams = [tagged(generation, key) for generation, key in enumerate(keys)]
    pending: dict[str, Any] | None = None
    for sort_key, _, record in heapq.merge(*streams, key=lambda item: (item[0], item[1])):
        if pending is not None and _sort_key(pending) != sort_key:
            yield TransferRecord.from_dict(pending)
        if pending is None or _sort_key(pending) != sort_key or not _keeps_proof(pending, record):
            pending = record  # equal keys come oldest first: the last one wins
    if pending is not None:
        yield TransferRecord.from_dict(pending)


def _keeps_proof(earlier: dict[str, Any], later: dict[str, Any]) -> bool:
    return (
        earlier["status"] == "copied"
        and later["status"] == "skipped"
        and earlier["source_etag"] == later["source_etag"]
        and earlier["size"] == later["size"]
    )

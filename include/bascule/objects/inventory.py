"""Snapshot inventories: every object of a location, as a gzip JSON Lines file.

An inventory is written while the listing streams, into a spooled file that moves to
disk past a few MB, so memory stays flat for any number of objects. It is read back
the same way. Shards are not separate files: an object belongs to shard
``shard_of(key, n)``, a stable hash, so every shard task streams the one inventory
and keeps its own objects. A rerun assigns every object to the same shard.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import IO, Any

from bascule.governance.evidence.store import EvidenceStore
from bascule.objects.parts import MAX_OBJECT_SIZE
from bascule.storage.base import ObjectInfo

# Scaleway Object Storage refuses objects above 5 TB.
SCALEWAY_MAX_OBJECT_BYTES = MAX_OBJECT_SIZE
INVENTORY_CONTENT_TYPE = "application/x-ndjson+gzip"
_SPOOL_BYTES = 8 * 1024 * 1024


def to_record(info: ObjectInfo) -> dict[str, Any]:
    record = asdict(info)
    record["last_modified"] = info.last_modified.isoformat()
    return record


def from_record(record: dict[str, Any]) -> ObjectInfo:
    return ObjectInfo(**{**record, "last_modified": datetime.fromisoformat(record["last_modified"])})


@dataclass
class InventorySummary:
    """What XCom carries about an inventory: where it is and what it holds."""

    key: str
    count: int = 0
    bytes: int = 0
    sha256: str = ""
    too_large: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Recorder:
    def __init__(self, spool: IO[bytes]):
        self._hash = hashlib.sha256()
        self._spool = spool
        self._gzip = gzip.GzipFile(fileobj=self, mode="wb", compresslevel=6, mtime=0)

    def write(self, data: bytes) -> int:  # called by GzipFile with compressed bytes
        self._hash.update(data)
        return self._spool.write(data)

    def flush(self) -> None:
        self._spool.flush()

    def add(self, record: dict[str, Any]) -> None:
        self._gzip.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")

    def close(self) -> str:
        self._gzip.close()
        return self._hash.hexdigest()


class InventoryWriter:
    """A gzip JSON Lines file written into the evidence as its records arrive, uploaded on :meth:`close`.

    The spool moves to disk past a few MB, so memory stays flat however many records
    pass. Used for inventories (:meth:`add`) and for the copier's per-object transfer
    records (:meth:`add_record`).
    """

    def __init__(self, store: EvidenceStore, name: str):
        self._store = store
        self._name = name
        self._spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115 - closed in close/discard
        self._recorder = _Recorder(self._spool)
        self.summary = InventorySummary(key=store.prefix + name)

    def add(self, info: ObjectInfo) -> None:
        self._recorder.add(to_record(info))
        self.summary.count += 1
        self.summary.bytes += info.size
        if info.size > SCALEWAY_MAX_OBJECT_BYTES:
            self.summary.too_large.append({"key": info.key, "size": info.size})

    def add_record(self, record: dict[str, Any]) -> None:
        self._recorder.add(record)
        self.summary.count += 1

    def recording(self, objects: Iterable[ObjectInfo]) -> Iterator[ObjectInfo]:
        """``objects`` passed through unchanged, each written as it goes by: one listing feeds two consumers."""
        for info in objects:
            self.add(info)
            yield info

    def close(self) -> InventorySummary:
        """Finish the file and put it in the evidence (write-once)."""
        try:
            self.summary.sha256 = self._recorder.close()
            self._spool.seek(0)
            self._store.put_file(self._name, self._spool, INVENTORY_CONTENT_TYPE)
        finally:
            self._spool.close()
        return self.summary

    def discard(self) -> None:
        """Drop what was written (an interrupted listing leaves no partial evidence file)."""
        self._spool.close()


def write_inventory(objects: Iterable[ObjectInfo], store: EvidenceStore, name: str) -> InventorySummary:
    """Stream ``objects`` into the evidence file ``name``; report objects too large for the target."""
    writer = InventoryWriter(store, name)
    try:
        for info in objects:
            writer.add(info)
    except BaseException:
        writer.discard()
        raise
    return writer.close()


def read_jsonl(store: EvidenceStore, key: str) -> Iterator[dict[str, Any]]:
    """Stream a gzip JSON Lines evidence file back, record by record."""
    with store.open(key) as raw, gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
        for line in io.TextIOWrapper(unzipped, encoding="utf-8"):
            if line.strip():
                yield json.loads(line)


def read_inventory(store: EvidenceStore, key: str) -> Iterator[ObjectInfo]:
    """Stream an inventory back, object by object."""
    return (from_record(record) for record in read_jsonl(store, key))


def shard_of(key: str, shards: int) -> int:
    """A stable shard number for ``key``: the same on every worker, every rerun."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def shard(objects: Iterable[ObjectInfo], index: int, shards: int) -> Iterator[ObjectInfo]:
    return (info for info in objects if shard_of(info.key, shards) == index)

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


def write_inventory(objects: Iterable[ObjectInfo], store: EvidenceStore, name: str) -> InventorySummary:
    """Stream ``objects`` into the evidence file ``name``; report objects too large for the target."""
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
        recorder = _Recorder(spool)
        summary = InventorySummary(key=store.prefix + name)
        for info in objects:
            recorder.add(to_record(info))
            summary.count += 1
            summary.bytes += info.size
            if info.size > SCALEWAY_MAX_OBJECT_BYTES:
                summary.too_large.append({"key": info.key, "size": info.size})
        summary.sha256 = recorder.close()
        spool.seek(0)
        store.put_file(name, spool, INVENTORY_CONTENT_TYPE)
    return summary


def read_inventory(store: EvidenceStore, key: str) -> Iterator[ObjectInfo]:
    """Stream an inventory back, object by object."""
    with store.open(key) as raw, gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
        for line in io.TextIOWrapper(unzipped, encoding="utf-8"):
            if line.strip():
                yield from_record(json.loads(line))


def shard_of(key: str, shards: int) -> int:
    """A stable shard number for ``key``: the same on every worker, every rerun."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def shard(objects: Iterable[ObjectInfo], index: int, shards: int) -> Iterator[ObjectInfo]:
    return (info for info in objects if shard_of(info.key, shards) == index)

"""Parity: the source snapshot inventory against a fresh inventory of the target.

Each object yields one row: present on both sides, sizes, the source hash and the
hash the target holds, and whether the target's bytes are *proven* to match.

Proof, cheapest first: a single-part S3 ETag is the MD5 of the stored bytes, so an
ETag equal to the expected MD5 proves them. Otherwise (multipart ETags, SSE-C, or an
ETag that disagrees) the target's bytes are read back and hashed; a disagreeing
ETag is never taken as the last word, because some stores compute it differently.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from bascule.storage.base import MD5_KEY, ObjectInfo


@dataclass(frozen=True)
class ComparisonRow:
    key: str
    in_source: bool
    in_target: bool
    source_size: int | None
    target_size: int | None
    source_md5: str | None
    target_md5: str | None
    verified: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def expected_md5(source: ObjectInfo, target: ObjectInfo | None) -> str | None:
    """The hash the target must match: the source's Content-MD5, else the one the copy recorded.

    Blobs committed from blocks carry no Content-MD5; the copy engine hashed the
    bytes it read from the source and recorded that hash on the target object.
    """
    if source.content_md5:
        return source.content_md5
    return target.metadata.get(MD5_KEY) if target is not None else None


def etag_proves(etag: str, md5_b64: str) -> bool:
    try:
        return etag.strip('"').lower() == base64.b64decode(md5_b64).hex()
    except (binascii.Error, ValueError):
        return False


def compare(
    source: Iterable[ObjectInfo],
    target: Iterable[ObjectInfo],
    *,
    source_prefix: str,
    target_prefix: str,
    readback_md5: Callable[[str], str],
) -> Iterator[ComparisonRow]:
    """Rows for every key on either side; ``readback_md5(target_key)`` hashes the target's bytes.

    Holds the target side in memory as a dict (about 200 bytes per object); rows are
    yielded in source order, then target-only keys.
    """
    targets = {info.key[len(target_prefix) :]: info for info in target}
    for info in source:
        relative = info.key[len(source_prefix) :]
        found = targets.pop(relative, None)
        if found is None:
            yield ComparisonRow(relative, True, False, info.size, None, info.content_md5, None, False)
            continue
        want = expected_md5(info, found)
        recorded = found.metadata.get(MD5_KEY)
        verified = False
        if want is not None and found.size == info.size and recorded == want:
            verified = etag_proves(found.etag, want) or readback_md5(found.key) == want
        yield ComparisonRow(relative, True, True, info.size, found.size, want, recorded, verified)
    for relative, found in sorted(targets.items()):
        yield ComparisonRow(relative, False, True, None, found.size, None, found.metadata.get(MD5_KEY), False)


@dataclass
class Delta:
    """What changed at the source between two inventories: to copy, and to delete at the target."""

    changed: list[ObjectInfo]
    deleted: list[str]


def delta(before: Iterable[ObjectInfo], after: Iterable[ObjectInfo]) -> Delta:
    """New or modified objects (by ETag and size) and deleted keys, ``before`` -> ``after``."""
    previous = {info.key: (info.etag, info.size) for info in before}
    changed = []
    for info in after:
        if previous.pop(info.key, None) != (info.etag, info.size):
            changed.append(info)
    return Delta(changed, sorted(previous))

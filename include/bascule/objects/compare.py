"""Parity and deltas as merge-joins of sorted listings: flat memory for any number of objects.

**Parity**: each object yields one row: present on both sides, sizes, the source hash
and the hash recorded for the target, and whether the target's bytes are *proven* to
match. Three sorted streams meet (:mod:`bascule.objects.merge_join`): the source
inventory, the copier's transfer records (:mod:`bascule.objects.transfer_records`)
and a target listing (key, size, ETag: no HEAD per object).

Proof, cheapest first:

1. a single-part S3 ETag is the MD5 of the stored bytes, so an ETag equal to the
   expected MD5 proves them (not on an SSE-C target, ``etag_is_md5=False``: there
   the ETag is not the plaintext's MD5, whatever a lax stand-in answers);
2. a transfer record of a copy of this very source version (same source ETag and
   size) whose MD5 is the expected one and whose target ETag is the one listed now:
   the copier verified those bytes as they passed and the object has not been
   rewritten since (any rewrite, even one keeping the metadata, changes the ETag);
3. otherwise (multipart ETags without such a record, SSE-C, an ETag that disagrees)
   the target's bytes are read back and hashed: a disagreeing ETag is never taken as
   the last word, because some stores compute it differently.

A hash recorded for the target that differs from the source's fails without a read.

**Delta**: the snapshot inventory and one fresh listing of the source, both in Azure's
order, joined: new, modified (ETag, last-modified or size changed) and deleted objects.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

from bascule.objects.merge_join import azure_order, merge_join, s3_order
from bascule.objects.transfer_records import TransferRecord
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
    records: Iterable[TransferRecord] = (),
    order: Callable[[str], Any] = s3_order,
    etag_is_md5: bool = True,
) -> Iterator[ComparisonRow]:
    """Rows for every key on either side, in ``order`` of the keys relative to each prefix.

    ``readback_md5(target_key)`` hashes the target's bytes (a GET), called only when
    neither the ETag nor a record proves them. ``target`` may be a plain listing
    (no metadata) or HEAD answers (their ``md5chksum`` then stands in for a record).
    ``records`` are the latest transfer record per source key. Streams must be
    sorted by ``order`` (S3's, by default): a key out of place raises
    :class:`~bascule.objects.merge_join.ListingOrderError`.
    """

    def source_key(info: ObjectInfo) -> str:
        return info.key[len(source_prefix) :]

    def record_key(record: TransferRecord) -> str:
        return record.key[len(source_prefix) :]

    def target_key(info: ObjectInfo) -> str:
        return info.key[len(target_prefix) :]

    with_records = (
        (key, info, record)
        for key, info, record in merge_join(
            source,
            records,
            left_key=source_key,
            right_key=record_key,
            order=order,
            left_name="source inventory",
            right_name="transfer records",
        )
        if info is not None  # a record of an object no longer in the source (deleted at cutover)
    )
    joined = merge_join(
        with_records, target, left_key=lambda item: item[0], right_key=target_key, order=order,
        left_name="source inventory", right_name="target listing",
    )  # fmt: skip
    for key, left, found in joined:
        if left is None:
            assert found is not None
            yield ComparisonRow(key, False, True, None, found.size, None, found.metadata.get(MD5_KEY), False)
        else:
            yield _row(key, left[1], left[2], found, readback_md5, etag_is_md5)


def _row(
    key: str,
    info: ObjectInfo,
    record: TransferRecord | None,
    found: ObjectInfo | None,
    readback: Callable[[str], str],
    etag_is_md5: bool,
) -> ComparisonRow:
    if found is None:
        return ComparisonRow(key, True, False, info.size, None, info.content_md5, None, False)
    if record is not None and not record.describes(info):
        record = None  # a record of an earlier version of the blob proves nothing about this one
    recorded = record.md5 if record is not None else found.metadata.get(MD5_KEY)
    want = info.content_md5 or recorded
    verified = False
    if want is not None and found.size == info.size and recorded in (None, want):
        verified = (
            (etag_is_md5 and etag_proves(found.etag, want))
            or (record is not None and record.proves(found.etag, want))
            or readback(found.key) == want
        )
    return ComparisonRow(key, True, True, info.size, found.size, want, recorded, verified)


ChangeKind = Literal["new", "modified", "deleted"]


@dataclass(frozen=True)
class Change:
    """One object that differs between two inventories; ``info`` is the newer one (the older if deleted)."""

    kind: ChangeKind
    info: ObjectInfo


def changed(before: ObjectInfo, after: ObjectInfo) -> bool:
    """Azure changes the ETag on every write; last-modified and size are checked too, as cheap insurance."""
    return (before.etag, before.size, before.last_modified) != (after.etag, after.size, after.last_modified)


def iter_delta(
    before: Iterable[ObjectInfo], after: Iterable[ObjectInfo], *, order: Callable[[str], Any] = azure_order
) -> Iterator[Change]:
    """The changes ``before`` -> ``after`` (two listings of the source, in Azure's order), streamed in key order."""

    def key(info: ObjectInfo) -> str:
        return info.key

    joined = merge_join(
        before, after, left_key=key, right_key=key, order=order,
        left_name="snapshot inventory", right_name="source listing after the freeze",
    )  # fmt: skip
    for _, old, new in joined:
        if new is None:
            assert old is not None
            yield Change("deleted", old)
        elif old is None:
            yield Change("new", new)
        elif changed(old, new):
            yield Change("modified", new)


@dataclass
class Delta:
    """What changed at the source between two inventories: to copy, and to delete at the target."""

    changed: list[ObjectInfo]
    deleted: list[str]


def delta(before: Iterable[ObjectInfo], after: Iterable[ObjectInfo]) -> Delta:
    """:func:`iter_delta` gathered: O(changes) in memory (the cutover streams it instead)."""
    result = Delta([], [])
    for change in iter_delta(before, after):
        if change.kind == "deleted":
            result.deleted.append(change.info.key)
        else:
            result.changed.append(change.info)
    return result

"""What a copied object records about its source blob, and how a later run reads that back to skip it.

The target records ``md5chksum`` (base64 MD5 of the source bytes, the form
``rclone check`` reads for multipart objects), ``bascule-snapshot`` (the run's
snapshot id) and ``bascule-source-etag`` (the blob's ETag at snapshot time), plus
the blob's own user metadata.
"""

from __future__ import annotations

from bascule.storage.base import MD5_KEY, ObjectInfo

SNAPSHOT_KEY = "bascule-snapshot"
SOURCE_ETAG_KEY = "bascule-source-etag"
_RESERVED_KEYS = (MD5_KEY, SNAPSHOT_KEY, SOURCE_ETAG_KEY)


def target_metadata(obj: ObjectInfo, snapshot_id: str, md5_b64: str | None) -> dict[str, str]:
    """The user metadata written with the copy: the blob's own, plus what proves the copy."""
    metadata = _own_metadata(obj.metadata)
    metadata[SNAPSHOT_KEY] = snapshot_id
    metadata[SOURCE_ETAG_KEY] = obj.etag
    if md5_b64:
        metadata[MD5_KEY] = md5_b64
    return metadata


def already_copied(existing: ObjectInfo, obj: ObjectInfo) -> bool:
    """True if ``existing`` (a target HEAD) already holds this source blob, as we would write it.

    - Same size, and the recorded ``bascule-source-etag`` equals the blob's ETag:
      Azure changes the ETag on every write to a blob's data, properties or metadata,
      so it is the same blob version we copied (and verified) before, in whichever
      snapshot. Deliberately not also requiring the same snapshot id: the cutover's
      final delta sync takes a new snapshot, and must not re-copy every blob that
      lacks a Content-MD5.
    - Otherwise (the blob was rewritten), only when the blob has a Content-MD5 equal
      to the recorded ``md5chksum`` and the content type, encoding and user metadata
      also match: same bytes, same properties.
    """
    if existing.size != obj.size:
        return False
    recorded = existing.metadata
    if obj.content_md5 is not None and recorded.get(MD5_KEY) != obj.content_md5:
        return False
    if recorded.get(SOURCE_ETAG_KEY) == obj.etag:
        return True
    if obj.content_md5 is None:
        return False
    own = {k: v for k, v in recorded.items() if k not in _RESERVED_KEYS}  # as S3 returns them: lowercased
    return (
        own == _own_metadata(obj.metadata)
        and (obj.content_type is None or existing.content_type == obj.content_type)
        and (existing.content_encoding or None) == (obj.content_encoding or None)
        and all(
            (getattr(existing, name) or None) == (getattr(obj, name) or None)
            for name in ("cache_control", "content_language", "content_disposition")
        )
    )


def copied_in_this_snapshot(current: ObjectInfo, obj: ObjectInfo, snapshot_id: str) -> bool:
    """True if ``current`` (a target HEAD) is this blob's copy written by this very snapshot's run."""
    return (
        current.size == obj.size
        and current.metadata.get(SOURCE_ETAG_KEY) == obj.etag
        and current.metadata.get(SNAPSHOT_KEY) == snapshot_id
    )


def _own_metadata(metadata: dict[str, str]) -> dict[str, str]:
    # A blob's metadata as the target will hold it: names lowercased, the proof keys ours alone.
    return {name.lower(): value for name, value in metadata.items() if name.lower() not in _RESERVED_KEYS}

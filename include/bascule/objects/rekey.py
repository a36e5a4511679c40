"""Key rotation in place: SSE-C (every object re-encrypted by the server) or client-side (every data key rewrapped).

A server-side CopyObject per object (no egress, metadata kept): the server decrypts with
the old key and encrypts with the new. Idempotent: an object already under the new key
(its HEAD with the new key answers) is skipped, so an interrupted rotation is run again.
The result (counts and both fingerprints, never a key) goes to the evidence.
Procedure: docs/runbooks.md#sse-c-key-rotation.

Client-side: only the wrapped data key in each object's metadata changes (a metadata-only
CopyObject onto itself, guarded by the ETag); the stored frames are not rewritten, so the
cost is one HEAD and one copy request per object whatever its size.
Procedure: docs/runbooks.md#client-side-key-rotation.
"""

from __future__ import annotations

from typing import Any

from bascule.exceptions import BasculeError
from bascule.storage.base import CONTENT_SETTINGS, MD5_KEY
from bascule.storage.client_side import ClientSideKey, reveal
from bascule.storage.encryption import SseCKey
from bascule.storage.metadata import decode_metadata
from bascule.storage.s3 import S3Bucket


def rotate_sse_c_key(target: S3Bucket, old: SseCKey, prefix: str = "") -> dict[str, Any]:
    """Re-encrypt every data object under ``prefix`` of ``target`` (built with the *new* key) from ``old``."""
    if target.sse_c is None:
        raise BasculeError(f"{target.describe()}: build the bucket with the new SSE-C key to rotate to it")
    rotated = already = 0
    failed: list[str] = []
    for info in target.iter_objects(prefix):
        try:
            if target.head(info.key) is not None:  # readable with the new key: done by an earlier run
                already += 1
                continue
        except BasculeError:
            pass  # refused with the new key: still under the old one
        try:
            target.reencrypt(info.key, old)
            rotated += 1
        except BasculeError as exc:
            failed.append(f"{info.key}: {exc}")
    return {
        "bucket": target.bucket,
        "prefix": prefix,
        "rotated": rotated,
        "already_under_new_key": already,
        "failed": failed[:100],
        "failed_count": len(failed),
        "old_key_md5": old.fingerprint,
        "new_key_md5": target.sse_c.fingerprint,
    }


def rewrap_client_side_key(target: S3Bucket, old: ClientSideKey, prefix: str = "") -> dict[str, Any]:
    """Rewrap every data object's data key under ``prefix`` from ``old`` to ``target``'s KEK (built with the new one)."""
    new = target.client_side
    if new is None:
        raise BasculeError(f"{target.describe()}: build the bucket with the new key-encryption key to rewrap to it")
    rewrapped = already = 0
    failed: list[str] = []
    for info in target.iter_objects(prefix):
        try:
            answer = target.client.head_object(Bucket=target.bucket, Key=info.key)
            metadata = decode_metadata(answer.get("Metadata") or {})
            if metadata.get("bascule-cse-kek") == new.fingerprint:
                already += 1
                continue
            where = f"{target.describe()}: object '{info.key}'"
            envelope, visible = reveal(old, metadata, where)
            md5 = visible.pop(MD5_KEY, None)
            settings = {name: answer.get(param) for name, param in CONTENT_SETTINGS.items()}
            target.replace_metadata(
                info.key, if_etag=answer["ETag"].strip('"'), metadata=visible | envelope.rewrapped(new).metadata(md5),
                **settings,
            )  # fmt: skip
            rewrapped += 1
        except BasculeError as exc:
            failed.append(f"{info.key}: {exc}")
        except Exception as exc:  # a HEAD refused: name the object, go on
            failed.append(f"{info.key}: {type(exc).__name__}: {exc}")
    return {
        "bucket": target.bucket, "prefix": prefix, "rewrapped": rewrapped, "already_under_new_key": already,
        "failed": failed[:100], "failed_count": len(failed), "old_kek_md5": old.fingerprint,
        "new_kek_md5": new.fingerprint,
    }  # fmt: skip

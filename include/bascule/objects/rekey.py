"""SSE-C key rotation: every object under a prefix re-encrypted in place from the old key to the new one.

A server-side CopyObject per object (no egress, metadata kept): the server decrypts with
the old key and encrypts with the new. Idempotent: an object already under the new key
(its HEAD with the new key answers) is skipped, so an interrupted rotation is run again.
The result (counts and both fingerprints, never a key) goes to the evidence.
Procedure: docs/runbooks.md#sse-c-key-rotation.
"""

from __future__ import annotations

from typing import Any

from bascule.exceptions import BasculeError
from bascule.storage.encryption import SseCKey
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

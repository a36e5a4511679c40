"""The bucket policy Bascule attaches to a health-data bucket it creates: it denies what HDS prohibits.

Scaleway's HDS guidance ("How to create a compliant bucket to host healthcare data",
https://www.scaleway.com/en/docs/object-storage/how-to/host-healthcare-data/) allows no
active lifecycle rule and no object in the Glacier class, and says bucket policies should
deny what is prohibited. So the policy denies, to every principal:

- ``s3:PutLifecycleConfiguration`` (no lifecycle rule can be added later), and
- ``s3:PutObject`` with a storage class other than ``STANDARD`` (condition on
  ``s3:x-amz-storage-class``; the copier always writes ``STANDARD``).

A Deny to ``*`` makes nothing public (``policy_not_public`` flags only Allow statements).
The cutover's policy check verifies both statements are still there
(:func:`missing_guards`). Whether Scaleway evaluates the ``s3:x-amz-storage-class``
condition key is not documented on the pages we found; the storage class of every
written object is therefore also checked from the target listing at parity.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

WRITE_STORAGE_CLASS = "STANDARD"
DENY_LIFECYCLE_SID = "BasculeHdsDenyLifecycleRules"
DENY_STORAGE_CLASS_SID = "BasculeHdsDenyOtherStorageClasses"


def guard_policy(bucket: str) -> dict[str, Any]:
    """The policy document (Scaleway's policy version) for ``bucket``."""
    return {
        "Version": "2023-04-17",
        "Id": "bascule-hds-guard",
        "Statement": [
            {
                "Sid": DENY_LIFECYCLE_SID,
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:PutLifecycleConfiguration",
                "Resource": bucket,
            },
            {
                "Sid": DENY_STORAGE_CLASS_SID,
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:PutObject",
                "Resource": f"{bucket}/*",
                "Condition": {"StringNotEquals": {"s3:x-amz-storage-class": WRITE_STORAGE_CLASS}},
            },
        ],
    }


def missing_guards(policy: str | Mapping[str, Any] | None) -> list[str]:
    """The guard statements absent (or weakened) from a bucket policy; [] if both are there."""
    try:
        document = json.loads(policy) if isinstance(policy, str) else (policy or {})
    except ValueError:
        document = {}
    statements = document.get("Statement") or [] if isinstance(document, Mapping) else []
    if isinstance(statements, Mapping):
        statements = [statements]
    by_sid = {s.get("Sid"): s for s in statements if isinstance(s, Mapping)}
    missing = []
    for wanted in guard_policy("<bucket>")["Statement"]:
        found = by_sid.get(wanted["Sid"])
        same = found is not None and all(
            found.get(field) == wanted.get(field) for field in ("Effect", "Principal", "Action", "Condition")
        )
        if not same:
            missing.append(f"{wanted['Sid']} (Deny {wanted['Action']})")
    return missing

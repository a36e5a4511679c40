"""``evidence_object_lock``: the evidence bucket is under Object Lock, or the manifest says why not.

Scaleway enables Object Lock only when a bucket is created, so a bucket that lacks it can
never get it: preflight refuses it, before anything is written, unless the manifest sets
``evidence.object_lock: false`` with an ``evidence.justification``, which the check's
evidence (and so the chain and the auditor report) records.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from bascule.governance.evidence.chain import bucket_object_lock, store_error
from bascule.governance.policy import CheckResult
from bascule.workload import EvidenceLocation

NAME = "evidence_object_lock"


def _default_retention(client: Any, bucket: str) -> dict[str, Any]:
    try:
        answer = client.get_object_lock_configuration(Bucket=bucket)
    except (ClientError, BotoCoreError) as exc:
        raise store_error(exc, f"reading the Object Lock configuration of bucket '{bucket}'") from None
    return dict((answer.get("ObjectLockConfiguration", {}).get("Rule") or {}).get("DefaultRetention") or {})


def check_evidence_object_lock(
    client: Any, location: EvidenceLocation, manifest_path: str, *, exists: bool = True
) -> CheckResult:
    """``exists=False``: the bucket is still to be created (dry run), with Object Lock if the manifest asks."""
    bucket = location.bucket
    facts: dict[str, Any] = {
        "bucket": bucket,
        "object_lock_required": location.object_lock,
        "lock_mode": location.lock_mode,
        "retention_days": location.retention_days,
    }
    if not exists:
        what = f"with Object Lock ({location.lock_mode}, {location.retention_days} days)" if location.object_lock else ""
        return CheckResult(NAME, True, f"evidence bucket '{bucket}' would be created {what} (dry run)".strip(), facts)
    enabled = bucket_object_lock(client, bucket)
    facts["object_lock"] = enabled
    if enabled:
        facts["default_retention"] = _default_retention(client, bucket)
        return CheckResult(
            NAME,
            True,
            f"evidence bucket '{bucket}' has Object Lock: each record is written in {location.lock_mode} mode "
            f"for {location.retention_days} days",
            facts,
        )
    if not location.object_lock:
        facts["justification"] = location.justification
        return CheckResult(
            NAME,
            True,
            f"evidence bucket '{bucket}' has NO Object Lock, as {manifest_path} says (evidence.justification: "
            f"{location.justification!r}): the chain is tamper-evident, not tamper-proof",
            facts,
        )
    return CheckResult(
        NAME,
        False,
        f"evidence bucket '{bucket}' has no Object Lock, and Scaleway enables it only when a bucket is created. "
        f"Fix: name a new bucket in evidence.bucket with evidence.create_if_missing: true (Bascule creates it with "
        f"Object Lock), or set evidence.object_lock: false with an evidence.justification in {manifest_path} "
        "(docs/evidence.md#object-lock)",
        facts,
    )

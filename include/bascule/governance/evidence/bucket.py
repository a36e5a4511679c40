"""The evidence bucket at preflight, for either kind: it exists (or is created with Object Lock),
sits in the manifest's region, passes the bucket rules, and is locked or says why not.

Every workload names its evidence bucket in ``evidence`` (:class:`bascule.workload.EvidenceLocation`);
an object workload's data bucket holds the source's objects and nothing else. The checks run
before anything is written there: the preflight's own evidence record is the first write.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from bascule.governance import object_policy
from bascule.governance.evidence.lock import check_evidence_object_lock
from bascule.governance.policy import CheckResult, Deployment
from bascule.workload import EvidenceLocation


def check_evidence_bucket(location: EvidenceLocation, bucket: Any, manifest_path: str, *, dry_run: bool) -> CheckResult:
    """``evidence_bucket``: there, or created now (with Object Lock unless the manifest says not)."""
    region = bucket.region()
    if region is None and location.create_if_missing and not dry_run:
        lock = (location.lock_mode, location.retention_days) if location.object_lock else None
        bucket.create(location.region, object_lock=lock)  # Scaleway allows Object Lock only at creation
        return CheckResult("evidence_bucket", True, f"created evidence bucket {bucket.describe()} in '{location.region}'")
    if region is None and location.create_if_missing:
        return CheckResult(
            "evidence_bucket", True, f"{bucket.describe()} would be created in '{location.region}' (dry run)"
        )
    if region is None:
        return CheckResult(
            "evidence_bucket",
            False,
            f"evidence bucket {bucket.describe()} does not exist; create it in '{location.region}' or set "
            f"evidence.create_if_missing: true in {manifest_path}",
        )
    if region != location.region:
        return CheckResult(
            "evidence_bucket",
            False,
            f"evidence bucket {bucket.describe()} is in '{region}', the manifest says '{location.region}' "
            f"(evidence.region in {manifest_path})",
        )
    return CheckResult("evidence_bucket", True, f"evidence bucket {bucket.describe()} in '{region}'")


def evidence_bucket_checks(
    location: EvidenceLocation,
    bucket: Any,
    manifest_path: str,
    *,
    dry_run: bool,
    deployment: Deployment | None,
    policy_name_prefix: str = "",
) -> list[CheckResult]:
    """The bucket check, the bucket rules on it (``deployment`` given) and ``evidence_object_lock``.

    ``policy_name_prefix`` tells the evidence bucket's rule verdicts from a data bucket's
    in one report (an object workload's preflight has both). The evidence holds no health
    data: the bucket's default encryption suffices (no SSE-C sample).
    """
    if deployment is not None:
        tls = object_policy.check_endpoint_tls(bucket.endpoint, bucket.bucket, deployment=deployment)
        if not tls.ok:  # not even a CreateBucket goes over a connection the policy refuses
            return [replace(tls, name=policy_name_prefix + tls.name)]
    found = check_evidence_bucket(location, bucket, manifest_path, dry_run=dry_run)
    checks = [found]
    exists = found.ok and bucket.region() is not None
    if exists and deployment is not None:
        rules = object_policy.evaluate_object_target_policy(
            bucket.client, bucket.bucket, bucket.endpoint, deployment=deployment, sse_customer_key=None,
            expected_region=location.region,
        )  # fmt: skip
        checks += [replace(c, name=policy_name_prefix + c.name) for c in rules]
    if found.ok:
        checks.append(check_evidence_object_lock(bucket.client, location, manifest_path, exists=exists))
    return checks

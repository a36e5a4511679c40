"""Sovereignty and HDS policy as code.

Rules here refuse a configuration before any byte moves. Each returns a verdict
with a reason precise enough to act on; none of them can be bypassed by a Param
or an environment variable.
"""

from __future__ import annotations

from dataclasses import dataclass

from bascule.workload import ObjectStoreWorkload, PostgresWorkload


@dataclass(frozen=True)
class CheckResult:
    """One preflight or policy check: its name, whether it passed, and why."""

    name: str
    ok: bool
    detail: str


def check_target_region(workload: ObjectStoreWorkload | PostgresWorkload, manifest_path: str) -> CheckResult:
    """The manifest's target region must be in the workload's allow-list (HDS: fr-par)."""
    region = workload.target.region
    allowed = list(workload.policy.allowed_regions)
    if region in allowed:
        return CheckResult("target_region_allowed", True, f"target region '{region}' is in the allow-list {allowed}")
    return CheckResult(
        "target_region_allowed",
        False,
        f"target region '{region}' is not in the allow-list {allowed}. Health data (HDS) must stay in "
        f"fr-par; to allow another region, add it to policy.allowed_regions with a policy.justification "
        f"in {manifest_path}",
    )


def check_bucket_region(expected: str, actual: str, bucket: str) -> CheckResult:
    """The bucket must really live where the manifest says, not just be addressed from there."""
    if actual == expected:
        return CheckResult("target_bucket_region", True, f"bucket '{bucket}' is in region '{actual}'")
    return CheckResult(
        "target_bucket_region",
        False,
        f"bucket '{bucket}' is in region '{actual}', but the manifest's target.region is '{expected}'; "
        "data would land outside the declared region. Use a bucket created in the declared region",
    )

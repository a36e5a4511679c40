"""The policy on an object-store target: how it is reached, where the bucket lives, and every rule at once.

``evaluate_object_target_policy`` runs the transport and region rules here and the bucket-settings
rules of :mod:`bascule.governance.bucket_rules`; ``enforce_object_target_policy`` refuses on any
violation (e.g. just before the routing switch).
"""

from __future__ import annotations

from typing import Any, Required, TypedDict, Unpack
from urllib.parse import urlsplit

from bascule.governance.bucket_rules import LOCATION, SettingUnverifiable, evaluate_bucket_rules, read_bucket_setting
from bascule.governance.policy import (
    DEPLOYMENT_VARIABLE,
    CheckResult,
    Deployment,
    PolicyReport,
    checked_deployment,
    local_development_pass,
    plain_text_allowed,
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


def check_endpoint_tls(endpoint_url: str, bucket: str, *, deployment: Deployment) -> CheckResult:
    """``policy_tls``: the S3 endpoint must be ``https``.

    Plain HTTP passes only for a local stand-in host when the deployment is declared
    ``local-development``, and the result is flagged ``local_development``.
    """
    deployment = checked_deployment(deployment)
    parts = urlsplit(endpoint_url)
    scheme, host = parts.scheme.lower(), parts.hostname or ""
    facts: dict[str, Any] = {"endpoint": endpoint_url, "scheme": scheme, "deployment": deployment}
    if scheme == "https":
        return CheckResult("policy_tls", True, f"bucket '{bucket}' is reached over TLS at {endpoint_url}", facts)
    if scheme == "http" and plain_text_allowed(deployment, host):
        what = f"bucket '{bucket}' is reached over plain HTTP at {endpoint_url}"
        return local_development_pass("policy_tls", what, f"'{host}'", facts)
    if scheme == "http" and deployment == "local-development":
        fix = (
            f"'{host}' is not a local stand-in host, so the local-development exemption does not apply; "
            "use the https endpoint"
        )
    elif scheme == "http":
        fix = (
            "use the https endpoint (e.g. https://s3.fr-par.scw.cloud) in the target connection's endpoint_url; "
            f"a local stand-in needs the Airflow Variable '{DEPLOYMENT_VARIABLE}' set to 'local-development'"
        )
    else:
        fix = "set the target connection's endpoint_url to an https:// URL"
    return CheckResult(
        "policy_tls",
        False,
        f"bucket '{bucket}' would be reached at {endpoint_url} without TLS: credentials, encryption keys and "
        f"health data would cross the network in clear. Fix: {fix}",
        facts,
    )


class ObjectTargetRules(TypedDict, total=False):
    """The keyword arguments of :func:`evaluate_object_target_policy`, for the callers that pass them on."""

    deployment: Required[Deployment]
    sse_customer_key: Required[bytes | None]
    client_side_kek: bytes | None
    expected_region: str | None
    sample_prefix: str | None
    sample_size: int
    health_data: bool


def evaluate_object_target_policy(
    client: Any,
    bucket: str,
    endpoint_url: str,
    *,
    deployment: Deployment,
    sse_customer_key: bytes | None,
    expected_region: str | None = None,
    sample_prefix: str | None = None,
    sample_size: int = 1000,
    health_data: bool = False,
    client_side_kek: bytes | None = None,
) -> list[CheckResult]:
    """Every object-store rule on one existing bucket, each with its verdict.

    ``health_data``: the bucket holds health data, so every object must be
    SSE-C (a bucket default encryption alone does not pass).

    ``expected_region`` adds the bucket-region rule (used when re-evaluating before
    the routing switch). Raises StoreAccessError only when the endpoint did not
    answer (retryable); every refusal is a failed check instead.
    """
    checks = [check_endpoint_tls(endpoint_url, bucket, deployment=deployment)]
    if expected_region is not None:
        checks.append(_check_region_of(client, bucket, expected_region))
    return checks + evaluate_bucket_rules(
        client, bucket, sse_customer_key=sse_customer_key, sample_prefix=sample_prefix, sample_size=sample_size,
        health_data=health_data, client_side_kek=client_side_kek,
    )  # fmt: skip


def _check_region_of(client: Any, bucket: str, expected_region: str) -> CheckResult:
    try:
        location = read_bucket_setting(client, bucket, LOCATION)
    except SettingUnverifiable as exc:
        return CheckResult("target_bucket_region", False, str(exc))
    # S3 reports the historical default region as an empty constraint.
    return check_bucket_region(expected_region, (location or {}).get("LocationConstraint") or "us-east-1", bucket)


def enforce_object_target_policy(
    client: Any, bucket: str, endpoint_url: str, **rules: Unpack[ObjectTargetRules]
) -> PolicyReport:
    """Evaluate and refuse: raises PolicyViolation unless every rule passes (e.g. just before
    the routing switch). The returned report is the evidence record."""
    checks = evaluate_object_target_policy(client, bucket, endpoint_url, **rules)
    report = PolicyReport(f"S3 bucket '{bucket}' at {endpoint_url}", rules["deployment"], tuple(checks))
    report.raise_for_violations()
    return report

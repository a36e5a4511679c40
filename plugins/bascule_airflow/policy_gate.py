"""The sovereignty/HDS policy at the two points it is enforced: preflight and just before cutover.

The deployment kind comes from the Airflow Variable ``bascule_deployment`` (unset means
production). An unknown value fails closed. No environment variable or Param relaxes a rule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def deployment() -> Any:
    from airflow.sdk import Variable

    from bascule.governance.policy import DEPLOYMENT_VARIABLE, parse_deployment

    return parse_deployment(Variable.get(DEPLOYMENT_VARIABLE, default=None))


def enforce_object_target(workload: Any, bucket: Any) -> Any:
    """An object workload's data bucket: TLS, encryption, no lifecycle, not public, region; raises PolicyViolation.

    It holds health data, so every object must be SSE-C (the bucket's key is checked, and
    sampled objects must answer 400 to a HEAD without it) or client-side encrypted (the KEK).
    """
    key = bucket.sse_c.key if getattr(bucket, "sse_c", None) is not None else None
    return _enforce_bucket(
        bucket, key, workload.target.region, health_data=True, sample_prefix=workload.target.prefix
    )


def enforce_evidence_bucket(workload: Any, bucket: Any) -> Any:
    """A workload's evidence bucket (either kind): the same rules; it holds no health data, so its
    default encryption suffices.

    An object workload records it beside its data bucket's verdict: its rules are named
    ``evidence_policy_*`` (as at preflight), so no reader takes them for the data's.
    """
    from dataclasses import replace

    report = _enforce_bucket(bucket, None, workload.evidence.region, health_data=False, sample_prefix=None)
    if workload.kind != "object_store":
        return report
    return replace(report, checks=tuple(replace(c, name=f"evidence_{c.name}") for c in report.checks))


def _enforce_bucket(bucket: Any, key: bytes | None, region: str, *, health_data: bool, sample_prefix: str | None) -> Any:
    from bascule.governance.object_policy import enforce_object_target_policy

    kek = bucket.client_side.key if getattr(bucket, "client_side", None) is not None else None
    return enforce_object_target_policy(
        bucket.client, bucket.bucket, bucket.endpoint, deployment=deployment(), sse_customer_key=key,
        client_side_kek=kek, expected_region=region, health_data=health_data, sample_prefix=sample_prefix,
    )  # fmt: skip


def enforce_postgres_target(sides: Any) -> Any:
    """The target database's rule (TLS sessions); raises PolicyViolation."""
    from contextlib import closing

    from bascule.governance.database_policy import enforce_postgres_target_policy

    with closing(sides.target()) as conn:
        return enforce_postgres_target_policy(conn, host=sides.target_params.host, deployment=deployment())


def enforce_at_cutover(
    context: Any, workload: dict[str, Any], checks: list[Callable[[], Any]], moment: str, runbook: str
) -> None:
    """Run the cutover's policy checks (each returns a PolicyReport or raises PolicyViolation),
    log and record each report; a violation fails the task at once: routing is not switched.

    Called before freezing (so a refusal costs no downtime) and, as the last word, right
    before routing switches.
    """
    from airflow.sdk.exceptions import AirflowFailException

    from bascule.exceptions import PolicyViolation
    from bascule_airflow.evidence_records import append

    try:
        reports = [check() for check in checks]
    except PolicyViolation as exc:
        raise AirflowFailException(f"{exc}\nRouting was not switched. Runbook: {runbook}") from None
    log = context["task"].log
    for number, report in enumerate(reports):
        for check in report.checks:
            log.info("policy PASS %s (%s): %s", check.name, moment, check.detail)
        append(
            context, workload, "policy", {**report.to_json(), "success": True, "when": moment},
            idempotency_key=f"cutover-policy-{moment}-{number}:{context['ti'].try_number}",
        )  # fmt: skip

"""Preflight of an object-store workload: source container and its freeze, target bucket, HDS policy on the bucket."""

from __future__ import annotations

import itertools
from typing import Any

from azure.core.exceptions import AzureError

from bascule.exceptions import StoreAccessError
from bascule.governance.bucket_rules import check_encryption_at_rest, evaluate_bucket_rules, sse_customer_key_problem
from bascule.governance.evidence.bucket import evidence_bucket_checks
from bascule.governance.object_policy import check_bucket_region, check_endpoint_tls
from bascule.governance.policy import CheckResult, Deployment, PolicyReport, check_target_region
from bascule.objects.freeze_access_policy import WRITERS_RUNBOOK, missing_policy_message, read_policies
from bascule.objects.freeze_leases import too_many_message
from bascule.preflight import CheckCollector, PreflightReport
from bascule.storage.azure_blob import AzureBlobContainer
from bascule.storage.s3 import S3Bucket
from bascule.workload import ObjectStoreWorkload


def preflight_object_store(
    workload: ObjectStoreWorkload,
    manifest_path: str,
    source: AzureBlobContainer,
    target: S3Bucket,
    evidence: S3Bucket,
    *,
    dry_run: bool = False,
    deployment: Deployment | None = None,
    sse_customer_key: bytes | None = None,
    container_client: Any | None = None,
    client_side_kek: bytes | None = None,
) -> PreflightReport:
    """``dry_run`` reports what would be created instead of creating it.

    ``evidence`` is the workload's evidence bucket (``evidence.bucket``): every Bascule record
    goes there, never into ``target``, which holds the source's objects and nothing else.

    ``deployment`` (the Airflow Variable ``bascule_deployment``) turns on the
    sovereignty/HDS rules of :mod:`bascule.governance.policy` on the target bucket;
    ``sse_customer_key`` is the SSE-C key from its Airflow connection, or None;
    ``client_side_kek`` the key-encryption key of a ``client_side`` workload, or None.
    ``deployment=None`` reports the rules as not evaluated (until the glue passes it).
    ``container_client``: the SDK's ContainerClient for the freeze check (default: the source's own).
    """
    checks = CheckCollector()
    region_ok = checks.add(check_target_region(workload, manifest_path)).ok
    policy_checks: list[CheckResult] = []
    if deployment is None:
        checks.add(
            CheckResult(
                "policy_not_evaluated",
                True,
                "sovereignty/HDS rules (TLS, encryption at rest, archive lifecycle, public access) were NOT "
                "evaluated: no deployment was given to preflight",
            )
        )
        transport_ok = True
    else:
        tls = check_endpoint_tls(target.endpoint, target.bucket, deployment=deployment)
        policy_checks.append(checks.add(tls))
        # Not even a CreateBucket goes over a connection the policy refuses.
        transport_ok = tls.ok

    _check_source(checks, workload, manifest_path, source, container_client or source.container_client)

    expected_region = workload.target.region
    if target.client_region and target.client_region != expected_region:
        checks.add(
            CheckResult(
                "target_connection_region",
                False,
                f"connection '{workload.target.conn_id}' is configured for region '{target.client_region}' "
                f"but the manifest's target.region is '{expected_region}'; set region_name in the "
                "connection's extra to match",
            )
        )
    # Nor is a bucket created for objects that would not be encrypted (policy_encryption_at_rest says why).
    encryption_ok = deployment is None or sse_customer_key is not None or client_side_kek is not None
    may_create = workload.target.create_if_missing and region_ok and transport_ok and encryption_ok
    try:
        actual_region = target.region()
        if actual_region is None and may_create and dry_run:
            checks.add(
                CheckResult(
                    "target_location_exists",
                    True,
                    f"{target.describe()} does not exist; it would be created in '{expected_region}' (dry run)",
                )
            )
        elif actual_region is None and may_create:
            target.create(expected_region, health_data=True)  # with the guard policy (docs/security.md)
            actual_region = target.region()
            checks.add(
                CheckResult("target_location_exists", True, f"created {target.describe()} in '{expected_region}'")
            )
        elif actual_region is None:
            hint = (
                "it will not be created while the region, TLS or encryption check fails"
                if workload.target.create_if_missing
                else f"create it in '{expected_region}', or set target.create_if_missing: true in {manifest_path}"
            )
            checks.add(CheckResult("target_location_exists", False, f"{target.describe()} does not exist; {hint}"))
        else:
            checks.add(CheckResult("target_location_exists", True, f"{target.describe()} exists"))
        if actual_region is not None:
            checks.add(check_bucket_region(expected_region, actual_region, target.bucket))
    except StoreAccessError as exc:
        checks.access_failed("target_reachable", exc)
        actual_region = None

    _evidence_bucket(checks, workload, manifest_path, evidence, dry_run=dry_run, deployment=deployment)
    if deployment is not None:
        would_be_created = dry_run and actual_region is None and may_create
        keys = (sse_customer_key, client_side_kek)
        policy_checks += _bucket_policy(checks, workload, target, actual_region, keys, would_be_created)
        return checks.report(workload.id, PolicyReport(target.describe(), deployment, tuple(policy_checks)))
    return checks.report(workload.id)


def _check_source(
    checks: CheckCollector, workload: ObjectStoreWorkload, manifest_path: str, source: AzureBlobContainer, container: Any
) -> None:
    """The source container exists, holds blobs under the prefix, and can be frozen as the manifest says."""
    try:
        if not source.check_exists():
            checks.add(
                CheckResult(
                    "source_location_exists",
                    False,
                    f"{source.describe()} does not exist; check source.container in {manifest_path} "
                    f"and the account the connection '{workload.source.conn_id}' points to",
                )
            )
        else:
            prefix = workload.source.prefix
            first = next(iter(source.iter_objects(prefix)), None)
            where = f"{source.describe()} under prefix '{prefix}'"
            checks.add(
                CheckResult("source_location_exists", True, f"{where} holds blobs (first: '{first.key}')")
                if first
                else CheckResult(
                    "source_location_exists",
                    False,
                    f"{where} holds no blob; check source.prefix in {manifest_path}",
                )
            )
            if first:
                checks.add(check_freeze(workload, manifest_path, source, container))
    except StoreAccessError as exc:
        checks.access_failed("source_reachable", exc)


def _evidence_bucket(
    checks: CheckCollector,
    workload: ObjectStoreWorkload,
    manifest_path: str,
    evidence: S3Bucket,
    *,
    dry_run: bool,
    deployment: Deployment | None,
) -> None:
    """The evidence bucket as a postgres workload's is checked: there or created with Object Lock, locked or justified."""
    try:
        for check in evidence_bucket_checks(
            workload.evidence, evidence, manifest_path, dry_run=dry_run, deployment=deployment,
            policy_name_prefix="evidence_",
        ):  # fmt: skip
            checks.add(check)
    except StoreAccessError as exc:
        checks.access_failed("evidence_reachable", exc)


def _bucket_policy(
    checks: CheckCollector,
    workload: ObjectStoreWorkload,
    target: S3Bucket,
    actual_region: str | None,
    keys: tuple[bytes | None, bytes | None],
    would_be_created: bool,
) -> list[CheckResult]:
    """The bucket-settings rules, on the bucket as it now is (or as it would be created).

    ``keys``: the SSE-C key and the client-side key-encryption key (at most one is set).
    """
    sse_customer_key, client_side_kek = keys
    if actual_region is not None:
        try:
            return [
                checks.add(c)
                for c in evaluate_bucket_rules(
                    target.client,
                    target.bucket,
                    sse_customer_key=sse_customer_key,
                    client_side_kek=client_side_kek,
                    sample_prefix=workload.target.prefix,
                    health_data=True,  # a data bucket: every object SSE-C (HDS)
                )
            ]
        except StoreAccessError as exc:
            checks.access_failed("policy_target_readable", exc)
            return [checks.checks[-1]]
    if not would_be_created:
        # The bucket is missing and will not be created: target_location_exists says why, and this why not.
        unencrypted = sse_customer_key is None and client_side_kek is None
        return [checks.add(_unencrypted(target.bucket))] if unencrypted else []
    # A bucket Bascule creates is private, without lifecycle rules, and encrypted by default
    # (S3Bucket.create sets AES256 default encryption).
    name = "policy_encryption_at_rest"
    if sse_customer_key is not None and (problem := sse_customer_key_problem(sse_customer_key, target.bucket)):
        verdict = CheckResult(name, False, f"{problem} (dry run)", {"sse_c": "invalid key"})
    elif sse_customer_key is None and client_side_kek is None:
        verdict = _unencrypted(target.bucket)
    else:
        method = "sse_c" if sse_customer_key is not None else "client_side"
        verdict = CheckResult(
            name,
            True,
            f"bucket '{target.bucket}' would be created with default encryption (AES256)"
            + ("; objects would also be written with SSE-C" if method == "sse_c" else "")
            + ("; objects would be encrypted client-side before upload" if method == "client_side" else "")
            + " (dry run)",
            {"sse_c": method == "sse_c", "method": method, "default_encryption": ["AES256"]},
        )
    return [checks.add(verdict)]


def _unencrypted(bucket: str) -> CheckResult:
    # No request is made: without a key the rule fails before reading anything.
    return check_encryption_at_rest(None, bucket, sse_customer_key=None, health_data=True)


_UNFREEZABLE = (
    "writers that authenticate with the account key or with an Entra ID role assignment are not stopped by "
    "{how}: rotate the account keys, remove the role assignments ({runbook})"
)


def check_freeze(
    workload: ObjectStoreWorkload, manifest_path: str, source: AzureBlobContainer, container: Any
) -> CheckResult:
    """Can the cutover freeze this source as the manifest says, in bounded time?"""
    freeze = workload.cutover.freeze
    prefix = workload.source.prefix
    if freeze.method == "leases":
        # Stops at the cap + 1: a 10-million-object container costs 11 list pages here, not 2,000.
        count = sum(1 for _ in itertools.islice(source.iter_objects(prefix), freeze.max_objects + 1))
        if count > freeze.max_objects:
            return CheckResult(
                "source_freeze",
                False,
                too_many_message(source.container, prefix, count, freeze.max_objects) + f" in {manifest_path}",
                {"method": "leases", "counted": count, "max_objects": freeze.max_objects},
            )
        return CheckResult(
            "source_freeze",
            True,
            f"freeze by leases: {count:,} blob(s) under '{prefix}' (cap {freeze.max_objects:,}); leases do not stop "
            "new blobs (the delta sync catches them); "
            + _UNFREEZABLE.format(how="leases on existing blobs", runbook=WRITERS_RUNBOOK),
            {"method": "leases", "counted": count, "max_objects": freeze.max_objects},
        )
    assert freeze.policy_id is not None  # required by the manifest model for this method
    try:
        _, policies = read_policies(container)
    except AzureError as exc:
        return CheckResult(
            "source_freeze",
            False,
            f"cannot read the stored access policies of container '{source.container}' ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); the source connection needs the account key",
        )
    if freeze.policy_id not in policies:
        message = missing_policy_message(source.container, freeze.policy_id, list(policies))
        return CheckResult("source_freeze", False, f"{message}; in {manifest_path}", {"policies": sorted(policies)})
    state = policies[freeze.policy_id]
    if not getattr(container.credential, "account_key", None):
        return CheckResult(
            "source_freeze",
            False,
            f"the source connection '{workload.source.conn_id}' has no account key: the cutover cannot sign the "
            f"probe SAS that proves policy '{freeze.policy_id}' refuses writes; give the connection the account key",
        )
    if not state.permission:
        return CheckResult(
            "source_freeze",
            False,
            f"stored access policy '{freeze.policy_id}' on container '{source.container}' sets no permissions: its "
            "tokens carry their own, which no policy change can narrow; give the policy its permissions and "
            "re-issue the tokens without 'sp='",
            state.to_dict(),
        )
    return CheckResult(
        "source_freeze",
        True,
        f"freeze by stored access policy '{freeze.policy_id}' (now '{state.permission}'; cutover narrows it to "
        f"read+list and waits up to {freeze.probe_timeout_seconds:g} s for a probe write to be refused); "
        + _UNFREEZABLE.format(how="this policy", runbook=WRITERS_RUNBOOK),
        state.to_dict(),
    )

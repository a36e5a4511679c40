"""Preflight: prove a workload can run before any byte moves.

Every check runs (one failure does not hide the next), each result says what was
checked and why it failed, and the caller learns whether a retry could help.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from typing import Any, Protocol

from bascule.exceptions import PreflightError, StoreAccessError
from bascule.policy import (
    CheckResult,
    Deployment,
    PolicyReport,
    check_bucket_region,
    check_endpoint_tls,
    check_target_region,
    evaluate_bucket_rules,
    sse_customer_key_problem,
)
from bascule.storage.azure_blob import AzureBlobContainer
from bascule.storage.s3 import S3Bucket
from bascule.workload import ObjectStoreWorkload, PostgresWorkload


@dataclass(frozen=True)
class PreflightReport:
    workload_id: str
    checks: list[CheckResult]
    # True when every failure is of a kind a retry can cure (an endpoint unreachable).
    retryable: bool
    # The sovereignty/HDS verdict on the target, for the evidence (None: not evaluated).
    policy: PolicyReport | None = None

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def raise_for_failures(self) -> None:
        if not self.ok:
            raise PreflightError(self.workload_id, [f"{c.name}: {c.detail}" for c in self.checks if not c.ok])

    def summary(self) -> dict[str, Any]:
        """A small, XCom-sized record of the outcome."""
        record: dict[str, Any] = {
            "workload_id": self.workload_id,
            "ok": self.ok,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
        }
        if self.policy is not None:
            record["policy"] = self.policy.to_json()
        return record


class _Collector:
    def __init__(self) -> None:
        self.checks: list[CheckResult] = []
        self._transient_failures = 0
        self._hard_failures = 0

    def add(self, result: CheckResult) -> CheckResult:
        self.checks.append(result)
        if not result.ok:
            self._hard_failures += 1
        return result

    def access_failed(self, name: str, exc: StoreAccessError) -> None:
        self.checks.append(CheckResult(name, False, str(exc)))
        if exc.retryable:
            self._transient_failures += 1
        else:
            self._hard_failures += 1

    def report(self, workload_id: str, policy: PolicyReport | None = None) -> PreflightReport:
        return PreflightReport(
            workload_id, self.checks, retryable=self._transient_failures > 0 and self._hard_failures == 0, policy=policy
        )


def preflight_object_store(
    workload: ObjectStoreWorkload,
    manifest_path: str,
    source: AzureBlobContainer,
    target: S3Bucket,
    *,
    dry_run: bool = False,
    deployment: Deployment | None = None,
    sse_customer_key: bytes | None = None,
) -> PreflightReport:
    """``dry_run`` reports what would be created instead of creating it.

    ``deployment`` (the Airflow Variable ``bascule_deployment``) turns on the
    sovereignty/HDS rules of :mod:`bascule.policy` on the target bucket;
    ``sse_customer_key`` is the SSE-C key from its Airflow connection, or None.
    ``deployment=None`` reports the rules as not evaluated (until the glue passes it).
    """
    checks = _Collector()
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
    except StoreAccessError as exc:
        checks.access_failed("source_reachable", exc)

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
    may_create = workload.target.create_if_missing and region_ok and transport_ok
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
            target.create(expected_region)
            actual_region = target.region()
            checks.add(
                CheckResult("target_location_exists", True, f"created {target.describe()} in '{expected_region}'")
            )
        elif actual_region is None:
            hint = (
                "it will not be created while the region or TLS check fails"
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

    if deployment is not None:
        would_be_created = dry_run and actual_region is None and may_create
        policy_checks += _bucket_policy(checks, workload, target, actual_region, sse_customer_key, would_be_created)
        return checks.report(workload.id, PolicyReport(target.describe(), deployment, tuple(policy_checks)))
    return checks.report(workload.id)


def _bucket_policy(
    checks: _Collector,
    workload: ObjectStoreWorkload,
    target: S3Bucket,
    actual_region: str | None,
    sse_customer_key: bytes | None,
    would_be_created: bool,
) -> list[CheckResult]:
    """The bucket-settings rules, on the bucket as it now is (or as it would be created)."""
    if actual_region is not None:
        try:
            return [
                checks.add(c)
                for c in evaluate_bucket_rules(
                    target.client,
                    target.bucket,
                    sse_customer_key=sse_customer_key,
                    sample_prefix=workload.target.prefix,
                )
            ]
        except StoreAccessError as exc:
            checks.access_failed("policy_target_readable", exc)
            return [checks.checks[-1]]
    if not would_be_created:
        return []  # the bucket is missing and will not be created: target_location_exists says why
    # A bucket Bascule creates is private, without lifecycle rules, and encrypted by default
    # (S3Bucket.create sets AES256 default encryption).
    name = "policy_encryption_at_rest"
    if sse_customer_key is not None and (problem := sse_customer_key_problem(sse_customer_key, target.bucket)):
        verdict = CheckResult(name, False, f"{problem} (dry run)", {"sse_c": "invalid key"})
    else:
        verdict = CheckResult(
            name,
            True,
            f"bucket '{target.bucket}' would be created with default encryption (AES256)"
            + ("; objects would also be written with SSE-C" if sse_customer_key is not None else "")
            + " (dry run)",
            {"sse_c": sse_customer_key is not None, "default_encryption": ["AES256"]},
        )
    return [checks.add(verdict)]


class _Cursor(Protocol):
    def execute(self, query: str, params: Any = ...) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


def preflight_postgres(
    workload: PostgresWorkload,
    manifest_path: str,
    connect_source: Callable[[str], Any],
    connect_target: Callable[[str], Any],
    classify: Callable[[Exception], StoreAccessError],
    *,
    dry_run: bool = False,
) -> PreflightReport:
    """``connect_*(database)`` opens a DB-API connection to that database on the source/target server.

    ``classify`` turns a driver exception into a StoreAccessError with the right ``retryable``.
    """
    checks = _Collector()
    region_ok = checks.add(check_target_region(workload, manifest_path)).ok
    source_conf, target_conf = workload.source, workload.target

    try:
        with closing(connect_source(source_conf.database)) as conn, conn.cursor() as cur:
            cur.execute("select current_database(), current_setting('server_version')")
            database, version = cur.fetchone()
            checks.add(
                CheckResult("source_reachable", True, f"connected to database '{database}' (PostgreSQL {version})")
            )
            cur.execute("select nspname from pg_namespace where nspname = any(%s)", (list(source_conf.schemas),))
            present = {row[0] for row in cur.fetchall()}
            missing = [s for s in source_conf.schemas if s not in present]
            checks.add(
                CheckResult("source_location_exists", True, f"schemas {source_conf.schemas} exist")
                if not missing
                else CheckResult(
                    "source_location_exists",
                    False,
                    f"schema(s) {missing} not found in source database '{database}'; check source.schemas in "
                    f"{manifest_path}",
                )
            )
    except Exception as exc:  # the driver's own error types vary by library
        checks.access_failed("source_reachable", classify(exc))

    try:
        with closing(connect_target("postgres")) as conn:
            conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with conn.cursor() as cur:
                cur.execute("select 1 from pg_database where datname = %s", (target_conf.database,))
                exists = cur.fetchone() is not None
                if not exists and target_conf.create_if_missing and region_ok and dry_run:
                    checks.add(
                        CheckResult(
                            "target_location_exists",
                            True,
                            f"database '{target_conf.database}' does not exist; it would be created (dry run)",
                        )
                    )
                elif not exists and target_conf.create_if_missing and region_ok:
                    # The name passed the manifest's identifier pattern, so quoting it is safe.
                    cur.execute(f'create database "{target_conf.database}"')
                    checks.add(
                        CheckResult("target_location_exists", True, f"created database '{target_conf.database}'")
                    )
                elif not exists:
                    checks.add(
                        CheckResult(
                            "target_location_exists",
                            False,
                            f"target database '{target_conf.database}' does not exist; create it or set "
                            f"target.create_if_missing: true in {manifest_path}",
                        )
                    )
                else:
                    checks.add(CheckResult("target_location_exists", True, f"database '{target_conf.database}' exists"))
    except Exception as exc:
        checks.access_failed("target_reachable", classify(exc))

    return checks.report(workload.id)

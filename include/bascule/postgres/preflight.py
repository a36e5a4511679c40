"""Preflight of a postgres workload, in two steps: ``preflight_postgres`` checks that both
servers are reachable, the source schemas present and the target database there (or
creates it); ``preflight_checks`` then checks what the migration needs of them:
replication readiness of both servers, keys, extensions, the application roles, the
evidence bucket, and the sovereignty/HDS policy on the target database and the bucket.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing
from typing import Any, Protocol

from bascule.exceptions import StoreAccessError
from bascule.governance import database_policy, policy
from bascule.governance.evidence.bucket import evidence_bucket_checks
from bascule.governance.evidence.store import EvidenceStore
from bascule.governance.policy import CheckResult, check_target_region
from bascule.postgres import catalog, cleanup, replication_checks, scope_checks
from bascule.postgres.sides import PgSides
from bascule.preflight import CheckCollector, PreflightReport
from bascule.workload import PostgresWorkload


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
    checks = CheckCollector()
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


# -- database-specific checks, after the connection checks ------------------------------------


def preflight_checks(
    workload: PostgresWorkload,
    sides: PgSides,
    evidence_bucket: Any,
    manifest_path: str,
    *,
    dry_run: bool,
    deployment: policy.Deployment,
) -> list[CheckResult]:
    """Replication readiness of both servers, keys, extensions, the evidence bucket, and the
    sovereignty/HDS policy on the target database (TLS) and the evidence bucket."""
    checks: list[CheckResult] = []
    with sides.autocommit_source() as source:
        checks.extend(replication_checks.check_source_server(source))
        checks.append(cleanup.slot_report(source, _evidence_store(workload, evidence_bucket), workload.slot_name()))
        inventory = catalog.read_inventory(source, list(workload.source.schemas), list(workload.source.tables))
        checks.append(
            replication_checks.check_primary_keys(inventory, list(workload.source.tables_without_primary_key), manifest_path)
        )
        checks.append(_check_application_roles(source, list(workload.source.application_roles), manifest_path))
        scoped = False
        try:
            with sides.autocommit_target() as target:
                checks.extend(scope_checks.scope_checks(source, target, workload, inventory, manifest_path))
                scoped = True
                checks.extend(replication_checks.check_target_server(target, inventory.server_version_num))
                checks.append(replication_checks.check_extensions(source, target, inventory))
                checks.extend(
                    database_policy.evaluate_postgres_target_policy(target, host=sides.target_params.host, deployment=deployment)
                )
        except Exception as exc:  # the target database may not exist yet (dry run / created later)
            if not dry_run:
                raise
            if not scoped:  # no target to ask which roles exist: the rest is read on the source
                checks.extend(scope_checks.scope_checks(source, None, workload, inventory, manifest_path))
            checks.append(CheckResult("target_server", True, f"not checked in a dry run: {str(exc).splitlines()[0]}"))
    # The same checks as an object workload's evidence bucket, and its Object Lock (docs/evidence.md#object-lock).
    checks.extend(
        evidence_bucket_checks(workload.evidence, evidence_bucket, manifest_path, dry_run=dry_run, deployment=deployment)
    )
    return checks


def _evidence_store(workload: PostgresWorkload, bucket: Any) -> EvidenceStore | None:
    """The workload's evidence (its replication ownership records), or None while the bucket does not exist."""
    if bucket.region() is None:
        return None
    return EvidenceStore(bucket.client, bucket.bucket, workload.id)


def _check_application_roles(source: Any, roles: list[str], manifest_path: str) -> CheckResult:
    with source.cursor() as cur:
        cur.execute("select rolname from pg_roles where rolname = any(%s)", (roles,))
        present = {row[0] for row in cur.fetchall()}
    missing = [r for r in roles if r not in present]
    if missing:
        return CheckResult(
            "application_roles",
            False,
            f"role(s) {missing} not found on the source; fix source.application_roles in {manifest_path} "
            "(the roles the applications write with: cutover makes them read-only)",
        )
    return CheckResult("application_roles", True, f"application role(s) {roles} exist (frozen at cutover)")

"""The preflight of either kind: proves the workload can run before anything moves."""

from __future__ import annotations

from typing import Any

from bascule_airflow.common import PhaseOperator


class PreflightOperator(PhaseOperator):
    """Prove the workload can run: connections, locations, region policy. Moves no byte.

    The manifest travels with the task (as validated JSON), so the task checks
    exactly the workload the DAG shows, even if the YAML changed since parsing.
    """

    phase = "preflight"
    ui_color = "#e8f4fd"
    template_fields = ("dry_run",)

    def __init__(self, *, dry_run: Any = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.dry_run = dry_run

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from bascule.exceptions import PreflightError

        dry_run = _as_bool(self.dry_run)
        if self.workload["kind"] == "object_store":
            from bascule.storage.encryption import EncryptionKeyError

            try:
                report = _object_store_report(self.workload, self.manifest_path, dry_run)
            except EncryptionKeyError as exc:  # before any request: nothing created on either side
                self._fail_or_retry(exc)
        else:
            report = _postgres_report(self.workload, self.manifest_path, dry_run)
        for check in report.checks:
            self.log.info("%s %s: %s", "PASS" if check.ok else "FAIL", check.name, check.detail)
        if dry_run:
            self.log.info("dry run: nothing was created or changed on the target")
        elif report.ok:
            from bascule_airflow.evidence_records import append

            append(context, self.workload, "policy", {**report.summary(), "success": True, "when": "preflight"})
        try:
            report.raise_for_failures()
        except PreflightError as exc:
            advice = f"Fix the failing check(s) above, then clear this task. Runbook: {self.runbook()}"
            if report.retryable:
                # An unreachable endpoint may come back: let Airflow's retries try again.
                raise PreflightError(exc.workload_id, [*exc.failures, advice]) from None
            raise AirflowFailException(f"{exc}\n{advice}") from None
        return report.summary()


def _object_store_report(workload_json: dict[str, Any], manifest_path: str, dry_run: bool) -> Any:
    from bascule.objects.preflight import preflight_object_store
    from bascule.workload import ObjectStoreWorkload
    from bascule_airflow import clients, policy_gate

    workload = ObjectStoreWorkload.model_validate(workload_json)
    target = clients.target_bucket(workload)  # a missing or malformed SSE-C key refuses here, before any request
    return preflight_object_store(
        workload,
        manifest_path,
        clients.blob_container(workload.source.conn_id, workload.source.container),
        target,
        clients.evidence_bucket(workload),  # every record goes there, never into the data bucket
        dry_run=dry_run,
        deployment=policy_gate.deployment(),
        sse_customer_key=target.sse_c.key if target.sse_c is not None else None,
        client_side_kek=target.client_side.key if target.client_side is not None else None,
    )


def _postgres_report(workload_json: dict[str, Any], manifest_path: str, dry_run: bool) -> Any:
    from bascule.postgres.preflight import preflight_postgres
    from bascule.workload import PostgresWorkload
    from bascule_airflow import clients

    workload = PostgresWorkload.model_validate(workload_json)
    report = preflight_postgres(
        workload,
        manifest_path,
        clients.postgres_connector(workload.source.conn_id),
        clients.postgres_connector(workload.target.conn_id),
        clients.classify_postgres_error,
        dry_run=dry_run,
    )
    if report.ok:
        report = _with_database_checks(report, workload, manifest_path, dry_run)
    return report


def _with_database_checks(report: Any, workload: Any, manifest_path: str, dry_run: bool) -> Any:
    """Both servers answer: now check replication readiness, keys, roles and the evidence bucket."""
    from bascule.postgres.preflight import preflight_checks
    from bascule.preflight import PreflightReport
    from bascule_airflow import clients
    from bascule_airflow.policy_gate import deployment

    evidence_bucket = clients.evidence_bucket(workload)
    sides = clients.postgres_sides(workload)
    extra = preflight_checks(
        workload, sides, evidence_bucket, manifest_path, dry_run=dry_run, deployment=deployment(),
    )  # fmt: skip
    extra += _managed_target(workload, sides, deployment(), dry_run)
    return PreflightReport(report.workload_id, [*report.checks, *extra], retryable=False)


def _managed_target(workload: Any, sides: Any, deployment_kind: str, dry_run: bool) -> list[Any]:
    """Scaleway Managed PostgreSQL's own limits on the target; not on a declared local stand-in (flagged)."""
    from bascule.governance.policy import CheckResult, is_local_standin_host, local_development_pass
    from bascule.postgres.managed_target import check_managed_target
    from bascule_airflow import clients

    host = sides.target_params.host
    if deployment_kind == "local-development" and is_local_standin_host(host):
        what = "Scaleway Managed PostgreSQL limits (version 16+, subscriptions, verify-full) were not evaluated"
        return [local_development_pass("managed_target", what, f"'{host}'", {"host": host})]
    sslmode, sslrootcert = clients.pg_tls(workload.target.conn_id)
    try:
        with sides.autocommit_target() as conn:
            return list(
                check_managed_target(conn, sslmode=sslmode, sslrootcert=sslrootcert, conn_id=workload.target.conn_id)
            )
    except Exception as exc:  # the target database may not exist yet in a dry run
        if not dry_run:
            raise
        return [CheckResult("managed_target", True, f"not checked in a dry run: {str(exc).splitlines()[0]}")]


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)

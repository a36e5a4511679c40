"""Postgres preflight against the machine's real PostgreSQL server (127.0.0.1:5432)."""

from __future__ import annotations

from contextlib import closing

import pytest
from machine_pg import PF_SOURCE_DB as SOURCE_DB
from machine_pg import PF_TARGET_DB as TARGET_DB

from bascule.postgres.preflight import preflight_postgres
from bascule.workload import parse_manifest
from bascule_airflow.clients import classify_postgres_error, postgres_connector

pytestmark = pytest.mark.integration


MANIFEST = """
id: registry_catalogue
kind: postgres
description: Project registry catalogue.
owner: data-platform
source: {{conn_id: pf_pg_source, database: {source_db}, schemas: [{schema}], application_roles: [pf_app]}}
target: {{conn_id: {target_conn}, database: {target_db}, region: fr-par, create_if_missing: {create}}}
evidence: {{conn_id: hdh_scaleway_s3, bucket: pf-evidence, region: fr-par, create_if_missing: true}}
approvals: {{approvers: [approver1], required: 1}}
cutover:
  window: {{timezone: Europe/Paris, days: [sunday], start: "02:00", end: "05:00"}}
"""


def _run(schema: str = "catalogue", target_conn: str = "pf_pg_target", create: str = "true", dry_run: bool = False):
    text = MANIFEST.format(
        source_db=SOURCE_DB, schema=schema, target_conn=target_conn, target_db=TARGET_DB, create=create
    )
    workload = parse_manifest("include/workloads/registry_catalogue.yaml", text)
    return preflight_postgres(
        workload,
        "include/workloads/registry_catalogue.yaml",
        postgres_connector(workload.source.conn_id),
        postgres_connector(workload.target.conn_id),
        classify_postgres_error,
        dry_run=dry_run,
    )


def _target_exists() -> bool:
    import os

    from airflow.providers.postgres.hooks.postgres import PostgresHook

    assert os.environ["AIRFLOW_CONN_PF_PG_TARGET"]
    with (
        closing(PostgresHook(postgres_conn_id="pf_pg_target", database="postgres").get_conn()) as admin,
        admin.cursor() as cur,
    ):
        cur.execute("select 1 from pg_database where datname = %s", (TARGET_DB,))
        return cur.fetchone() is not None


def test_passes_and_creates_the_target_database(pg_preflight_databases) -> None:
    report = _run()
    assert report.ok, report.summary()
    names = {c.name: c.detail for c in report.checks}
    assert names["source_reachable"].startswith(f"connected to database '{SOURCE_DB}' (PostgreSQL ")
    assert names["target_location_exists"] == f"created database '{TARGET_DB}'"
    assert _target_exists()
    assert _run().ok, "a second preflight must pass on the now existing database"


def test_dry_run_creates_nothing(pg_preflight_databases) -> None:
    report = _run(dry_run=True)
    assert report.ok
    assert "would be created (dry run)" in {c.name: c.detail for c in report.checks}["target_location_exists"]
    assert not _target_exists()


def test_missing_schema_is_named(pg_preflight_databases) -> None:
    report = _run(schema="registre")
    assert not report.ok and not report.retryable
    failed = [c for c in report.checks if not c.ok]
    assert [c.name for c in failed] == ["source_location_exists"]
    assert "schema(s) ['registre'] not found in source database 'bascule_pf_source'" in failed[0].detail
    assert "check source.schemas in include/workloads/registry_catalogue.yaml" in failed[0].detail


def test_missing_target_without_create_says_how_to_fix(pg_preflight_databases) -> None:
    report = _run(create="false")
    detail = {c.name: c.detail for c in report.checks}["target_location_exists"]
    assert not report.ok
    assert f"target database '{TARGET_DB}' does not exist; create it or set target.create_if_missing: true" in detail


def test_unreachable_server_is_retryable_and_says_where_to_look(pg_preflight_databases) -> None:
    report = _run(target_conn="pf_pg_nowhere")
    failed = {c.name: c.detail for c in report.checks if not c.ok}
    assert list(failed) == ["target_reachable"]
    assert "check the connection's host and port" in failed["target_reachable"]
    assert report.retryable, "an unreachable server may come back: Airflow should retry"


def test_wrong_password_is_not_retried_and_names_the_credential(pg_preflight_databases) -> None:
    text = MANIFEST.format(source_db=SOURCE_DB, schema="catalogue", target_conn="pf_pg_target", target_db=TARGET_DB,
                           create="true").replace("conn_id: pf_pg_source", "conn_id: pf_pg_badpass")  # fmt: skip
    workload = parse_manifest("include/workloads/registry_catalogue.yaml", text)
    report = preflight_postgres(
        workload, "include/workloads/registry_catalogue.yaml", postgres_connector("pf_pg_badpass"),
        postgres_connector("pf_pg_target"), classify_postgres_error,
    )  # fmt: skip
    failed = {c.name: c.detail for c in report.checks if not c.ok}
    assert list(failed) == ["source_reachable"]
    assert "password authentication failed" in failed["source_reachable"]
    assert "check the login and password in the connection" in failed["source_reachable"]
    assert "not-the-password" not in failed["source_reachable"]
    assert not report.retryable, "a wrong password does not heal: retrying would only lock the account"

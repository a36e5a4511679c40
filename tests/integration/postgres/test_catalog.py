"""Source inventory, DDL drift and the replication preflight rules, on real PostgreSQL servers."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterator
from contextlib import closing

import psycopg2
import pytest
from machine_pg import admin_connection

from bascule.postgres.catalog import InventoryError, PgInventory, read_inventory
from bascule.postgres.replication_checks import (
    check_extensions,
    check_primary_keys,
    check_source_server,
    check_target_server,
)
from bascule.postgres.schema_drift import schema_changes, schema_fingerprint

pytestmark = pytest.mark.integration

DATABASE = "pg_catalog_src"
MANIFEST = "include/workloads/clinic.yaml"

SCHEMA = """
create extension citext;
create schema clinic;
create table clinic.patients (
    id bigserial primary key,
    nir citext not null unique,
    born date
);
create table clinic.visits (
    patient_id bigint not null references clinic.patients (id) on delete cascade,
    visit_no int not null,
    notes text,
    primary key (patient_id, visit_no)
);
create index visits_notes_idx on clinic.visits (notes);
create table clinic.audit_log (at timestamptz not null default now(), message text);
create table clinic.codes (code text not null, label text);
create unique index codes_code_key on clinic.codes (code);
alter table clinic.codes replica identity using index codes_code_key;
create table clinic.measures (id bigint, taken date, value numeric, primary key (id, taken))
    partition by range (taken);
create table clinic.measures_2024 partition of clinic.measures for values from ('2024-01-01') to ('2025-01-01');
create sequence clinic.ticket_seq;
create view clinic.recent_visits as select * from clinic.visits where visit_no > 1;
insert into clinic.patients (nir, born) select 'nir-' || i, date '1950-01-01' + i from generate_series(1, 3000) i;
insert into clinic.visits select 1 + i % 3000, i, 'note ' || i from generate_series(1, 500) i;
insert into clinic.measures select i, date '2024-02-01' + i % 300, i / 3.0 from generate_series(1, 200) i;
analyze;
"""


@pytest.fixture(scope="module")
def catalog_db(pg_pair) -> Iterator[str]:
    source, _ = pg_pair
    with closing(source.connect()) as admin, admin.cursor() as cur:
        cur.execute(f"drop database if exists {DATABASE} with (force)")
        cur.execute(f"create database {DATABASE}")
    with closing(source.connect(DATABASE)) as conn, conn.cursor() as cur:
        cur.execute(SCHEMA)
    yield DATABASE
    with closing(source.connect()) as admin, admin.cursor() as cur:
        cur.execute(f"drop database if exists {DATABASE} with (force)")


@pytest.fixture
def source_conn(pg_pair, catalog_db):
    with closing(pg_pair[0].connect(catalog_db, autocommit=False)) as conn:
        yield conn


def test_inventory_lists_tables_keys_indexes_and_sequences(source_conn) -> None:
    inventory = read_inventory(source_conn, ["clinic"], [])

    names = [t.qualified for t in inventory.tables]
    assert sorted(names) == ["clinic.audit_log", "clinic.codes", "clinic.measures", "clinic.patients", "clinic.visits"]
    assert "clinic.recent_visits" not in names and "clinic.measures_2024" not in names
    sizes = [t.size_bytes for t in inventory.tables]
    assert sizes == sorted(sizes, reverse=True) and names[0] == "clinic.patients"

    patients = inventory.table("clinic.patients")
    assert patients.primary_key == ["id"]
    assert [(c.name, c.type, c.not_null) for c in patients.columns] == [
        ("id", "bigint", True),
        ("nir", "public.citext", True),
        ("born", "date", False),
    ]
    assert patients.row_estimate == 3000
    assert {c["type"] for c in patients.constraints} == {"primary key", "unique"}

    visits = inventory.table("clinic.visits")
    assert visits.primary_key == ["patient_id", "visit_no"]
    assert visits.foreign_keys == [
        {
            "name": "visits_patient_id_fkey",
            "columns": ["patient_id"],
            "ref_table": "clinic.patients",
            "ref_columns": ["id"],
            "definition": "FOREIGN KEY (patient_id) REFERENCES clinic.patients(id) ON DELETE CASCADE",
        }
    ]
    assert "CREATE INDEX visits_notes_idx ON clinic.visits USING btree (notes)" in visits.indexes

    assert inventory.table("clinic.audit_log").primary_key == []
    assert inventory.table("clinic.codes").replica_identity == "i"
    measures = inventory.table("clinic.measures")
    assert (measures.kind, measures.partitions, measures.row_estimate) == ("p", ["clinic.measures_2024"], 200)
    assert measures.size_bytes > 0

    assert {(s.qualified, s.owned_by) for s in inventory.sequences} == {
        ("clinic.patients_id_seq", "clinic.patients.id"),
        ("clinic.ticket_seq", None),
    }
    assert inventory.extensions == ["citext", "plpgsql"]
    assert inventory.database == DATABASE and inventory.major_version >= 10
    assert PgInventory.from_json(inventory.to_json()) == inventory
    assert source_conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE


def test_inventory_of_named_tables_only(source_conn) -> None:
    inventory = read_inventory(source_conn, ["clinic"], ["clinic.patients"])
    assert [t.qualified for t in inventory.tables] == ["clinic.patients"]
    assert [s.qualified for s in inventory.sequences] == ["clinic.patients_id_seq"]

    with pytest.raises(InventoryError, match=r"\['clinic.recent_visits'\] not found .*views are not migrated"):
        read_inventory(source_conn, ["clinic"], ["clinic.patients", "clinic.recent_visits"])


def test_tables_without_primary_key_are_named_until_opted_in(source_conn) -> None:
    inventory = read_inventory(source_conn, ["clinic"], [])

    refused = check_primary_keys(inventory, [], MANIFEST)
    assert not refused.ok
    assert refused.detail == (
        "table(s) clinic.audit_log have no primary key (nor a REPLICA IDENTITY USING INDEX): add a primary key, "
        f"or list them under source.tables_without_primary_key in {MANIFEST} to replicate them with "
        "REPLICA IDENTITY FULL (slower)"
    )

    accepted = check_primary_keys(inventory, ["clinic.audit_log"], MANIFEST)
    assert accepted.ok
    assert accepted.detail == (
        "4 of 5 tables have a primary key or replica index; opted in to REPLICA IDENTITY FULL: clinic.audit_log"
    )


def test_schema_changes_report_ddl_run_on_the_source(pg_pair, catalog_db) -> None:
    with closing(pg_pair[0].connect(catalog_db)) as conn, conn.cursor() as cur:
        cur.execute(
            "create schema drift; "
            "create table drift.projects (id int primary key, y integer); "
            "create table drift.scratch (id int primary key)"
        )
        try:
            before = read_inventory(conn, ["drift"], [])
            cur.execute(
                "alter table drift.projects add column x text; "
                "alter table drift.projects alter column y type bigint; "
                "create index on drift.projects (x); "
                "drop table drift.scratch; "
                "create table drift.visits (id int primary key)"
            )
            after = read_inventory(conn, ["drift"], [])
        finally:
            cur.execute("drop schema drift cascade")

    assert schema_changes(before, after) == [
        "table drift.scratch dropped",
        "new table drift.visits in schema drift",
        "table drift.projects: column 'x text' added",
        "table drift.projects: column 'y' type changed from integer to bigint",
        "table drift.projects: index added: CREATE INDEX projects_x_idx ON drift.projects USING btree (x)",
    ]
    assert schema_changes(before, before) == []
    fingerprints = schema_fingerprint(before)
    assert set(fingerprints) == {"drift.projects", "drift.scratch"}
    assert fingerprints["drift.projects"] != schema_fingerprint(after)["drift.projects"]


def test_wal_level_replica_is_refused_with_the_azure_fix() -> None:
    with closing(admin_connection()) as conn:  # the machine's server: wal_level = replica
        results = {r.name: r for r in check_source_server(conn)}
    wal = results["source_wal_level"]
    assert not wal.ok
    assert wal.detail.startswith("wal_level is 'replica' on the source server 127.0.0.1:5432; logical replication")
    assert "set the server parameter wal_level=logical" in wal.detail and "restart the server" in wal.detail
    assert results["source_server_version"].ok and results["source_role_can_replicate"].ok


def test_source_server_with_logical_wal_passes(pg_pair, catalog_db) -> None:
    with closing(pg_pair[0].connect(catalog_db)) as conn:
        results = check_source_server(conn)
    assert [r.name for r in results] == [
        "source_server_version",
        "source_wal_level",
        "source_role_can_replicate",
        "source_replication_capacity",
    ]
    assert all(r.ok for r in results), results
    capacity = results[-1].detail
    assert "replication slots" in capacity and "of 20 WAL senders free" in capacity


@pytest.fixture
def plain_role(pg_pair) -> Iterator[tuple[str, str]]:
    """A login role without superuser or REPLICATION, on both servers."""
    role, password = f"catalog_test_app_{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    for cluster in pg_pair:
        with closing(cluster.connect()) as conn, conn.cursor() as cur:
            cur.execute(f"create role {role} login password %s", (password,))
    yield role, password
    for cluster in pg_pair:
        with closing(cluster.connect()) as conn, conn.cursor() as cur:
            cur.execute(f"drop role {role}")


def test_a_role_without_replication_is_told_the_alter_role(pg_pair, catalog_db, plain_role) -> None:
    source, _ = pg_pair
    role, password = plain_role
    with closing(psycopg2.connect(source.dsn(catalog_db, user=role, password=password))) as conn:
        refused = {r.name: r for r in check_source_server(conn)}["source_role_can_replicate"]
    assert not refused.ok
    assert f"role '{role}' on the source server" in refused.detail
    assert "pg_read_all_data is not enough" in refused.detail
    assert refused.detail.endswith(f"ALTER ROLE {role} WITH REPLICATION;")

    with closing(source.connect()) as admin, admin.cursor() as cur:
        cur.execute(f"alter role {role} with replication")
    with closing(psycopg2.connect(source.dsn(catalog_db, user=role, password=password))) as conn:
        allowed = {r.name: r for r in check_source_server(conn)}["source_role_can_replicate"]
    assert allowed.ok and allowed.detail.startswith(f"role '{role}' has the REPLICATION attribute")


def test_target_server_version_and_subscription_rights(pg_pair, plain_role) -> None:
    source, target = pg_pair
    with closing(source.connect()) as conn, conn.cursor() as cur:
        cur.execute("select current_setting('server_version_num')::int")
        (source_version,) = cur.fetchone()

    with closing(target.connect()) as conn:
        same = check_target_server(conn, source_version)
        newer_source = check_target_server(conn, 170002)
    assert all(r.ok for r in same), same
    version = newer_source[0]
    assert version.name == "target_server_version" and not version.ok
    assert f"runs PostgreSQL {source_version // 10000}, older than the source's PostgreSQL 17" in version.detail

    role, password = plain_role
    with closing(psycopg2.connect(target.dsn("postgres", user=role, password=password))) as conn:
        rights = {r.name: r for r in check_target_server(conn, source_version)}["target_role_can_subscribe"]
    assert not rights.ok
    assert f"role '{role}'" in rights.detail and "pg_create_subscription" in rights.detail


def test_extensions_must_be_available_on_the_target(pg_pair, catalog_db) -> None:
    source, target = pg_pair
    with closing(source.connect(catalog_db)) as src, closing(target.connect()) as tgt:
        inventory = read_inventory(src, ["clinic"], [])
        available = check_extensions(src, tgt, inventory)
        # An Azure source commonly carries PostGIS; this machine's servers have no PostGIS build.
        with_postgis = dataclasses.replace(inventory, extensions=[*inventory.extensions, "postgis"])
        missing = check_extensions(src, tgt, with_postgis)
    assert available.ok and available.detail == "source extensions available on the target: citext"
    assert not missing.ok
    assert missing.detail.startswith(
        f"extension(s) postgis installed in source database '{DATABASE}' are not available on the target server"
    )
    assert "citext" not in missing.detail and "plpgsql" not in missing.detail

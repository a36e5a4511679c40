"""Schema (pg_dump sections) and table data from a source cluster to a target cluster."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from contextlib import closing

import psycopg2
import pytest

from bascule.postgres.bulk_copy import copy_table
from bascule.postgres.catalog import PgInventory, read_inventory
from bascule.postgres.client import LibpqParams, PgCopyError
from bascule.postgres.schema_copy import apply_schema, dump_schema, parse_dump
from bascule.postgres.schema_drift import schema_changes

pytestmark = pytest.mark.integration

SOURCE_DB = "pg_copy_src"
SCHEMAS = ["care"]

# ~50k rows over three tables chained by foreign keys, with the awkward cases: an identity
# column GENERATED ALWAYS, a generated column, composite keys, an enum array (user type:
# text COPY), and text with tabs, newlines, backslashes, quotes, non-ASCII and NULLs.
SOURCE_SCHEMA = r"""
create schema care;
create type care.flag as enum ('urgent', 'chronic', 'minor');
create table care.patients (
    id bigint generated always as identity primary key,
    nir text not null unique,
    birth date not null,
    sex char(1) check (sex in ('F', 'M', 'X')),
    full_name text,
    created timestamptz not null default '2024-01-01 00:00:00+00'
);
create table care.stays (
    id bigserial primary key,
    patient_id bigint not null references care.patients (id),
    admitted timestamptz not null,
    discharged timestamptz,
    diagnosis text not null,
    cost numeric(10, 2),
    los_days int generated always as (extract(day from discharged - admitted)::int) stored
);
create index stays_patient_idx on care.stays (patient_id);
create table care.acts (
    stay_id bigint not null references care.stays (id),
    act_no int not null,
    code text not null,
    flags care.flag[],
    note text,
    primary key (stay_id, act_no)
);
insert into care.patients (nir, birth, sex, full_name)
select lpad(i::text, 13, '0'), date '1930-01-01' + (i * 7) % 30000, (array['F', 'M', 'X'])[1 + i % 3],
       case when i % 50 = 0 then null
            when i % 7 = 0 then E'Zo\u00e9 \t"quoted" \\ back\nslash \u00e9\u00e8 ' || i
            else 'Patient ' || i end
from generate_series(1, 5000) i;
insert into care.stays (patient_id, admitted, discharged, diagnosis, cost)
select 1 + i % 5000, timestamptz '2023-01-01 08:00+00' + i * interval '17 minutes',
       case when i % 10 = 0 then null else timestamptz '2023-01-01 08:00+00' + i * interval '17 minutes'
            + (i % 20) * interval '1 day' end,
       'E11.' || (i % 10), (i % 100000) / 7.0
from generate_series(1, 30000) i;
insert into care.acts
select 1 + i % 30000, i / 30000, 'YYYY' || lpad((i % 1000)::text, 3, '0'),
       case when i % 3 = 0 then array['urgent', 'minor']::care.flag[] when i % 3 = 1 then '{}' end,
       case when i % 11 = 0 then E'line one\nline two\\' end
from generate_series(0, 14999) i;
analyze;
"""

# Rows in key order, as text: equal digests mean equal table contents.
DIGEST = {
    "care.patients": "select count(*), md5(string_agg(t::text, '|' order by t.id)) from care.patients t",
    "care.stays": "select count(*), md5(string_agg(t::text, '|' order by t.id)) from care.stays t",
    "care.acts": "select count(*), md5(string_agg(t::text, '|' order by t.stay_id, t.act_no)) from care.acts t",
}
_target_numbers = itertools.count()


@pytest.fixture(scope="module")
def source_db(pg_pair) -> Iterator[str]:
    source, _ = pg_pair
    with closing(source.connect()) as admin, admin.cursor() as cur:
        cur.execute(f"drop database if exists {SOURCE_DB} with (force)")
        cur.execute(f"create database {SOURCE_DB}")
    with closing(source.connect(SOURCE_DB)) as conn, conn.cursor() as cur:
        cur.execute(SOURCE_SCHEMA)
    yield SOURCE_DB
    with closing(source.connect()) as admin, admin.cursor() as cur:
        cur.execute(f"drop database if exists {SOURCE_DB} with (force)")


@pytest.fixture
def target_db(pg_pair) -> Iterator[str]:
    """A fresh, empty database on the target cluster for one test."""
    _, target = pg_pair
    name = f"pg_copy_tgt_{next(_target_numbers)}"
    with closing(target.connect()) as admin, admin.cursor() as cur:
        cur.execute(f"drop database if exists {name} with (force)")
        cur.execute(f"create database {name}")
    yield name
    with closing(target.connect()) as admin, admin.cursor() as cur:
        cur.execute(f"drop database if exists {name} with (force)")


@pytest.fixture
def conns(pg_pair, source_db, target_db) -> Iterator[tuple]:
    """psycopg2 connections as Airflow's PostgresHook gives them: not in autocommit."""
    source, target = pg_pair
    with (
        closing(source.connect(source_db, autocommit=False)) as src,
        closing(target.connect(target_db, autocommit=False)) as tgt,
    ):
        yield src, tgt


def _params(conn) -> LibpqParams:
    return LibpqParams.from_connection(conn)


def _inventory(conn) -> PgInventory:
    return read_inventory(conn, SCHEMAS, [])


def _digests(conn) -> dict[str, tuple[int, str]]:
    with conn.cursor() as cur:
        out = {}
        for table, query in DIGEST.items():
            cur.execute(query)
            out[table] = cur.fetchone()
    conn.rollback()
    return out


def _count(conn, table: str) -> int:
    with conn.cursor() as cur:
        cur.execute(f"select count(*) from {table}")
        (count,) = cur.fetchone()
    conn.rollback()
    return count


def _migrate_schema_and_data(src, tgt) -> tuple[PgInventory, list]:
    inventory = _inventory(src)
    params = _params(src)
    apply_schema(tgt, dump_schema(params, "pre-data", SCHEMAS, [], extensions=inventory.extensions), if_absent=True)
    reports = [copy_table(src, tgt, table) for table in inventory.tables]
    apply_schema(tgt, dump_schema(params, "post-data", SCHEMAS, []), if_absent=True)
    return inventory, reports


def test_pre_data_copy_post_data_round_trip(conns) -> None:
    src, tgt = conns
    with src.cursor() as cur:
        cur.execute("select pg_current_wal_lsn()::text")
        (lsn_before,) = cur.fetchone()
    src.rollback()

    inventory, reports = _migrate_schema_and_data(src, tgt)

    assert [r.table for r in reports] == [t.qualified for t in inventory.tables]
    by_table = {r.table: r for r in reports}
    assert {t: r.rows for t, r in by_table.items()} == {"care.patients": 5000, "care.stays": 30000, "care.acts": 15000}
    assert by_table["care.stays"].format == "binary"  # built-in types, same major version
    assert by_table["care.acts"].format == "text"  # an array of a user enum: OIDs differ between clusters
    assert all(r.bytes > 0 and r.seconds >= 0 for r in reports)
    assert _digests(tgt) == _digests(src)
    with src.cursor() as cur:
        cur.execute(
            "select bool_and(lsn::pg_lsn >= %s::pg_lsn) from unnest(%s::text[]) lsn",
            (lsn_before, [r.source_lsn_after for r in reports]),
        )
        assert cur.fetchone()[0] is True
    src.rollback()

    # Indexes, keys, foreign keys, defaults, identity and the generated column all arrived.
    assert schema_changes(inventory, _inventory(tgt)) == []
    with tgt.cursor() as cur:
        cur.execute("select last_value, is_called from care.patients_id_seq")
        assert cur.fetchone() == (1, False)  # sequences are synced at cutover, not by the copy
        with pytest.raises(psycopg2.errors.ForeignKeyViolation):
            cur.execute("insert into care.stays (id, patient_id, admitted, diagnosis) values (-1, 999999, now(), 'x')")
    tgt.rollback()
    assert src.get_transaction_status() == tgt.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE
    assert src.autocommit is False and tgt.autocommit is False


def test_a_second_copy_replaces_rows_instead_of_duplicating_them(conns) -> None:
    src, tgt = conns
    inventory = _inventory(src)
    apply_schema(tgt, dump_schema(_params(src), "pre-data", SCHEMAS, []), if_absent=True)
    stays = inventory.table("care.stays")

    first = copy_table(src, tgt, stays)
    with tgt.cursor() as cur:
        cur.execute("delete from care.stays where id % 2 = 0; update care.stays set diagnosis = 'tampered'")
    tgt.commit()
    second = copy_table(src, tgt, stays)

    assert first.rows == second.rows == 30000 and first.bytes == second.bytes
    assert _count(tgt, "care.stays") == 30000
    assert _digests(tgt)["care.stays"] == _digests(src)["care.stays"]


def test_schema_sections_can_be_applied_again(conns) -> None:
    src, tgt = conns
    params = _params(src)
    pre = dump_schema(params, "pre-data", SCHEMAS, [])
    post = dump_schema(params, "post-data", SCHEMAS, [])

    first_pre = apply_schema(tgt, pre, if_absent=True)
    first_post = apply_schema(tgt, post, if_absent=True)
    again_pre = apply_schema(tgt, pre, if_absent=True)
    again_post = apply_schema(tgt, post, if_absent=True)

    assert first_pre.skipped == [] and first_post.skipped == []
    assert {"SCHEMA care", "TYPE care.flag", "TABLE care.patients", "TABLE care.stays"} <= set(again_pre.skipped)
    assert {"CONSTRAINT care.patients patients_pkey", "INDEX care.stays_patient_idx"} <= set(again_post.skipped)
    assert "FK CONSTRAINT care.acts acts_stay_id_fkey" in again_post.skipped
    assert schema_changes(_inventory(src), _inventory(tgt)) == []

    with pytest.raises(PgCopyError, match=r"applying SCHEMA care on the target .* already exists \[SQLSTATE 42P06\]"):
        apply_schema(tgt, pre, if_absent=False)


def test_strict_apply_is_all_or_nothing(conns) -> None:
    src, tgt = conns
    pre = dump_schema(_params(src), "pre-data", SCHEMAS, [])
    with tgt.cursor() as cur:
        cur.execute("create schema care; create table care.stays (id int)")  # in the way of one entry
    tgt.commit()

    with pytest.raises(PgCopyError, match=r"applying TABLE care.stays on the target"):
        apply_schema(tgt, pre.replace("CREATE SCHEMA care;", "CREATE SCHEMA IF NOT EXISTS care;"), if_absent=False)

    with tgt.cursor() as cur:
        cur.execute("select count(*) from pg_class where relnamespace = 'care'::regnamespace")
        assert cur.fetchone()[0] == 1  # patients, created before the failing entry, was rolled back too
    tgt.rollback()


def test_a_failed_copy_leaves_the_previous_table_intact(conns) -> None:
    src, tgt = conns
    inventory = _inventory(src)
    apply_schema(tgt, dump_schema(_params(src), "pre-data", SCHEMAS, []), if_absent=True)
    stays = inventory.table("care.stays")
    copy_table(src, tgt, stays)
    before = _digests(tgt)["care.stays"]
    with tgt.cursor() as cur:  # rows past id 20000 will be refused midway through the stream
        cur.execute("alter table care.stays add constraint stop_midway check (id <= 20000) not valid")
    tgt.commit()

    with pytest.raises(PgCopyError) as failure:
        copy_table(src, tgt, stays)

    error = failure.value
    assert (error.side, error.table, error.retryable) == ("target", "care.stays", False)
    assert str(error).startswith(f"copy of table care.stays failed on the target (127.0.0.1:{tgt.info.port}/")
    assert 'violates check constraint "stop_midway"' in str(error)
    assert _digests(tgt)["care.stays"] == before
    for conn in (src, tgt):  # both usable, nothing left open, the source's COPY was stopped
        assert conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE
    with src.cursor() as cur:
        cur.execute("select count(*) from pg_stat_activity where query ilike 'copy (select%%' and state = 'active'")
        assert cur.fetchone()[0] == 0
    src.rollback()


def test_a_source_failure_is_named_and_nothing_is_committed(pg_pair, conns) -> None:
    src, tgt = conns
    apply_schema(tgt, dump_schema(_params(src), "pre-data", SCHEMAS, []), if_absent=True)
    stays = _inventory(src).table("care.stays")
    copy_table(src, tgt, stays)
    vanished = dataclasses.replace(stays, name="stays_gone")
    with tgt.cursor() as cur:  # the target has the table, the source does not
        cur.execute("create table care.stays_gone (like care.stays including all)")
        cur.execute("insert into care.stays_gone (patient_id, admitted, diagnosis) values (1, now(), 'kept')")
    tgt.commit()

    with pytest.raises(PgCopyError) as failure:
        copy_table(src, tgt, vanished)

    assert failure.value.side == "source" and failure.value.table == "care.stays_gone"
    assert 'relation "care.stays_gone" does not exist' in str(failure.value)
    assert f"failed on the source (127.0.0.1:{src.info.port}/{SOURCE_DB})" in str(failure.value)
    assert _count(tgt, "care.stays_gone") == 1


def test_a_table_filtered_dump_keeps_what_the_tables_need(conns) -> None:
    src, tgt = conns
    pre = dump_schema(_params(src), "pre-data", SCHEMAS, ["care.patients", "care.acts"])
    report = apply_schema(tgt, pre, if_absent=False)

    # The schema and the enum type come along; the unlisted table does not.
    assert report.applied[:2] == ["SCHEMA care", "TYPE care.flag"]
    assert {"TABLE care.patients", "TABLE care.acts"} <= set(report.applied)
    assert not [label for label in report.applied if "care.stays" in label]
    copy = copy_table(src, tgt, _inventory(src).table("care.acts"))
    with tgt.cursor() as cur:
        cur.execute(DIGEST["care.acts"])
        assert (copy.rows, cur.fetchone()) == (15000, _digests(src)["care.acts"])
    tgt.rollback()

    with pytest.raises(PgCopyError, match=r"table\(s\) \['care.nowhere'\] not found in source database"):
        dump_schema(_params(src), "pre-data", SCHEMAS, ["care.nowhere"])


def test_dump_output_is_split_into_entries_without_psql_commands(conns) -> None:
    src, _ = conns
    entries = parse_dump(dump_schema(_params(src), "pre-data", SCHEMAS, []))
    assert all("\\restrict" not in e.sql and not e.sql.startswith("SET ") for e in entries)
    table = next(e for e in entries if e.label == "TABLE care.stays")
    assert table.sql.startswith("CREATE TABLE care.stays (")
    assert "SELECT pg_catalog.set_config('search_path', '', true);" in table.settings


def test_wrong_password_is_a_clear_non_retryable_error(pg_pair, source_db) -> None:
    source, _ = pg_pair
    params = LibpqParams("127.0.0.1", source.port, "postgres", "not-the-password", source_db)
    with pytest.raises(PgCopyError) as failure:
        dump_schema(params, "pre-data", SCHEMAS, [])
    message = str(failure.value)
    assert "pg_dump --section=pre-data of 127.0.0.1:" in message and f"/{source_db} as 'postgres' failed" in message
    assert 'password authentication failed for user "postgres"' in message
    assert failure.value.retryable is False and failure.value.side == "source"
    assert "not-the-password" not in message


def test_password_goes_to_the_environment_only() -> None:
    params = LibpqParams("db.example", 5432, "migrator", "s3cret", "registry", sslmode="verify-full")
    assert params.env() == {
        "PGHOST": "db.example",
        "PGPORT": "5432",
        "PGUSER": "migrator",
        "PGPASSWORD": "s3cret",
        "PGDATABASE": "registry",
        "PGCONNECT_TIMEOUT": "10",
        "PGSSLMODE": "verify-full",
    }
    assert "s3cret" not in repr(params) and "password='***'" in repr(params)

"""Every name PostgreSQL accepts survives a whole migration, through the project's own phase functions.

Hypothesis draws schema, table, column, enum-type, sequence and role names from PostgreSQL's
legal alphabet (mixed case, spaces, unicode letters, reserved words, ``$``, dots, double
quotes; at most 63 bytes), builds a small database with them on the throwaway source
cluster, and runs snapshot -> pre-data -> copy -> post-data -> replication -> catch-up ->
validate (diff and built-in gates) -> cutover -> rollback as tests/integration/postgres/test_pg_phases.py does, without
Airflow. The names that broke before (issue #13) are fixed examples. Each example gets a
fresh pair of databases and leaves no subscription, slot or database behind.
"""

from __future__ import annotations

import time
from contextlib import closing
from dataclasses import dataclass

import psycopg2
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from psycopg2 import sql

from bascule.governance.evidence.store import EvidenceStore
from bascule.governance.routing import RoutingRegistry
from bascule.identifiers import format_name, qualified_name
from bascule.postgres import cutover_phases, validation_phases
from bascule.postgres import phases as pg_phases
from bascule.postgres.client import LibpqParams
from bascule.postgres.sides import PgSides
from bascule.workload import parse_manifest

pytestmark = pytest.mark.integration

DATABASE, BUCKET, WORKLOAD_ID, ROLE_PASSWORD = "ident_forms", "ident-forms", "ident_forms", "ident-forms-pw"
RESERVED = ["select", "from", "user", "order", "table", "group", "Select", "ALL", "desc", "check", "window"]
# PostgreSQL's alphabet, weighted towards what breaks quoting: case, space, '.', '"', '$', ';', tab,
# newline, unicode letters.
_CHARS = st.sampled_from(list("aZ_Q$ .\"'0;\t\n") + ["é", "ß", "Ω", "日", "ы", "Å"]) | st.characters(
    categories=("Lu", "Ll", "Nd"), max_codepoint=0x2FFF
)


def _fits(name: str) -> bool:
    return 0 < len(name.encode()) <= 63


_NAME = (st.text(_CHARS, min_size=1, max_size=24) | st.sampled_from(RESERVED)).filter(_fits)
# Names PostgreSQL keeps for itself ("pg_" schemas, system columns) or the test's schema already uses.
_TAKEN_SCHEMAS = {"public", "bascule", "information_schema"}
_TAKEN_COLUMNS = {"n", "tableoid", "xmin", "cmin", "xmax", "cmax", "ctid"}


@dataclass(frozen=True)
class Names:
    schema: str
    table: str
    key: str
    column: str
    enum_type: str
    sequence: str
    role: str

    @property
    def qualified_table(self) -> str:
        return qualified_name(self.schema, self.table)


@st.composite
def _names(draw: st.DrawFn) -> Names:
    # Types and relations of one schema share a namespace (a table has a row type of its name),
    # as do the two columns: drawn distinct.
    table, enum_type, sequence = draw(st.lists(_NAME, min_size=3, max_size=3, unique=True))
    key, column = draw(st.lists(_NAME.filter(lambda n: n not in _TAKEN_COLUMNS), min_size=2, max_size=2, unique=True))
    # Roles are cluster-wide: one prefix keeps a drawn name clear of the clusters' own roles.
    role = draw(_NAME.map(lambda n: f"ident {n}").filter(_fits))
    schema = draw(_NAME.filter(lambda n: n not in _TAKEN_SCHEMAS and not n.startswith("pg_")))
    return Names(schema, table, key, column, enum_type, sequence, role)


def _fixed(schema: str, table: str) -> Names:
    return Names(schema, table, "Id", "CareLevel", "care_level", "Encounter_seq", "ident App")


def _drop_everything(source, target) -> None:
    """What an example may leave behind: its subscription, slot, databases, role."""
    with closing(target.connect()) as conn, conn.cursor() as cur:
        cur.execute("select 1 from pg_database where datname = %s", (DATABASE,))
        if cur.fetchone():
            with closing(target.connect(DATABASE)) as db, db.cursor() as dbcur:
                dbcur.execute("select subname from pg_subscription where subname = %s", (f"bascule_{WORKLOAD_ID}",))
                if dbcur.fetchone():
                    ident = sql.Identifier(f"bascule_{WORKLOAD_ID}")
                    dbcur.execute(sql.SQL("alter subscription {} disable").format(ident))
                    dbcur.execute(sql.SQL("alter subscription {} set (slot_name = none)").format(ident))
                    dbcur.execute(sql.SQL("drop subscription {}").format(ident))
        cur.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(DATABASE)))
    with closing(source.connect()) as conn, conn.cursor() as cur:
        cur.execute(
            "select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = %s",
            (f"bascule_{WORKLOAD_ID}",),
        )
        cur.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(DATABASE)))
        cur.execute("select rolname from pg_roles where rolname like %s", ("ident %",))
        for (role,) in cur.fetchall():
            cur.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))


def _build(source, target, names: Names) -> None:
    """A schema of the drawn names: an enum type, a sequence used by a default, a keyed table of rows."""
    _drop_everything(source, target)
    for cluster in (source, target):
        with closing(cluster.connect()) as conn, conn.cursor() as cur:
            cur.execute(sql.SQL("create database {}").format(sql.Identifier(DATABASE)))
    schema, table = sql.Identifier(names.schema), sql.Identifier(names.schema, names.table)
    enum_type, sequence = sql.Identifier(names.schema, names.enum_type), sql.Identifier(names.schema, names.sequence)
    with closing(source.connect(DATABASE)) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("create schema {}").format(schema))
        cur.execute(sql.SQL("create type {} as enum ('low', 'high care', 'say \"hi\"')").format(enum_type))
        cur.execute(sql.SQL("create sequence {}").format(sequence))
        cur.execute(
            sql.SQL(
                "create table {t} ({k} integer primary key, {c} {e} not null, n bigint not null default nextval({s}))"
            ).format(
                t=table,
                k=sql.Identifier(names.key),
                c=sql.Identifier(names.column),
                e=enum_type,
                s=sql.Literal(sequence.as_string(conn)),
            )
        )
        cur.execute(
            sql.SQL(
                "insert into {} ({}, {}) select i, (enum_range(null::{}))[1 + mod(i, 3)] from generate_series(1, 300) i"
            ).format(table, sql.Identifier(names.key), sql.Identifier(names.column), enum_type)
        )
        role = sql.Identifier(names.role)
        cur.execute(sql.SQL("create role {} login password %s").format(role), (ROLE_PASSWORD,))
        cur.execute(sql.SQL("grant usage on schema {} to {}").format(schema, role))
        cur.execute(sql.SQL("grant select, insert, update, delete on {} to {}").format(table, role))
        cur.execute(sql.SQL("grant usage on sequence {} to {}").format(sequence, role))


def _manifest(names: Names) -> str:
    source = {
        "conn_id": "unused",
        "database": DATABASE,
        "schemas": [format_name(names.schema)],
        "tables": [names.qualified_table],
        "application_roles": [format_name(names.role)],
    }
    document = {
        "id": WORKLOAD_ID,
        "kind": "postgres",
        "description": "Identifier forms.",
        "owner": "data-platform",
        "source": source,
        "target": {"conn_id": "unused", "database": DATABASE, "region": "fr-par"},
        "evidence": {"conn_id": "unused", "bucket": BUCKET, "region": "fr-par"},
        "replication": {"max_lag_seconds": 5},
        "approvals": {"approvers": ["approver1"], "required": 1},
        "cutover": {"window": {"timezone": "Europe/Paris", "days": ["sunday"], "start": "02:00", "end": "05:00"}},
    }
    return yaml.safe_dump(document, allow_unicode=True)


def _write_as_application(source, names: Names, first_key: int) -> None:
    """Changes the stream must carry: a few inserts, an update and a delete, as the application role."""
    table, key, column = (
        sql.Identifier(names.schema, names.table),
        sql.Identifier(names.key),
        sql.Identifier(names.column),
    )
    application = psycopg2.connect(
        host="127.0.0.1", port=source.port, dbname=DATABASE, user=names.role, password=ROLE_PASSWORD
    )
    with closing(application) as conn, conn.cursor() as cur:
        for i in range(first_key, first_key + 5):
            cur.execute(sql.SQL("insert into {} ({}, {}) values (%s, 'high care')").format(table, key, column), (i,))
        cur.execute(sql.SQL("update {} set {} = 'say \"hi\"' where {} = 2").format(table, column, key))
        cur.execute(sql.SQL("delete from {} where {} = 3").format(table, key))
        conn.commit()


def _wait_ready(workload, sides, end: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not pg_phases.replication_status(workload, sides, end)["ready"]:
        assert time.monotonic() < deadline, "the replica did not pass the copies' overlap in time"
        time.sleep(0.3)


def _migrate(source, target, s3_client, names: Names) -> None:
    _build(source, target, names)
    workload = parse_manifest("include/workloads/ident_forms.yaml", _manifest(names))
    assert workload.source.tables == [names.qualified_table]  # type: ignore[union-attr]
    sides = PgSides.connecting(
        LibpqParams("127.0.0.1", source.port, "postgres", source.password, DATABASE),
        LibpqParams("127.0.0.1", target.port, "postgres", target.password, DATABASE),
    )
    evidence = EvidenceStore(s3_client, BUCKET, workload.id)
    run_id = f"manual__{time.time_ns()}"  # write-once evidence: one run per example
    log: list[str] = []

    snapshot = pg_phases.take_snapshot(workload, sides, evidence, run_id, fresh_run=True)
    assert snapshot["tables"] == [names.qualified_table]
    pg_phases.apply_schema_section(workload, sides, evidence, snapshot, "pre-data", run_id, 1)
    _write_as_application(source, names, 1000)  # between the slot and the copy: the overlap
    copies = [pg_phases.copy_one_table(sides, evidence, snapshot, t, run_id, 1) for t in snapshot["tables"]]
    pg_phases.apply_schema_section(workload, sides, evidence, snapshot, "post-data", run_id, 1)
    pg_phases.start_replication(workload, sides, evidence, snapshot)
    _write_as_application(source, names, 2000)  # after the copy: only the stream carries these
    _wait_ready(workload, sides, pg_phases.overlap_end(copies))
    pg_phases.finish_catch_up(workload, sides, evidence, snapshot)
    validation_phases.wait_until_applied(sides, workload.slot_name())
    # validate as the DAG runs it: the segmented diff, then the built-in gates (no suite in the
    # manifest) with the replica held, which also ends the apply worker so that its table
    # counters are published before the cutover takes its baseline of target writes.
    result = validation_phases.validate(workload, sides, evidence, snapshot, run_id, 1, log.append)
    assert result["diff_ok"] and result["differences"] == 0, result["diff_summary"]
    assert result["rows"] == 300 + 10 - 1
    assert result["gates_ok"], result["gates_summary"]
    assert result["gates_summary"].startswith("built-in gates passed on 1 table(s)"), result["gates_summary"]
    assert result["source_row_counts"] == {names.qualified_table: [309, 309]}

    routing = RoutingRegistry(s3_client, BUCKET)
    record = cutover_phases.cutover(workload, sides, evidence, routing, snapshot, run_id, 1, log.append)
    assert all(not d["differences"] for d in record["final_diff"])
    assert routing.read(workload.id)[0].live == "scaleway"
    assert record["smoke"]["row_counts"] == {names.qualified_table: 309}
    assert [s["sequence"] for s in record["sequences"]] == [qualified_name(names.schema, names.sequence)]
    with closing(target.connect(DATABASE)) as conn, conn.cursor() as cur:
        cur.execute(
            "select typname, nspname from pg_type t join pg_namespace n on n.oid = t.typnamespace where typtype = 'e'"
        )
        assert cur.fetchall() == [(names.enum_type, names.schema)]
        cur.execute(sql.SQL("select last_value from {}").format(sql.Identifier(names.schema, names.sequence)))
        assert cur.fetchone()[0] >= 310, "the sequence was carried at cutover"

    back = cutover_phases.rollback(
        workload, sides, evidence, routing, run_id, 1, "drill", record["target_write_baseline"], log.append
    )
    assert back["live"] == "azure" and back["target_writes_since_cutover"] == {}
    _write_as_application(source, names, 3000)  # the application role writes on the source again
    with closing(source.connect()) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from pg_replication_slots where slot_name = %s", (workload.slot_name(),))
        assert cur.fetchone()[0] == 0, "rollback leaves no slot behind"


@pytest.fixture(scope="module")
def bucket(s3_client):
    s3_client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "fr-par"})
    return BUCKET


# Each example is a whole migration (~5-10 s): a handful of generated names plus the fixed ones.
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=_names())
@example(names=_fixed("clinical", "Encounter"))  # PascalCase table, as Entity Framework creates it
@example(names=_fixed("ClinicalData", "Patient"))  # a mixed-case schema
@example(names=_fixed("Clinical Data", "patient visits"))  # spaces in the schema and the table
@example(names=_fixed("my.schema", 'Encounter "v2"'))  # a dot and double quotes inside quoted names
@example(names=_fixed("line\nbreak; Type: x", "tab\there"))  # control characters, pg_dump's header words
def test_every_legal_name_migrates_end_to_end(pg_pair, s3_client, bucket, names: Names) -> None:
    source, target = pg_pair
    try:
        _migrate(source, target, s3_client, names)
    finally:
        _drop_everything(source, target)

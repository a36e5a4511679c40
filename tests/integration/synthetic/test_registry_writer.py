"""The synthetic registry database and its writer, on the throwaway clusters of ``pg_pair``."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql

from bascule.synthetic import registry, writes_log
from bascule.synthetic.target_check import check_target
from bascule.synthetic.writer import Writer

pytestmark = pytest.mark.integration

SOURCE_DB = "synth_source"
COPY_DB = "synth_copy"
WRITER_DB = "synth_writer"
PATIENTS = 1500
SEED = 7


def _recreate(cluster, name: str) -> None:
    with closing(cluster.connect()) as admin, admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        cur.execute(f"CREATE DATABASE {name}")


def _drop(cluster, name: str) -> None:
    with closing(cluster.connect()) as admin, admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _table_digest(conn, table: str) -> str:
    key = sql.SQL(", ").join(sql.Identifier(c) for c in registry.PRIMARY_KEYS[table])
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT md5(string_agg(t::text, '|' ORDER BY {})) FROM {} t").format(key, registry.ident(table))
        )
        return cur.fetchone()[0]


@pytest.fixture(scope="module")
def populated(pg_pair) -> Iterator[tuple[dict[str, int], float]]:
    """The registry built with the same seed on the source and on the target cluster."""
    source, target = pg_pair
    counts: dict[str, int] = {}
    seconds = 0.0
    for cluster, name in ((source, SOURCE_DB), (target, COPY_DB)):
        _recreate(cluster, name)
        with closing(cluster.connect(name)) as conn:
            started = time.perf_counter()
            registry.create_schema(conn)
            counts = registry.populate(conn, PATIENTS, SEED)
            seconds = time.perf_counter() - started
    yield counts, seconds
    _drop(source, SOURCE_DB)
    _drop(target, COPY_DB)


def test_populate_is_deterministic_per_seed(pg_pair, populated) -> None:
    source, target = pg_pair
    counts, seconds = populated
    assert counts[registry.PATIENTS] == PATIENTS
    # ~3 stays and ~5 dispensations per patient (uniform 0..6 and 0..10).
    assert 2.6 * PATIENTS < counts[registry.STAYS] < 3.4 * PATIENTS
    assert 4.5 * PATIENTS < counts[registry.DISPENSATIONS] < 5.5 * PATIENTS
    assert 0.8 * PATIENTS < counts[registry.ENCOUNTERS] < 1.2 * PATIENTS  # uniform 0..2
    assert set(counts) == set(registry.TABLES) and len(registry.TABLES) == 4
    assert seconds < 10
    with closing(source.connect(SOURCE_DB)) as a, closing(target.connect(COPY_DB)) as b:
        for table in registry.TABLES:
            assert _table_digest(a, table) == _table_digest(b, table), table
        # Another seed, other rows; the same seed again, the same rows (truncate + restart).
        registry.populate(b, PATIENTS, SEED + 1)
        assert _table_digest(a, registry.PATIENTS) != _table_digest(b, registry.PATIENTS)
        registry.populate(b, PATIENTS, SEED)
        for table in registry.TABLES:
            assert _table_digest(a, table) == _table_digest(b, table), table


def test_schema_has_the_features_a_migration_must_carry(pg_pair, populated) -> None:
    source, _ = pg_pair
    with closing(source.connect(SOURCE_DB)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT conrelid::regclass::text, contype, conname FROM pg_constraint"
            " WHERE connamespace = 'registry'::regnamespace ORDER BY 1, 3"
        )
        constraints = {(t, kind, name) for t, kind, name in cur.fetchall()}
        assert ("registry.stays", "p", "stays_pkey") in constraints
        assert ("registry.stays", "f", "stays_patient_fk") in constraints
        assert ("registry.dispensations", "f", "dispensations_patient_fk") in constraints
        assert ("registry.patients", "c", "patients_sex_code") in constraints
        assert ("registry.patients", "u", "patients_pseudonym_key") in constraints
        cur.execute("SELECT count(*) FROM pg_indexes WHERE schemaname = 'registry'")
        assert cur.fetchone()[0] >= 8  # 3 PK + 1 unique + 4 secondary
        cur.execute("SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = 'registry' ORDER BY 1")
        sequences = dict(cur.fetchall())
        assert sequences["patients_patient_id_seq"] == PATIENTS  # the next identity follows the rows
        cur.execute("SELECT max(dispensation_id) FROM registry.dispensations")
        assert sequences["dispensations_dispensation_id_seq"] == cur.fetchone()[0]
        cur.execute("SELECT DISTINCT sex FROM registry.patients ORDER BY 1")
        assert [r[0] for r in cur.fetchall()] == ["1", "2", "9"]
        with pytest.raises(psycopg2.errors.CheckViolation):
            cur.execute(
                "INSERT INTO registry.patients (pseudonym, sex, birth_year, department) VALUES ('x', '3', 1980, '75')"
            )


@pytest.fixture
def writer_db(pg_pair, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A small registry with an application role; yields (role, password)."""
    source, _ = pg_pair
    _recreate(source, WRITER_DB)
    role = f"synth_app_{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(12)
    with closing(source.connect(WRITER_DB)) as conn:
        registry.create_schema(conn)
        registry.populate(conn, 300, SEED)
        registry.create_application_role(conn, role, password, WRITER_DB)
    yield role, password
    _drop(source, WRITER_DB)
    with closing(source.connect()) as admin, admin.cursor() as cur:
        cur.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_application_role_writes_rows_but_not_schema(pg_pair, writer_db) -> None:
    source, _ = pg_pair
    role, password = writer_db
    with closing(psycopg2.connect(source.dsn(WRITER_DB, user=role, password=password))) as conn:
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO registry.patients (pseudonym, sex, birth_year, department)"
                " VALUES ('00000000000000aa', '9', 1990, '2A') RETURNING patient_id"
            )
            assert cur.fetchone()[0] == 301  # the identity sequence is usable by the role
            conn.commit()
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute("CREATE TABLE registry.intruder (id int)")
            conn.rollback()
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(source.dsn(WRITER_DB, user=role, password="wrong"))


def test_writer_log_reduces_to_the_database_state(pg_pair, writer_db, tmp_path: Path) -> None:
    source, _ = pg_pair
    role, password = writer_db
    log = tmp_path / "writes.jsonl"
    writer = Writer(source.dsn(WRITER_DB, user=role, password=password), log, seed=3, interval=0.005)
    with writer:
        stats = writer.wait_for(lambda s: s.acknowledged >= 250, timeout=60)
    assert not writer.running
    stats = writer.stats()
    assert stats.failures == 0, stats.counts
    records = writes_log.read_log(log)
    acked = [r for r in records if r["status"] == writes_log.ACKNOWLEDGED]
    assert {(r["op"], r["table"]) for r in acked} >= {
        ("insert", registry.PATIENTS),
        ("update", registry.PATIENTS),
        ("insert", registry.DISPENSATIONS),
        ("update", registry.DISPENSATIONS),
        ("delete", registry.DISPENSATIONS),
        ("insert", registry.ENCOUNTERS),  # the PascalCase table of the second schema
        ("update", registry.ENCOUNTERS),
    }
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert password not in log.read_text() and password not in writer.stderr_path.read_text()

    expected = writes_log.expected_state(log)
    deleted = [k for k, v in expected.items() if v is None]
    present = [k for k, v in expected.items() if v is not None]
    assert deleted and present
    with closing(source.connect(WRITER_DB)) as conn:
        assert check_target(conn, log) == []
        with conn.cursor() as cur:
            # The reduction is the database's own state for every row the writer touched.
            for table, key in present[:50]:
                column = registry.PRIMARY_KEYS[table][0]
                cur.execute(
                    sql.SQL("SELECT * FROM {} WHERE {} = %s").format(registry.ident(table), sql.Identifier(column)),
                    (key,),
                )
                row = writes_log.row_values([d[0] for d in cur.description], cur.fetchone())
                assert row == expected[(table, key)]

            # A lost acknowledged insert, a lost update and a resurrected delete are each named.
            inserted = next(
                r
                for r in reversed(acked)
                if r["op"] == "insert"
                and r["table"] == registry.DISPENSATIONS
                and expected[(registry.DISPENSATIONS, r["key"])] is not None
            )
            cur.execute("DELETE FROM registry.dispensations WHERE dispensation_id = %s", (inserted["key"],))
            updated = next(
                k
                for k, v in expected.items()
                if k[0] == registry.PATIENTS
                and v is not None
                and any(r["op"] == "update" and r["key"] == k[1] for r in acked)
            )
            wrong = "2B" if expected[updated]["department"] != "2B" else "2A"
            cur.execute("UPDATE registry.patients SET department = %s WHERE patient_id = %s", (wrong, updated[1]))
            gone = next(k for k in deleted if k[0] == registry.DISPENSATIONS)
            cur.execute(
                "INSERT INTO registry.dispensations (dispensation_id, patient_id, atc_code, cip13, quantity, dispensed_on)"
                " VALUES (%s, 1, 'N02BE01', '3400930000001', 1, current_date)",
                (gone[1],),
            )
        problems = check_target(conn, log)
    assert len(problems) == 3, problems
    text = "\n".join(problems)
    assert (
        f"registry.dispensations dispensation_id={inserted['key']}: acknowledged insert (seq {inserted['seq']}" in text
    )
    assert "missing on target" in text
    assert f"registry.patients patient_id={updated[1]}: acknowledged update" in text
    assert f'department="{wrong}" (acknowledged "{expected[updated]["department"]}")' in text
    assert f"registry.dispensations dispensation_id={gone[1]}: acknowledged delete" in text
    assert "but the row is present" in text


def test_the_freeze_shows_in_the_log_and_the_writer_resumes(pg_pair, writer_db, tmp_path: Path) -> None:
    source, _ = pg_pair
    role, password = writer_db
    log = tmp_path / "writes.jsonl"
    writer = Writer(
        source.dsn(WRITER_DB, user=role, password=password), log, seed=5, interval=0.01, refused_interval=0.1
    )

    def set_read_only(on: bool) -> None:
        with closing(source.connect()) as admin, admin.cursor() as cur:
            value = "on" if on else "off"
            cur.execute(f'ALTER ROLE "{role}" SET default_transaction_read_only = {value}')
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))

    with writer:
        before = writer.wait_for(lambda s: s.acknowledged >= 30, timeout=60)
        set_read_only(True)
        frozen = writer.wait_for(lambda s: s.refused >= 5, timeout=60)
        time.sleep(0.5)
        still = writer.stats()
        set_read_only(False)
        writer.wait_for(lambda s: s.acknowledged >= still.acknowledged + 10, timeout=60)
    records = writes_log.read_log(log)
    assert before.acknowledged >= 30
    # While frozen nothing more is acknowledged; every attempt is refused by the server.
    frozen_window = [r for r in records if frozen.first_refused_at <= r["at"] <= still.last_refused_at]
    assert frozen_window and {r["status"] for r in frozen_window} <= {writes_log.REFUSED, writes_log.NOOP}
    refused = [r for r in records if r["status"] == writes_log.REFUSED]
    assert all("25006" in r["error"] and "read-only transaction" in r["error"] for r in refused)
    # The writer slows down while refused (refused_interval 0.1 s, where interval is 0.01 s).
    span = (
        datetime.fromisoformat(still.last_refused_at) - datetime.fromisoformat(frozen.first_refused_at)
    ).total_seconds()
    assert len(frozen_window) <= 3 + span / 0.1, (len(frozen_window), span)
    # ... and writes again once the role is writable (acknowledged records after the last refusal).
    assert any(r["status"] == writes_log.ACKNOWLEDGED and r["at"] > still.last_refused_at for r in records)
    assert writer.refused() == len(refused) and writer.acknowledged() > still.acknowledged
    with closing(source.connect(WRITER_DB)) as conn:
        assert check_target(conn, log) == []

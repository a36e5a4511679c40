"""The change stream between two real PostgreSQL clusters: the overlap replay's
convergence under concurrent writes, the write freeze, sequences, and teardown."""

from __future__ import annotations

import io
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import Any

import psycopg2
import pytest
from psycopg2 import errors as pg_errors

from bascule.exceptions import BasculeError
from bascule.postgres.catch_up import ReplicationBroken, flush_point, passed_lsn, replication_lag, wait_caught_up
from bascule.postgres.overlap import (
    REKEY_TRIGGER,
    UPSERT_TRIGGER,
    install_overlap_triggers,
    overlap_triggers_present,
    remove_overlap_triggers,
)
from bascule.postgres.replication import (
    create_slot,
    create_subscription,
    drop_replication,
    ensure_publication,
    mask_conninfo,
    set_replica_identity_full,
)
from bascule.postgres.sequences import sync_sequences
from bascule.postgres.write_freeze import (
    freeze_writes,
    frozen_roles,
    table_write_counters,
    unfreeze_writes,
    writes_since,
)

pytestmark = pytest.mark.integration

# Quoted on purpose: every statement must quote what it is given.
TABLE = "care.Stays"
TABLE_SQL = 'care."Stays"'
INITIAL_ROWS = 20_000


def _wait_for(condition: Callable[[], Any], timeout_s: float, what: str, poll_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(poll_s)


def _drop_database_everywhere(pg_pair, name: str) -> None:
    """Subscriptions before their database, slots before theirs (PostgreSQL refuses otherwise)."""
    source, target = pg_pair
    with closing(target.connect()) as admin, admin.cursor() as cur:
        cur.execute(
            "select s.subname from pg_subscription s join pg_database d on d.oid = s.subdbid where d.datname = %s",
            (name,),
        )
        subscriptions = [r[0] for r in cur.fetchall()]
    if subscriptions:
        with closing(target.connect(name)) as conn, conn.cursor() as cur:
            for sub in subscriptions:
                cur.execute(f'alter subscription "{sub}" disable')
                cur.execute(f'alter subscription "{sub}" set (slot_name = none)')
                cur.execute(f'drop subscription "{sub}"')
    with closing(source.connect()) as admin, admin.cursor() as cur:
        deadline = time.monotonic() + 15
        while True:
            cur.execute(
                "select pg_terminate_backend(active_pid) from pg_replication_slots "
                "where database = %s and active_pid is not null",
                (name,),
            )
            cur.execute(
                "select count(*) filter (where pg_drop_replication_slot(slot_name) is null) from pg_replication_slots "
                "where database = %s and not active",
                (name,),
            )
            cur.execute("select count(*) from pg_replication_slots where database = %s", (name,))
            if cur.fetchone()[0] == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    for cluster in (source, target):
        with closing(cluster.connect()) as admin, admin.cursor() as cur:
            cur.execute(f"drop database if exists {name} with (force)")


@pytest.fixture
def databases(pg_pair) -> Iterator[Callable[[str], str]]:
    """``make(name)``: a fresh, empty database ``name`` in both clusters, dropped afterwards."""
    created: list[str] = []

    def make(name: str) -> str:
        _drop_database_everywhere(pg_pair, name)
        for cluster in pg_pair:
            with closing(cluster.connect()) as admin, admin.cursor() as cur:
                cur.execute(f"create database {name}")
        created.append(name)
        return name

    yield make
    for name in created:
        _drop_database_everywhere(pg_pair, name)


def _create_stays(conn) -> None:
    with conn.cursor() as cur:
        cur.execute(
            """
            create schema care;
            create table care."Stays" (
                id bigserial primary key,
                patient int not null,
                "Ward Name" text not null,
                note text not null,
                payload text not null
            )
            """
        )


def _fill_stays(conn) -> None:
    # Every 1000th row carries ~8 kB of hex: stored out of line (TOAST), and the writer's
    # updates leave it alone, so the stream sends it as "unchanged".
    with conn.cursor() as cur:
        cur.execute(
            """
            insert into care."Stays" (patient, "Ward Name", note, payload)
            select i %% 997, 'ward ' || (i %% 13), 'init',
                   case when i %% 1000 = 0
                        then (select string_agg(md5(random()::text || i || g), '') from generate_series(1, 256) g)
                        else 'p' || i end
            from generate_series(1, %s) i
            """,
            (INITIAL_ROWS,),
        )


def _fingerprint(conn) -> tuple[int, str]:
    with conn.cursor() as cur:
        cur.execute(f"select count(*), md5(string_agg(t::text, ',' order by id)) from {TABLE_SQL} t")
        count, digest = cur.fetchone()
    return count, digest


class Writer(threading.Thread):
    """Inserts, updates and deletes on the source until stopped; records each acknowledged write."""

    def __init__(self, dsn: str, first_ids: range):
        super().__init__(daemon=True)
        self.dsn = dsn
        self.records: list[tuple[str, int, str]] = []
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self._live = list(first_ids)
        self._index = {id_: i for i, id_ in enumerate(self._live)}

    def _forget(self, id_: int) -> None:
        i = self._index.pop(id_)
        last = self._live.pop()
        if last != id_:
            self._live[i] = last
            self._index[last] = i

    def run(self) -> None:
        rng = random.Random(20_251_129)
        try:
            with closing(psycopg2.connect(self.dsn)) as conn:
                conn.autocommit = True
                with conn.cursor() as cur:
                    n = 0
                    while not self.stop_event.is_set():
                        n += 1
                        note = f"w{n}"
                        roll = rng.random()
                        if roll < 0.4:
                            cur.execute(
                                f'insert into {TABLE_SQL} (patient, "Ward Name", note, payload) '
                                "values (%s, %s, %s, %s) returning id",
                                (rng.randrange(997), f"ward {rng.randrange(13)}", note, f"new {n}"),
                            )
                            id_ = cur.fetchone()[0]
                            self._index[id_] = len(self._live)
                            self._live.append(id_)
                            self.records.append(("insert", id_, note))
                        elif roll < 0.8:
                            id_ = rng.choice(self._live)
                            cur.execute(
                                f'update {TABLE_SQL} set note = %s, "Ward Name" = %s where id = %s',
                                (note, f"moved {n}", id_),
                            )
                            assert cur.rowcount == 1
                            self.records.append(("update", id_, note))
                        else:
                            id_ = rng.choice(self._live)
                            cur.execute(f"delete from {TABLE_SQL} where id = %s", (id_,))
                            assert cur.rowcount == 1
                            self._forget(id_)
                            self.records.append(("delete", id_, note))
                        time.sleep(0.002)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def stop(self) -> None:
        self.stop_event.set()
        self.join(30)
        assert not self.is_alive()
        assert self.error is None, f"writer failed: {self.error!r}"

    def expected_notes(self) -> dict[int, str]:
        """The table's (id -> note) as the acknowledged writes leave it."""
        notes = {i: "init" for i in range(1, INITIAL_ROWS + 1)}
        for op, id_, note in self.records:
            if op == "delete":
                del notes[id_]
            else:
                notes[id_] = note
        return notes


def _copy_under_snapshot(source_conn, target_conn) -> int:
    return _copy_table_under_snapshot(source_conn, target_conn, TABLE_SQL)


def _copy_table_under_snapshot(source_conn, target_conn, table_sql: str) -> int:
    """What the copy phase does: one REPEATABLE READ snapshot of the source into the target."""
    source_conn.autocommit = False
    source_conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
    buffer = io.BytesIO()
    with source_conn.cursor() as cur:
        cur.copy_expert(f"copy {table_sql} to stdout", buffer)
    source_conn.commit()
    source_conn.autocommit = True
    buffer.seek(0)
    with target_conn.cursor() as cur:
        cur.copy_expert(f"copy {table_sql} from stdin", buffer)
        return cur.rowcount


def _start_live_migration(pg_pair, db: str, name: str, *, overlap_triggers: bool) -> dict[str, Any]:
    """Slot, then a later copy, then (triggers,) publication and subscription, all while the
    writer runs. Returns the connections, the writer and the points in its history."""
    source, target = pg_pair
    src, tgt = source.connect(db), target.connect(db)
    _create_stays(src)
    _create_stays(tgt)
    _fill_stays(src)
    writer = Writer(source.dsn(db), range(1, INITIAL_ROWS + 1))
    writer.start()
    _wait_for(lambda: len(writer.records) >= 100, 30, "the writer to start")
    ensure_publication(src, name, [TABLE])
    create_slot(src, name)
    at_slot = len(writer.records)
    _wait_for(lambda: len(writer.records) >= at_slot + 200, 60, "writes after the slot")
    before_copy = len(writer.records)
    copied = _copy_under_snapshot(src, tgt)
    copy_lsn = flush_point(src)
    _wait_for(lambda: len(writer.records) >= before_copy + 200, 60, "writes after the copy")
    if overlap_triggers:
        install_overlap_triggers(tgt, {TABLE: ["id"]})
    ensure_publication(src, name, [TABLE])  # as the start_replication retry would: no change
    create_subscription(tgt, name, source.dsn(db), name, name)
    subscribed = len(writer.records)
    return {
        "src": src,
        "tgt": tgt,
        "writer": writer,
        "copied": copied,
        "copy_lsn": copy_lsn,
        "overlap": writer.records[at_slot:before_copy],
        "subscribed": subscribed,
    }


def test_overlap_replay_converges_under_concurrent_writes(pg_pair, databases) -> None:
    db = databases("pg_replication_conv")
    name = "pgrepl_conv"
    live = _start_live_migration(pg_pair, db, name, overlap_triggers=True)
    src, tgt, writer = live["src"], live["tgt"], live["writer"]
    with closing(src), closing(tgt):
        # Writes committed after the slot and before the copy's snapshot are in both: the overlap.
        assert {op for op, _, _ in live["overlap"]} == {"insert", "update", "delete"}
        assert overlap_triggers_present(tgt, [TABLE]) == {
            f"{TABLE}:{UPSERT_TRIGGER}": "R",
            f"{TABLE}:{REKEY_TRIGGER}": "R",
        }
        # The stream also carries writes made while the subscription runs.
        streaming_lags = []
        while len(writer.records) < live["subscribed"] + 300:
            streaming_lags.append(replication_lag(src, tgt, name))
            time.sleep(0.3)
        writer.stop()
        assert streaming_lags and all(lag.subscription_state == "streaming" for lag in streaming_lags)

        end = flush_point(src)
        waited = wait_caught_up(src, name, end, 120, 0.2)
        lag = replication_lag(src, tgt, name)
        assert lag.subscription_state == "streaming"
        assert passed_lsn(src, name, live["copy_lsn"])
        assert passed_lsn(src, name, end)

        source_print = _fingerprint(src)
        assert _fingerprint(tgt) == source_print
        with tgt.cursor() as cur:
            cur.execute(f"select id, note from {TABLE_SQL}")
            assert dict(cur.fetchall()) == writer.expected_notes()
        print(
            f"\nconvergence: {INITIAL_ROWS} rows, {len(writer.records)} acknowledged writes "
            f"({len(live['overlap'])} in the overlap), copy of {live['copied']} rows, "
            f"caught up {waited:.2f} s after the writer stopped; lag then {lag}; while streaming: "
            + ", ".join(f"{x.lag_bytes} B/{x.lag_seconds} s" for x in streaming_lags)
        )

        # Strict apply once the overlap is replayed: new changes still flow.
        remove_overlap_triggers(tgt, {TABLE: ["id"]})
        assert overlap_triggers_present(tgt, [TABLE]) == {}
        with tgt.cursor() as cur:
            cur.execute("select count(*) from pg_namespace where nspname = 'bascule'")
            assert cur.fetchone()[0] == 0
        with src.cursor() as cur:
            cur.execute(f"update {TABLE_SQL} set note = 'after' where id in (select id from {TABLE_SQL} limit 5)")
            cur.execute(f"delete from {TABLE_SQL} where id in (select id from {TABLE_SQL} order by id desc limit 3)")
            cur.execute(f"insert into {TABLE_SQL} (patient, \"Ward Name\", note, payload) values (1, 'w', 'x', 'y')")
        wait_caught_up(src, name, flush_point(src), 60, 0.2)
        assert _fingerprint(tgt) == _fingerprint(src) != source_print


def test_without_overlap_triggers_the_apply_breaks_on_the_overlap(pg_pair, databases) -> None:
    db = databases("pg_replication_notrig")
    name = "pgrepl_notrig"
    live = _start_live_migration(pg_pair, db, name, overlap_triggers=False)
    src, tgt, writer = live["src"], live["tgt"], live["writer"]
    with closing(src), closing(tgt):
        writer.stop()
        overlap_inserts = [id_ for op, id_, _ in live["overlap"] if op == "insert"]
        with tgt.cursor() as cur:
            cur.execute(f"select count(*) from {TABLE_SQL} where id = any(%s)", (overlap_inserts,))
            assert cur.fetchone()[0] > 0, "the copy must hold rows the stream inserts again"

        def broken() -> str | None:
            try:
                replication_lag(src, tgt, name)
            except ReplicationBroken as exc:
                return str(exc)
            return None

        started = time.monotonic()
        message = _wait_for(broken, 90, "the apply worker to fail on a duplicate key", poll_s=0.5)
        print(f"\nbroken stream detected {time.monotonic() - started:.1f} s after the writer stopped: {message}")
        assert "target server's log" in message
        assert "keeps failing" in message or "no running apply worker" in message
        assert not passed_lsn(src, name, flush_point(src))
        assert _fingerprint(tgt) != _fingerprint(src)
        with tgt.cursor() as cur:
            cur.execute("select apply_error_count from pg_stat_subscription_stats where subname = %s", (name,))
            assert cur.fetchone()[0] >= 1


def test_overlap_replay_handles_keys_moved_and_reused_inside_the_overlap(pg_pair, databases) -> None:
    source, target = pg_pair
    db = databases("pg_replication_rekey")
    name = "pgrepl_rekey"
    table = "care.notes"
    with closing(source.connect(db)) as src, closing(target.connect(db)) as tgt:
        for conn in (src, tgt):
            with conn.cursor() as cur:
                cur.execute("create schema care; create table care.notes (id int primary key, body text not null)")
        with src.cursor() as cur:
            cur.execute("insert into care.notes values (10, 'before the slot'), (20, 'before the slot')")
        ensure_publication(src, name, [table])
        create_slot(src, name)
        with src.cursor() as cur:  # the overlap: in the stream and, as their end state, in the copy
            cur.execute("insert into care.notes values (1, 'inserted')")
            cur.execute("update care.notes set id = 2, body = 'moved' where id = 1")
            cur.execute("update care.notes set body = 'updated' where id = 10")
            cur.execute("delete from care.notes where id = 20")
            cur.execute("insert into care.notes values (20, 'key reused')")
        _copy_table_under_snapshot(src, tgt, "care.notes")
        with src.cursor() as cur:  # after the copy: the stream alone carries these
            cur.execute("update care.notes set id = 3 where id = 2")
            cur.execute("insert into care.notes values (4, 'after the copy')")
        install_overlap_triggers(tgt, {table: ["id"]})

        # The triggers act for the apply worker only: a local duplicate still fails.
        with pytest.raises(pg_errors.UniqueViolation), tgt.cursor() as cur:
            cur.execute("insert into care.notes values (10, 'local duplicate')")

        create_subscription(tgt, name, source.dsn(db), name, name)
        wait_caught_up(src, name, flush_point(src), 60, 0.2)
        replication_lag(src, tgt, name)  # healthy

        def rows(conn) -> list[tuple[int, str]]:
            with conn.cursor() as cur:
                cur.execute("select id, body from care.notes order by id")
                return cur.fetchall()

        assert rows(tgt) == rows(src) == [(3, "moved"), (4, "after the copy"), (10, "updated"), (20, "key reused")]


def test_freeze_ends_sessions_and_refuses_writes_until_unfrozen(pg_pair, databases) -> None:
    source, _ = pg_pair
    db = databases("pg_replication_freeze")
    role, password = "repl_app", secrets.token_urlsafe(12)
    try:
        with closing(source.connect(db)) as admin, admin.cursor() as cur:
            cur.execute(f"create role {role} login password %s", (password,))
            cur.execute(
                f"create table public.visits (id int primary key); grant insert, select on public.visits to {role}"
            )

        def app_session():
            conn = psycopg2.connect(source.dsn(db, user=role, password=password))
            conn.autocommit = True
            return conn

        before = app_session()
        with before.cursor() as cur:
            cur.execute("insert into public.visits values (1)")

        with closing(source.connect(db)) as admin:
            assert frozen_roles(admin, db, [role]) == []
            report = freeze_writes(admin, db, [role])
            assert report.roles == [role] and report.terminated_sessions == 1
            assert frozen_roles(admin, db, [role]) == [role]

            with pytest.raises(psycopg2.OperationalError):
                with before.cursor() as cur:
                    cur.execute("insert into public.visits values (2)")
            before.close()

            with closing(app_session()) as during, during.cursor() as cur:
                with pytest.raises(pg_errors.ReadOnlySqlTransaction, match="cannot execute INSERT in a read-only"):
                    cur.execute("insert into public.visits values (3)")
                cur.execute("select count(*) from public.visits")
                assert cur.fetchone()[0] == 1  # reads still work
                # Idempotent: freezing again keeps the role frozen and ends this session too.
                again = freeze_writes(admin, db, [role])
                assert again.terminated_sessions == 1
            with admin.cursor() as cur:
                cur.execute("insert into public.visits values (4)")  # other roles are not frozen

            unfrozen = unfreeze_writes(admin, db, [role])
            assert unfrozen.unfrozen_roles == [role]
            assert frozen_roles(admin, db, [role]) == []
            with closing(app_session()) as after, after.cursor() as cur:
                cur.execute("insert into public.visits values (5)")
                # A role that is not frozen: unfreezing again touches no session.
                assert unfreeze_writes(admin, db, [role]).terminated_sessions == 0
                cur.execute("select array_agg(id order by id) from public.visits")
                assert cur.fetchone()[0] == [1, 4, 5]
    finally:
        _drop_database_everywhere(pg_pair, db)
        with closing(source.connect()) as admin, admin.cursor() as cur:
            cur.execute(f"drop role if exists {role}")


def test_sync_sequences_carries_the_next_value_and_never_goes_back(pg_pair, databases) -> None:
    source, target = pg_pair
    db = databases("pg_replication_seq")
    schema = """
        create schema care;
        create table care."Stays" (id bigserial primary key, note text);
        create sequence care.unused_seq start 40;
        create sequence care.countdown_seq increment -5 start 1000 maxvalue 1000;
    """
    sequences = ["care.Stays_id_seq", "care.unused_seq", "care.countdown_seq"]
    with closing(source.connect(db)) as src, closing(target.connect(db)) as tgt:
        for conn in (src, tgt):
            with conn.cursor() as cur:
                cur.execute(schema)
        with src.cursor() as cur:
            cur.execute('insert into care."Stays" (note) select g::text from generate_series(1, 137) g')
            cur.execute("select nextval('care.countdown_seq'), nextval('care.countdown_seq')")
            cur.execute('select max(id) from care."Stays"')
            max_source_id = cur.fetchone()[0]

        first = sync_sequences(src, tgt, sequences)
        second = sync_sequences(src, tgt, sequences)  # idempotent
        assert first == second
        assert first[0] == {
            "sequence": "care.Stays_id_seq",
            "source_last_value": 137,
            "source_is_called": True,
            "target_set_to": 137,
            "next_value": 138,
            "target_was_ahead": False,
        }

        def next_values(conn) -> list[int]:
            with conn.cursor() as cur:
                cur.execute(
                    "select nextval('care.\"Stays_id_seq\"'), nextval('care.unused_seq'), nextval('care.countdown_seq')"
                )
                return list(cur.fetchone())

        target_next = next_values(tgt)
        assert target_next[0] > max_source_id
        assert target_next == next_values(src) == [138, 40, 990]

        # The target took writes since (a cutover retried after the switch): not moved back.
        with tgt.cursor() as cur:
            cur.execute("select setval('care.\"Stays_id_seq\"', 5000)")
        third = sync_sequences(src, tgt, sequences)
        assert third[0]["target_was_ahead"] is True and third[0]["next_value"] == 5001
        assert next_values(tgt)[0] == 5001


def test_drop_replication_leaves_nothing_and_target_writes_are_detected(pg_pair, databases) -> None:
    source, target = pg_pair
    db = databases("pg_replication_drop")
    name = "pgrepl_drop"
    tables = ["care.notes", "care.audit_log"]
    schema = """
        create schema care;
        create table care.notes (id int primary key, body text);
        create table care.audit_log (at int, what text);
    """
    with closing(source.connect(db)) as src, closing(target.connect(db)) as tgt:
        for conn in (src, tgt):
            with conn.cursor() as cur:
                cur.execute(schema)
        assert set_replica_identity_full(src, ["care.audit_log"]) == ["care.audit_log"]
        assert set_replica_identity_full(src, ["care.audit_log"]) == []
        ensure_publication(src, name, tables)
        create_slot(src, name)
        overlap = install_overlap_triggers(tgt, {"care.notes": ["id"], "care.audit_log": []})
        assert overlap.protected == ["care.notes"] and overlap.unprotected == ["care.audit_log"]
        create_subscription(tgt, name, source.dsn(db), name, name)
        with src.cursor() as cur:
            cur.execute(
                "insert into care.notes values (1, 'a'), (2, 'b'); insert into care.audit_log values (1, 'x'), (2, 'y')"
            )
            cur.execute("update care.audit_log set what = 'z' where at = 2; delete from care.notes where id = 1")
        wait_caught_up(src, name, flush_point(src), 60, 0.2)
        with tgt.cursor() as cur:
            cur.execute("select array_agg(id) from care.notes")
            assert cur.fetchone()[0] == [2]
            cur.execute("select array_agg(what order by at) from care.audit_log")
            assert cur.fetchone()[0] == ["x", "z"]  # no primary key: FULL identity finds the row
        _wait_for(lambda: _slot_active(src, name), 30, "the walsender to hold the slot")

        dropped = drop_replication(src, tgt, name)
        assert dropped == {"subscription": True, "slot": True, "publication": True}
        assert drop_replication(src, tgt, name) == {"subscription": False, "slot": False, "publication": False}
        with src.cursor() as cur:
            cur.execute("select count(*) from pg_replication_slots where slot_name = %s", (name,))
            assert cur.fetchone()[0] == 0
            cur.execute("select count(*) from pg_publication where pubname = %s", (name,))
            assert cur.fetchone()[0] == 0
        with tgt.cursor() as cur:
            cur.execute("select count(*) from pg_subscription where subname = %s", (name,))
            assert cur.fetchone()[0] == 0
        with pytest.raises(ReplicationBroken, match="does not exist"):
            replication_lag(src, tgt, name)
        remove_overlap_triggers(tgt, {"care.notes": ["id"]})

        # After the cutover: a baseline, then an application writes on the target.
        baseline = table_write_counters(tgt, tables)
        assert writes_since(tgt, baseline) == {}
        with closing(target.connect(db)) as app, app.cursor() as cur:
            cur.execute("insert into care.notes values (10, 'written on Scaleway')")
            cur.execute("update care.notes set body = 'again' where id = 10")
        moved = _wait_for(lambda: writes_since(tgt, baseline), 20, "the target's write counters", poll_s=0.25)
        assert moved == {"care.notes": 2}
        with pytest.raises(BasculeError, match="no such table"):
            table_write_counters(tgt, ["care.nowhere"])


def _slot_active(conn, slot: str) -> bool:
    with conn.cursor() as cur:
        cur.execute("select active from pg_replication_slots where slot_name = %s", (slot,))
        row = cur.fetchone()
    return bool(row and row[0])


def test_setup_is_idempotent_and_keeps_the_password_out_of_errors(pg_pair, databases) -> None:
    source, target = pg_pair
    db = databases("pg_replication_setup")
    name = "pgrepl_setup"
    with closing(source.connect(db)) as src, closing(target.connect(db)) as tgt:
        for conn in (src, tgt):
            with conn.cursor() as cur:
                cur.execute("create table public.a (id int primary key); create table public.b (id int primary key)")
        with pytest.raises(BasculeError, match="does not exist on the source yet"):
            create_slot(src, name)

        def published() -> set[str]:
            with src.cursor() as cur:
                cur.execute(
                    "select schemaname || '.' || tablename from pg_publication_tables where pubname = %s", (name,)
                )
                return {r[0] for r in cur.fetchall()}

        ensure_publication(src, name, ["public.a"])
        ensure_publication(src, name, ["public.a", "public.b"])
        assert published() == {"public.a", "public.b"}
        ensure_publication(src, name, ["public.b"])
        assert published() == {"public.b"}

        lsn = create_slot(src, name)
        assert create_slot(src, name) == lsn  # nothing consumed it yet
        ensure_publication(src, name, ["public.b"])  # unchanged: fine once the slot exists
        with pytest.raises(BasculeError, match="could not be decoded for public.a"):
            ensure_publication(src, name, ["public.a", "public.b"])
        assert published() == {"public.b"}

        install_overlap_triggers(tgt, {"public.b": ["id"]})
        install_overlap_triggers(tgt, {"public.b": ["id"]})
        assert len(overlap_triggers_present(tgt, ["public.b"])) == 2

        wrong = source.dsn(db, password="not-the-Secret-42")
        with pytest.raises(BasculeError) as refused:
            create_subscription(tgt, name, wrong, name, name)
        assert "not-the-Secret-42" not in str(refused.value)
        assert "password authentication failed" in str(refused.value)
        assert refused.value.__cause__ is None and refused.value.__suppress_context__

        create_subscription(tgt, name, source.dsn(db), name, name)
        with tgt.cursor() as cur:
            cur.execute(f"alter subscription {name} disable")
        create_subscription(tgt, name, source.dsn(db), name, name)  # exists: enabled again
        with tgt.cursor() as cur:
            cur.execute("select subenabled from pg_subscription where subname = %s", (name,))
            assert cur.fetchone()[0] is True
        with src.cursor() as cur:
            cur.execute("insert into public.b values (7)")
        wait_caught_up(src, name, flush_point(src), 60, 0.2)
        with tgt.cursor() as cur:
            cur.execute("select array_agg(id) from public.b")
            assert cur.fetchone()[0] == [7]

        with pytest.raises(BasculeError, match="already exists on the target with slot"):
            create_subscription(tgt, name, source.dsn(db), name, "another_slot")
        drop_replication(src, tgt, name)

    assert mask_conninfo("host=h password='a b\\'c' port=1") == "host=h password=******** port=1"
    assert mask_conninfo("postgresql://u:s3cret@h:5432/db") == "postgresql://u:********@h:5432/db"
    assert mask_conninfo("failed for s3cret", "host=h password=s3cret") == "failed for ********"

"""The change stream of a postgres workload: logical replication from the Azure source to
the Scaleway target, the overlap triggers that join it to the bulk copy, the write
freeze of a cutover, and the clean-up.

Every function takes psycopg2 connections and plain values. Functions that change
something require an autocommit connection: each statement then commits on its own,
and a function that needs several statements to land together opens its own
transaction. Tables are qualified names ``"schema.table"`` (unquoted, as the catalog
spells them).

Order: publication (with every table) -> slot -> copies -> overlap triggers ->
subscription. pgoutput decodes each change with the catalog as it was when the change
was written, so a publication younger than the slot breaks the stream, and a table
added to it later misses its earlier changes; ``create_slot`` and
``ensure_publication`` refuse both.

Overlap: the slot is created before any table's copy snapshot, so changes committed
between the slot's start and a table's copy are both in the copy and in the stream.
Replaying them onto the copied rows must not fail, and must converge:

- INSERT of a key the copy already has: the ``bascule_overlap_upsert`` trigger turns it
  into an UPDATE of that row to the inserted values (later changes in the stream then
  bring the row to its final state);
- UPDATE or DELETE of a row the copy no longer has: the apply worker already skips it;
- UPDATE that moves a row to a key the copy already holds (the row inserted inside the
  overlap and re-keyed before the copy): the ``bascule_overlap_rekey`` trigger deletes
  the copied row first. That row is this same row's later state, which the rest of the
  stream rebuilds.

The triggers are ``ENABLE REPLICA``: they fire in sessions with
``session_replication_role = replica``, which is exactly the apply worker, and never
for a local write (``ENABLE ALWAYS`` would also fire for an operator's insert or a
re-run copy, silently turning a duplicate key into an update, or a key change into
a delete).

Known limits of the overlap replay:

- Tables without a primary key (``REPLICA IDENTITY FULL``) get no trigger: a replayed
  INSERT of a row the copy has adds a duplicate. Their overlap must be empty: no
  writes to them between the slot's creation and their copy (copy them first).
- A non-primary-key UNIQUE constraint on the target can conflict during the overlap
  when a value moves from one row to another inside it; the apply then stops
  (``ReplicationBroken``). Creating such constraints after the triggers are removed
  avoids it.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import psycopg2
from psycopg2 import errors as pg_errors
from psycopg2 import sql

from bascule.exceptions import BasculeError

OVERLAP_SCHEMA = "bascule"
UPSERT_TRIGGER = "bascule_overlap_upsert"
REKEY_TRIGGER = "bascule_overlap_rekey"
PUBLISHED_OPERATIONS = "insert, update, delete, truncate"

_TARGET_LOG_HINT = (
    "the reason is in the target server's log (lines from the 'logical replication' worker, "
    "e.g. 'duplicate key value violates unique constraint')"
)


class ReplicationBroken(BasculeError):
    """The change stream stopped: slot or subscription gone, or the apply worker keeps failing.

    Waiting cannot help; an engineer must read the target's log and repair, or start a new run.
    """


class CatchUpTimeout(BasculeError):
    """The replica did not reach the wanted source position in time; the stream may still be healthy."""


# -- names and connections ---------------------------------------------------------------------


def split_qualified(name: str) -> tuple[str, str]:
    """``"schema.table"`` -> ``("schema", "table")``; refuses anything else."""
    parts = name.split(".")
    if len(parts) != 2 or not all(parts):
        raise BasculeError(f"'{name}' is not a schema-qualified name such as public.patients")
    return parts[0], parts[1]


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(*split_qualified(name))


def _require_autocommit(conn: Any, what: str) -> None:
    if not conn.autocommit:
        raise BasculeError(f"{what} needs an autocommit connection (set conn.autocommit = True)")


@contextmanager
def _transaction(conn: Any) -> Iterator[Any]:
    """One explicit transaction on an autocommit connection: all of it lands, or none."""
    with conn.cursor() as cur:
        cur.execute("begin")
        try:
            yield cur
        except BaseException:
            cur.execute("rollback")
            raise
        cur.execute("commit")


def _one(conn: Any, query: Any, params: Sequence[Any] = ()) -> Any:
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchone()


def _execute(conn: Any, query: Any, params: Sequence[Any] = ()) -> None:
    with conn.cursor() as cur:
        cur.execute(query, params)


def _server_version(conn: Any) -> int:
    return int(conn.server_version)


_PASSWORD_KEYWORD = re.compile(r"(password\s*=\s*)('(?:\\.|[^'\\])*'|[^\s&]+)", re.IGNORECASE)
_URI_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]+:)([^@\s]+)(@)", re.IGNORECASE)
MASK = "********"


def mask_conninfo(text: str, conninfo: str | None = None) -> str:
    """``text`` with every password in it replaced by ``********`` (keyword form, URI form,
    and the literal password of ``conninfo`` wherever it appears)."""
    masked = _PASSWORD_KEYWORD.sub(lambda m: m.group(1) + MASK, text)
    masked = _URI_PASSWORD.sub(lambda m: m.group(1) + MASK + m.group(3), masked)
    if conninfo:
        try:
            secret = psycopg2.extensions.parse_dsn(conninfo).get("password")
        except psycopg2.Error:
            secret = None
        if secret:
            masked = masked.replace(secret, MASK)
    return masked


# -- source: slot, publication, replica identity -------------------------------------------------


def create_slot(source_conn: Any, slot: str, *, publication: str | None = None) -> str:
    """Create the logical slot ``slot`` (pgoutput) in the connection's database; return its LSN.

    ``publication`` (default: the slot's own name, as Bascule names them) must already
    exist with every table: pgoutput reads the publication as it was when each change
    was written, so changes older than the publication fail to decode ("publication
    does not exist") and tables added later miss their earlier changes.

    Idempotent: an existing slot is kept and its confirmed (else restart) LSN returned.
    Creating a slot waits until every transaction running on the source has ended, so a
    session idle in transaction holds it up.
    """
    _require_autocommit(source_conn, "create_slot")
    existing = _existing_slot_lsn(source_conn, slot)
    if existing is not None:
        return existing
    publication = slot if publication is None else publication
    if _one(source_conn, "select 1 from pg_publication where pubname = %s", (publication,)) is None:
        raise BasculeError(
            f"create_slot '{slot}': publication '{publication}' does not exist on the source yet. Create it first "
            "(ensure_publication): the change stream can only be decoded with a publication older than the slot"
        )
    try:
        row = _one(source_conn, "select lsn::text from pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    except pg_errors.DuplicateObject:
        existing = _existing_slot_lsn(source_conn, slot)  # created concurrently by a retry
        if existing is None:
            raise
        return existing
    return str(row[0])


def _existing_slot_lsn(source_conn: Any, slot: str) -> str | None:
    row = _one(
        source_conn,
        """
        select slot_type, plugin, database, current_database(),
               coalesce(confirmed_flush_lsn, restart_lsn)::text
        from pg_replication_slots where slot_name = %s
        """,
        (slot,),
    )
    if row is None:
        return None
    slot_type, plugin, database, current, lsn = row
    if slot_type != "logical" or plugin != "pgoutput" or database != current:
        raise BasculeError(
            f"replication slot '{slot}' already exists on the source but is not a pgoutput logical slot of "
            f"database '{current}' (type {slot_type}, plugin {plugin}, database {database}); "
            "it belongs to something else: choose another workload id or drop it deliberately"
        )
    return str(lsn)


def ensure_publication(source_conn: Any, name: str, tables: list[str], *, slot: str | None = None) -> None:
    """Publication ``name`` publishes exactly ``tables`` (all operations). Idempotent.

    Call it before ``create_slot``. Once slot ``slot`` (default: ``name``) exists, adding
    a table is refused: the stream would miss that table's changes from before the
    ALTER (see ``create_slot``); drop the replication and start over instead.
    """
    _require_autocommit(source_conn, "ensure_publication")
    if not tables:
        raise BasculeError(f"publication '{name}': no tables to publish")
    slot = name if slot is None else slot
    slot_exists = _one(source_conn, "select 1 from pg_replication_slots where slot_name = %s", (slot,)) is not None
    wanted = {split_qualified(t) for t in tables}
    table_list = sql.SQL(", ").join(_ident(t) for t in tables)
    row = _one(
        source_conn,
        """
        select puballtables, pubinsert and pubupdate and pubdelete and pubtruncate
        from pg_publication where pubname = %s
        """,
        (name,),
    )
    late = (
        f"publication '{name}': slot '{slot}' already exists, so changes made before this call could not be "
        "decoded for {what}. Drop the replication (drop_replication) and create the publication before the slot"
    )
    if row is None:
        if slot_exists:
            raise BasculeError(late.format(what="any table"))
        _execute(
            source_conn,
            sql.SQL("create publication {} for table {} with (publish = {})").format(
                sql.Identifier(name), table_list, sql.Literal(PUBLISHED_OPERATIONS)
            ),
        )
        return
    all_tables, all_operations = row
    if all_tables:
        raise BasculeError(
            f"publication '{name}' exists on the source FOR ALL TABLES: it is not Bascule's; drop or rename it"
        )
    with source_conn.cursor() as cur:
        cur.execute("select schemaname, tablename from pg_publication_tables where pubname = %s", (name,))
        published = {(s, t) for s, t in cur.fetchall()}
        added = sorted(f"{s}.{t}" for s, t in wanted - published)
        if added and slot_exists:
            raise BasculeError(late.format(what=", ".join(added)))
        if published != wanted:
            cur.execute(sql.SQL("alter publication {} set table {}").format(sql.Identifier(name), table_list))
        if not all_operations:
            cur.execute(
                sql.SQL("alter publication {} set (publish = {})").format(
                    sql.Identifier(name), sql.Literal(PUBLISHED_OPERATIONS)
                )
            )


def set_replica_identity_full(source_conn: Any, tables: list[str]) -> list[str]:
    """``REPLICA IDENTITY FULL`` on tables without a primary key; returns those changed.

    Tables already FULL are left alone (the ALTER takes a lock strong enough to queue
    behind the application's queries).
    """
    _require_autocommit(source_conn, "set_replica_identity_full")
    changed = []
    for table in tables:
        schema, name = split_qualified(table)
        row = _one(
            source_conn,
            """
            select c.relreplident from pg_class c join pg_namespace n on n.oid = c.relnamespace
            where n.nspname = %s and c.relname = %s and c.relkind in ('r', 'p')
            """,
            (schema, name),
        )
        if row is None:
            raise BasculeError(f"set_replica_identity_full: table {table} does not exist on the source")
        if row[0] != "f":
            _execute(source_conn, sql.SQL("alter table {} replica identity full").format(_ident(table)))
            changed.append(table)
    return changed


# -- target: overlap triggers ----------------------------------------------------------------------


@dataclass(frozen=True)
class OverlapTriggers:
    """Tables whose overlap replay is protected, and tables left without a trigger
    (no primary key: their overlap must be empty, see the module docstring)."""

    protected: list[str]
    unprotected: list[str]


def overlap_function_name(table: str) -> str:
    """The trigger function of ``table`` in the ``bascule`` schema (unique, <= 63 chars)."""
    digest = hashlib.sha256(table.encode()).hexdigest()[:10]
    readable = re.sub(r"[^a-z0-9_]", "_", split_qualified(table)[1].lower())[:40]
    return f"overlap_{readable}_{digest}"


def _columns(conn: Any, table: str) -> list[tuple[str, str, str]]:
    schema, name = split_qualified(table)
    with conn.cursor() as cur:
        cur.execute(
            """
            select a.attname, a.attidentity, a.attgenerated
            from pg_attribute a
            join pg_class c on c.oid = a.attrelid
            join pg_namespace n on n.oid = c.relnamespace
            where n.nspname = %s and c.relname = %s and a.attnum > 0 and not a.attisdropped
            order by a.attnum
            """,
            (schema, name),
        )
        return [(str(r[0]), str(r[1]), str(r[2])) for r in cur.fetchall()]


def _overlap_function_body(table: str, key: list[str], columns: list[tuple[str, str, str]]) -> sql.Composed:
    row = sql.Identifier("bascule_row")
    target = _ident(table)
    key_matches = sql.SQL(" and ").join(
        sql.SQL("{}.{} = NEW.{}").format(row, sql.Identifier(k), sql.Identifier(k)) for k in key
    )
    # Key columns are equal by the WHERE; generated columns are computed by the target;
    # GENERATED ALWAYS identity columns refuse an explicit value in an UPDATE.
    settable = [name for name, identity, generated in columns if name not in key and not generated and identity != "a"]
    if settable:
        upsert = sql.SQL("update {} as {} set {} where {};").format(
            target,
            row,
            sql.SQL(", ").join(sql.SQL("{} = NEW.{}").format(sql.Identifier(c), sql.Identifier(c)) for c in settable),
            key_matches,
        )
    else:
        upsert = sql.SQL("perform 1 from {} as {} where {};").format(target, row, key_matches)
    return sql.SQL(
        """
begin
  if TG_OP = 'INSERT' then
    {upsert}
    if found then
      return null;
    end if;
    return NEW;
  end if;
  delete from {target} as {row} where {key_matches};
  return NEW;
end
"""
    ).format(upsert=upsert, target=target, row=row, key_matches=key_matches)


def install_overlap_triggers(target_conn: Any, tables: dict[str, list[str]]) -> OverlapTriggers:
    """Install the overlap triggers on every table with a primary key. Idempotent, atomic.

    ``tables`` maps each table to its primary-key columns (empty: no primary key, no trigger).
    """
    _require_autocommit(target_conn, "install_overlap_triggers")
    protected, unprotected = [], []
    with _transaction(target_conn) as cur:
        cur.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(OVERLAP_SCHEMA)))
        for table, key in tables.items():
            if not key:
                unprotected.append(table)
                continue
            columns = _columns(target_conn, table)
            if not columns:
                raise BasculeError(f"install_overlap_triggers: table {table} does not exist on the target")
            missing = sorted(set(key) - {c[0] for c in columns})
            if missing:
                raise BasculeError(
                    f"install_overlap_triggers: primary-key column(s) {missing} of {table} do not exist on the target"
                )
            function = sql.Identifier(OVERLAP_SCHEMA, overlap_function_name(table))
            body = _overlap_function_body(table, key, columns).as_string(target_conn)
            cur.execute(
                sql.SQL(
                    "create or replace function {}() returns trigger language plpgsql "
                    "set search_path = pg_catalog, pg_temp as {}"
                ).format(function, sql.Literal(body))
            )
            old_key = sql.SQL(", ").join(sql.SQL("OLD.{}").format(sql.Identifier(k)) for k in key)
            new_key = sql.SQL(", ").join(sql.SQL("NEW.{}").format(sql.Identifier(k)) for k in key)
            triggers = {
                UPSERT_TRIGGER: sql.SQL("before insert on {} for each row").format(_ident(table)),
                REKEY_TRIGGER: sql.SQL(
                    "before update on {} for each row when (row({}) is distinct from row({}))"
                ).format(_ident(table), old_key, new_key),
            }
            for trigger, when in triggers.items():
                cur.execute(sql.SQL("drop trigger if exists {} on {}").format(sql.Identifier(trigger), _ident(table)))
                cur.execute(
                    sql.SQL("create trigger {} {} execute function {}()").format(
                        sql.Identifier(trigger), when, function
                    )
                )
                cur.execute(
                    sql.SQL("alter table {} enable replica trigger {}").format(_ident(table), sql.Identifier(trigger))
                )
            protected.append(table)
    return OverlapTriggers(protected, unprotected)


def remove_overlap_triggers(target_conn: Any, tables: dict[str, list[str]] | list[str]) -> None:
    """Drop the overlap triggers and their functions; the apply is strict again. Idempotent.

    The ``bascule`` schema goes too once nothing is left in it.
    """
    _require_autocommit(target_conn, "remove_overlap_triggers")
    with _transaction(target_conn) as cur:
        for table in tables:
            cur.execute("select to_regclass(%s)", (_ident(table).as_string(target_conn),))
            if cur.fetchone()[0] is not None:
                for trigger in (UPSERT_TRIGGER, REKEY_TRIGGER):
                    cur.execute(
                        sql.SQL("drop trigger if exists {} on {}").format(sql.Identifier(trigger), _ident(table))
                    )
            cur.execute(
                sql.SQL("drop function if exists {}()").format(
                    sql.Identifier(OVERLAP_SCHEMA, overlap_function_name(table))
                )
            )
    try:
        _execute(target_conn, sql.SQL("drop schema if exists {} restrict").format(sql.Identifier(OVERLAP_SCHEMA)))
    except pg_errors.DependentObjectsStillExist:
        pass  # other tables' triggers (another workload in this database) still use it


def overlap_triggers_present(target_conn: Any, tables: list[str]) -> dict[str, str]:
    """Tables carrying an overlap trigger -> its ``tgenabled`` (``R``: replica only)."""
    with target_conn.cursor() as cur:
        cur.execute(
            """
            select n.nspname || '.' || c.relname, t.tgname, t.tgenabled
            from pg_trigger t join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
            where t.tgname in (%s, %s) and n.nspname || '.' || c.relname = any(%s)
            """,
            (UPSERT_TRIGGER, REKEY_TRIGGER, list(tables)),
        )
        return {f"{table}:{trigger}": str(enabled) for table, trigger, enabled in cur.fetchall()}


# -- target: subscription --------------------------------------------------------------------------


def _subscription(target_conn: Any, name: str) -> tuple[int, bool, str | None, list[str]] | None:
    # Only the columns PUBLIC may read: subconninfo is reserved to superusers.
    row = _one(
        target_conn,
        """
        select s.oid, s.subenabled, s.subslotname, s.subpublications
        from pg_subscription s join pg_database d on d.oid = s.subdbid
        where s.subname = %s and d.datname = current_database()
        """,
        (name,),
    )
    if row is None:
        return None
    return int(row[0]), bool(row[1]), row[2], list(row[3])


def create_subscription(target_conn: Any, name: str, source_conninfo: str, publication: str, slot: str) -> None:
    """Subscribe the target to ``publication`` through the existing ``slot``, without an initial copy.

    Idempotent: an existing subscription with the same slot and publication is (re-)enabled.
    The conninfo's password never appears in an exception raised here. (A failing
    CREATE SUBSCRIPTION is still written to the target's server log with its text, as
    PostgreSQL logs failed statements; only a superuser could turn that off.)
    """
    _require_autocommit(target_conn, "create_subscription")
    existing = _subscription(target_conn, name)
    if existing is not None:
        _, enabled, existing_slot, publications = existing
        if existing_slot != slot or publications != [publication]:
            raise BasculeError(
                f"subscription '{name}' already exists on the target with slot {existing_slot} and publications "
                f"{publications} (wanted slot {slot}, publication {publication}); drop it with drop_replication"
            )
        if not enabled:
            _execute(target_conn, sql.SQL("alter subscription {} enable").format(sql.Identifier(name)))
        return
    statement = sql.SQL(
        "create subscription {} connection {} publication {} "
        "with (copy_data = false, create_slot = false, slot_name = {}, enabled = true)"
    ).format(sql.Identifier(name), sql.Literal(source_conninfo), sql.Identifier(publication), sql.Literal(slot))
    try:
        _execute(target_conn, statement)
    except psycopg2.Error as exc:
        detail = mask_conninfo((exc.pgerror or str(exc)).strip(), source_conninfo)
        raise BasculeError(
            f"could not create subscription '{name}' on the target (publication {publication}, slot {slot}): {detail}"
        ) from None


# -- lag and health ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplicationLag:
    """How far the target is behind the source.

    ``lag_bytes``: source WAL not yet confirmed by the subscriber (exact; gate on it).
    ``lag_seconds``: 0 when ``lag_bytes`` is 0; otherwise how long ago the source last
    told the target "you have everything up to here" (the walsender's last keepalive,
    ``latest_end_time``, both clocks the source's). Read it as "the target has not been
    known to be current for N s": it keeps growing while a backlog drains and stays near
    0 while the stream keeps up. ``None``: the target has not been current once since
    its apply worker started (a backlog is draining), gate on bytes.
    """

    lag_bytes: int
    lag_seconds: float | None
    source_lsn: str
    confirmed_lsn: str | None
    subscription_state: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ApplyWorkerState:
    """One look at a subscription's apply worker (``pid`` None: none running)."""

    pid: int | None
    errors: int
    worker_age_s: float | None
    latest_end_time: datetime | None


def _apply_sample(target_conn: Any, subscription_oid: int) -> ApplyWorkerState:
    with target_conn.cursor() as cur:
        cur.execute("select pg_stat_clear_snapshot()")  # cumulative stats are cached per transaction
        # The leader apply worker: no table (not a table-sync worker), no leader (PG16+:
        # not a parallel apply worker).
        leader_only = sql.SQL("and s.leader_pid is null" if _server_version(target_conn) >= 160000 else "")
        cur.execute(
            sql.SQL(
                """
                select s.pid, extract(epoch from clock_timestamp() - a.backend_start)::float8, s.latest_end_time
                from pg_stat_subscription s left join pg_stat_activity a on a.pid = s.pid
                where s.subid = %s and s.relid is null {}
                """
            ).format(leader_only),
            (subscription_oid,),
        )
        row = cur.fetchone()
        errors = 0
        if _server_version(target_conn) >= 150000:
            cur.execute(
                "select apply_error_count + sync_error_count from pg_stat_subscription_stats where subid = %s",
                (subscription_oid,),
            )
            counted = cur.fetchone()
            errors = int(counted[0]) if counted else 0
    if row is None:
        return ApplyWorkerState(None, errors, None, None)
    return ApplyWorkerState(row[0], errors, row[1], row[2])


def _wal_retry_interval_s(target_conn: Any) -> float:
    row = _one(target_conn, "select setting::float8 / 1000 from pg_settings where name = 'wal_retrieve_retry_interval'")
    return float(row[0]) if row else 5.0


def check_subscription(
    target_conn: Any, name: str, *, observe_s: float | None = None, poll_s: float = 0.5
) -> ApplyWorkerState:
    """Raise ``ReplicationBroken`` unless subscription ``name`` has a working apply worker.

    A failing worker exits and is restarted every ``wal_retrieve_retry_interval``, so
    the view flickers. Healthy at once: a worker runs and no apply error was ever
    counted, or the running worker is older than the observation window (the errors
    are from before it). Otherwise the state is watched for ``observe_s`` (default
    2 x the retry interval + 1 s): a new error, or no worker at the end, is broken.
    A worker that takes longer than the window to fail again can pass one check; the
    lag then stops falling, which the catch-up timeout catches.
    """
    subscription = _subscription(target_conn, name)
    if subscription is None:
        raise ReplicationBroken(f"subscription '{name}' does not exist in the target database")
    oid, enabled, _, _ = subscription
    if not enabled:
        raise ReplicationBroken(
            f"subscription '{name}' is disabled on the target (by an operator, or by disable_on_error after "
            f"an apply error: {_TARGET_LOG_HINT}); enable it with ALTER SUBSCRIPTION {name} ENABLE once repaired"
        )
    window = observe_s if observe_s is not None else 2 * _wal_retry_interval_s(target_conn) + 1.0
    first = sample = _apply_sample(target_conn, oid)
    deadline = time.monotonic() + window
    while True:
        if sample.errors > first.errors:
            raise ReplicationBroken(
                f"the apply worker of subscription '{name}' keeps failing ({sample.errors} error(s) counted, "
                f"a new one within {window:.0f} s): {_TARGET_LOG_HINT}"
            )
        if sample.pid is not None and (
            sample.errors == 0 or (sample.worker_age_s is not None and sample.worker_age_s > window)
        ):
            return sample
        if time.monotonic() >= deadline:
            break
        time.sleep(poll_s)
        sample = _apply_sample(target_conn, oid)
    if sample.pid is None:
        raise ReplicationBroken(
            f"subscription '{name}' has had no running apply worker for {window:.0f} s "
            f"({sample.errors} apply error(s) counted): {_TARGET_LOG_HINT}"
        )
    return sample  # restarted after an old error, nothing new failed meanwhile


def _slot_state(source_conn: Any, slot: str) -> tuple[str, str | None, int, str | None, datetime]:
    row = _one(
        source_conn,
        """
        select pg_current_wal_lsn()::text, confirmed_flush_lsn::text,
               pg_wal_lsn_diff(pg_current_wal_lsn(), coalesce(confirmed_flush_lsn, restart_lsn))::bigint,
               wal_status, clock_timestamp()
        from pg_replication_slots where slot_name = %s
        """,
        (slot,),
    )
    if row is None:
        raise ReplicationBroken(f"replication slot '{slot}' does not exist on the source: the stream is gone")
    current, confirmed, lag, wal_status, now = row
    if wal_status == "lost":
        raise ReplicationBroken(
            f"replication slot '{slot}' was invalidated on the source (the WAL it needed was removed, "
            "max_slot_wal_keep_size): the stream cannot resume; start a new run"
        )
    return str(current), confirmed, max(0, int(lag or 0)), wal_status, now


def replication_lag(source_conn: Any, target_conn: Any, name: str, *, observe_s: float | None = None) -> ReplicationLag:
    """Lag of subscription/slot ``name``; raises ``ReplicationBroken`` if the stream stopped.

    On a healthy stream this returns at once; after apply errors it may watch the
    worker for up to ``observe_s`` (see ``check_subscription``).
    """
    sample = check_subscription(target_conn, name, observe_s=observe_s)
    current, confirmed, lag_bytes, _, source_now = _slot_state(source_conn, name)
    if lag_bytes == 0:
        seconds: float | None = 0.0
    elif sample.latest_end_time is not None:
        seconds = max(0.0, (source_now - sample.latest_end_time).total_seconds())
    else:
        seconds = None
    state = (
        "streaming" if sample.errors == 0 else f"streaming (worker restarted; {sample.errors} earlier apply error(s))"
    )
    return ReplicationLag(lag_bytes, seconds, current, confirmed, state)


def passed_lsn(source_conn: Any, slot: str, lsn: str) -> bool:
    """Whether the subscriber confirmed everything up to ``lsn`` (slot's confirmed_flush_lsn >= lsn)."""
    row = _one(
        source_conn,
        "select confirmed_flush_lsn >= %s::pg_lsn from pg_replication_slots where slot_name = %s",
        (lsn, slot),
    )
    if row is None:
        raise ReplicationBroken(f"replication slot '{slot}' does not exist on the source: the stream is gone")
    return bool(row[0])


def flush_point(source_conn: Any) -> str:
    """A source WAL position after every write committed so far (after a freeze: all of them).

    It is the end of a small logical-decoding message written for the purpose, not
    ``pg_current_wal_lsn()``: that is the WAL *write* position, which an asynchronous
    commit (``synchronous_commit = off``) that already returned can still be past. The
    message also wakes the sender, so an idle stream confirms it promptly.
    """
    return str(_one(source_conn, "select pg_logical_emit_message(false, 'bascule', 'flush point')::text")[0])


def wait_caught_up(source_conn: Any, slot: str, lsn: str, timeout_s: float, poll_s: float) -> float:
    """Block until the slot's subscriber confirmed ``lsn``; return the seconds waited.

    An idle stream still advances: the source asks for a confirmation whenever the
    subscriber is behind its WAL end, which takes well under a second.
    """
    started = time.monotonic()
    while True:
        if passed_lsn(source_conn, slot, lsn):
            return time.monotonic() - started
        waited = time.monotonic() - started
        if waited >= timeout_s:
            row = _one(
                source_conn,
                """
                select confirmed_flush_lsn::text, pg_wal_lsn_diff(%s::pg_lsn, confirmed_flush_lsn)::bigint, active
                from pg_replication_slots where slot_name = %s
                """,
                (lsn, slot),
            )
            confirmed, behind, active = row if row else (None, None, None)
            raise CatchUpTimeout(
                f"the replica of slot '{slot}' did not reach source position {lsn} within {timeout_s:.0f} s: "
                f"confirmed {confirmed}, {behind} byte(s) short, slot {'in use' if active else 'NOT in use'} by "
                "the subscriber. replication_lag() tells a slow stream from a broken one"
            )
        time.sleep(min(poll_s, max(0.0, timeout_s - waited)))


# -- freeze --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FreezeReport:
    frozen_at: datetime
    roles: list[str]
    terminated_sessions: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "frozen_at": self.frozen_at.isoformat(),
            "roles": self.roles,
            "terminated_sessions": self.terminated_sessions,
        }


@dataclass(frozen=True)
class UnfreezeReport:
    unfrozen_roles: list[str]
    terminated_sessions: int


def _end_sessions(source_conn: Any, database: str, roles: list[str], timeout_s: float) -> int:
    """Terminate the roles' sessions on ``database`` and wait until they are gone.

    pg_terminate_backend only signals: a backend inside COMMIT finishes it first. The
    write freeze is complete only once those backends have exited.
    """
    if not roles:
        return 0
    with source_conn.cursor() as cur:
        # Two statements: in one WHERE, the planner may call pg_terminate_backend before
        # the test that spares this very session.
        cur.execute(
            "select pid from pg_stat_activity where datname = %s and usename = any(%s) and pid <> pg_backend_pid()",
            (database, roles),
        )
        candidates = [r[0] for r in cur.fetchall()]
        cur.execute("select pid from unnest(%s::int[]) as pid where pg_terminate_backend(pid)", (candidates,))
        pids = [r[0] for r in cur.fetchall()]
        deadline = time.monotonic() + timeout_s
        while pids:
            cur.execute("select pid from pg_stat_activity where pid = any(%s)", (pids,))
            pids_left = [r[0] for r in cur.fetchall()]
            if not pids_left:
                break
            if time.monotonic() > deadline:
                raise BasculeError(
                    f"sessions {pids_left} of roles {roles} on database {database} were told to end but are still "
                    f"there after {timeout_s:.0f} s: writes may still commit, do not cut over"
                )
            time.sleep(0.05)
    return len(pids)


def freeze_writes(
    source_conn: Any, database: str, roles: list[str], *, session_exit_timeout_s: float = 30.0
) -> FreezeReport:
    """Make ``roles`` read-only on ``database`` and end their sessions. Idempotent.

    ``default_transaction_read_only`` applies to new sessions, hence the terminations;
    the count includes every session ended by this call. It is a default, not a
    permission: a client that asks for a read-write transaction explicitly still
    writes. It applies to the roles named (sessions logged in as them), not to their
    members, so list the login roles the applications use.
    """
    _require_autocommit(source_conn, "freeze_writes")
    for role in roles:
        _execute(
            source_conn,
            sql.SQL("alter role {} in database {} set default_transaction_read_only = on").format(
                sql.Identifier(role), sql.Identifier(database)
            ),
        )
    terminated = _end_sessions(source_conn, database, roles, session_exit_timeout_s)
    frozen_at = _one(source_conn, "select now()")[0]
    return FreezeReport(frozen_at, list(roles), terminated)


def frozen_roles(source_conn: Any, database: str, roles: list[str]) -> list[str]:
    """Those of ``roles`` that are read-only on ``database`` by a role-in-database setting."""
    with source_conn.cursor() as cur:
        cur.execute(
            """
            select r.rolname, s.setconfig
            from pg_db_role_setting s
            join pg_roles r on r.oid = s.setrole
            join pg_database d on d.oid = s.setdatabase
            where d.datname = %s and r.rolname = any(%s)
            """,
            (database, list(roles)),
        )
        settings = {name: config or [] for name, config in cur.fetchall()}
    truthy = {"on", "true", "yes", "1", "t", "y"}
    frozen = set()
    for name, config in settings.items():
        for entry in config:
            key, _, value = entry.partition("=")
            if key == "default_transaction_read_only" and value.strip().lower() in truthy:
                frozen.add(name)
    return [r for r in roles if r in frozen]


def unfreeze_writes(
    source_conn: Any,
    database: str,
    roles: list[str],
    *,
    end_sessions: bool = True,
    session_exit_timeout_s: float = 30.0,
) -> UnfreezeReport:
    """Give ``roles`` their writes back on ``database``. Idempotent.

    Sessions opened during the freeze keep their read-only default until they
    reconnect, so with ``end_sessions`` those of the roles that were frozen are ended
    (roles that were not frozen are left alone: a rollback before any freeze costs the
    application nothing).
    """
    _require_autocommit(source_conn, "unfreeze_writes")
    were_frozen = frozen_roles(source_conn, database, roles)
    for role in roles:
        _execute(
            source_conn,
            sql.SQL("alter role {} in database {} reset default_transaction_read_only").format(
                sql.Identifier(role), sql.Identifier(database)
            ),
        )
    terminated = _end_sessions(source_conn, database, were_frozen, session_exit_timeout_s) if end_sessions else 0
    return UnfreezeReport(were_frozen, terminated)


# -- sequences -------------------------------------------------------------------------------------------


def _sequence_state(conn: Any, sequence: str, side: str) -> tuple[int, bool, int]:
    schema, name = split_qualified(sequence)
    with conn.cursor() as cur:
        cur.execute("select increment_by from pg_sequences where schemaname = %s and sequencename = %s", (schema, name))
        row = cur.fetchone()
        if row is None:
            raise BasculeError(f"sequence {sequence} does not exist on the {side}")
        cur.execute(sql.SQL("select last_value, is_called from {}").format(_ident(sequence)))
        last_value, is_called = cur.fetchone()
    return int(last_value), bool(is_called), int(row[0])


def sync_sequences(source_conn: Any, target_conn: Any, sequences: list[str]) -> list[dict[str, Any]]:
    """Set each target sequence so its next ``nextval`` returns what the source's would. Idempotent.

    Never moves a target sequence backwards: if the target is already past the source
    (it took writes, e.g. a cutover retried after the switch), it is kept and the entry
    says so, since going back would hand out keys already used.
    """
    _require_autocommit(target_conn, "sync_sequences")
    results = []
    for sequence in sequences:
        source_last, source_called, increment = _sequence_state(source_conn, sequence, "source")
        target_last, target_called, target_increment = _sequence_state(target_conn, sequence, "target")
        if increment != target_increment:
            raise BasculeError(
                f"sequence {sequence} increments by {increment} on the source but {target_increment} on the target"
            )
        source_next = source_last + increment if source_called else source_last
        target_next = target_last + increment if target_called else target_last
        kept = (target_next - source_next) * (1 if increment > 0 else -1) > 0
        if kept:
            set_to = target_last
        else:
            row = _one(
                target_conn,
                "select setval(%s::regclass, %s, %s)",
                (_ident(sequence).as_string(target_conn), source_last, source_called),
            )
            set_to = int(row[0])
        results.append(
            {
                "sequence": sequence,
                "source_last_value": source_last,
                "source_is_called": source_called,
                "target_set_to": set_to,
                "next_value": target_next if kept else source_next,
                "target_was_ahead": kept,
            }
        )
    return results


# -- teardown -----------------------------------------------------------------------------------------------


def drop_replication(
    source_conn: Any, target_conn: Any, name: str, *, slot_release_timeout_s: float = 15.0
) -> dict[str, bool]:
    """Drop subscription ``name`` on the target, then slot and publication ``name`` on the source.

    Idempotent: what is already gone is skipped. Returns what this call dropped. The
    subscription is detached from its slot first, so dropping it needs no connection
    to the source; the slot is dropped once its sender has let go of it.
    """
    _require_autocommit(source_conn, "drop_replication")
    _require_autocommit(target_conn, "drop_replication")
    dropped = {"subscription": False, "slot": False, "publication": False}
    subscription = _subscription(target_conn, name)
    if subscription is not None:
        _, enabled, slot_name, _ = subscription
        ident = sql.Identifier(name)
        if enabled:
            _execute(target_conn, sql.SQL("alter subscription {} disable").format(ident))
        if slot_name is not None:
            _execute(target_conn, sql.SQL("alter subscription {} set (slot_name = none)").format(ident))
        _execute(target_conn, sql.SQL("drop subscription if exists {}").format(ident))
        dropped["subscription"] = True
    if _one(source_conn, "select 1 from pg_publication where pubname = %s", (name,)):
        _execute(source_conn, sql.SQL("drop publication if exists {}").format(sql.Identifier(name)))
        dropped["publication"] = True
    deadline = time.monotonic() + slot_release_timeout_s
    while True:
        row = _one(source_conn, "select active_pid from pg_replication_slots where slot_name = %s", (name,))
        if row is None:
            break
        if row[0] is None:
            try:
                _execute(source_conn, "select pg_drop_replication_slot(%s)", (name,))
                dropped["slot"] = True
                break
            except pg_errors.UndefinedObject:
                break  # dropped concurrently
            except pg_errors.ObjectInUse:
                pass  # a sender attached meanwhile: wait again
        if time.monotonic() > deadline:
            raise BasculeError(
                f"replication slot '{name}' is still in use on the source by process {row[0]} after "
                f"{slot_release_timeout_s:.0f} s, although its subscription is gone: another consumer uses it; "
                f"check pg_stat_replication, then pg_drop_replication_slot('{name}')"
            )
        time.sleep(0.2)
    return dropped


# -- write counters ----------------------------------------------------------------------------------------


def _counters(conn: Any, tables: list[str]) -> dict[str, int]:
    with conn.cursor() as cur:
        if _server_version(conn) >= 150000:
            # Flushes this session's own pending counts (its own writes); other sessions
            # publish theirs at most about once a second (up to 10 s once they go idle).
            cur.execute("select pg_stat_force_next_flush()")
        cur.execute("select pg_stat_clear_snapshot()")
        cur.execute(
            """
            select schemaname || '.' || relname, n_tup_ins + n_tup_upd + n_tup_del
            from pg_stat_user_tables where schemaname || '.' || relname = any(%s)
            """,
            (list(tables),),
        )
        return {str(t): int(n) for t, n in cur.fetchall()}


def table_write_counters(conn: Any, tables: list[str]) -> dict[str, int]:
    """Rows inserted + updated + deleted in each table since the server's statistics began.

    The counters come from the statistics system: other sessions' writes appear with a
    delay of about a second (longer for a session that went idle right after writing),
    TRUNCATE is not counted, and the apply worker's writes count like any other.
    """
    counters = _counters(conn, tables)
    missing = [t for t in tables if t not in counters]
    if missing:
        raise BasculeError(f"table_write_counters: no such table(s) {missing} in this database")
    return counters


def writes_since(conn: Any, baseline: dict[str, int]) -> dict[str, int]:
    """Tables whose write counters moved since ``baseline`` -> rows written since.

    A table dropped since the baseline is reported with ``-1``. Writes from the last
    second or so may not be counted yet (see ``table_write_counters``).
    """
    now = _counters(conn, list(baseline))
    moved = {}
    for table, before in baseline.items():
        if table not in now:
            moved[table] = -1
        elif now[table] != before:
            moved[table] = now[table] - before
    return moved

"""The lifecycle of a postgres workload's change stream: logical replication from the
Azure source to the Scaleway target, from the publication and slot to the subscription
and the final clean-up (``drop_replication``).

Order: publication (with every table) -> slot -> copies -> overlap triggers
(``overlap``) -> subscription. pgoutput decodes each change with the catalog as it was
when the change was written, so a publication younger than the slot breaks the stream,
and a table added to it later misses its earlier changes; ``create_slot`` and
``ensure_publication`` refuse both. Connections and names follow ``statements``.
"""

from __future__ import annotations

import re
import time
from typing import Any

import psycopg2
from psycopg2 import errors as pg_errors
from psycopg2 import sql

from bascule.exceptions import BasculeError
from bascule.identifiers import qualified_name
from bascule.postgres.statements import execute, fetch_one, qualified_ident, require_autocommit, split_qualified

PUBLISHED_OPERATIONS = "insert, update, delete, truncate"

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
    require_autocommit(source_conn, "create_slot")
    existing = _existing_slot_lsn(source_conn, slot)
    if existing is not None:
        return existing
    publication = slot if publication is None else publication
    if fetch_one(source_conn, "select 1 from pg_publication where pubname = %s", (publication,)) is None:
        raise BasculeError(
            f"create_slot '{slot}': publication '{publication}' does not exist on the source yet. Create it first "
            "(ensure_publication): the change stream can only be decoded with a publication older than the slot"
        )
    try:
        row = fetch_one(source_conn, "select lsn::text from pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    except pg_errors.DuplicateObject:
        existing = _existing_slot_lsn(source_conn, slot)  # created concurrently by a retry
        if existing is None:
            raise
        return existing
    return str(row[0])


def _existing_slot_lsn(source_conn: Any, slot: str) -> str | None:
    row = fetch_one(
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
    require_autocommit(source_conn, "ensure_publication")
    if not tables:
        raise BasculeError(f"publication '{name}': no tables to publish")
    slot = name if slot is None else slot
    slot_exists = fetch_one(source_conn, "select 1 from pg_replication_slots where slot_name = %s", (slot,)) is not None
    wanted = {split_qualified(t) for t in tables}
    table_list = sql.SQL(", ").join(qualified_ident(t) for t in tables)
    row = fetch_one(
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
        execute(
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
        added = sorted(qualified_name(s, t) for s, t in wanted - published)
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
    require_autocommit(source_conn, "set_replica_identity_full")
    changed = []
    for table in tables:
        schema, name = split_qualified(table)
        row = fetch_one(
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
            execute(source_conn, sql.SQL("alter table {} replica identity full").format(qualified_ident(table)))
            changed.append(table)
    return changed

# -- target: subscription --------------------------------------------------------------------------


def find_subscription(target_conn: Any, name: str) -> tuple[int, bool, str | None, list[str]] | None:
    """Subscription ``name`` of the connection's database: (oid, enabled, slot, publications), or None."""
    # Only the columns PUBLIC may read: subconninfo is reserved to superusers.
    row = fetch_one(
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
    require_autocommit(target_conn, "create_subscription")
    existing = find_subscription(target_conn, name)
    if existing is not None:
        _, enabled, existing_slot, publications = existing
        if existing_slot != slot or publications != [publication]:
            raise BasculeError(
                f"subscription '{name}' already exists on the target with slot {existing_slot} and publications "
                f"{publications} (wanted slot {slot}, publication {publication}); drop it with drop_replication"
            )
        if not enabled:
            execute(target_conn, sql.SQL("alter subscription {} enable").format(sql.Identifier(name)))
        return
    statement = sql.SQL(
        "create subscription {} connection {} publication {} "
        "with (copy_data = false, create_slot = false, slot_name = {}, enabled = true)"
    ).format(sql.Identifier(name), sql.Literal(source_conninfo), sql.Identifier(publication), sql.Literal(slot))
    try:
        execute(target_conn, statement)
    except psycopg2.Error as exc:
        detail = mask_conninfo((exc.pgerror or str(exc)).strip(), source_conninfo)
        raise BasculeError(
            f"could not create subscription '{name}' on the target (publication {publication}, slot {slot}): {detail}"
        ) from None


# -- teardown -----------------------------------------------------------------------------------------------


def drop_replication(
    source_conn: Any, target_conn: Any, name: str, *, slot_release_timeout_s: float = 15.0
) -> dict[str, bool]:
    """Drop subscription ``name`` on the target, then slot and publication ``name`` on the source.

    Idempotent: what is already gone is skipped. Returns what this call dropped. The
    subscription is detached from its slot first, so dropping it needs no connection
    to the source; the slot is dropped once its sender has let go of it.
    """
    require_autocommit(source_conn, "drop_replication")
    require_autocommit(target_conn, "drop_replication")
    dropped = {"subscription": False, "slot": False, "publication": False}
    subscription = find_subscription(target_conn, name)
    if subscription is not None:
        _, enabled, slot_name, _ = subscription
        ident = sql.Identifier(name)
        if enabled:
            execute(target_conn, sql.SQL("alter subscription {} disable").format(ident))
        if slot_name is not None:
            execute(target_conn, sql.SQL("alter subscription {} set (slot_name = none)").format(ident))
        execute(target_conn, sql.SQL("drop subscription if exists {}").format(ident))
        dropped["subscription"] = True
    if fetch_one(source_conn, "select 1 from pg_publication where pubname = %s", (name,)):
        execute(source_conn, sql.SQL("drop publication if exists {}").format(sql.Identifier(name)))
        dropped["publication"] = True
    deadline = time.monotonic() + slot_release_timeout_s
    while True:
        row = fetch_one(source_conn, "select active_pid from pg_replication_slots where slot_name = %s", (name,))
        if row is None:
            break
        if row[0] is None:
            try:
                execute(source_conn, "select pg_drop_replication_slot(%s)", (name,))
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

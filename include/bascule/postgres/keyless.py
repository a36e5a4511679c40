"""Tables without a primary key (``source.tables_without_primary_key``): copied by the
subscription's own table synchronisation, not by the bulk copy.

Why: the bulk copy of a table reads a snapshot taken after the slot's start, so the
changes in between are both in the copy and in the stream. For a table with a key the
overlap triggers (``overlap``) replay them idempotently, because a key says which copied
row a replayed change is about. A keyless table has no such thing: a replayed INSERT adds
a duplicate, and an UPDATE of a row inserted inside the overlap changes another identical
row. PostgreSQL's own table synchronisation does not have the overlap: its worker copies
the table at a snapshot of its own slot and the apply worker skips that table's changes
up to that point, then hands over.

So the publication leaves keyless tables out until the subscription exists
(``take_snapshot`` publishes the keyed tables only); ``start_replication`` then adds them
and asks the subscription to synchronise them (``REFRESH PUBLICATION`` with
``copy_data``), on empty target tables. Their changes from before the ALTER are not in
the stream, and need not be: the synchronisation's copy is later than all of them. The
catch-up waits until every table is synchronised (``pending_sync``). Their rows are
compared by the diff's key-hash buckets over all columns, like any table.
"""

from __future__ import annotations

from typing import Any

from psycopg2 import sql

from bascule.postgres.statements import execute, qualified_ident, require_autocommit, split_qualified


def published(source_conn: Any, publication: str) -> set[tuple[str, str]]:
    """The (schema, table) pairs publication ``publication`` publishes now."""
    with source_conn.cursor() as cur:
        cur.execute("select schemaname, tablename from pg_publication_tables where pubname = %s", (publication,))
        return {(s, t) for s, t in cur.fetchall()}


def _subscribed(target_conn: Any, subscription: str) -> dict[tuple[str, str], str]:
    """(schema, table) -> synchronisation state ('i', 'd', 'f', 's' or 'r': ready) of the subscription's tables."""
    with target_conn.cursor() as cur:
        cur.execute(
            """
            select n.nspname, c.relname, r.srsubstate
            from pg_subscription_rel r
            join pg_subscription s on s.oid = r.srsubid
            join pg_class c on c.oid = r.srrelid
            join pg_namespace n on n.oid = c.relnamespace
            where s.subname = %s
            """,
            (subscription,),
        )
        return {(s, t): state for s, t, state in cur.fetchall()}


def synchronise(source_conn: Any, target_conn: Any, name: str, tables: list[str]) -> list[str]:
    """Add ``tables`` to publication ``name`` and have subscription ``name`` copy them; returns those started.

    Idempotent: a table the subscription already knows (synchronising or ready) is left
    alone, so a retried ``start_replication`` never empties a table being synchronised.
    A table not known yet is emptied on the target first (the bulk copy may have filled
    it): the synchronisation copies into it, it does not replace it.
    """
    require_autocommit(source_conn, "synchronise")
    require_autocommit(target_conn, "synchronise")
    known = _subscribed(target_conn, name)
    started = [t for t in tables if split_qualified(t) not in known]
    if not started:
        return []
    missing = [t for t in started if split_qualified(t) not in published(source_conn, name)]
    if missing:
        execute(
            source_conn,
            sql.SQL("alter publication {} add table {}").format(
                sql.Identifier(name), sql.SQL(", ").join(qualified_ident(t) for t in missing)
            ),
        )
    execute(target_conn, sql.SQL("truncate {}").format(sql.SQL(", ").join(qualified_ident(t) for t in started)))
    execute(
        target_conn,
        sql.SQL("alter subscription {} refresh publication with (copy_data = true)").format(sql.Identifier(name)),
    )
    return started


def pending_sync(target_conn: Any, subscription: str) -> list[str]:
    """The subscription's tables whose synchronisation has not finished (state other than 'r')."""
    return sorted(f"{s}.{t}" for (s, t), state in _subscribed(target_conn, subscription).items() if state != "r")


def sync_slots(source_conn: Any, subscription_oid: int) -> list[str]:
    """The table synchronisation slots (``pg_<suboid>_sync_<relid>_<sysid>``) of a subscription on the source."""
    with source_conn.cursor() as cur:
        cur.execute(
            "select slot_name from pg_replication_slots where slot_name like %s order by 1",
            (f"pg\\_{subscription_oid}\\_sync\\_%",),
        )
        return [row[0] for row in cur.fetchall()]

"""The overlap triggers that join the change stream to the bulk copy, on the target.

The slot is created before any table's copy snapshot, so changes committed between the
slot's start and a table's copy are both in the copy and in the stream. Replaying them
onto the copied rows must not fail, and must converge:

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
  INSERT of a row the copy has would add a duplicate. So they have no overlap: the
  subscription's own table synchronisation copies them (``keyless``).
- A non-primary-key UNIQUE constraint on the target can conflict during the overlap
  when a value moves from one row to another inside it; the apply then stops
  (``ReplicationBroken``). Creating such constraints after the triggers are removed
  avoids it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from psycopg2 import errors as pg_errors
from psycopg2 import sql

from bascule.exceptions import BasculeError
from bascule.postgres.statements import execute, qualified_ident, require_autocommit, split_qualified, transaction

OVERLAP_SCHEMA = "bascule"
UPSERT_TRIGGER = "bascule_overlap_upsert"
REKEY_TRIGGER = "bascule_overlap_rekey"


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
    target = qualified_ident(table)
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
    require_autocommit(target_conn, "install_overlap_triggers")
    protected, unprotected = [], []
    with transaction(target_conn) as cur:
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
                UPSERT_TRIGGER: sql.SQL("before insert on {} for each row").format(qualified_ident(table)),
                REKEY_TRIGGER: sql.SQL(
                    "before update on {} for each row when (row({}) is distinct from row({}))"
                ).format(qualified_ident(table), old_key, new_key),
            }
            for trigger, when in triggers.items():
                cur.execute(sql.SQL("drop trigger if exists {} on {}").format(sql.Identifier(trigger), qualified_ident(table)))
                cur.execute(
                    sql.SQL("create trigger {} {} execute function {}()").format(
                        sql.Identifier(trigger), when, function
                    )
                )
                cur.execute(
                    sql.SQL("alter table {} enable replica trigger {}").format(qualified_ident(table), sql.Identifier(trigger))
                )
            protected.append(table)
    return OverlapTriggers(protected, unprotected)


def remove_overlap_triggers(target_conn: Any, tables: dict[str, list[str]] | list[str]) -> None:
    """Drop the overlap triggers and their functions; the apply is strict again. Idempotent.

    The ``bascule`` schema goes too once nothing is left in it.
    """
    require_autocommit(target_conn, "remove_overlap_triggers")
    with transaction(target_conn) as cur:
        for table in tables:
            cur.execute(
                "select 1 from pg_class c join pg_namespace n on n.oid = c.relnamespace "
                "where n.nspname = %s and c.relname = %s",
                split_qualified(table),
            )
            if cur.fetchone() is not None:
                for trigger in (UPSERT_TRIGGER, REKEY_TRIGGER):
                    cur.execute(
                        sql.SQL("drop trigger if exists {} on {}").format(sql.Identifier(trigger), qualified_ident(table))
                    )
            cur.execute(
                sql.SQL("drop function if exists {}()").format(
                    sql.Identifier(OVERLAP_SCHEMA, overlap_function_name(table))
                )
            )
    try:
        execute(target_conn, sql.SQL("drop schema if exists {} restrict").format(sql.Identifier(OVERLAP_SCHEMA)))
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

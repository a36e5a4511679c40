"""Sequences carried from the source to the target at cutover, so the target's next keys
follow the source's (logical replication does not carry sequence values)."""

from __future__ import annotations

from typing import Any

from psycopg2 import sql

from bascule.exceptions import BasculeError
from bascule.postgres.statements import fetch_one, qualified_ident, require_autocommit, split_qualified


def _sequence_state(conn: Any, sequence: str, side: str) -> tuple[int, bool, int]:
    schema, name = split_qualified(sequence)
    with conn.cursor() as cur:
        cur.execute("select increment_by from pg_sequences where schemaname = %s and sequencename = %s", (schema, name))
        row = cur.fetchone()
        if row is None:
            raise BasculeError(f"sequence {sequence} does not exist on the {side}")
        cur.execute(sql.SQL("select last_value, is_called from {}").format(qualified_ident(sequence)))
        last_value, is_called = cur.fetchone()
    return int(last_value), bool(is_called), int(row[0])


def sync_sequences(source_conn: Any, target_conn: Any, sequences: list[str]) -> list[dict[str, Any]]:
    """Set each target sequence so its next ``nextval`` returns what the source's would. Idempotent.

    Never moves a target sequence backwards: if the target is already past the source
    (it took writes, e.g. a cutover retried after the switch), it is kept and the entry
    says so, since going back would hand out keys already used.
    """
    require_autocommit(target_conn, "sync_sequences")
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
            row = fetch_one(
                target_conn,
                "select setval(%s::regclass, %s, %s)",
                (qualified_ident(sequence).as_string(target_conn), source_last, source_called),
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

"""Did the target keep every write the application was told had committed?

:func:`check_target` compares a target database with the writer's log
(:mod:`bascule.synthetic.writes_log`) and lists every acknowledged write missing or
different there.

No Airflow import; ``conn`` is any DB-API connection to the migrated registry.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bascule.synthetic.registry import PRIMARY_KEYS, ident
from bascule.synthetic.writes_log import (
    ACKNOWLEDGED,
    LogRecord,
    RowKey,
    expected_state,
    read_log,
    row_key,
    row_values,
)


def check_target(conn: Any, log: str | Path | Iterable[LogRecord], *, batch: int = 1000) -> list[str]:
    """Every acknowledged write that ``conn``'s database lost or altered (empty: none).

    Each message names the table, the key, the last acknowledged write (sequence number
    and time) and what the database holds instead. Rows the log never touched, and
    extra rows, are not this check's business (the table diff sees those).
    """
    records = read_log(log)
    last_write: dict[RowKey, LogRecord] = {}
    for record in records:
        if record.get("status") == ACKNOWLEDGED and record.get("key") is not None:
            last_write[row_key(record)] = record
    expected = expected_state(records)
    by_table: dict[str, list[Any]] = {}
    for table, key in expected:
        by_table.setdefault(table, []).append(key)
    problems: list[str] = []
    for table in sorted(by_table):
        columns = PRIMARY_KEYS.get(table)
        if columns is None:
            raise ValueError(f"writer log names table {table!r}, which is not one of {sorted(PRIMARY_KEYS)}")
        keys = by_table[table]
        found = _found_rows(conn, table, columns, keys, batch)
        for key in sorted(keys, key=repr):
            write = last_write[(table, key)]
            where = f"{table} {_describe_key(columns, key)}"
            what = f"acknowledged {write['op']} (seq {write.get('seq')} at {write.get('at')})"
            problem = _compare(expected[(table, key)], found.get(key))
            if problem is not None:
                problems.append(f"{where}: {what} {problem}")
    return problems


def _compare(want: dict[str, Any] | None, got: dict[str, Any] | None) -> str | None:
    """What is wrong with the target's row ``got`` when the log left ``want`` (None: deleted)."""
    if want is None:
        return None if got is None else f"but the row is present: {_show(got)}"
    if got is None:
        return "missing on target"
    changed = [c for c in want if got.get(c) != want[c]]
    if not changed:
        return None
    return "differs: " + ", ".join(f"{c}={_show(got.get(c))} (acknowledged {_show(want[c])})" for c in changed)


def _found_rows(
    conn: Any, table: str, columns: Sequence[str], keys: Sequence[Any], batch: int
) -> dict[Any, dict[str, Any]]:
    found: dict[Any, dict[str, Any]] = {}
    for start in range(0, len(keys), batch):
        for key, row in _fetch_rows(conn, table, columns, keys[start : start + batch]):
            found[key] = row
    return found


def _fetch_rows(
    conn: Any, table: str, columns: Sequence[str], keys: Sequence[Any]
) -> Iterator[tuple[Any, dict[str, Any]]]:
    from psycopg2 import sql

    key = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    with conn.cursor() as cur:
        if len(columns) == 1:
            cur.execute(sql.SQL("SELECT * FROM {} WHERE {} = ANY(%s)").format(ident(table), key), (list(keys),))
        else:  # psycopg2 spells a tuple of tuples as ((a, b), (c, d))
            cur.execute(
                sql.SQL("SELECT * FROM {} WHERE ({}) IN %s").format(ident(table), key),
                (tuple(tuple(k) for k in keys),),
            )
        names = [d[0] for d in cur.description]
        for raw in cur.fetchall():
            row = row_values(names, raw)
            key = row[columns[0]] if len(columns) == 1 else tuple(row[c] for c in columns)
            yield key, row


def _describe_key(columns: Sequence[str], key: Any) -> str:
    values = key if isinstance(key, tuple) else (key,)
    return ", ".join(f"{c}={v}" for c, v in zip(columns, values, strict=True))


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)

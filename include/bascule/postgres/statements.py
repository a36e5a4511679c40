"""Statements on a psycopg2 connection, as the change-stream modules run them.

Every function of ``replication``, ``overlap``, ``catch_up``, ``write_freeze`` and
``sequences`` takes psycopg2 connections and plain values. Functions that change
something require an autocommit connection: each statement then commits on its own,
and a function that needs several statements to land together opens its own
``transaction``. Tables are qualified names in Bascule's one text form
(``bascule.identifiers``: ``clinical.Encounter``, ``"my.schema".t``); ``split_qualified``
reads one back into its two parts and ``qualified_ident`` makes them a two-part identifier.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from psycopg2 import sql

from bascule.exceptions import BasculeError
from bascule.identifiers import split_qualified as split_qualified  # re-exported for the change-stream modules


def qualified_ident(name: str) -> sql.Identifier:
    """The two-part identifier of a qualified name (``care.Stays`` -> ``"care"."Stays"``, never one quoted string)."""
    return sql.Identifier(*split_qualified(name))


def require_autocommit(conn: Any, what: str) -> None:
    """Refuse a connection inside an implicit transaction: the caller expects each change to commit."""
    if not conn.autocommit:
        raise BasculeError(f"{what} needs an autocommit connection (set conn.autocommit = True)")


@contextmanager
def transaction(conn: Any) -> Iterator[Any]:
    """One explicit transaction on an autocommit connection: all of it lands, or none."""
    with conn.cursor() as cur:
        cur.execute("begin")
        try:
            yield cur
        except BaseException:
            cur.execute("rollback")
            raise
        cur.execute("commit")


def fetch_one(conn: Any, query: Any, params: Sequence[Any] = ()) -> Any:
    """The first row of ``query`` (``None`` when it returns none)."""
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchone()


def execute(conn: Any, query: Any, params: Sequence[Any] = ()) -> None:
    """Run one statement whose result nobody reads."""
    with conn.cursor() as cur:
        cur.execute(query, params)


def server_version(conn: Any) -> int:
    """The server's version number (``150004`` for 15.4)."""
    return int(conn.server_version)

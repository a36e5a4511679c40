"""The two connections of a table diff, each in one snapshot, queried side by side.

Each side runs all its queries in one REPEATABLE READ READ ONLY transaction, so
every level of the bisection sees the same snapshot, under fixed settings that make
text output (the fallback hash input) identical on both servers and steer the
planner to hash aggregation. ``SessionPair`` queries both sides at once, one thread
per connection, and turns driver errors into ``TableDiffError`` naming the side.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from bascule.postgres.tablediff_records import TableDiffError

Side = Literal["source", "target"]
T = TypeVar("T")

# Settings that make text output (the fallback hash input) identical on both servers,
# whatever their defaults.
_SESSION_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "3",
    "bytea_output": "hex",
    # Grouping keys are expressions, so the planner estimates one group per row and
    # would sort a large table instead of hashing a few thousand groups; and the same
    # misestimate makes a parallel plan look expensive to gather.
    "enable_sort": "off",
    # Enough for MAX_SEGMENTS groups; bounds the hash table sized up front from the
    # (row-count) group estimate.
    "work_mem": "16MB",
    "parallel_tuple_cost": "0.001",
}


class Session:
    """One connection's REPEATABLE READ READ ONLY transaction for the whole diff."""

    def __init__(self, conn: Any, side: Side, table: str):
        self.conn = conn
        self.side = side
        self.table = table
        self.database = "?"
        self._autocommit: bool | None = None
        self._began = False

    def render(self, composable: sql.Composable) -> str:
        return composable.as_string(self.conn)

    def begin(self) -> None:
        status = self.conn.get_transaction_status()
        if status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            raise TableDiffError(
                f"table diff of {self.table}: the {self.side} connection is not idle (a transaction is open or it is"
                " broken); pass a connection with no transaction in progress",
                table=self.table,
                side=self.side,
            )
        self._autocommit = self.conn.autocommit
        self.conn.autocommit = True
        settings = sql.SQL(", ").join(
            sql.SQL("set_config({}, {}, true)").format(sql.Literal(name), sql.Literal(value))
            for name, value in _SESSION_SETTINGS.items()
        )
        self._began = True  # from here on, end() rolls back whatever part of this ran
        self.database = self.query(
            sql.SQL("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT current_database(), {}").format(settings)
        )[0][0]

    def end(self) -> None:
        try:
            if self._began and not self.conn.closed:
                with self.conn.cursor() as cur:
                    cur.execute("ROLLBACK")  # read only: nothing to keep
        except psycopg2.Error:
            pass
        finally:
            if self._autocommit is not None and not self.conn.closed:
                self.conn.autocommit = self._autocommit

    def execute(self, statement: str | sql.Composable, params: Any = None) -> None:
        self.query(statement, params, fetch=False)

    def query(
        self, statement: str | sql.Composable, params: Any = None, *, fetch: bool = True
    ) -> list[tuple[Any, ...]]:
        try:
            with self.conn.cursor() as cur:
                cur.execute(statement, params)
                return cur.fetchall() if fetch else []
        except psycopg2.Error as error:
            detail = (error.pgerror or str(error)).strip()
            raise TableDiffError(
                f"table diff of {self.table}: query on the {self.side} ({self.database}) failed: {detail}",
                table=self.table,
                side=self.side,
                retryable=isinstance(error, psycopg2.OperationalError),
            ) from error


class SessionPair:
    """The two sessions, queried concurrently (one thread per connection)."""

    def __init__(self, source: Session, target: Session, pool: ThreadPoolExecutor):
        self.source = source
        self.target = target
        self.pool = pool

    def both(self, work: Callable[[Session], T]) -> tuple[T, T]:
        futures = [self.pool.submit(work, session) for session in (self.source, self.target)]
        errors = [f.exception() for f in futures]
        for error in errors:
            if error is not None:
                raise error
        return futures[0].result(), futures[1].result()

    def query(self, statement: sql.Composable, params: Any = None) -> tuple[list[tuple[Any, ...]], ...]:
        return self.both(lambda s: s.query(statement, params))

"""Bascule as a client of the source and target servers, for the schema and data copies:
the libpq parameters of a server, the error of a copy with whether a retry may cure it,
and connections driven in explicit transactions.

``LibpqParams.env`` hands the password to a client program (``pg_dump``) through
``PGPASSWORD`` in its environment, never its argument list (which ``ps`` shows to every
user of the machine).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg2

from bascule.exceptions import StoreAccessError

# A dead host must fail in seconds, not after the kernel's two minutes of TCP retries.
CONNECT_TIMEOUT_S = "10"
UNREACHABLE = ("could not connect", "Connection refused", "timeout expired", "could not translate host", "timed out")
REFUSED = ("password authentication failed", "no pg_hba.conf entry", "does not exist", "permission denied")


class PgCopyError(StoreAccessError):
    """A schema or data copy failed; ``side`` says which server ('source', 'target' or 'local')."""

    def __init__(self, message: str, *, retryable: bool, side: str, table: str | None = None):
        self.side = side
        self.table = table
        super().__init__(message, retryable=retryable)


@dataclass(repr=False)
class LibpqParams:
    host: str
    port: int
    user: str
    password: str
    dbname: str
    sslmode: str | None = None

    def env(self) -> dict[str, str]:
        """The libpq environment for a client program (pg_dump, psql)."""
        env = {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGPASSWORD": self.password,
            "PGDATABASE": self.dbname,
            "PGCONNECT_TIMEOUT": CONNECT_TIMEOUT_S,
        }
        if self.sslmode:
            env["PGSSLMODE"] = self.sslmode
        return env

    def describe(self) -> str:
        return f"{self.host}:{self.port}/{self.dbname}"

    def __repr__(self) -> str:
        return (
            f"LibpqParams(host={self.host!r}, port={self.port}, user={self.user!r}, password='***', "
            f"dbname={self.dbname!r}, sslmode={self.sslmode!r})"
        )

    @classmethod
    def from_connection(cls, conn: Any) -> LibpqParams:
        """The parameters of an open psycopg2 connection (the one Airflow's PostgresHook made)."""
        info = conn.info
        sslmode = conn.get_dsn_parameters().get("sslmode")
        return cls(info.host, int(info.port), info.user, info.password or "", info.dbname, sslmode)


def address_of(conn: Any) -> str:
    """``host:port/dbname`` of an open connection, for error messages."""
    info = conn.info
    return f"{info.host}:{info.port}/{info.dbname}"


def first_line(text: str) -> str:
    """The first non-blank line of a server or client message, stripped."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def is_retryable(exc: BaseException) -> bool:
    """Connection loss, cancellation, serialization failure, lack of resources: a retry may succeed."""
    code = getattr(exc, "pgcode", None)
    text = str(exc)
    if any(marker in text for marker in REFUSED):
        return False
    if code is None:
        return isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError | OSError)
    return code[:2] in ("08", "40", "53", "57") or code == "55P03"


@contextmanager
def driven_transactions(conn: Any, role: str) -> Iterator[Any]:
    """Autocommit on, so BEGIN/COMMIT are ours; the caller's mode is restored afterwards."""
    if not conn.autocommit and conn.get_transaction_status() != 0:
        raise PgCopyError(
            f"the {role} connection ({address_of(conn)}) is inside a transaction: pass an idle connection",
            retryable=False,
            side=role,
        )
    autocommit = conn.autocommit
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        if conn.closed == 0:
            if conn.get_transaction_status() not in (0, 4):  # idle, or unknown (connection lost)
                try:
                    with conn.cursor() as cur:
                        cur.execute("rollback")
                except psycopg2.Error:
                    pass  # the error that brought us here is the one to report
            conn.autocommit = autocommit

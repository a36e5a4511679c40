"""Bulk data from the source database to the target, one table at a time, with no file in
between: ``copy_table`` streams ``COPY ... TO STDOUT`` on the source into
``COPY ... FROM STDIN`` on the target, through a pipe, in one target transaction.

The schema comes first, from ``schema_copy``; the connection helpers and ``PgCopyError``
from ``client``.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import psycopg2
from psycopg2 import sql

from bascule.postgres.catalog import TableInfo
from bascule.postgres.client import PgCopyError, address_of, driven_transactions, first_line, is_retryable
from bascule.postgres.copy_plan import KeyRange

# Types with an OID below this are built in: their binary COPY format names no OID that
# differs between clusters (arrays and composites of user types carry their element OIDs).
FIRST_NORMAL_OBJECT_ID = 16384
_CHUNK = 1024 * 1024
_F_SETPIPE_SZ = 1031  # Linux fcntl: a 1 MiB pipe means fewer, larger reads on the target side


@dataclass(frozen=True)
class CopyReport:
    table: str
    rows: int
    bytes: int
    seconds: float
    source_lsn_after: str  # pg_current_wal_lsn() on the source once the copy committed
    format: str = "binary"
    range: str = ""  # "2/4" when the copy was one key range of the table

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _CountingReader:
    """What the target's COPY reads: the pipe, counted (and told to ``progress``, bytes so far)."""

    def __init__(self, fd: int, progress: Callable[[int], None] | None = None):
        self.fd = fd
        self.bytes = 0
        self.progress = progress

    def read(self, size: int = _CHUNK) -> bytes:
        data = os.read(self.fd, size)
        self.bytes += len(data)
        if self.progress is not None:
            self.progress(self.bytes)
        return data


# Text COPY is parsed with the reading session's settings: fix them on both sides.
_COPY_SETTINGS = (
    "set local datestyle = 'ISO, YMD'; set local intervalstyle = 'postgres'; set local extra_float_digits = 3; "
    "set local bytea_output = 'hex'; set local client_encoding = 'UTF8';"
)


def _copy_format(source_cur: Any, target_cur: Any, table: TableInfo) -> str:
    source_cur.execute(
        "select current_setting('server_version_num')::int / 10000, "
        "coalesce(bool_and(a.atttypid < %s), true) from pg_attribute a "
        "join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname = %s and c.relname = %s and a.attname = any(%s)",
        (FIRST_NORMAL_OBJECT_ID, table.schema, table.name, [c.name for c in table.copy_columns]),
    )
    source_major, builtin_types = source_cur.fetchone()
    target_cur.execute("select current_setting('server_version_num')::int / 10000")
    (target_major,) = target_cur.fetchone()
    return "binary" if source_major == target_major and builtin_types else "text"


def copy_table(
    source_conn: Any,
    target_conn: Any,
    table: TableInfo,
    key_range: KeyRange | None = None,
    progress: Callable[[int], None] | None = None,
) -> CopyReport:
    """Replace the target table's rows by the source's, streamed; all or nothing on the target.

    With ``key_range``, only that range's rows: the target deletes the range (never the
    whole table: other ranges of it may be copying at the same time) and copies it again
    in one transaction, so a retried range neither duplicates rows nor touches another's.

    The source reads in a REPEATABLE READ READ ONLY transaction (one consistent snapshot); the
    target runs TRUNCATE + COPY in one transaction, committed only when both sides finished
    cleanly: a retry never duplicates rows, and a failure leaves the table as it was. Binary
    COPY when both servers share a major version and every column type is built in (binary
    array/composite values carry type OIDs that differ between clusters), text otherwise.
    Generated columns are left out (the target computes them); identity columns are written
    as-is (COPY FROM takes their values even when GENERATED ALWAYS).
    ``progress`` is told the bytes streamed so far, at every read of the pipe (it rate-limits itself).
    """
    name = table.qualified
    what = name if key_range is None else f"{name} {key_range.describe()}"  # for messages
    columns = sql.SQL(", ").join(sql.Identifier(c.name) for c in table.copy_columns)
    # Inheritance children are tables of their own.
    target = sql.Composed([sql.SQL("" if table.kind == "p" else "ONLY "), sql.Identifier(table.schema, table.name)])
    started = time.monotonic()
    with driven_transactions(source_conn, "source") as src, driven_transactions(target_conn, "target") as tgt:
        side = "source"
        try:
            src.execute("begin isolation level repeatable read read only")
            src.execute(_COPY_SETTINGS)
            side = "target"
            tgt.execute("begin")
            tgt.execute(_COPY_SETTINGS)
            side = "source"
            fmt = _copy_format(src, tgt, table)
            side = "target"
            if key_range is None:
                tgt.execute(sql.SQL("truncate {}").format(target))
            else:
                tgt.execute(sql.SQL("delete from {} where {}").format(target, key_range.predicate()))
        except psycopg2.Error as exc:
            raise _copy_error(side, name, source_conn if side == "source" else target_conn, exc, what) from None
        # Rows land frozen (no later rewrite by VACUUM), which PostgreSQL allows only into a
        # table truncated in this transaction: not for a range, whose table keeps other rows.
        freeze = sql.SQL(", freeze" if table.kind == "r" and key_range is None else "")
        where = sql.SQL("") if key_range is None else sql.SQL(" where {}").format(key_range.predicate())
        copy_out = sql.SQL("copy (select {} from {}{}) to stdout (format {})").format(
            columns, target, where, sql.SQL(fmt)
        )
        copy_in = sql.SQL("copy {} ({}) from stdin (format {}{})").format(
            sql.Identifier(table.schema, table.name), columns, sql.SQL(fmt), freeze
        )
        source_rows, copied = _stream(src, tgt, copy_out, copy_in, source_conn, target_conn, name, what, progress)
        target_rows = tgt.rowcount
        if source_rows >= 0 and target_rows >= 0 and source_rows != target_rows:
            raise PgCopyError(
                f"copy of table {what}: the source sent {source_rows} rows but the target took {target_rows}; "
                "nothing was committed",
                retryable=True,
                side="target",
                table=name,
            )
        try:
            side = "source"
            src.execute("commit")
            side = "target"
            tgt.execute("commit")
            side = "source"
            src.execute("select pg_current_wal_lsn()::text")
            (lsn,) = src.fetchone()
        except psycopg2.Error as exc:
            raise _copy_error(side, name, source_conn if side == "source" else target_conn, exc, what) from None
    label = "" if key_range is None else key_range.label
    return CopyReport(name, target_rows, copied, round(time.monotonic() - started, 3), lsn, fmt, label)


def _stream(
    src: Any,
    tgt: Any,
    copy_out: sql.Composed,
    copy_in: sql.Composed,
    source_conn: Any,
    target_conn: Any,
    name: str,
    what: str,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Run both COPYs joined by a pipe: the source's in a thread, the target's here."""
    read_fd, write_fd = os.pipe()
    try:
        fcntl.fcntl(write_fd, _F_SETPIPE_SZ, _CHUNK)
    except OSError:
        pass  # a smaller pipe only costs more reads
    reader = _CountingReader(read_fd, progress)
    writer = os.fdopen(write_fd, "wb", buffering=_CHUNK)
    failures: list[tuple[str, BaseException]] = []  # in the order they happened: the first is the cause
    source_rows = [-1]

    def pump() -> None:
        try:
            src.copy_expert(copy_out.as_string(source_conn), writer, size=_CHUNK)
            source_rows[0] = src.rowcount
            writer.flush()
        except BaseException as exc:  # reported by the caller, with the side that failed
            failures.append(("source", exc))
        finally:
            try:
                writer.close()  # EOF for the target
            except OSError:
                pass

    thread = threading.Thread(target=pump, name=f"copy-out {name}", daemon=True)
    thread.start()
    try:
        tgt.copy_expert(copy_in.as_string(target_conn), reader, size=_CHUNK)
    except BaseException as exc:
        failures.append(("target", exc))
        if thread.is_alive():
            source_conn.cancel()  # stop the source's COPY rather than wait for it to fill the pipe
    finally:
        os.close(read_fd)  # a writer still blocked on the pipe gets EPIPE and ends
        thread.join()
    if failures:
        side, cause = failures[0]
        raise _copy_error(side, name, source_conn if side == "source" else target_conn, cause, what)
    return source_rows[0], reader.bytes


def _copy_error(side: str, table: str, conn: Any, exc: BaseException, what: str = "") -> PgCopyError:
    code = getattr(exc, "pgcode", None)
    detail = first_line(str(exc)) or type(exc).__name__
    return PgCopyError(
        f"copy of table {what or table} failed on the {side} ({address_of(conn)}): {detail}"
        + (f" [SQLSTATE {code}]" if code else ""),
        retryable=is_retryable(exc),
        side=side,
        table=table,
    )

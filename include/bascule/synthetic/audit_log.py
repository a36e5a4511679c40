"""A keyless table for tests and demos: ``registry.audit_log`` (no primary key, as many
applications' audit or log tables are), and a writer that inserts, updates and deletes
its rows in a thread until stopped.

A migration lists it under ``source.tables_without_primary_key``; the writer's rows are
distinct in column ``n`` only by convention (no constraint), which is what makes such a
table hard to replicate (docs/workloads.md).
"""

from __future__ import annotations

import threading
import time
from contextlib import closing
from typing import Any

TABLE = "registry.audit_log"  # as the manifest lists it


def create_audit_log(conn: Any, rows: int = 2000) -> None:
    """Create the keyless table in schema ``registry`` and seed ``rows`` rows (``conn`` commits)."""
    with conn.cursor() as cur:
        cur.execute("create table registry.audit_log (n int not null, what text, at timestamptz default now())")
        cur.execute(
            "insert into registry.audit_log (n, what) select g, 'seeded' from generate_series(1, %s) g", (rows,)
        )
    if not conn.autocommit:
        conn.commit()


class AuditLogWriter:
    """Inserts, updates and deletes on ``registry.audit_log``, in a thread, until stopped.

    A refused write (the cutover's freeze makes the role read-only, or ends its session)
    is counted and the writer reconnects: it keeps trying until stopped, like an application.
    """

    def __init__(self, dsn: str, pause_s: float = 0.01) -> None:
        self.dsn, self.pause_s = dsn, pause_s
        self.done = threading.Event()
        self.counts = {"insert": 0, "update": 0, "delete": 0, "refused": 0}
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psycopg2

        n = 10_000
        while not self.done.is_set():
            try:
                with closing(psycopg2.connect(self.dsn)) as conn:
                    conn.autocommit = True
                    with conn.cursor() as cur:
                        while not self.done.is_set():
                            n += 1
                            self._write(cur, n)
                            time.sleep(self.pause_s)
            except psycopg2.Error:
                self.counts["refused"] += 1
                time.sleep(0.2)

    def _write(self, cur: Any, n: int) -> None:
        cur.execute("insert into registry.audit_log (n, what) values (%s, 'written')", (n,))
        self.counts["insert"] += 1
        cur.execute("update registry.audit_log set what = 'updated' where n = %s", (n - 3,))
        self.counts["update"] += cur.rowcount
        cur.execute("delete from registry.audit_log where n = %s", (n - 7,))
        self.counts["delete"] += cur.rowcount

    def start(self) -> AuditLogWriter:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=10)

    def __enter__(self) -> AuditLogWriter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def fingerprint(conn: Any, schema: str = "registry", table: str = "audit_log") -> tuple[int, str]:
    """(row count, md5 of the sorted rows): equal on both sides means the same multiset of rows."""
    from psycopg2 import sql

    statement = sql.SQL(
        "select count(*), md5(coalesce(string_agg(t::text, '|' order by t::text), '')) from {} t"
    ).format(sql.Identifier(schema, table))
    with conn.cursor() as cur:
        cur.execute(statement)
        count, digest = cur.fetchone()
        return int(count), str(digest)

"""The write freeze of a postgres cutover on the source, and the write counters that tell
whether anything was written on a side since a baseline (the rollback's warning).

The freeze makes the application roles read-only on the source database and ends their
sessions; ``unfreeze_writes`` gives the writes back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg2 import sql

from bascule.exceptions import BasculeError
from bascule.identifiers import split_columns
from bascule.postgres.statements import execute, fetch_one, require_autocommit, server_version, split_qualified


@dataclass(frozen=True)
class FreezeReport:
    frozen_at: datetime
    roles: list[str]
    terminated_sessions: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "frozen_at": self.frozen_at.isoformat(),
            "roles": self.roles,
            "terminated_sessions": self.terminated_sessions,
        }


@dataclass(frozen=True)
class UnfreezeReport:
    unfrozen_roles: list[str]
    terminated_sessions: int


def _end_sessions(source_conn: Any, database: str, roles: list[str], timeout_s: float) -> int:
    """Terminate the roles' sessions on ``database`` and wait until they are gone.

    pg_terminate_backend only signals: a backend inside COMMIT finishes it first. The
    write freeze is complete only once those backends have exited.
    """
    if not roles:
        return 0
    with source_conn.cursor() as cur:
        # Two statements: in one WHERE, the planner may call pg_terminate_backend before
        # the test that spares this very session.
        cur.execute(
            "select pid from pg_stat_activity where datname = %s and usename = any(%s) and pid <> pg_backend_pid()",
            (database, roles),
        )
        candidates = [r[0] for r in cur.fetchall()]
        cur.execute("select pid from unnest(%s::int[]) as pid where pg_terminate_backend(pid)", (candidates,))
        pids = [r[0] for r in cur.fetchall()]
        deadline = time.monotonic() + timeout_s
        while pids:
            cur.execute("select pid from pg_stat_activity where pid = any(%s)", (pids,))
            pids_left = [r[0] for r in cur.fetchall()]
            if not pids_left:
                break
            if time.monotonic() > deadline:
                raise BasculeError(
                    f"sessions {pids_left} of roles {roles} on database {database} were told to end but are still "
                    f"there after {timeout_s:.0f} s: writes may still commit, do not cut over"
                )
            time.sleep(0.05)
    return len(pids)


def freeze_writes(
    source_conn: Any, database: str, roles: list[str], *, session_exit_timeout_s: float = 30.0
) -> FreezeReport:
    """Make ``roles`` read-only on ``database`` and end their sessions. Idempotent.

    ``default_transaction_read_only`` applies to new sessions, hence the terminations;
    the count includes every session ended by this call. It is a default, not a
    permission: a client that asks for a read-write transaction explicitly still
    writes. It applies to the roles named (sessions logged in as them), not to their
    members, so list the login roles the applications use.
    """
    require_autocommit(source_conn, "freeze_writes")
    for role in roles:
        execute(
            source_conn,
            sql.SQL("alter role {} in database {} set default_transaction_read_only = on").format(
                sql.Identifier(role), sql.Identifier(database)
            ),
        )
    terminated = _end_sessions(source_conn, database, roles, session_exit_timeout_s)
    frozen_at = fetch_one(source_conn, "select now()")[0]
    return FreezeReport(frozen_at, list(roles), terminated)


def frozen_roles(source_conn: Any, database: str, roles: list[str]) -> list[str]:
    """Those of ``roles`` that are read-only on ``database`` by a role-in-database setting."""
    with source_conn.cursor() as cur:
        cur.execute(
            """
            select r.rolname, s.setconfig
            from pg_db_role_setting s
            join pg_roles r on r.oid = s.setrole
            join pg_database d on d.oid = s.setdatabase
            where d.datname = %s and r.rolname = any(%s)
            """,
            (database, list(roles)),
        )
        settings = {name: config or [] for name, config in cur.fetchall()}
    truthy = {"on", "true", "yes", "1", "t", "y"}
    frozen = set()
    for name, config in settings.items():
        for entry in config:
            key, _, value = entry.partition("=")
            if key == "default_transaction_read_only" and value.strip().lower() in truthy:
                frozen.add(name)
    return [r for r in roles if r in frozen]


def unfreeze_writes(
    source_conn: Any,
    database: str,
    roles: list[str],
    *,
    end_sessions: bool = True,
    session_exit_timeout_s: float = 30.0,
) -> UnfreezeReport:
    """Give ``roles`` their writes back on ``database``. Idempotent.

    Sessions opened during the freeze keep their read-only default until they
    reconnect, so with ``end_sessions`` those of the roles that were frozen are ended
    (roles that were not frozen are left alone: a rollback before any freeze costs the
    application nothing).
    """
    require_autocommit(source_conn, "unfreeze_writes")
    were_frozen = frozen_roles(source_conn, database, roles)
    for role in roles:
        execute(
            source_conn,
            sql.SQL("alter role {} in database {} reset default_transaction_read_only").format(
                sql.Identifier(role), sql.Identifier(database)
            ),
        )
    terminated = _end_sessions(source_conn, database, were_frozen, session_exit_timeout_s) if end_sessions else 0
    return UnfreezeReport(were_frozen, terminated)


# -- write counters ----------------------------------------------------------------------------------------


def _counters(conn: Any, tables: list[str]) -> dict[str, int]:
    with conn.cursor() as cur:
        if server_version(conn) >= 150000:
            # Flushes this session's own pending counts (its own writes); other sessions
            # publish theirs at most about once a second (up to 10 s once they go idle).
            cur.execute("select pg_stat_force_next_flush()")
        cur.execute("select pg_stat_clear_snapshot()")
        # Matched part by part as the catalogue stores names, and reported under the caller's own spelling.
        by_parts = {split_qualified(t): t for t in tables}
        cur.execute(
            """
            select schemaname, relname, n_tup_ins + n_tup_upd + n_tup_del
            from pg_stat_user_tables
            where (schemaname, relname) in (select * from unnest(%s::text[], %s::text[]))
            """,
            split_columns(tables),
        )
        return {by_parts[(s, n)]: int(count) for s, n, count in cur.fetchall()}


def table_write_counters(conn: Any, tables: list[str]) -> dict[str, int]:
    """Rows inserted + updated + deleted in each table since the server's statistics began.

    The counters come from the statistics system: other sessions' writes appear with a
    delay of about a second (longer for a session that went idle right after writing),
    TRUNCATE is not counted, and the apply worker's writes count like any other.
    """
    counters = _counters(conn, tables)
    missing = [t for t in tables if t not in counters]
    if missing:
        raise BasculeError(f"table_write_counters: no such table(s) {missing} in this database")
    return counters


def writes_since(conn: Any, baseline: dict[str, int]) -> dict[str, int]:
    """Tables whose write counters moved since ``baseline`` -> rows written since.

    A table dropped since the baseline is reported with ``-1``. Writes from the last
    second or so may not be counted yet (see ``table_write_counters``).
    """
    now = _counters(conn, list(baseline))
    moved = {}
    for table, before in baseline.items():
        if table not in now:
            moved[table] = -1
        elif now[table] != before:
            moved[table] = now[table] - before
    return moved

"""The schema of the source database, replayed on the target, with no file in between.

``dump_schema`` runs ``pg_dump --schema-only`` for one section: ``pre-data`` (schemas,
types, functions, tables, sequences: what the copy needs) or ``post-data`` (indexes,
constraints, triggers: built once, after the data is in, which is much faster than
maintaining them row by row). ``parse_dump`` splits its output into entries and
``apply_schema`` replays them on the target, safely re-runnable.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import psycopg2

from bascule.identifiers import split_columns, split_qualified
from bascule.postgres.client import (
    CONNECT_TIMEOUT_S,
    REFUSED,
    UNREACHABLE,
    LibpqParams,
    PgCopyError,
    address_of,
    driven_transactions,
    first_line,
    is_retryable,
)


def _pg_binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    pg_config = shutil.which("pg_config")
    if pg_config:
        bindir = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        candidate = Path(bindir) / name
        if candidate.exists():
            return str(candidate)
    raise PgCopyError(
        f"{name} not found on PATH nor in pg_config --bindir: install the PostgreSQL client programs of the "
        "source's major version or later (Debian: apt-get install postgresql-client)",
        retryable=False,
        side="local",
    )


def _client_env(params: LibpqParams) -> dict[str, str]:
    """This process's environment minus any PG* variable, plus the connection's: nothing leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    return {**env, **params.env()}


def dump_schema(
    params: LibpqParams,
    section: Literal["pre-data", "post-data"],
    schemas: Sequence[str],
    tables: Sequence[str],
    snapshot: str | None = None,
    *,
    extensions: Sequence[str] = (),
    pg_dump: str | None = None,
) -> str:
    """One section of the source's DDL, as plain SQL (UTF-8).

    The dump covers whole ``schemas`` (types, functions, views, tables...). A non-empty
    ``tables`` (qualified names, ``bascule.identifiers``) keeps the schemas' other objects but leaves out
    their other tables (``--exclude-table``; partitions and serial sequences follow their
    table): pg_dump's own
    ``--table`` would also drop the schemas, types and functions the tables need.
    ``extensions`` are dumped as ``CREATE EXTENSION IF NOT EXISTS`` (pg_dump leaves them out of
    a schema-filtered dump). ``snapshot`` is an exported snapshot (e.g. from creating the
    replication slot) so the DDL matches the slot's starting point.
    """
    binary = pg_dump or _pg_binary("pg_dump")
    dump_schemas, excluded = list(schemas), list[tuple[str, str]]()
    if tables:
        dump_schemas, excluded = _dump_scope(params, schemas, tables)
    argv = [
        binary,
        "--schema-only",
        f"--section={section}",
        "--no-owner",
        "--no-privileges",
        "--no-publications",
        "--no-subscriptions",
        "--encoding=UTF8",
        *[f"--schema={_quoted_pattern(s)}" for s in dump_schemas],
        *[f"--exclude-table={_quoted_pattern(s)}.{_quoted_pattern(n)}" for s, n in excluded],
    ]
    if section == "pre-data":
        argv += [f"--extension={_quoted_pattern(e)}" for e in extensions if e != "plpgsql"]
    if snapshot:
        argv.append(f"--snapshot={snapshot}")
    try:
        result = subprocess.run(argv, env=_client_env(params), capture_output=True, timeout=3600, check=False)
    except FileNotFoundError:
        raise PgCopyError(f"{binary} not found", retryable=False, side="local") from None
    except subprocess.TimeoutExpired:
        raise PgCopyError(
            f"{binary} --section={section} of {params.describe()} ran for over an hour", retryable=True, side="source"
        ) from None
    stderr = result.stderr.decode("utf-8", "replace")
    if result.returncode != 0:
        first = first_line(stderr) or f"exit status {result.returncode}"
        retryable = any(m in stderr for m in UNREACHABLE) and not any(m in stderr for m in REFUSED)
        raise PgCopyError(
            f"{binary} --section={section} of {params.describe()} as '{params.user}' failed: {first}",
            retryable=retryable,
            side="source",
        )
    return result.stdout.decode("utf-8")


def _dump_scope(
    params: LibpqParams, schemas: Sequence[str], tables: Sequence[str]
) -> tuple[list[str], list[tuple[str, str]]]:
    """The schemas to dump, and their tables to leave out: those neither listed nor a partition of one."""
    wanted = [split_qualified(t) for t in tables]  # compared part by part, as the catalogue stores them
    table_schemas, table_names = split_columns(tables)
    try:
        with (
            closing(
                psycopg2.connect(
                    host=params.host,
                    port=params.port,
                    user=params.user,
                    password=params.password,
                    dbname=params.dbname,
                    sslmode=params.sslmode or "prefer",
                    connect_timeout=int(CONNECT_TIMEOUT_S),
                )
            ) as conn,
            conn.cursor() as cur,
        ):
            cur.execute(
                """
                with recursive selected as (
                    select c.oid
                    from pg_class c join pg_namespace n on n.oid = c.relnamespace
                    where c.relkind in ('r', 'p', 'f')
                      and (n.nspname, c.relname) in (
                          select * from unnest(%(table_schemas)s::text[], %(table_names)s::text[]))
                ), kept(oid) as (
                    select oid from selected
                    union all
                    select i.inhrelid from kept k
                    join pg_inherits i on i.inhparent = k.oid
                    join pg_class p on p.oid = i.inhrelid and p.relispartition
                )
                select n.nspname, c.relname, c.oid in (select oid from kept),
                       c.oid in (select oid from selected)
                from pg_class c join pg_namespace n on n.oid = c.relnamespace
                where c.relkind in ('r', 'p', 'f')
                  and (n.nspname = any(%(schemas)s) or c.oid in (select oid from selected))
                union all  -- serial sequences go with their table
                select n.nspname, s.relname, d.refobjid in (select oid from kept), false
                from pg_class s
                join pg_namespace n on n.oid = s.relnamespace
                join pg_depend d on d.classid = 'pg_class'::regclass and d.objid = s.oid
                     and d.refclassid = 'pg_class'::regclass and d.deptype = 'a'
                where s.relkind = 'S' and n.nspname = any(%(schemas)s)
                """,
                {"table_schemas": table_schemas, "table_names": table_names, "schemas": list(schemas)},
            )
            rows = cur.fetchall()
    except psycopg2.Error as exc:
        raise PgCopyError(
            f"listing the tables of {params.describe()} as '{params.user}' failed: {first_line(str(exc))}",
            retryable=is_retryable(exc),
            side="source",
        ) from None
    found = {(schema, name) for schema, name, _, selected in rows if selected}
    missing = [t for t, parts in zip(tables, wanted, strict=True) if parts not in found]
    if missing:
        raise PgCopyError(
            f"table(s) {missing} not found in source database {params.describe()}", retryable=False, side="source"
        )
    dump_schemas = sorted(set(schemas) | {schema for schema, _, _, selected in rows if selected})
    excluded = [(schema, name) for schema, name, kept, _ in rows if not kept and schema in dump_schemas]
    return dump_schemas, sorted(excluded)


def _quoted_pattern(name: str) -> str:
    """A pg_dump pattern matching exactly ``name`` (quotes make ``*``, ``?``, ``.``, spaces and case literal).

    Schema and table are quoted apart and joined by a bare dot (``"my.schema"."Encounter"``):
    pg_dump splits a pattern on unquoted dots only.
    """
    return '"' + name.replace('"', '""') + '"'


_ENTRY_HEADER = re.compile(r"^-- Name: (?P<name>.*); Type: (?P<type>.*?); Schema: (?P<schema>.*?); Owner: .*$")
_SET = re.compile(r"^SET (?P<name>\w+) = (?P<value>.*);$")
_SEARCH_PATH = re.compile(r"^SELECT pg_catalog\.set_config\('search_path', '(?P<value>[^']*)', false\);$")
_PSQL_GUARD = re.compile(r"^\\(un)?restrict \S+$")  # psql meta-commands pg_dump adds since 15.14


@dataclass(frozen=True)
class SchemaEntry:
    """One object of a pg_dump script: its SQL and the session settings it runs under."""

    type: str
    schema: str
    name: str
    sql: str
    settings: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.type} {self.name}" if self.schema == "-" else f"{self.type} {self.schema}.{self.name}"

    def transaction_sql(self) -> str:
        return "".join(f"{s}\n" for s in self.settings) + self.sql


def _local(name: str, value: str) -> str:
    return f"SELECT pg_catalog.set_config('{name}', {value}, true);"


def parse_dump(sql: str) -> list[SchemaEntry]:
    """Split pg_dump's plain output into its entries (the ``-- Name: ...; Type: ...`` blocks).

    Session ``SET``s become transaction-local settings carried by each entry, so applying a
    script leaves the caller's connection as it was; psql meta-commands are dropped.
    """
    lines = [line for line in sql.splitlines() if not _PSQL_GUARD.match(line)]
    starts = [
        i
        for i in range(len(lines) - 2)
        if lines[i] == "--" and _ENTRY_HEADER.match(lines[i + 1]) and lines[i + 2] == "--"
    ]
    settings: dict[str, str] = {}

    def take_setting(line: str) -> bool:
        if match := _SET.match(line):
            name = match["name"]
            if name != "client_encoding":  # the driver converts; --encoding=UTF8 fixed the text's
                settings[name] = _local(name, _as_literal(match["value"]))
            return True
        if match := _SEARCH_PATH.match(line):
            settings["search_path"] = _local("search_path", f"'{match['value']}'")
            return True
        return False

    header = lines[: starts[0]] if starts else lines
    for line in header:
        if line.strip() and not line.startswith("--") and not take_setting(line):
            raise PgCopyError(
                f"unexpected statement before the first pg_dump entry: {line!r}", retryable=False, side="local"
            )
    entries: list[SchemaEntry] = []
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(lines)
        body = lines[start + 3 : end]
        # pg_dump writes the SETs for the next entries (default_tablespace, ...) and the closing
        # comment after an entry's SQL: peel them off its end.
        trailing: list[str] = []
        while body and (not body[-1].strip() or body[-1].startswith("--") or _SET.match(body[-1])):
            trailing.append(body.pop())
        header_match = _ENTRY_HEADER.match(lines[start + 1])
        assert header_match is not None
        text = "\n".join(body).strip()
        if text:
            entries.append(
                SchemaEntry(
                    header_match["type"],
                    header_match["schema"],
                    header_match["name"],
                    text + "\n",
                    tuple(settings.values()),
                )
            )
        for line in reversed(trailing):
            take_setting(line)
    return entries


def _as_literal(value: str) -> str:
    """A SET value as a set_config() argument: ``0`` -> ``'0'``, ``'x'`` stays, ``heap`` -> ``'heap'``."""
    if value.startswith("'") and value.endswith("'"):
        return value
    return "'" + value.replace("'", "''") + "'"


@dataclass
class SchemaApplyReport:
    applied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already on the target

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# SQLSTATEs that mean "an object of that name is already there".
_DUPLICATE = {"42P06", "42P07", "42710", "42723"}
_QNAME = r'(?:"(?:[^"]|"")+"|[^\s."(]+)(?:\.(?:"(?:[^"]|"")+"|[^\s."(]+))?'
_ADD_PRIMARY_KEY = re.compile(
    rf"ALTER TABLE (?:ONLY )?(?P<table>{_QNAME})\s+ADD CONSTRAINT (?P<name>{_QNAME}) PRIMARY KEY"
)
_ATTACH_PARTITION = re.compile(rf"ATTACH PARTITION (?P<child>{_QNAME})")


def apply_schema(target_conn: Any, sql: str, *, if_absent: bool) -> SchemaApplyReport:
    """Replay a ``dump_schema`` section on the target.

    ``if_absent=False``: the whole section in one transaction; any error rolls all of it back.
    For a target known to be empty.

    ``if_absent=True``: re-runnable. Each pg_dump entry (one object: a table, a sequence, an
    index, a constraint...) runs in its own transaction, so a crash leaves every object either
    fully created or absent. An entry that fails because its object already exists (duplicate
    schema, relation, object or function; a primary key or partition attachment the catalogue
    shows in place) is rolled back and reported as skipped; any other error stops the run.
    Detecting "already there" from the server's own error, rather than parsing names out of the
    SQL, covers every object type pg_dump emits with one rule. What it cannot see is an object
    of the same name but another definition: compare ``read_inventory`` of both sides with
    ``schema_changes`` afterwards to be sure.

    In both modes a ``COMMENT ON EXTENSION`` the target refuses for lack of ownership (managed
    services own their extensions) is skipped, not fatal.
    """
    entries = parse_dump(sql)
    report = SchemaApplyReport()
    with driven_transactions(target_conn, "target") as cur:
        if not if_absent:
            cur.execute("begin")
            for entry in entries:
                try:
                    cur.execute("savepoint bascule_entry")
                    cur.execute(entry.transaction_sql())
                except psycopg2.Error as exc:
                    if _not_ours_to_comment(entry, exc):
                        cur.execute("rollback to savepoint bascule_entry")
                        report.skipped.append(f"{entry.label} (not the extension's owner)")
                        continue
                    cur.execute("rollback")
                    raise _schema_error(target_conn, entry, exc) from None
                report.applied.append(entry.label)
            cur.execute("commit")
            return report
        for entry in entries:
            try:
                cur.execute("begin")
                cur.execute(entry.transaction_sql())
                cur.execute("commit")
                report.applied.append(entry.label)
            except psycopg2.Error as exc:
                if target_conn.closed:
                    raise _schema_error(target_conn, entry, exc) from None
                cur.execute("rollback")
                if _not_ours_to_comment(entry, exc):
                    report.skipped.append(f"{entry.label} (not the extension's owner)")
                elif _already_there(cur, entry, exc):
                    report.skipped.append(entry.label)
                else:
                    raise _schema_error(target_conn, entry, exc) from None
    return report


def _not_ours_to_comment(entry: SchemaEntry, exc: psycopg2.Error) -> bool:
    """pg_dump comments on every extension it creates; on a managed target (no superuser) the
    provider owns the extension, so the comment is refused. It is cosmetic: skip it."""
    return exc.pgcode == "42501" and entry.type == "COMMENT" and entry.name.startswith("EXTENSION ")


def _already_there(cur: Any, entry: SchemaEntry, exc: psycopg2.Error) -> bool:
    if exc.pgcode in _DUPLICATE:
        return True
    if exc.pgcode == "42P16" and (match := _ADD_PRIMARY_KEY.search(entry.sql)):  # "multiple primary keys"
        cur.execute(
            "select exists (select 1 from pg_constraint where conrelid = to_regclass(%s) and contype = 'p' "
            "and (conname = %s or quote_ident(conname) = %s))",
            (match["table"], match["name"], match["name"]),
        )
        return bool(cur.fetchone()[0])
    if exc.pgcode == "42809" and (match := _ATTACH_PARTITION.search(entry.sql)):  # "is already a partition"
        cur.execute(
            "select coalesce((select relispartition from pg_class where oid = to_regclass(%s)), false)",
            (match["child"],),
        )
        return bool(cur.fetchone()[0])
    return False


def _schema_error(conn: Any, entry: SchemaEntry, exc: psycopg2.Error) -> PgCopyError:
    return PgCopyError(
        f"applying {entry.label} on the target ({address_of(conn)}) failed: {first_line(str(exc))} "
        f"[SQLSTATE {exc.pgcode}]",
        retryable=is_retryable(exc),
        side="target",
    )

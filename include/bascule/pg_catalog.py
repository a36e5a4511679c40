"""What a source database holds, and whether it can be migrated by logical replication.

``read_inventory`` lists the tables (with their columns, keys, indexes, constraints,
size), sequences and extensions of the schemas a workload migrates. The inventory
is taken at snapshot time and kept as JSON; reading it again later and comparing
(``schema_changes``) tells whether someone ran DDL on the source mid-migration,
which logical replication does not carry.

The ``check_*`` functions are preflight rules: each returns a ``CheckResult`` that
names the server, table or setting at fault and the fix.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from bascule.exceptions import BasculeError
from bascule.policy import CheckResult

MIN_SOURCE_VERSION_NUM = 100000  # PostgreSQL 10: the first with logical replication built in
_SAFE_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_$]*$")
# Keywords quote_ident() quotes (pg_get_keywords() catcode <> 'U', PostgreSQL 15) and the
# ones later versions added: quoting one too many is harmless, one too few breaks SQL.
_NON_UNRESERVED_KEYWORDS = frozenset(
    """all analyse analyze and any array as asc asymmetric authorization between bigint binary bit boolean both
    case cast char character check coalesce collate collation column concurrently constraint create cross
    current_catalog current_date current_role current_schema current_time current_timestamp current_user dec
    decimal default deferrable desc distinct do else end except exists extract false fetch float for foreign
    freeze from full grant greatest group grouping having ilike in initially inner inout int integer intersect
    interval into is isnull join lateral leading least left like limit localtime localtimestamp national natural
    nchar none normalize not notnull null nullif numeric offset on only or order out outer overlaps overlay
    placing position precision primary real references returning right row select session_user setof similar
    smallint some substring symmetric table tablesample then time timestamp to trailing treat trim true union
    unique user using values varchar variadic verbose when where window with xmlattributes xmlconcat xmlelement
    xmlexists xmlforest xmlnamespaces xmlparse xmlpi xmlroot xmlserialize xmltable
    system_user json json_array json_arrayagg json_exists json_object json_objectagg json_query json_scalar
    json_serialize json_table json_value merge_action""".split()
)
_CONSTRAINT_TYPES = {"p": "primary key", "u": "unique", "c": "check", "x": "exclusion"}
_REPLICA_IDENTITY = {"d": "default", "f": "full", "i": "using index", "n": "nothing"}


class InventoryError(BasculeError):
    """The source does not hold what the manifest names."""


def quote_ident(name: str) -> str:
    """PostgreSQL's ``quote_ident``: quotes only when needed, so plain names stay readable."""
    if _SAFE_IDENTIFIER.match(name) and name not in _NON_UNRESERVED_KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


def qualify(schema: str, name: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(name)}"


# -- the inventory ----------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str  # format_type(), e.g. "character varying(20)", "catalogue.status"
    not_null: bool
    identity: str = ""  # 'a' (GENERATED ALWAYS), 'd' (BY DEFAULT) or ''
    generated: bool = False  # GENERATED ... STORED: computed by the target, never copied

    def describe(self) -> str:
        return f"{self.name} {self.type}" + (" not null" if self.not_null else "")


@dataclass(frozen=True)
class TableInfo:
    schema: str
    name: str
    columns: list[ColumnInfo]
    primary_key: list[str]
    replica_identity: str  # pg_class.relreplident: 'd', 'f', 'i' or 'n'
    row_estimate: int
    size_bytes: int
    indexes: list[str] = field(default_factory=list)  # pg_get_indexdef(), sorted
    constraints: list[dict[str, str]] = field(default_factory=list)  # name, type, definition
    foreign_keys: list[dict[str, Any]] = field(
        default_factory=list
    )  # name, columns, ref_table, ref_columns, definition
    kind: str = "r"  # 'r' ordinary, 'p' partitioned (copied through its root)
    partitions: list[str] = field(default_factory=list)  # qualified names of every partition below the root

    @property
    def qualified(self) -> str:
        """``schema.name``, quoted where SQL needs it."""
        return qualify(self.schema, self.name)

    @property
    def manifest_name(self) -> str:
        """``schema.name`` unquoted, as the manifest lists tables."""
        return f"{self.schema}.{self.name}"

    @property
    def copy_columns(self) -> list[ColumnInfo]:
        return [c for c in self.columns if not c.generated]

    @property
    def has_replica_key(self) -> bool:
        """Replication can address a row: a primary key, or a unique index named as replica identity."""
        return (bool(self.primary_key) and self.replica_identity == "d") or self.replica_identity == "i"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TableInfo:
        return cls(**{**data, "columns": [ColumnInfo(**c) for c in data["columns"]]})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TableInfo:
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class SequenceInfo:
    schema: str
    name: str
    owned_by: str | None  # qualified "schema.table.column" of a serial/identity column, else None

    @property
    def qualified(self) -> str:
        return qualify(self.schema, self.name)


@dataclass(frozen=True)
class PgInventory:
    database: str
    server_version: str  # current_setting('server_version'), e.g. "15.20 (Debian 15.20-0+deb12u1)"
    schemas: list[str]
    tables: list[TableInfo]  # largest first
    sequences: list[SequenceInfo]
    extensions: list[str]
    taken_at: str  # ISO 8601, UTC
    server_version_num: int = 0  # e.g. 150020

    @property
    def major_version(self) -> int:
        return self.server_version_num // 10000

    def table(self, name: str) -> TableInfo:
        """By qualified or manifest name."""
        for table in self.tables:
            if name in (table.qualified, table.manifest_name):
                return table
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PgInventory:
        return cls(
            **{
                **data,
                "tables": [TableInfo.from_dict(t) for t in data["tables"]],
                "sequences": [SequenceInfo(**s) for s in data["sequences"]],
            }
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PgInventory:
        return cls.from_dict(json.loads(text))


@contextmanager
def _reading(conn: Any) -> Iterator[Any]:
    """A cursor in a read-only transaction of ours, ended afterwards (never left idle in transaction).

    The search_path is ``pg_catalog`` only, so format_type() and pg_get_*def() qualify every
    name: an inventory reads the same whatever the connection's search_path.
    """
    autocommit = conn.autocommit
    if not autocommit and conn.get_transaction_status() != 0:  # psycopg2 TRANSACTION_STATUS_IDLE
        raise InventoryError("the catalogue is read on an idle connection: end the open transaction first")
    with conn.cursor() as cur:
        try:
            cur.execute("begin isolation level repeatable read read only" if autocommit else "select 1")
            cur.execute("set local search_path = pg_catalog")
            yield cur
        finally:
            if autocommit:
                cur.execute("rollback")
            else:
                conn.rollback()


def read_inventory(conn: Any, schemas: Sequence[str], tables: Sequence[str]) -> PgInventory:
    """Tables (ordinary and partitioned roots; not views), sequences and extensions.

    ``tables`` are unquoted ``schema.name``; empty means every table of ``schemas``.
    Partitions are not listed on their own: a partitioned table is copied through its root.
    """
    with _reading(conn) as cur:
        cur.execute(
            "select current_database(), current_setting('server_version'), current_setting('server_version_num')::int"
        )
        database, version, version_num = cur.fetchone()
        where, params = (
            ("n.nspname || '.' || c.relname = any(%s)", [list(tables)])
            if tables
            else (
                "n.nspname = any(%s)",
                [list(schemas)],
            )
        )
        cur.execute(
            f"""
            with recursive roots as (
                select c.oid, n.nspname, c.relname, c.relkind, c.relreplident
                from pg_class c join pg_namespace n on n.oid = c.relnamespace
                where c.relkind in ('r', 'p') and not c.relispartition and {where}
            ), tree(root, relid) as (
                select oid, oid from roots
                union all
                select t.root, i.inhrelid from tree t
                join pg_inherits i on i.inhparent = t.relid
                join pg_class p on p.oid = i.inhrelid and p.relispartition
            )
            select r.oid, r.nspname, r.relname, r.relkind, r.relreplident,
                   (sum(greatest(c.reltuples, 0)) filter (where c.relkind = 'r'))::bigint,
                   sum(pg_table_size(c.oid))::bigint,
                   coalesce(array_agg(array[pn.nspname, c.relname] order by pn.nspname, c.relname)
                       filter (where c.oid <> r.oid), '{{}}')
            from roots r
            join tree t on t.root = r.oid
            join pg_class c on c.oid = t.relid
            join pg_namespace pn on pn.oid = c.relnamespace
            group by r.oid, r.nspname, r.relname, r.relkind, r.relreplident
            """,
            params,
        )
        rows = cur.fetchall()
        if tables:
            found = {f"{r[1]}.{r[2]}" for r in rows}
            missing = [t for t in tables if t not in found]
            if missing:
                raise InventoryError(
                    f"table(s) {missing} not found in source database '{database}' (views are not migrated); "
                    "check source.tables in the manifest"
                )
        oids = [r[0] for r in rows]
        columns = _columns(cur, oids, version_num)
        keys = _primary_keys(cur, oids)
        indexes = _by_table(
            cur, "select indrelid, pg_get_indexdef(indexrelid) from pg_index where indrelid = any(%s)", oids
        )
        constraints = _constraints(cur, oids)
        foreign_keys = _foreign_keys(cur, oids)
        table_infos = [
            TableInfo(
                schema=schema,
                name=name,
                columns=columns.get(oid, []),
                primary_key=keys.get(oid, []),
                replica_identity=replident,
                row_estimate=int(estimate or 0),
                size_bytes=int(size or 0),
                indexes=sorted(indexes.get(oid, [])),
                constraints=sorted(constraints.get(oid, []), key=lambda c: c["name"]),
                foreign_keys=sorted(foreign_keys.get(oid, []), key=lambda f: f["name"]),
                kind=kind,
                partitions=[qualify(s, n) for s, n in parts],
            )
            for oid, schema, name, kind, replident, estimate, size, parts in rows
        ]
        table_infos.sort(key=lambda t: (-t.size_bytes, t.schema, t.name))
        sequences = _sequences(cur, schemas, oids if tables else None)
        cur.execute("select extname from pg_extension order by extname")
        extensions = [r[0] for r in cur.fetchall()]
    return PgInventory(
        database=database,
        server_version=version,
        schemas=list(schemas),
        tables=table_infos,
        sequences=sequences,
        extensions=extensions,
        taken_at=datetime.now(UTC).isoformat(timespec="seconds"),
        server_version_num=version_num,
    )


def _by_table(cur: Any, query: str, oids: list[int]) -> dict[int, list[Any]]:
    cur.execute(query, (oids,))
    out: dict[int, list[Any]] = {}
    for oid, value in cur.fetchall():
        out.setdefault(oid, []).append(value)
    return out


def _columns(cur: Any, oids: list[int], version_num: int) -> dict[int, list[ColumnInfo]]:
    generated = "a.attgenerated <> ''" if version_num >= 120000 else "false"
    cur.execute(
        f"""
        select a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               a.attidentity::text, {generated}
        from pg_attribute a
        where a.attrelid = any(%s) and a.attnum > 0 and not a.attisdropped
        order by a.attrelid, a.attnum
        """,
        (oids,),
    )
    out: dict[int, list[ColumnInfo]] = {}
    for oid, name, type_, not_null, identity, is_generated in cur.fetchall():
        out.setdefault(oid, []).append(ColumnInfo(name, type_, not_null, identity.strip(), bool(is_generated)))
    return out


_KEY_COLUMNS = """(select array_agg(a.attname order by k.ord)
                   from unnest({keys}) with ordinality k(attnum, ord)
                   join pg_attribute a on a.attrelid = {rel} and a.attnum = k.attnum)"""


def _primary_keys(cur: Any, oids: list[int]) -> dict[int, list[str]]:
    cur.execute(
        f"select i.indrelid, {_KEY_COLUMNS.format(keys='i.indkey::int2[]', rel='i.indrelid')} "
        "from pg_index i where i.indisprimary and i.indrelid = any(%s)",
        (oids,),
    )
    return {oid: list(columns) for oid, columns in cur.fetchall()}


def _constraints(cur: Any, oids: list[int]) -> dict[int, list[dict[str, str]]]:
    cur.execute(
        "select conrelid, conname, contype::text, pg_get_constraintdef(oid) from pg_constraint "
        "where conrelid = any(%s) and contype in ('p', 'u', 'c', 'x')",
        (oids,),
    )
    out: dict[int, list[dict[str, str]]] = {}
    for oid, name, kind, definition in cur.fetchall():
        out.setdefault(oid, []).append({"name": name, "type": _CONSTRAINT_TYPES[kind], "definition": definition})
    return out


def _foreign_keys(cur: Any, oids: list[int]) -> dict[int, list[dict[str, Any]]]:
    cur.execute(
        f"""
        select c.conrelid, c.conname, {_KEY_COLUMNS.format(keys="c.conkey", rel="c.conrelid")},
               rn.nspname, r.relname, {_KEY_COLUMNS.format(keys="c.confkey", rel="c.confrelid")},
               pg_get_constraintdef(c.oid)
        from pg_constraint c
        join pg_class r on r.oid = c.confrelid
        join pg_namespace rn on rn.oid = r.relnamespace
        where c.contype = 'f' and c.conrelid = any(%s)
        """,
        (oids,),
    )
    out: dict[int, list[dict[str, Any]]] = {}
    for oid, name, columns, ref_schema, ref_name, ref_columns, definition in cur.fetchall():
        out.setdefault(oid, []).append(
            {
                "name": name,
                "columns": list(columns),
                "ref_table": qualify(ref_schema, ref_name),
                "ref_columns": list(ref_columns),
                "definition": definition,
            }
        )
    return out


def _sequences(cur: Any, schemas: Sequence[str], table_oids: list[int] | None) -> list[SequenceInfo]:
    """Every sequence of the schemas; with a table filter, those the tables own or use in defaults."""
    params: list[Any]
    if table_oids is None:
        where, params = "n.nspname = any(%s)", [list(schemas)]
    else:
        where = """(t.oid = any(%s) or s.oid in (
                      select d.refobjid from pg_depend d join pg_attrdef ad on ad.oid = d.objid
                      where d.classid = 'pg_attrdef'::regclass and d.refclassid = 'pg_class'::regclass
                        and ad.adrelid = any(%s)))"""
        params = [table_oids, table_oids]
    cur.execute(
        f"""
        select n.nspname, s.relname, tn.nspname, t.relname, a.attname
        from pg_class s
        join pg_namespace n on n.oid = s.relnamespace
        left join pg_depend d on d.classid = 'pg_class'::regclass and d.objid = s.oid
             and d.refclassid = 'pg_class'::regclass and d.deptype in ('a', 'i')
        left join pg_class t on t.oid = d.refobjid
        left join pg_namespace tn on tn.oid = t.relnamespace
        left join pg_attribute a on a.attrelid = t.oid and a.attnum = d.refobjsubid
        where s.relkind = 'S' and {where}
        order by n.nspname, s.relname
        """,
        params,
    )
    return [
        SequenceInfo(schema, name, f"{qualify(tschema, tname)}.{quote_ident(column)}" if tname else None)
        for schema, name, tschema, tname, column in cur.fetchall()
    ]


# -- DDL drift ----------------------------------------------------------------------------


def _table_shape(table: TableInfo) -> dict[str, Any]:
    """What DDL changes: not sizes or row counts."""
    return {
        "columns": [asdict(c) for c in table.columns],
        "primary_key": table.primary_key,
        "replica_identity": table.replica_identity,
        "indexes": table.indexes,
        "constraints": table.constraints,
        "foreign_keys": table.foreign_keys,
        "kind": table.kind,
        "partitions": table.partitions,
    }


def schema_fingerprint(inventory: PgInventory) -> dict[str, str]:
    """Qualified table name -> SHA-256 of its shape: equal fingerprints, same DDL."""
    return {
        t.qualified: hashlib.sha256(json.dumps(_table_shape(t), sort_keys=True).encode()).hexdigest()
        for t in inventory.tables
    }


def _named(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in items}


def schema_changes(before: PgInventory, after: PgInventory) -> list[str]:
    """One readable line per DDL difference between two inventories (empty: no change)."""
    changes: list[str] = []
    old = {t.qualified: t for t in before.tables}
    new = {t.qualified: t for t in after.tables}
    for name in sorted(old.keys() - new.keys()):
        changes.append(f"table {name} dropped")
    for name in sorted(new.keys() - old.keys()):
        changes.append(f"new table {name} in schema {quote_ident(new[name].schema)}")
    fingerprints_before, fingerprints_after = schema_fingerprint(before), schema_fingerprint(after)
    for name in sorted(old.keys() & new.keys()):
        if fingerprints_before[name] != fingerprints_after[name]:
            changes.extend(f"table {name}: {line}" for line in _table_changes(old[name], new[name]))
    old_sequences = {s.qualified for s in before.sequences}
    new_sequences = {s.qualified for s in after.sequences}
    changes.extend(f"sequence {s} dropped" for s in sorted(old_sequences - new_sequences))
    changes.extend(f"new sequence {s}" for s in sorted(new_sequences - old_sequences))
    changes.extend(f"extension '{e}' removed" for e in sorted(set(before.extensions) - set(after.extensions)))
    changes.extend(f"extension '{e}' installed" for e in sorted(set(after.extensions) - set(before.extensions)))
    return changes


def _table_changes(old: TableInfo, new: TableInfo) -> list[str]:
    lines: list[str] = []
    old_columns = {c.name: c for c in old.columns}
    new_columns = {c.name: c for c in new.columns}
    for name, column in new_columns.items():
        if name not in old_columns:
            lines.append(f"column '{column.name} {column.type}' added")
    for name in old_columns:
        if name not in new_columns:
            lines.append(f"column '{name}' dropped")
    for name in [n for n in old_columns if n in new_columns]:
        before, after = old_columns[name], new_columns[name]
        if before.type != after.type:
            lines.append(f"column '{name}' type changed from {before.type} to {after.type}")
        if before.not_null != after.not_null:
            lines.append(f"column '{name}' {'set NOT NULL' if after.not_null else 'dropped NOT NULL'}")
        if before.identity != after.identity or before.generated != after.generated:
            lines.append(f"column '{name}' identity/generation changed")
    if [c.name for c in old.columns if c.name in new_columns] != [c.name for c in new.columns if c.name in old_columns]:
        lines.append("column order changed")
    if old.primary_key != new.primary_key:
        lines.append(f"primary key changed from {old.primary_key or 'none'} to {new.primary_key or 'none'}")
    if old.replica_identity != new.replica_identity:
        lines.append(
            f"replica identity changed from {_REPLICA_IDENTITY.get(old.replica_identity, old.replica_identity)} "
            f"to {_REPLICA_IDENTITY.get(new.replica_identity, new.replica_identity)}"
        )
    lines.extend(f"index dropped: {i}" for i in old.indexes if i not in new.indexes)
    lines.extend(f"index added: {i}" for i in new.indexes if i not in old.indexes)
    for kind, was_items, now_items in (
        ("constraint", old.constraints, new.constraints),
        ("foreign key", old.foreign_keys, new.foreign_keys),
    ):
        was, now = _named(was_items), _named(now_items)
        lines.extend(f"{kind} '{n}' dropped" for n in sorted(was.keys() - now.keys()))
        lines.extend(f"{kind} '{n}' added: {now[n]['definition']}" for n in sorted(now.keys() - was.keys()))
        lines.extend(
            f"{kind} '{n}' changed from {was[n]['definition']} to {now[n]['definition']}"
            for n in sorted(was.keys() & now.keys())
            if was[n] != now[n]
        )
    if old.partitions != new.partitions:
        added = [p for p in new.partitions if p not in old.partitions]
        dropped = [p for p in old.partitions if p not in new.partitions]
        lines.append(f"partitions changed (added {added}, dropped {dropped})")
    return lines


# -- preflight rules -------------------------------------------------------------------------


def _settings(cur: Any, *names: str) -> dict[str, str]:
    cur.execute("select name, setting from pg_settings where name = any(%s)", (list(names),))
    return dict(cur.fetchall())


def _major(version_num: int) -> str:
    return str(version_num // 10000) if version_num >= 100000 else f"{version_num // 10000}.{version_num // 100 % 100}"


def check_source_server(conn: Any) -> list[CheckResult]:
    """The source can publish: version, wal_level, a role allowed to replicate, a free slot and sender."""
    results: list[CheckResult] = []
    with _reading(conn) as cur:
        cur.execute(
            "select current_setting('server_version_num')::int, current_setting('server_version'), current_user, "
            "host(inet_server_addr()), inet_server_port()"
        )
        version_num, version, user, host, port = cur.fetchone()
        where = f"source server {host or 'local socket'}:{port or ''}".rstrip(":")
        results.append(
            CheckResult("source_server_version", True, f"{where} runs PostgreSQL {version}")
            if version_num >= MIN_SOURCE_VERSION_NUM
            else CheckResult(
                "source_server_version",
                False,
                f"{where} runs PostgreSQL {version}; logical replication needs PostgreSQL 10 or later: "
                "upgrade the source server first",
            )
        )
        settings = _settings(cur, "wal_level", "max_replication_slots", "max_wal_senders")
        wal_level = settings.get("wal_level", "unknown")
        results.append(
            CheckResult("source_wal_level", True, f"wal_level is 'logical' on the {where}")
            if wal_level == "logical"
            else CheckResult(
                "source_wal_level",
                False,
                f"wal_level is '{wal_level}' on the {where}; logical replication needs 'logical'. "
                "On Azure Database for PostgreSQL (flexible server) set the server parameter wal_level=logical "
                "(portal: Server parameters, or `az postgres flexible-server parameter set --name wal_level "
                "--value logical`) and restart the server; elsewhere set wal_level = logical in postgresql.conf "
                "and restart",
            )
        )
        results.append(_replication_role(cur, user, where))
        results.append(_free_capacity(cur, settings, where))
    return results


def _replication_role(cur: Any, user: str, where: str) -> CheckResult:
    cur.execute(
        "select rolsuper, rolreplication, "
        "exists (select 1 from pg_roles where rolname = 'azure_pg_admin') "
        "and pg_has_role(current_user, 'azure_pg_admin', 'member') "
        "from pg_roles where rolname = current_user"
    )
    superuser, replication, azure_admin = cur.fetchone()
    if superuser or replication:
        how = "is superuser" if superuser else "has the REPLICATION attribute"
        return CheckResult("source_role_can_replicate", True, f"role '{user}' {how} on the {where}")
    admin = " It is a member of azure_pg_admin, which" if azure_admin else " Membership of azure_pg_admin or"
    return CheckResult(
        "source_role_can_replicate",
        False,
        f"role '{user}' on the {where} can neither create a replication slot nor stream changes: it is not "
        f"superuser and lacks the REPLICATION attribute.{admin} pg_read_all_data is not enough. As the server "
        f"admin run: ALTER ROLE {quote_ident(user)} WITH REPLICATION;",
    )


def _free_capacity(cur: Any, settings: dict[str, str], where: str) -> CheckResult:
    max_slots = int(settings.get("max_replication_slots", "0"))
    max_senders = int(settings.get("max_wal_senders", "0"))
    cur.execute("select slot_name from pg_replication_slots order by slot_name")
    slots = [r[0] for r in cur.fetchall()]
    cur.execute("select count(*) from pg_stat_replication")
    senders = cur.fetchone()[0]
    problems = []
    if len(slots) >= max_slots:
        in_use = f" (in use: {', '.join(slots)})" if slots else ""
        problems.append(
            f"no free replication slot: max_replication_slots = {max_slots} and {len(slots)} in use{in_use}; "
            "drop an unused one with SELECT pg_drop_replication_slot('<name>') or raise the server parameter "
            "max_replication_slots and restart"
        )
    if senders >= max_senders:
        problems.append(
            f"no free WAL sender: max_wal_senders = {max_senders} and {senders} streaming; raise the server "
            "parameter max_wal_senders and restart"
        )
    if problems:
        return CheckResult("source_replication_capacity", False, f"on the {where}: " + "; ".join(problems))
    return CheckResult(
        "source_replication_capacity",
        True,
        f"{max_slots - len(slots)} of {max_slots} replication slots and {max_senders - senders} of {max_senders} "
        f"WAL senders free on the {where}",
    )


def check_target_server(conn: Any, source_version_num: int | None = None) -> list[CheckResult]:
    """The target runs the source's major version or later, and its role may create a subscription.

    ``source_version_num`` is the source's server_version_num (``PgInventory.server_version_num``);
    without it the version is reported, not compared.
    """
    results: list[CheckResult] = []
    with _reading(conn) as cur:
        cur.execute(
            "select current_setting('server_version_num')::int, current_setting('server_version'), current_user, "
            "host(inet_server_addr()), inet_server_port()"
        )
        version_num, version, user, host, port = cur.fetchone()
        where = f"target server {host or 'local socket'}:{port or ''}".rstrip(":")
        target_major = _major(version_num)
        if source_version_num is None:
            version_check = CheckResult(
                "target_server_version",
                True,
                f"{where} runs PostgreSQL {version}; not compared with the source (no source version given)",
            )
        elif version_num // 10000 >= source_version_num // 10000:
            version_check = CheckResult(
                "target_server_version",
                True,
                f"{where} runs PostgreSQL {version} (major {target_major}), not older than the source's "
                f"{_major(source_version_num)}",
            )
        else:
            source_major = _major(source_version_num)
            version_check = CheckResult(
                "target_server_version",
                False,
                f"{where} runs PostgreSQL {target_major}, older than the source's PostgreSQL {source_major}; "
                f"a migration only goes to the same or a newer major version: create the target with "
                f"PostgreSQL {source_major} or later",
            )
        results.append(version_check)
        cur.execute(
            "select rolsuper, exists (select 1 from pg_roles where rolname = 'pg_create_subscription') "
            "and pg_has_role(current_user, 'pg_create_subscription', 'member') "
            "from pg_roles where rolname = current_user"
        )
        superuser, may_subscribe = cur.fetchone()
        if superuser or may_subscribe:
            how = "is superuser" if superuser else "is a member of pg_create_subscription"
            results.append(CheckResult("target_role_can_subscribe", True, f"role '{user}' {how} on the {where}"))
        else:
            results.append(
                CheckResult(
                    "target_role_can_subscribe",
                    False,
                    f"role '{user}' on the {where} cannot create a subscription: it needs superuser or, from "
                    "PostgreSQL 16, membership of pg_create_subscription (GRANT pg_create_subscription TO "
                    f"{quote_ident(user)}; plus CREATE on the database)",
                )
            )
    return results


def check_primary_keys(inventory: PgInventory, opted_in: Sequence[str], manifest_path: str) -> CheckResult:
    """Every table can be replicated row by row: a primary key, a replica identity index, or an opt-in."""
    listed = set(opted_in)
    missing = [t for t in inventory.tables if not t.has_replica_key and t.manifest_name not in listed]
    nothing = [t for t in inventory.tables if t.replica_identity == "n"]
    problems = []
    if missing:
        names = ", ".join(t.qualified for t in missing)
        problems.append(
            f"table(s) {names} have no primary key (nor a REPLICA IDENTITY USING INDEX): add a primary key, "
            f"or list them under source.tables_without_primary_key in {manifest_path} to replicate them with "
            "REPLICA IDENTITY FULL (slower)"
        )
    if nothing:
        names = ", ".join(t.qualified for t in nothing)
        problems.append(
            f"table(s) {names} have REPLICA IDENTITY NOTHING: once published, their UPDATEs and DELETEs fail on "
            "the source; run ALTER TABLE ... REPLICA IDENTITY DEFAULT on each"
        )
    if problems:
        return CheckResult("source_primary_keys", False, "; ".join(problems))
    full = [t.qualified for t in inventory.tables if not t.has_replica_key]
    detail = (
        f"{len(inventory.tables) - len(full)} of {len(inventory.tables)} tables have a primary key or replica index"
    )
    if full:
        detail += f"; opted in to REPLICA IDENTITY FULL: {', '.join(full)}"
    return CheckResult("source_primary_keys", True, detail)


def extensions_result(required: dict[str, str | None], available: set[str], database: str) -> CheckResult:
    """``required``: extension -> version installed on the source (None if unknown)."""
    missing = sorted(name for name in required if name not in available)
    if missing:
        named = ", ".join(f"{n} ({required[n]})" if required[n] else n for n in missing)
        return CheckResult(
            "target_extensions",
            False,
            f"extension(s) {named} installed in source database '{database}' are not available on the target "
            "server (pg_available_extensions): ask the target provider to enable them, or drop them from the "
            "source if nothing uses them",
        )
    present = ", ".join(sorted(required)) or "none besides plpgsql"
    return CheckResult("target_extensions", True, f"source extensions available on the target: {present}")


def check_extensions(source_conn: Any, target_conn: Any, inventory: PgInventory) -> CheckResult:
    """Each extension the source database uses (plpgsql aside) can be created on the target."""
    with _reading(source_conn) as cur:
        cur.execute("select extname, extversion from pg_extension")
        versions = dict(cur.fetchall())
    required = {name: versions.get(name) for name in inventory.extensions if name != "plpgsql"}
    with _reading(target_conn) as cur:
        cur.execute("select name from pg_available_extensions")
        available = {r[0] for r in cur.fetchall()}
    return extensions_result(required, available, inventory.database)

"""What a source database holds: the inventory a postgres workload migrates.

``read_inventory`` lists the tables (with their columns, keys, indexes, constraints,
size), sequences and extensions of the schemas a workload migrates, read in a
read-only snapshot with a ``pg_catalog``-only search_path so every name comes out
qualified. The inventory is taken at snapshot time and kept as JSON
(``PgInventory.to_json``); ``schema_drift`` compares two of them, and
``replication_checks`` holds the preflight rules that read the servers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from bascule.exceptions import BasculeError
from bascule.identifiers import format_name, qualified_name, split_columns, split_qualified

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


class InventoryError(BasculeError):
    """The source does not hold what the manifest names."""


def quote_ident(name: str) -> str:
    """PostgreSQL's ``quote_ident``: quotes only when needed, so plain names stay readable."""
    if _SAFE_IDENTIFIER.match(name) and name not in _NON_UNRESERVED_KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


def qualify(schema: str, name: str) -> str:
    """The SQL spelling (``clinical."Encounter"``), for statements a message suggests to a person.

    Not the text form names travel in (``TableInfo.qualified``, ``bascule.identifiers``), and
    never pasted into a statement Bascule runs: those take ``sql.Identifier(schema, name)``.
    """
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
        """``schema.name`` in the one text form manifests, plans and evidence share."""
        return qualified_name(self.schema, self.name)

    @property
    def manifest_name(self) -> str:
        """The name as the manifest lists it: the same text form as ``qualified``."""
        return self.qualified

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
        return qualified_name(self.schema, self.name)


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
        """By qualified name, in any spelling the manifest syntax allows (``"public"."t"`` is ``public.t``)."""
        wanted = split_qualified(name)
        for table in self.tables:
            if (table.schema, table.name) == wanted:
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
def read_only_cursor(conn: Any) -> Iterator[Any]:
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

    ``tables`` are qualified names (``bascule.identifiers``), matched against the catalogue
    part by part as PostgreSQL stores them; empty means every table of ``schemas``.
    Partitions are not listed on their own: a partitioned table is copied through its root.
    """
    with read_only_cursor(conn) as cur:
        cur.execute(
            "select current_database(), current_setting('server_version'), current_setting('server_version_num')::int"
        )
        database, version, version_num = cur.fetchone()
        wanted = [split_qualified(t) for t in tables]
        where, params = (
            ("(n.nspname, c.relname) in (select * from unnest(%s::text[], %s::text[]))", list(split_columns(tables)))
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
            found = {(r[1], r[2]) for r in rows}
            missing = [t for t, parts in zip(tables, wanted, strict=True) if parts not in found]
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
                partitions=[qualified_name(s, n) for s, n in parts],
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
                "ref_table": qualified_name(ref_schema, ref_name),
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
        SequenceInfo(schema, name, f"{qualified_name(tschema, tname)}.{format_name(column)}" if tname else None)
        for schema, name, tschema, tname, column in cur.fetchall()
    ]

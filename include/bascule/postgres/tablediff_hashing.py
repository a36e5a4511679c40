"""Each side's table as the diff sees it, and the row hash SQL computed from it.

``describe`` reads a table's columns, whether a unique index makes its rows distinct,
its row estimate and the columns that lead a btree index; ``hash_plan`` picks one
hash function per column valid on both sides, and ``row_hash``/``key_hash`` write
the SQL expression that reduces a row (or its key) to one bigint.

Row hash (a chain of the types' own extended hash functions, the ones hash
partitioning uses): ``h = f_n(v_n, ... f_1(v_1, state))``, each column's value fed
with the previous hash as seed. ``hash_record_extended(ROW(...))`` was measured
slower (it builds and deforms a record per row; chain ~0.67x its time on 7 columns)
and is weaker: it combines column hashes linearly (``h*31 + h_i``), maps NULL to 0,
and ``hash_numeric_extended`` returns the seed itself for NaN and +-Infinity, so
NULL, NaN and Infinity hash alike. Here ``state`` is a per-row integer that
encodes which columns are NULL, which unconstrained numerics are NaN/+-Infinity
(numeric(p,s) cannot hold Infinity, and a lone NaN differs from any finite value)
and which timestamptz are +-infinity, so those differ (NULL vs '' too).
timestamptz is hashed as the interval since the epoch: the cast to timestamp goes
through the time zone and cost twice as much. Types without a stable,
equality-consistent hash (enums, whose hash is their OID, arrays, json, bytea, user
types...) are hashed as their text output, under fixed
TimeZone/DateStyle/extra_float_digits/bytea_output.

Stability across servers: these are the hash-opclass support functions that hash
partitioning routes rows with, so PostgreSQL keeps them stable across versions
(pg_upgrade keeps hash-partitioned data in place). The known exceptions are
handled or stated: enum hashes derive from OIDs (hashed as text here, as pg_dump
loads hash-on-enum partitions via the root for this reason); text is hashed under
the "C" collation (nondeterministic collations hash by sort key); and hash_bytes
differs between little- and big-endian builds (both sides are x86-64/arm64 here).

Equal means equal text, not merely equal by the type's ``=``. A migration must
carry each value as written: a lab result of 1.0 is not the 1.00 it would compare
equal to (the scale is the precision that was recorded), -0 is not 0 to a float
reader, and '1 mon' is not '30 days' when added to a date. So where a type's own
hash is coarser than its text, the row hash adds what it ignores or falls back to
the text: unconstrained numerics (or scales that differ between the sides) add
their display scale, floats a -0 flag, and interval, jsonb (its numbers compare
by value: {"v": 1.0} = {"v": 1.00}), unconstrained bpchar (trailing blanks) and
columns whose type differs between the sides (float4 vs float8, char(n) vs
char(m), integer vs numeric, inet vs cidr) hash their text output. Still equal:
timestamptz values of one instant (their text under the fixed TimeZone is one
text), and char(n) values padded alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from psycopg2 import sql

from bascule.postgres.tablediff_records import TableDiffError, TableSpec
from bascule.postgres.tablediff_sessions import Session

_ROW_SEED = 0
_KEY_SEED = 0x6261736375  # "bascu": the key hash must not equal the row hash
_STATE_BITS = 62  # per state group: the groups' sum stays a non-negative bigint


@dataclass(frozen=True)
class Column:
    name: str
    type_sql: str  # format_type(), for casts
    base_type: str  # typname after resolving one domain level
    typtype: str
    not_null: bool
    numeric_scale: int | None  # numeric(p, s): s; None when unconstrained or not numeric


@dataclass(frozen=True)
class TableShape:
    columns: dict[str, Column]
    unique_key: bool
    estimated_rows: float
    btree_leading: frozenset[str]  # columns that lead a btree index (range scans)


_DESCRIBE = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), b.typname, b.typtype, a.attnotnull,
       CASE WHEN b.typname = 'numeric' AND a.atttypmod >= 4
            THEN ((a.atttypmod - 4) & 2047) - CASE WHEN ((a.atttypmod - 4) & 1024) <> 0 THEN 2048 ELSE 0 END END
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
WHERE a.attrelid = %(rel)s::oid AND a.attnum > 0 AND NOT a.attisdropped
"""

# Whether a unique index without predicate or expressions has only key columns, all
# NOT NULL (rows are then distinct); and the columns that lead a btree index.
_INDEXES = """
SELECT EXISTS (
  SELECT 1 FROM pg_index i
  WHERE i.indrelid = %(rel)s::oid AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
    AND NOT EXISTS (
      SELECT 1 FROM unnest(i.indkey) k(attnum)
      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
      WHERE NOT (a.attname = ANY(%(keys)s) AND a.attnotnull))),
  ARRAY(
    SELECT DISTINCT a.attname::text
    FROM pg_index i
    JOIN pg_class c ON c.oid = i.indexrelid
    JOIN pg_am am ON am.oid = c.relam AND am.amname = 'btree'
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
    WHERE i.indrelid = %(rel)s::oid AND i.indpred IS NULL)
"""


def describe(session: Session, spec: TableSpec) -> TableShape:
    """The table of ``spec`` on this side; refused if it or a compared column is missing."""
    # Found by its two parts as the catalogue stores them: no name is parsed as SQL text.
    row = session.query(
        "SELECT c.oid, c.reltuples FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        (spec.schema, spec.name),
    )
    rel, reltuples = row[0] if row else (None, None)
    if rel is None:
        raise TableDiffError(
            f"table {spec.qualified_name} does not exist on the {session.side} ({session.database})",
            table=spec.qualified_name,
            side=session.side,
        )
    columns = {
        r[0]: Column(name=r[0], type_sql=r[1], base_type=r[2], typtype=r[3], not_null=r[4], numeric_scale=r[5])
        for r in session.query(_DESCRIBE, {"rel": rel})
    }
    missing = [c for c in spec.compared_columns() if c not in columns]
    if missing:
        raise TableDiffError(
            f"table {spec.qualified_name} on the {session.side} has no column {', '.join(missing)}",
            table=spec.qualified_name,
            side=session.side,
        )
    unique, leading = session.query(_INDEXES, {"rel": rel, "keys": list(spec.key_columns)})[0]
    return TableShape(
        columns=columns,
        unique_key=bool(unique),
        estimated_rows=max(float(reltuples or 0), 0.0),
        btree_leading=frozenset(leading),
    )


# family -> (hash function, cast to, literal for NULL, hash under COLLATE "C")
_FAMILIES: dict[str, tuple[str, str, str, bool]] = {
    "int": ("hashint8extended", "int8", "0", False),
    "numeric": ("hash_numeric_extended", "numeric", "0", False),
    "float": ("hashfloat8extended", "float8", "0", False),
    "text": ("hashtextextended", "text", "''", True),
    "bpchar": ("hashbpcharextended", "bpchar", "''", True),
    "uuid": ("uuid_hash_extended", "uuid", "'00000000-0000-0000-0000-000000000000'", False),
    "bool": ("hashint4extended", "int4", "0", False),  # via ::int4 (no SQL-callable bool hash)
    "date": ("timestamp_hash_extended", "timestamp", "'epoch'", False),
    "timestamp": ("timestamp_hash_extended", "timestamp", "'epoch'", False),
    # Hashed as the interval since the epoch (see _value): the cast to timestamp
    # converts through the time zone and measured twice as dear.
    "timestamptz": ("interval_hash_extended", "timestamptz", "'0'", False),
    "time": ("time_hash_extended", "time", "'00:00'", False),
    "timetz": ("timetz_hash_extended", "timetz", "'00:00+00'", False),
    "inet": ("hashinetextended", "inet", "'0.0.0.0'", False),
    "cidr": ("hashinetextended", "cidr", "'0.0.0.0'", False),  # own family: inet text differs from cidr's
    "macaddr": ("hashmacaddrextended", "macaddr", "'00:00:00:00:00:00'", False),
}
_TEXT_OUTPUT = ("hashtextextended", "text", "''", True)
# Types whose ::text cast is not their output: bpchar's strips trailing blanks, inet's
# and cidr's always print the netmask. concat() calls the output function.
_CAST_IS_NOT_OUTPUT = frozenset({"bpchar", "inet", "cidr"})
_NARROW_INT_HASH = {"int2": "hashint2extended", "int4": "hashint4extended"}
_BASE_TYPE_FAMILY = {
    "int2": "int", "int4": "int", "int8": "int",
    "float4": "float", "float8": "float",
    "text": "text", "varchar": "text",
}  # fmt: skip
# Families whose hash is exact only between identical types: float4 0.1 cast to float8
# hashes like the float8 0.100000001490116 whose text differs; char(n) pads to n.
_SAME_TYPE_ONLY = frozenset({"float", "bpchar"})

# family -> (bits, the column's state: 0 for an ordinary value). hash_numeric_extended
# hashes the digits and the weight, not the sign (-1.5 and 1.5 hash alike) nor the
# display scale (1.0 and 1.00), and returns the seed itself for NaN and +-Infinity;
# scale() is NULL only for NULL, NaN and +-Infinity, so one call gives the scale
# (doubled, plus the sign, offset past the special values' codes; at most 32,773) or
# tells the special values apart. In numeric(p,s) every value has scale s and no
# +-Infinity fits: the sign (NaN < 0 is false: NaN hashes as the seed itself, like no
# finite value) and NULL. hashfloat8extended hashes -0 like 0: the text is asked only of
# zeros. Infinite timestamps cannot be subtracted from the epoch (see _value), so their
# sign is kept here.
_STATE_CASES = {
    "numeric": (
        16,
        "coalesce(scale({c}) * 2 + CASE WHEN {c} < 0 THEN 6 ELSE 5 END, CASE WHEN {c} IS NULL THEN 1"
        " WHEN {c} = 'NaN' THEN 2 WHEN {c} > 0 THEN 3 ELSE 4 END)",
    ),
    "numeric(p,s)": (2, "CASE WHEN {c} IS NULL THEN 1 WHEN {c} < 0 THEN 2 ELSE 0 END"),
    "float": (2, "CASE WHEN {c} IS NULL THEN 1 WHEN {c} <> 0 THEN 0 WHEN {c}::text LIKE '-%' THEN 2 ELSE 0 END"),
    "timestamptz": (
        2,
        "CASE WHEN {c} IS NULL THEN 1 WHEN isfinite({c}) THEN 0 WHEN {c} > 'epoch'::timestamptz THEN 2 ELSE 3 END",
    ),
}
_NULL_CASE = (1, "CASE WHEN {c} IS NULL THEN 1 ELSE 0 END")


def _family(column: Column) -> str | None:
    if column.typtype != "b":  # enums (OID hashes), domains of domains, composites, ranges
        return None
    family = _BASE_TYPE_FAMILY.get(column.base_type, column.base_type)
    return family if family in _FAMILIES else None


@dataclass(frozen=True)
class HashedColumn:
    name: str
    function: str
    cast: str
    null_literal: str
    collate: bool
    nullable: bool
    family: str | None  # None: hashed as text output
    by_output: bool = False  # text through the output function, not the ::text cast


def hash_plan(spec_columns: Sequence[str], source: TableShape, target: TableShape) -> list[HashedColumn]:
    """How each compared column is hashed, the same way on both sides."""
    plan = []
    for name in spec_columns:
        left, right = source.columns[name], target.columns[name]
        family = _family(left)
        if family is None or family != _family(right):
            family = None
        elif family in _SAME_TYPE_ONLY and (left.type_sql != right.type_sql or left.type_sql == "bpchar"):
            family = None  # bare bpchar keeps trailing blanks its hash ignores
        function, cast, null_literal, collate = _TEXT_OUTPUT if family is None else _FAMILIES[family]
        if family == "int" and left.base_type == right.base_type and left.base_type in _NARROW_INT_HASH:
            # hashint8extended equals these on their ranges; calling them saves a cast per row.
            function, cast = _NARROW_INT_HASH[left.base_type], left.base_type
        if family == "numeric" and left.numeric_scale is not None and left.numeric_scale == right.numeric_scale:
            # Every value has the column's scale, and no +-Infinity fits: NaN alone needs no state.
            family = "numeric(p,s)"
        plan.append(
            HashedColumn(
                name=name,
                function=function,
                cast=cast,
                null_literal=null_literal,
                collate=collate,
                nullable=not (left.not_null and right.not_null),
                family=family,
                by_output=family is None and bool({left.base_type, right.base_type} & _CAST_IS_NOT_OUTPUT),
            )
        )
    return plan


def row_hash(plan: Sequence[HashedColumn]) -> sql.Composable:
    """The hash of a whole row of the table aliased ``t``."""
    return _chained_hash(plan, "t", _ROW_SEED)


def key_hash(plan: Sequence[HashedColumn], key_columns: Sequence[str]) -> sql.Composable:
    """The hash of a row's key alone (bucket of a row), seeded apart from the row hash."""
    return _chained_hash([c for c in plan if c.name in key_columns], "t", _KEY_SEED)


def _chained_hash(columns: Sequence[HashedColumn], alias: str, seed: int) -> sql.Composable:
    """``f_n(v_n, ... f_1(v_1, state))``: see the module docstring."""
    states = _state_groups(columns, alias)
    digest: sql.Composable = sql.SQL("{seed}::int8").format(seed=sql.Literal(seed))
    if states:
        digest = sql.SQL("(({state}) # {seed}::int8)").format(state=states[0], seed=sql.Literal(seed))
        for state in states[1:]:
            digest = sql.SQL("hashint8extended({state}, {prev})").format(state=state, prev=digest)
    for column in columns:
        digest = sql.SQL("{f}({v}, {prev})").format(f=sql.SQL(column.function), v=_value(column, alias), prev=digest)
    return digest


def _state_groups(columns: Sequence[HashedColumn], alias: str) -> list[sql.Composable]:
    """One small non-negative integer expression per group of at most 62 state bits."""
    states: list[sql.Composable] = []
    bits = 0
    group: list[sql.Composable] = []
    for column in columns:
        case = _state_case(column)
        if case is None:
            continue
        width, template = case
        state = sql.SQL(template).format(c=sql.Identifier(alias, column.name))
        if bits + width > _STATE_BITS:
            states.append(sql.SQL(" + ").join(group))
            group, bits = [], 0
        group.append(sql.SQL("({state}::int8 << {bits})").format(state=state, bits=sql.Literal(bits)))
        bits += width
    if group:
        states.append(sql.SQL(" + ").join(group))
    return states


def _state_case(column: HashedColumn) -> tuple[int, str] | None:
    if column.family is not None and column.family in _STATE_CASES:
        return _STATE_CASES[column.family]
    return _NULL_CASE if column.nullable else None


def _value(column: HashedColumn, alias: str) -> sql.Composable:
    """The column's value as its hash function takes it."""
    template = "concat({c})" if column.by_output else "{c}::{cast}"
    value: sql.Composable = sql.SQL(template).format(c=sql.Identifier(alias, column.name), cast=sql.SQL(column.cast))
    if column.family == "timestamptz":
        # Subtracting infinite timestamps is an error; NULL and +-Infinity are in the state.
        value = sql.SQL("CASE WHEN isfinite({v}) THEN {v} - 'epoch'::timestamptz ELSE '0'::interval END").format(
            v=value
        )
    elif column.nullable:
        value = sql.SQL("coalesce({v}, {null}::{cast})").format(
            v=value, null=sql.SQL(column.null_literal), cast=sql.SQL(column.cast)
        )
    if column.collate:
        value = sql.SQL('{v} COLLATE "C"').format(v=value)
    return value

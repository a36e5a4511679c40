"""Each side's table as the diff sees it, and the row hash SQL computed from it.

``describe`` reads a table's columns, whether a unique index makes its rows distinct,
its row estimate and the columns that lead a btree index; ``hash_plan`` picks one
hash function per column valid on both sides, and ``row_hash``/``key_hash`` write
the SQL expression that reduces a row (or its key) to one bigint.

Row hash (a chain of the types' own extended hash functions, the ones hash
partitioning uses): ``h = f_n(v_n, ... f_1(v_1, seed))``, each column's value fed
with the previous hash as seed. ``hash_record_extended(ROW(...))`` was measured
slower (it builds and deforms a record per row; chain ~0.67x its time on 7 columns)
and is weaker: it combines column hashes linearly (``h*31 + h_i``), maps NULL to 0,
and ``hash_numeric_extended`` returns the seed itself for NaN and +-Infinity, so
NULL, NaN and Infinity hash alike. Here what a column's hash cannot tell (NULL,
which of NaN/+-Infinity, a numeric's sign and scale, a float's -0) is a small
per-column ``state`` XORed into the seed that column is hashed with:
``f_i(v_i, h_{i-1} # state_i)``. Two rows then collide only if their chains do
(``h # s = h' # s'`` with h != h' is a 64-bit coincidence; with h = h' the states or
values differ). XOR into the seed is one operator; the state bits the first version
summed and hashed as an extra chain link cost ~10% of the row hash.
timestamptz is hashed as the interval since the epoch, +-infinity as two intervals
no finite timestamp is that far from the epoch (the cast to timestamp goes through
the time zone and costs more). Types without a stable, text-consistent hash (enums,
whose hash is their OID, arrays, json, bytea, user types...) are hashed as their text
output, under fixed TimeZone/DateStyle/extra_float_digits/bytea_output.

Stability across servers and major versions (source PG15, target PG16/17): these are
the hash-opclass support functions that hash partitioning routes rows with, and
pg_upgrade keeps hash-partitioned tables' files in place, so a changed hash would
put rows in the wrong partition: PostgreSQL keeps them stable across versions. The
one known exception is stated by postgres/postgres commit 012ffb365a05 ("Fix pg_dump
for hash partitioning on enum columns": enum hash codes derive from OIDs, which
pg_upgrade forces to stay and a dump-and-reload does not), and enums are hashed as
text here; the pg_dump docs (``--load-via-partition-root``) name the others, text
under a different collation definition or encoding: text is hashed under the "C"
collation (bytes; both sides UTF-8, which the catalogue check requires), and
hash_bytes differs between little- and big-endian builds (both sides x86-64/arm64).

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
text), numeric -0.0 and 0.0 (numeric has no negative zero: both read 0.0), and
char(n) values padded alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from psycopg2 import sql

from bascule.postgres.tablediff_records import TableDiffError, TableSpec
from bascule.postgres.tablediff_sessions import Session

_ROW_SEED = 0
_KEY_SEED = 0x6261736375  # "bascu": the key hash must not equal the row hash
# +-infinity of a timestamptz, as intervals since the epoch that no finite value has
# (finite ones start at 4713 BC; interval_hash_extended hashes the span as an int8).
_PLUS_INFINITY_SPAN = "'-200000 years'::interval"
_MINUS_INFINITY_SPAN = "'-100000 years'::interval"


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


def _state_code(name: str) -> str:
    """A fixed pseudo-random int8 literal for one special value (see ``_STATE_CASES``)."""
    return f"({int.from_bytes(hashlib.sha256(f'bascule tablediff {name}'.encode()).digest()[:8], 'big', signed=True)})::int8"


_CODES = {
    name: _state_code(name) for name in ("null", "nan", "plus_infinity", "minus_infinity", "negative", "minus_zero")
}

# family -> the column's state (an int8, 0 for an ordinary value; see the docstring).
# hash_numeric_extended hashes the digits and the weight, not the sign (-1.5 and 1.5
# hash alike) nor the display scale (1.0 and 1.00); for NaN and +-Infinity it returns
# the seed itself and for zero the seed minus one, unmixed. So the special values'
# states are pseudo-random 64-bit codes: a small code XORed into the seed could undo
# that minus one (seed # 1 - 1 = seed # 2 for a quarter of seeds), a random one cannot
# (its XOR with another code would have to be a run of low bits). scale() is NULL only
# for NULL, NaN and +-Infinity: one call gives a finite value's scale (doubled, plus
# the sign: small, but fed to a mixing hash, or to zero's minus one, which is never
# negative) or tells the special values apart. In numeric(p,s) every value has scale s
# and no +-Infinity fits: NULL and the sign remain (NaN < 0 is false). hashfloat8extended
# hashes -0 like 0 (and mixes its seed): the text is asked only of zeros.
_STATE_CASES = {
    "numeric": (
        "coalesce(scale({c})::int8 * 2 + CASE WHEN {c} < 0 THEN 1::int8 ELSE 0::int8 END,"
        " CASE WHEN {c} IS NULL THEN {null} WHEN {c} = 'NaN' THEN {nan} WHEN {c} > 0 THEN {plus_infinity}"
        " ELSE {minus_infinity} END)"
    ),
    "numeric(p,s)": "CASE WHEN {c} IS NULL THEN {null} WHEN {c} < 0 THEN {negative} ELSE 0::int8 END",
    "float": (
        "CASE WHEN {c} IS NULL THEN {null} WHEN {c} <> 0 THEN 0::int8 WHEN {c}::text LIKE '-%' THEN {minus_zero}"
        " ELSE 0::int8 END"
    ),
}
_NULL_CASE = "CASE WHEN {c} IS NULL THEN {null} ELSE 0::int8 END"


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
            # Every value has the column's scale, and no +-Infinity fits: the state is NULL and the sign.
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
    """``f_n(v_n, ... f_1(v_1, seed # state_1) # state_n)``: see the module docstring."""
    digest: sql.Composable = sql.SQL("{seed}::int8").format(seed=sql.Literal(seed))
    for column in columns:
        state = _state_case(column)
        if state is not None:
            digest = sql.SQL("({prev} # {state})").format(
                prev=digest,
                state=sql.SQL(state).format(
                    c=sql.Identifier(alias, column.name), **{k: sql.SQL(v) for k, v in _CODES.items()}
                ),
            )
        digest = sql.SQL("{f}({v}, {prev})").format(f=sql.SQL(column.function), v=_value(column, alias), prev=digest)
    return digest


def _state_case(column: HashedColumn) -> str | None:
    if column.family is not None and column.family in _STATE_CASES:
        return _STATE_CASES[column.family]
    return _NULL_CASE if column.nullable else None


def _value(column: HashedColumn, alias: str) -> sql.Composable:
    """The column's value as its hash function takes it."""
    template = "concat({c})" if column.by_output else "{c}::{cast}"
    value: sql.Composable = sql.SQL(template).format(c=sql.Identifier(alias, column.name), cast=sql.SQL(column.cast))
    if column.family == "timestamptz":
        # Subtracting infinite timestamps is an error (PG15); NULL is in the state.
        value = sql.SQL(
            "CASE WHEN isfinite({v}) THEN {v} - 'epoch'::timestamptz WHEN {v} > 'epoch'::timestamptz THEN {plus}"
            " ELSE {minus} END"
        ).format(v=value, plus=sql.SQL(_PLUS_INFINITY_SPAN), minus=sql.SQL(_MINUS_INFINITY_SPAN))
    elif column.nullable:
        value = sql.SQL("coalesce({v}, {null}::{cast})").format(
            v=value, null=sql.SQL(column.null_literal), cast=sql.SQL(column.cast)
        )
    if column.collate:
        value = sql.SQL('{v} COLLATE "C"').format(v=value)
    return value

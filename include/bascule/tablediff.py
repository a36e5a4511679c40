"""Table diff by segmented checksums computed inside both databases.

The approach of data-diff/reladiff: each side reduces its table to per-segment
(row count, checksum) pairs in ONE aggregate query, both sides at once; only the
segments whose pairs differ are split again, and only small mismatching segments
("leaves") travel to Python as (key, row hash), where the exact differing keys are
found. An equal table costs one scan per side and returns a few hundred rows.

Segments:

- **Key ranges** for a single NOT NULL integer key (smallint, integer, bigint, or a
  numeric without fraction): ``[min, max]`` (union of both sides) is cut into N equal
  ranges, grouped with ``(key - lo) / width``. A mismatching range is re-split into
  sub-ranges that are read with index range scans (``key BETWEEN lo AND hi``).
- **Key-hash buckets** for anything else (composite, text, uuid, nullable key):
  bucket = ``(hash(key) & max_bigint) % N``. A mismatching bucket is re-split by the
  same hash modulo ``N * 16`` (residue classes nest), which costs one more full scan
  per side per level; a mismatching bucket with few rows is fetched directly.

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

Values compare by their type's equality: numeric 1.0 equals 1.00, -0.0 equals 0.0
in floats, bpchar ignores trailing blanks, timestamptz compares instants. If a
column's type family differs between the sides (e.g. integer vs numeric), both
sides hash its text output.

Segment checksum = count(*) and ``bit_xor(h)`` when a unique index backs the key on
both sides (rows are distinct, so XOR's cancelling of equal pairs cannot happen; a
false match needs a 64-bit coincidence), else count(*) and the exact sum of ``h``,
which never cancels. Because h is a chain rather than a sum of per-column terms
(as in hash_record_extended), values trading places between two rows of a segment
change the checksum too.

Consistency: each side runs all its queries in one REPEATABLE READ READ ONLY
transaction, so every level of the bisection sees the same snapshot. The diff is
exact only when the source is quiescent (at cutover, writes frozen) or both sides
are at the same replication point. During live replication a difference may be
transient (the target has not applied it yet): ``recheck`` re-compares just the
given keys once the subscriber has caught up.

Keys are expected to identify rows (primary key or unique NOT NULL): with repeated
keys a key is reported once, as changed if both sides have it.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeVar

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from bascule.exceptions import BasculeError

Kind = Literal["changed", "missing_on_target", "extra_on_target"]
Side = Literal["source", "target"]
T = TypeVar("T")

DEFAULT_LEAF_ROWS = 1_000
BISECTION_FACTOR = 16
MIN_SEGMENTS = 256
MAX_SEGMENTS = 65_536
_BATCH = 256  # segments per bisection/leaf query (bounded statement size)
_MAX_BIGINT = 2**63 - 1
# Above this span key arithmetic switches from bigint to numeric (no overflow).
_BIGINT_SAFE_SPAN = 2**62
_ROW_SEED = 0
_KEY_SEED = 0x6261736375  # "bascu": the key hash must not equal the row hash

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


class TableDiffError(BasculeError):
    """A diff query failed; the message names the table and the side."""

    def __init__(self, message: str, *, table: str, side: str | None, retryable: bool = False):
        self.table = table
        self.side = side
        self.retryable = retryable
        super().__init__(message)


@dataclass
class TableSpec:
    schema: str
    name: str
    key_columns: list[str]
    columns: list[str]  # every compared column, keys included

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}"

    def compared_columns(self) -> list[str]:
        return [*self.key_columns, *(c for c in self.columns if c not in self.key_columns)]


@dataclass
class RowDifference:
    key: tuple[Any, ...] | dict[str, Any]
    kind: Kind


@dataclass
class TableDiff:
    table: str
    source_rows: int
    target_rows: int
    differences: list[RowDifference]
    segments: int
    segments_bisected: int
    seconds: float
    truncated: bool
    key_columns: list[str] = field(default_factory=list)
    method: str = "key_range"  # or "key_hash"

    @property
    def equal(self) -> bool:
        return not self.differences and self.source_rows == self.target_rows

    def counts_by_kind(self) -> dict[str, int]:
        return dict(Counter(d.kind for d in self.differences))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["differences"] = [{"key": self._key_dict(d.key), "kind": d.kind} for d in self.differences]
        data["counts_by_kind"] = self.counts_by_kind()
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), default=str, sort_keys=True)

    def summary(self, first: int = 5) -> str:
        head = f"{self.table}: source {self.source_rows:,} rows, target {self.target_rows:,} rows"
        tail = f"[{self.method}, {self.segments} segments, {self.segments_bisected} bisected, {self.seconds:.2f} s]"
        if not self.differences:
            return f"{head}: equal {tail}"
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts_by_kind().items()))
        more = " or more (truncated)" if self.truncated else ""
        keys = "; ".join(f"{self._key_text(d.key)} {d.kind}" for d in self.differences[:first])
        etc = ", ..." if len(self.differences) > first else ""
        return f"{head}: {len(self.differences)}{more} differences ({kinds}): {keys}{etc} {tail}"

    def _key_dict(self, key: tuple[Any, ...] | dict[str, Any]) -> dict[str, Any]:
        return dict(key) if isinstance(key, dict) else dict(zip(self.key_columns, key, strict=False))

    def _key_text(self, key: tuple[Any, ...] | dict[str, Any]) -> str:
        return ",".join(f"{c}={v!r}" for c, v in self._key_dict(key).items())


# -- pure helpers ---------------------------------------------------------------------


def split_range(lo: int, hi: int, parts: int) -> tuple[int, list[tuple[int, int]]]:
    """``[lo, hi]`` (inclusive) cut into at most ``parts`` ranges of equal width.

    Returns the width and the ranges; range ``i`` holds the keys with
    ``(key - lo) // width == i``, so SQL and Python agree on the segment of a key.
    """
    if hi < lo:
        raise ValueError(f"empty range [{lo}, {hi}]")
    if parts < 1:
        raise ValueError("parts must be >= 1")
    width = -(-(hi - lo + 1) // parts)
    ranges = [(start, min(hi, start + width - 1)) for start in range(lo, hi + 1, width)]
    return width, ranges


def segment_of(key: int, lo: int, width: int) -> int:
    return (key - lo) // width


def adaptive_segments(estimated_rows: float, leaf_rows: int) -> int:
    """Enough top-level segments that a mismatching one is usually already a leaf.

    The top-level query costs one scan whatever N is; N only adds result rows. Half
    of ``leaf_rows`` per segment leaves room for keys that are not evenly spread.
    """
    wanted = math.ceil(max(estimated_rows, 0) / max(leaf_rows // 2, 1))
    return max(MIN_SEGMENTS, min(MAX_SEGMENTS, wanted))


def compare_leaf(
    source_rows: Iterable[tuple[tuple[Any, ...], int]],
    target_rows: Iterable[tuple[tuple[Any, ...], int]],
) -> list[RowDifference]:
    """Exact differences between two sets of (key, row hash), sorted by key."""
    source: dict[tuple[Any, ...], Counter[int]] = {}
    target: dict[tuple[Any, ...], Counter[int]] = {}
    for key, digest in source_rows:
        source.setdefault(key, Counter())[digest] += 1
    for key, digest in target_rows:
        target.setdefault(key, Counter())[digest] += 1
    differences = []
    for key in _sorted_keys(source.keys() | target.keys()):
        mine, theirs = source.get(key), target.get(key)
        if mine == theirs:
            continue
        kind: Kind = "changed" if mine and theirs else "missing_on_target" if mine else "extra_on_target"
        differences.append(RowDifference(key, kind))
    return differences


def _sortable(key: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple((value is None, value if value is not None else 0) for value in key)


def _sorted_keys(keys: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    try:
        return sorted(keys, key=_sortable)
    except TypeError:  # values Python cannot order (e.g. json): any stable order will do
        return sorted(keys, key=repr)


# -- catalog --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Column:
    name: str
    type_sql: str  # format_type(), for casts
    base_type: str  # typname after resolving one domain level
    typtype: str
    not_null: bool
    numeric_scale: int | None  # numeric(p, s): s; None when unconstrained or not numeric


@dataclass(frozen=True)
class _Shape:
    columns: dict[str, _Column]
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


def _describe(session: _Session, spec: TableSpec) -> _Shape:
    name = session.render(sql.Identifier(spec.schema, spec.name))
    row = session.query(
        "SELECT to_regclass(%s)::oid, (SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s))", (name, name)
    )
    rel, reltuples = row[0]
    if rel is None:
        raise TableDiffError(
            f"table {spec.qualified_name} does not exist on the {session.side} ({session.database})",
            table=spec.qualified_name,
            side=session.side,
        )
    columns = {
        r[0]: _Column(name=r[0], type_sql=r[1], base_type=r[2], typtype=r[3], not_null=r[4], numeric_scale=r[5])
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
    return _Shape(
        columns=columns,
        unique_key=bool(unique),
        estimated_rows=max(float(reltuples or 0), 0.0),
        btree_leading=frozenset(leading),
    )


# -- row hash SQL ---------------------------------------------------------------------

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
    # Hashed as the interval since the epoch (see _chained_hash): the cast to timestamp
    # converts through the time zone and measured twice as dear.
    "timestamptz": ("interval_hash_extended", "timestamptz", "'0'", False),
    "time": ("time_hash_extended", "time", "'00:00'", False),
    "timetz": ("timetz_hash_extended", "timetz", "'00:00+00'", False),
    "interval": ("interval_hash_extended", "interval", "'0'", False),
    "jsonb": ("jsonb_hash_extended", "jsonb", "'null'", False),
    "inet": ("hashinetextended", "inet", "'0.0.0.0'", False),
    "macaddr": ("hashmacaddrextended", "macaddr", "'00:00:00:00:00:00'", False),
}
_TEXT_OUTPUT = ("hashtextextended", "text", "''", True)
_NARROW_INT_HASH = {"int2": "hashint2extended", "int4": "hashint4extended"}
_BASE_TYPE_FAMILY = {
    "int2": "int", "int4": "int", "int8": "int",
    "float4": "float", "float8": "float",
    "text": "text", "varchar": "text",
    "cidr": "inet",
}  # fmt: skip


def _family(column: _Column) -> str | None:
    if column.typtype != "b":  # enums (OID hashes), domains of domains, composites, ranges
        return None
    family = _BASE_TYPE_FAMILY.get(column.base_type, column.base_type)
    return family if family in _FAMILIES else None


@dataclass(frozen=True)
class _HashedColumn:
    name: str
    function: str
    cast: str
    null_literal: str
    collate: bool
    nullable: bool
    family: str | None  # None: hashed as text output


def _hash_plan(spec_columns: Sequence[str], source: _Shape, target: _Shape) -> list[_HashedColumn]:
    plan = []
    for name in spec_columns:
        left, right = source.columns[name], target.columns[name]
        family = _family(left)
        if family is None or family != _family(right):
            family = None
        function, cast, null_literal, collate = _TEXT_OUTPUT if family is None else _FAMILIES[family]
        if family == "int" and left.base_type == right.base_type and left.base_type in _NARROW_INT_HASH:
            # hashint8extended equals these on their ranges; calling them saves a cast per row.
            function, cast = _NARROW_INT_HASH[left.base_type], left.base_type
        if family == "numeric" and left.numeric_scale is not None and right.numeric_scale is not None:
            family = "numeric(p,s)"  # no +-Infinity in a constrained numeric: NaN alone needs no state
        plan.append(
            _HashedColumn(
                name=name,
                function=function,
                cast=cast,
                null_literal=null_literal,
                collate=collate,
                nullable=not (left.not_null and right.not_null),
                family=family,
            )
        )
    return plan


def _chained_hash(columns: Sequence[_HashedColumn], alias: str, seed: int) -> sql.Composable:
    """``f_n(v_n, ... f_1(v_1, state))``: see the module docstring."""
    states: list[sql.Composable] = []  # one small non-negative integer expression per state group
    bits = 0
    group: list[sql.Composable] = []
    for column in columns:
        ref = sql.Identifier(alias, column.name)
        if column.family == "numeric":
            # hash_numeric_extended returns the seed itself for NaN and +-Infinity, so they
            # would hash alike (a lone NaN is told from any finite value by that very fact).
            # scale() is NULL only for NULL, NaN and +-Infinity: one cheap call per row.
            width, state = (
                3,
                sql.SQL(
                    "CASE WHEN {c} IS NULL THEN 1 WHEN scale({c}) IS NOT NULL THEN 0 WHEN {c} = 'NaN' THEN 2"
                    " WHEN {c} > 0 THEN 3 ELSE 4 END"
                ).format(c=ref),
            )
        elif column.family == "timestamptz":
            width, state = (
                2,
                sql.SQL(
                    "CASE WHEN {c} IS NULL THEN 1 WHEN isfinite({c}) THEN 0 WHEN {c} > 'epoch'::timestamptz THEN 2"
                    " ELSE 3 END"
                ).format(c=ref),
            )
        elif column.nullable:
            width, state = 1, sql.SQL("CASE WHEN {c} IS NULL THEN 1 ELSE 0 END").format(c=ref)
        else:
            continue
        if bits + width > 62:
            states.append(sql.SQL(" + ").join(group))
            group, bits = [], 0
        group.append(sql.SQL("({state}::int8 << {bits})").format(state=state, bits=sql.Literal(bits)))
        bits += width
    if group:
        states.append(sql.SQL(" + ").join(group))
    digest: sql.Composable = sql.SQL("{seed}::int8").format(seed=sql.Literal(seed))
    if states:
        digest = sql.SQL("(({state}) # {seed}::int8)").format(state=states[0], seed=sql.Literal(seed))
        for state in states[1:]:
            digest = sql.SQL("hashint8extended({state}, {prev})").format(state=state, prev=digest)
    for column in columns:
        value: sql.Composable = sql.SQL("{c}::{cast}").format(
            c=sql.Identifier(alias, column.name), cast=sql.SQL(column.cast)
        )
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
        digest = sql.SQL("{f}({v}, {prev})").format(f=sql.SQL(column.function), v=value, prev=digest)
    return digest


# -- one side's session ---------------------------------------------------------------


class _Session:
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


class _Pair:
    """The two sessions, queried concurrently (one thread per connection)."""

    def __init__(self, source: _Session, target: _Session, pool: ThreadPoolExecutor):
        self.source = source
        self.target = target
        self.pool = pool

    def both(self, work: Callable[[_Session], T]) -> tuple[T, T]:
        futures = [self.pool.submit(work, session) for session in (self.source, self.target)]
        errors = [f.exception() for f in futures]
        for error in errors:
            if error is not None:
                raise error
        return futures[0].result(), futures[1].result()

    def query(self, statement: sql.Composable, params: Any = None) -> tuple[list[tuple[Any, ...]], ...]:
        return self.both(lambda s: s.query(statement, params))


# -- segmentation strategies ----------------------------------------------------------

Stats = tuple[int, Any]  # count, checksum (see _aggregates)


@dataclass(frozen=True)
class _Segment:
    ident: tuple[Any, ...]  # sortable, unique within its level
    source: Stats
    target: Stats

    @property
    def rows(self) -> int:
        return max(self.source[0], self.target[0])


_EMPTY: Stats = (0, None)


def _mismatches(source_rows: list[tuple[Any, ...]], target_rows: list[tuple[Any, ...]], width: int) -> list[_Segment]:
    """Rows are (*ident, count, checksum); ident is the first ``width`` values."""

    def index(rows: list[tuple[Any, ...]]) -> dict[tuple[Any, ...], Stats]:
        return {tuple(r[:width]): (r[width], r[width + 1]) for r in rows}

    source, target = index(source_rows), index(target_rows)
    out = []
    for ident in sorted(source.keys() | target.keys()):
        left, right = source.get(ident, _EMPTY), target.get(ident, _EMPTY)
        if left[0] == 0 and right[0] == 0:
            continue
        if left != right:
            out.append(_Segment(ident, left, right))
    return out


class _Strategy:
    method: str

    def top(self, pair: _Pair) -> tuple[list[_Segment], int, int, int]:
        """Mismatching top-level segments, source rows, target rows, segment count."""
        raise NotImplementedError

    def splittable(self, segment: _Segment) -> bool:
        raise NotImplementedError

    def split(self, pair: _Pair, segments: list[_Segment]) -> list[_Segment]:
        raise NotImplementedError

    def fetch(self, pair: _Pair, segments: list[_Segment]) -> list[RowDifference]:
        raise NotImplementedError


def _aggregates(rows_are_distinct: bool) -> sql.Composable:
    """A segment's count and checksum of its row hashes ``h``.

    XOR cancels equal pairs, which exist only if rows repeat; with a unique key they
    cannot, and XOR is the cheapest order-independent combination. Without one, the
    exact (int128-accumulated) sum never cancels. As h is a chain, not a sum of
    per-column terms, neither is fooled by values trading places between rows.
    """
    return sql.SQL("count(*), bit_xor(h)" if rows_are_distinct else "count(*), sum(h)")


def _totals(source_rows: list[tuple[Any, ...]], target_rows: list[tuple[Any, ...]], width: int) -> tuple[int, int]:
    return sum(r[width] for r in source_rows), sum(r[width] for r in target_rows)


class _KeyRanges(_Strategy):
    method = "key_range"

    def __init__(
        self, spec: TableSpec, row_hash: sql.Composable, key_is_numeric: bool, rows_are_distinct: bool, segments: int
    ):
        self.spec = spec
        self.table = sql.Identifier(spec.schema, spec.name)
        self.key = sql.Identifier("t", spec.key_columns[0])
        self.key_columns = sql.SQL(", ").join(sql.Identifier("t", c) for c in spec.key_columns)
        self.row_hash = row_hash
        self.bound_type = sql.SQL("numeric" if key_is_numeric else "int8")
        self.key_is_numeric = key_is_numeric
        self.rows_are_distinct = rows_are_distinct
        self.segments = segments
        self.lo = 0
        self.hi = -1

    def _arithmetic(self, lo: sql.Composable, width: sql.Composable, span: int) -> sql.Composable:
        if self.key_is_numeric or span >= _BIGINT_SAFE_SPAN:
            return sql.SQL("div({k}::numeric - ({lo})::numeric, ({w})::numeric)").format(k=self.key, lo=lo, w=width)
        return sql.SQL("({k}::int8 - ({lo})) / ({w})").format(k=self.key, lo=lo, w=width)

    def top(self, pair: _Pair) -> tuple[list[_Segment], int, int, int]:
        bounds = pair.query(sql.SQL("SELECT min({k}), max({k}) FROM {t} AS t").format(k=self.key, t=self.table))
        found = [b[0] for b in bounds if b[0][0] is not None]
        if not found:
            return [], 0, 0, 0
        self.lo, self.hi = int(min(b[0] for b in found)), int(max(b[1] for b in found))
        width, ranges = split_range(self.lo, self.hi, self.segments)
        statement = sql.SQL(
            "SELECT s, {aggs} FROM (SELECT {segment} AS s, {h} AS h FROM {t} AS t) AS x GROUP BY s"
        ).format(
            aggs=_aggregates(self.rows_are_distinct),
            segment=self._arithmetic(sql.Literal(self.lo), sql.Literal(width), self.hi - self.lo),
            h=self.row_hash,
            t=self.table,
        )
        source_rows, target_rows = pair.query(statement)
        source_total, target_total = _totals(source_rows, target_rows, 1)
        mismatching = [
            _Segment((ranges[int(m.ident[0])],), m.source, m.target) for m in _mismatches(source_rows, target_rows, 1)
        ]
        return mismatching, source_total, target_total, len(ranges)

    def splittable(self, segment: _Segment) -> bool:
        lo, hi = segment.ident[0]
        return bool(hi > lo)

    def _values(self, ranges: list[tuple[int, int]], *, with_width: bool) -> sql.Composable:
        def bound(value: int) -> sql.Composable:
            return sql.SQL("({})::{}").format(sql.Literal(value), self.bound_type)

        rows = []
        for i, (lo, hi) in enumerate(ranges):
            items = [sql.SQL("({})::int4").format(sql.Literal(i)), bound(lo), bound(hi)]
            if with_width:
                items.append(bound(_child_width(lo, hi)))
            rows.append(sql.SQL("({})").format(sql.SQL(", ").join(items)))
        return sql.SQL(", ").join(rows)

    def split(self, pair: _Pair, segments: list[_Segment]) -> list[_Segment]:
        out: list[_Segment] = []
        for chunk in _chunks(segments, _BATCH):
            ranges = [s.ident[0] for s in chunk]
            statement = sql.SQL(
                "SELECT r.i, s, {aggs} FROM (VALUES {values}) AS r(i, lo, hi, w),"
                " LATERAL (SELECT {segment} AS s, {h} AS h FROM {t} AS t"
                " WHERE {k} BETWEEN r.lo AND r.hi) AS x GROUP BY r.i, s"
            ).format(
                aggs=_aggregates(self.rows_are_distinct),
                values=self._values(ranges, with_width=True),
                segment=self._arithmetic(sql.SQL("r.lo"), sql.SQL("r.w"), self.hi - self.lo),
                h=self.row_hash,
                t=self.table,
                k=self.key,
            )
            source_rows, target_rows = pair.query(statement)
            for m in _mismatches(source_rows, target_rows, 2):
                lo, hi = ranges[m.ident[0]]
                width = _child_width(lo, hi)
                start = lo + int(m.ident[1]) * width
                out.append(_Segment(((start, min(hi, start + width - 1)),), m.source, m.target))
        return sorted(out, key=lambda s: s.ident)

    def fetch(self, pair: _Pair, segments: list[_Segment]) -> list[RowDifference]:
        differences: list[RowDifference] = []
        for chunk in _chunks(segments, _BATCH):
            ranges = [s.ident[0] for s in chunk]
            statement = sql.SQL(
                "SELECT r.i, {keys}, {h} FROM (VALUES {values}) AS r(i, lo, hi)"
                " JOIN {t} AS t ON {k} BETWEEN r.lo AND r.hi"
            ).format(
                keys=self.key_columns,
                h=self.row_hash,
                values=self._values(ranges, with_width=False),
                t=self.table,
                k=self.key,
            )
            differences += _compare_fetched(*pair.query(statement), n_keys=len(self.spec.key_columns))
        return differences


class _KeyHashBuckets(_Strategy):
    method = "key_hash"

    def __init__(
        self,
        spec: TableSpec,
        row_hash: sql.Composable,
        key_hash: sql.Composable,
        rows_are_distinct: bool,
        segments: int,
    ):
        self.spec = spec
        self.table = sql.Identifier(spec.schema, spec.name)
        self.row_hash = row_hash
        self.key_hash = key_hash
        self.keys = sql.SQL(", ").join(sql.Identifier("t", c) for c in spec.key_columns)
        self.rows_are_distinct = rows_are_distinct
        self.segments = segments

    def _bucket(self, modulus: int) -> sql.Composable:
        # Written out where needed (WHERE and GROUP BY): the key hash covers only the
        # key columns, cheaper than a subquery fence, which would stop parallel plans.
        return sql.SQL("mod(({kh}) & {mask}::int8, {m})").format(
            kh=self.key_hash, mask=sql.Literal(_MAX_BIGINT), m=sql.Literal(modulus)
        )

    def top(self, pair: _Pair) -> tuple[list[_Segment], int, int, int]:
        statement = sql.SQL(
            "SELECT s, {aggs} FROM (SELECT {bucket} AS s, {h} AS h FROM {t} AS t) AS x GROUP BY s"
        ).format(
            aggs=_aggregates(self.rows_are_distinct),
            bucket=self._bucket(self.segments),
            h=self.row_hash,
            t=self.table,
        )
        source_rows, target_rows = pair.query(statement)
        source_total, target_total = _totals(source_rows, target_rows, 1)
        mismatching = [
            _Segment((self.segments, int(m.ident[0])), m.source, m.target)
            for m in _mismatches(source_rows, target_rows, 1)
        ]
        return mismatching, source_total, target_total, self.segments

    def splittable(self, segment: _Segment) -> bool:
        modulus = segment.ident[0]
        return bool(modulus * BISECTION_FACTOR <= _MAX_BIGINT // 2)

    def split(self, pair: _Pair, segments: list[_Segment]) -> list[_Segment]:
        out: list[_Segment] = []
        for modulus, group in _by_modulus(segments):
            child = modulus * BISECTION_FACTOR
            statement = sql.SQL(
                "SELECT s, {aggs} FROM (SELECT {child} AS s, {h} AS h FROM {t} AS t"
                " WHERE {parent} = ANY(%s)) AS x GROUP BY s"
            ).format(
                aggs=_aggregates(self.rows_are_distinct),
                child=self._bucket(child),
                parent=self._bucket(modulus),
                h=self.row_hash,
                t=self.table,
            )
            residues = [s.ident[1] for s in group]
            source_rows, target_rows = pair.query(statement, (residues,))
            out += [
                _Segment((child, int(m.ident[0])), m.source, m.target) for m in _mismatches(source_rows, target_rows, 1)
            ]
        return sorted(out, key=lambda s: s.ident)

    def fetch(self, pair: _Pair, segments: list[_Segment]) -> list[RowDifference]:
        differences: list[RowDifference] = []
        for modulus, group in _by_modulus(segments):
            statement = sql.SQL("SELECT 0, {keys}, {h} FROM {t} AS t WHERE {bucket} = ANY(%s)").format(
                keys=self.keys, h=self.row_hash, t=self.table, bucket=self._bucket(modulus)
            )
            differences += _compare_fetched(
                *pair.query(statement, ([s.ident[1] for s in group],)), n_keys=len(self.spec.key_columns)
            )
        return differences


def _child_width(lo: int, hi: int) -> int:
    return -(-(hi - lo + 1) // BISECTION_FACTOR)


def _by_modulus(segments: list[_Segment]) -> list[tuple[int, list[_Segment]]]:
    groups: dict[int, list[_Segment]] = {}
    for segment in segments:
        groups.setdefault(segment.ident[0], []).append(segment)
    return [(modulus, chunk) for modulus, group in sorted(groups.items()) for chunk in _chunks(group, 4 * _BATCH)]


def _compare_fetched(
    source_rows: list[tuple[Any, ...]], target_rows: list[tuple[Any, ...]], *, n_keys: int
) -> list[RowDifference]:
    """Rows are (segment, *key, hash); differences sorted by segment, then key."""
    by_segment: dict[Any, tuple[list[tuple[tuple[Any, ...], int]], list[tuple[tuple[Any, ...], int]]]] = {}
    for rows, position in ((source_rows, 0), (target_rows, 1)):
        for row in rows:
            by_segment.setdefault(row[0], ([], []))[position].append((tuple(row[1 : 1 + n_keys]), row[1 + n_keys]))
    differences: list[RowDifference] = []
    for segment in sorted(by_segment):
        differences += compare_leaf(*by_segment[segment])
    return differences


def _chunks(items: list[T], size: int) -> list[list[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# -- entry points ---------------------------------------------------------------------


def _integer_key(spec: TableSpec, source: _Shape, target: _Shape) -> Literal["int", "numeric"] | None:
    # Sub-ranges are read with index range scans: without an index every one of
    # them would be a full scan, and key-hash buckets are cheaper.
    if len(spec.key_columns) != 1 or not all(spec.key_columns[0] in s.btree_leading for s in (source, target)):
        return None
    columns = [shape.columns[spec.key_columns[0]] for shape in (source, target)]
    if not all(c.not_null and c.typtype == "b" for c in columns):
        return None
    if all(c.base_type in ("int2", "int4", "int8") for c in columns):
        return "int"
    if all(c.base_type == "numeric" and c.numeric_scale is not None and c.numeric_scale <= 0 for c in columns):
        return "numeric"
    return None


def _open(source_conn: Any, target_conn: Any, spec: TableSpec) -> tuple[_Session, _Session]:
    if not spec.key_columns:
        raise TableDiffError(
            f"table diff of {spec.qualified_name}: no key columns given", table=spec.qualified_name, side=None
        )
    return _Session(source_conn, "source", spec.qualified_name), _Session(target_conn, "target", spec.qualified_name)


def diff_table(
    source_conn: Any,
    target_conn: Any,
    spec: TableSpec,
    *,
    segments: int | None = None,
    leaf_rows: int = DEFAULT_LEAF_ROWS,
    max_differences: int = 1000,
) -> TableDiff:
    """Every differing key of ``spec`` between the two databases (up to ``max_differences``).

    ``segments``: top-level segment count; by default ``adaptive_segments`` of the
    larger side's planner row estimate (at least 256). A mismatching segment with
    more than ``leaf_rows`` rows is split into 16; smaller ones are compared row by row.
    """
    if leaf_rows < 1 or max_differences < 1 or (segments is not None and segments < 1):
        raise ValueError("segments, leaf_rows and max_differences must be >= 1")
    started = time.monotonic()
    source, target = _open(source_conn, target_conn, spec)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="tablediff") as pool:
        pair = _Pair(source, target, pool)
        try:
            pair.both(lambda s: s.begin())
            source_shape, target_shape = pair.both(lambda s: _describe(s, spec))
            plan = _hash_plan(spec.compared_columns(), source_shape, target_shape)
            row_hash = _chained_hash(plan, "t", _ROW_SEED)
            distinct = source_shape.unique_key and target_shape.unique_key
            count = segments or adaptive_segments(
                max(source_shape.estimated_rows, target_shape.estimated_rows), leaf_rows
            )
            integer_key = _integer_key(spec, source_shape, target_shape)
            strategy: _Strategy
            if integer_key is not None:
                strategy = _KeyRanges(spec, row_hash, integer_key == "numeric", distinct, count)
            else:
                key_plan = [c for c in plan if c.name in spec.key_columns]
                strategy = _KeyHashBuckets(spec, row_hash, _chained_hash(key_plan, "t", _KEY_SEED), distinct, count)
            pending, source_rows, target_rows, used = strategy.top(pair)
            differences: list[RowDifference] = []
            bisected = 0
            truncated = False
            while pending and not truncated:
                bisected += len(pending)
                leaves = [s for s in pending if s.rows <= leaf_rows or not strategy.splittable(s)]
                inner = [s for s in pending if not (s.rows <= leaf_rows or not strategy.splittable(s))]
                if leaves:
                    differences += strategy.fetch(pair, leaves)
                    if len(differences) >= max_differences:
                        truncated = len(differences) > max_differences or bool(inner)
                        differences = differences[:max_differences]
                        break
                pending = strategy.split(pair, inner) if inner else []
        finally:
            for session in (source, target):
                session.end()
    rank = {key: i for i, key in enumerate(_sorted_keys({tuple(d.key) for d in differences}))}
    differences.sort(key=lambda d: rank[tuple(d.key)])
    return TableDiff(
        table=spec.qualified_name,
        source_rows=source_rows,
        target_rows=target_rows,
        differences=differences,
        segments=used,
        segments_bisected=bisected,
        seconds=time.monotonic() - started,
        truncated=truncated,
        key_columns=list(spec.key_columns),
        method=strategy.method,
    )


def recheck(
    source_conn: Any,
    target_conn: Any,
    spec: TableSpec,
    keys: Iterable[tuple[Any, ...] | dict[str, Any] | RowDifference],
) -> list[RowDifference]:
    """The given keys that still differ now, with their current kind.

    For differences seen during live replication: once the subscriber has caught up,
    a transient difference is gone and a real one remains.
    """
    wanted = [_key_tuple(spec, k) for k in keys]
    if not wanted:
        return []
    source, target = _open(source_conn, target_conn, spec)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="tablediff") as pool:
        pair = _Pair(source, target, pool)
        try:
            pair.both(lambda s: s.begin())
            source_shape, target_shape = pair.both(lambda s: _describe(s, spec))
            row_hash = _chained_hash(_hash_plan(spec.compared_columns(), source_shape, target_shape), "t", _ROW_SEED)
            shapes = {"source": source_shape, "target": target_shape}

            def fetch(session: _Session) -> list[tuple[Any, ...]]:
                columns = shapes[session.side].columns
                rows: list[tuple[Any, ...]] = []
                for chunk in _chunks(wanted, 1000):
                    values = sql.SQL(", ").join(
                        sql.SQL("({})").format(
                            sql.SQL(", ").join(
                                sql.SQL("({})::{}").format(sql.Literal(_adaptable(v)), sql.SQL(columns[c].type_sql))
                                for c, v in zip(spec.key_columns, key, strict=True)
                            )
                        )
                        for key in chunk
                    )
                    names = [sql.Identifier(f"k{i}") for i in range(len(spec.key_columns))]
                    match = sql.SQL(" AND ").join(
                        sql.SQL("{t} IS NOT DISTINCT FROM v.{k}" if not columns[c].not_null else "{t} = v.{k}").format(
                            t=sql.Identifier("t", c), k=name
                        )
                        for c, name in zip(spec.key_columns, names, strict=True)
                    )
                    statement = sql.SQL(
                        "SELECT 0, {keys}, {h} FROM (VALUES {values}) AS v({names}) JOIN {t} AS t ON {match}"
                    ).format(
                        keys=sql.SQL(", ").join(sql.Identifier("t", c) for c in spec.key_columns),
                        h=row_hash,
                        values=values,
                        names=sql.SQL(", ").join(names),
                        t=sql.Identifier(spec.schema, spec.name),
                        match=match,
                    )
                    rows += session.query(statement)
                return rows

            source_rows, target_rows = pair.both(fetch)
        finally:
            for session in (source, target):
                session.end()
    return _compare_fetched(source_rows, target_rows, n_keys=len(spec.key_columns))


def _adaptable(value: Any) -> Any:
    return str(value) if isinstance(value, uuid.UUID) else value


def _key_tuple(spec: TableSpec, key: tuple[Any, ...] | dict[str, Any] | RowDifference) -> tuple[Any, ...]:
    if isinstance(key, RowDifference):
        key = key.key
    if isinstance(key, dict):
        return tuple(key[c] for c in spec.key_columns)
    if len(key) != len(spec.key_columns):
        raise ValueError(f"key {key!r} does not match key columns {spec.key_columns}")
    return tuple(key)

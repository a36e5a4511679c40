"""How a table diff cuts a table into segments, and re-cuts the ones that differ.

Each side reduces its table to per-segment (row count, checksum) pairs in ONE
aggregate query; only mismatching segments are split again, and only small ones
("leaves") are fetched as (segment, key, row hash) and compared row by row. A
strategy answers the four questions of that bisection: the top-level segments,
whether a segment can be split, its children, and its rows.

- **Key ranges** (``KeyRanges``) for a single NOT NULL integer key (smallint,
  integer, bigint, or a numeric without fraction): ``[min, max]`` (union of both
  sides) is cut into N equal ranges, grouped with ``(key - lo) / width``. A
  mismatching range is re-split into sub-ranges that are read with index range scans
  (``key BETWEEN lo AND hi``).
- **Key-hash buckets** (``KeyHashBuckets``) for anything else (composite, text,
  uuid, nullable key): bucket = ``(hash(key) & max_bigint) % N``. A mismatching
  bucket is re-split by the same hash modulo ``N * 16`` (residue classes nest), which
  costs one more full scan per side per level; a mismatching bucket with few rows is
  fetched directly.

Segment checksum = count(*) and ``bit_xor(h)`` when a unique index backs the key on
both sides (rows are distinct, so XOR's cancelling of equal pairs cannot happen; a
false match needs a 64-bit coincidence), else count(*) and the exact sum of ``h``,
which never cancels. Because h is a chain rather than a sum of per-column terms
(as in hash_record_extended), values trading places between two rows of a segment
change the checksum too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeVar

from psycopg2 import sql

from bascule.postgres.tablediff_records import RowDifference, TableSpec, compare_leaf
from bascule.postgres.tablediff_sessions import SessionPair

T = TypeVar("T")

BISECTION_FACTOR = 16
MIN_SEGMENTS = 256
MAX_SEGMENTS = 65_536
_BATCH = 256  # segments per bisection/leaf query (bounded statement size)
_MAX_BIGINT = 2**63 - 1
# Above this span key arithmetic switches from bigint to numeric (no overflow).
_BIGINT_SAFE_SPAN = 2**62


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


Stats = tuple[int, Any]  # count, checksum (see _aggregates)
_H = sql.Identifier("h")  # the row hash column of the segment queries' subquery


@dataclass(frozen=True)
class Segment:
    ident: tuple[Any, ...]  # sortable, unique within its level
    source: Stats
    target: Stats

    @property
    def rows(self) -> int:
        return max(self.source[0], self.target[0])


_EMPTY: Stats = (0, None)


def _mismatches(source_rows: list[tuple[Any, ...]], target_rows: list[tuple[Any, ...]], width: int) -> list[Segment]:
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
            out.append(Segment(ident, left, right))
    return out


def _aggregates(rows_are_distinct: bool, digest: sql.Composable = _H) -> sql.Composable:
    """A segment's count and checksum of its row hashes ``h``.

    XOR cancels equal pairs, which exist only if rows repeat; with a unique key they
    cannot, and XOR is the cheapest order-independent combination. Without one, the
    exact (int128-accumulated) sum never cancels. As h is a chain, not a sum of
    per-column terms, neither is fooled by values trading places between rows.
    """
    template = "count(*), bit_xor({h})" if rows_are_distinct else "count(*), sum({h})"
    return sql.SQL(template).format(h=digest)


class Strategy:
    """One way of cutting the table of ``spec`` (aliased ``t``) into segments."""

    method: str

    def __init__(self, spec: TableSpec, row_hash: sql.Composable, rows_are_distinct: bool, segments: int):
        self.spec = spec
        self.table = sql.Identifier(spec.schema, spec.name)
        self.key_columns = sql.SQL(", ").join(sql.Identifier("t", c) for c in spec.key_columns)
        self.row_hash = row_hash
        self.rows_are_distinct = rows_are_distinct
        self.segments = segments

    def fingerprints(self, pair: SessionPair) -> tuple[Stats, Stats]:
        """Each side's whole-table (row count, checksum): one ungrouped aggregate per side.

        The same checksum as a segment's, over the whole table: where the two are equal,
        no segment needs reading. Without GROUP BY the planner runs it as a Parallel Seq
        Scan under a Partial Aggregate, like ``count(*)`` (both are parallel safe), and it
        skips the grouping that makes the top-level scan cost about twice as much. A false match
        needs the XOR (or exact sum) of the differing rows' 64-bit hashes to vanish, as
        in any one segment: about 2**-64 for data that is not built to collide.
        """
        statement = sql.SQL("SELECT {aggs} FROM {t} AS t").format(
            aggs=_aggregates(self.rows_are_distinct, self.row_hash), t=self.table
        )
        source_rows, target_rows = pair.query(statement)
        return (source_rows[0][0], source_rows[0][1]), (target_rows[0][0], target_rows[0][1])

    def top(self, pair: SessionPair) -> tuple[list[Segment], int, int, int]:
        """Mismatching top-level segments, source rows, target rows, segment count."""
        raise NotImplementedError

    def splittable(self, segment: Segment) -> bool:
        raise NotImplementedError

    def split(self, pair: SessionPair, segments: list[Segment]) -> list[Segment]:
        raise NotImplementedError

    def fetch(self, pair: SessionPair, segments: list[Segment]) -> list[RowDifference]:
        raise NotImplementedError

    def _scan(self, pair: SessionPair, segment: sql.Composable) -> tuple[list[Segment], int, int]:
        """One full scan per side grouped by ``segment``: the mismatching groups and each side's rows."""
        statement = sql.SQL(
            "SELECT s, {aggs} FROM (SELECT {segment} AS s, {h} AS h FROM {t} AS t) AS x GROUP BY s"
        ).format(aggs=_aggregates(self.rows_are_distinct), segment=segment, h=self.row_hash, t=self.table)
        source_rows, target_rows = pair.query(statement)
        source_total, target_total = sum(r[1] for r in source_rows), sum(r[1] for r in target_rows)
        return _mismatches(source_rows, target_rows, 1), source_total, target_total

    def _compare_rows(self, pair: SessionPair, statement: sql.Composable, params: Any = None) -> list[RowDifference]:
        return compare_fetched(*pair.query(statement, params), n_keys=len(self.spec.key_columns))


class KeyRanges(Strategy):
    method = "key_range"

    def __init__(
        self, spec: TableSpec, row_hash: sql.Composable, key_is_numeric: bool, rows_are_distinct: bool, segments: int
    ):
        super().__init__(spec, row_hash, rows_are_distinct, segments)
        self.key = sql.Identifier("t", spec.key_columns[0])
        self.bound_type = sql.SQL("numeric" if key_is_numeric else "int8")
        self.key_is_numeric = key_is_numeric
        self.lo = 0
        self.hi = -1

    def _arithmetic(self, lo: sql.Composable, width: sql.Composable, span: int) -> sql.Composable:
        if self.key_is_numeric or span >= _BIGINT_SAFE_SPAN:
            return sql.SQL("div({k}::numeric - ({lo})::numeric, ({w})::numeric)").format(k=self.key, lo=lo, w=width)
        return sql.SQL("({k}::int8 - ({lo})) / ({w})").format(k=self.key, lo=lo, w=width)

    def top(self, pair: SessionPair) -> tuple[list[Segment], int, int, int]:
        bounds = pair.query(sql.SQL("SELECT min({k}), max({k}) FROM {t} AS t").format(k=self.key, t=self.table))
        found = [b[0] for b in bounds if b[0][0] is not None]
        if not found:
            return [], 0, 0, 0
        self.lo, self.hi = int(min(b[0] for b in found)), int(max(b[1] for b in found))
        width, ranges = split_range(self.lo, self.hi, self.segments)
        mismatching, source_total, target_total = self._scan(
            pair, self._arithmetic(sql.Literal(self.lo), sql.Literal(width), self.hi - self.lo)
        )
        top = [Segment((ranges[int(m.ident[0])],), m.source, m.target) for m in mismatching]
        return top, source_total, target_total, len(ranges)

    def splittable(self, segment: Segment) -> bool:
        lo, hi = segment.ident[0]
        return bool(hi > lo)

    def _over_ranges(
        self, template: str, ranges: list[tuple[int, int]], *, with_width: bool, **parts: sql.Composable
    ) -> sql.Composable:
        """``template`` with the ranges as rows ``r`` ({values}), the table {t}, its key {k} and row hash {h}."""
        return sql.SQL(template).format(
            values=self._values(ranges, with_width=with_width), t=self.table, k=self.key, h=self.row_hash, **parts
        )

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

    def split(self, pair: SessionPair, segments: list[Segment]) -> list[Segment]:
        out: list[Segment] = []
        for ranges in _range_batches(segments):
            statement = self._over_ranges(
                "SELECT r.i, s, {aggs} FROM (VALUES {values}) AS r(i, lo, hi, w),"
                " LATERAL (SELECT {segment} AS s, {h} AS h FROM {t} AS t"
                " WHERE {k} BETWEEN r.lo AND r.hi) AS x GROUP BY r.i, s",
                ranges,
                with_width=True,
                aggs=_aggregates(self.rows_are_distinct),
                segment=self._arithmetic(sql.SQL("r.lo"), sql.SQL("r.w"), self.hi - self.lo),
            )
            source_rows, target_rows = pair.query(statement)
            for m in _mismatches(source_rows, target_rows, 2):
                lo, hi = ranges[m.ident[0]]
                width = _child_width(lo, hi)
                start = lo + int(m.ident[1]) * width
                out.append(Segment(((start, min(hi, start + width - 1)),), m.source, m.target))
        return sorted(out, key=lambda s: s.ident)

    def fetch(self, pair: SessionPair, segments: list[Segment]) -> list[RowDifference]:
        differences: list[RowDifference] = []
        for ranges in _range_batches(segments):
            statement = self._over_ranges(
                "SELECT r.i, {keys}, {h} FROM (VALUES {values}) AS r(i, lo, hi)"
                " JOIN {t} AS t ON {k} BETWEEN r.lo AND r.hi",
                ranges,
                with_width=False,
                keys=self.key_columns,
            )
            differences += self._compare_rows(pair, statement)
        return differences


class KeyHashBuckets(Strategy):
    method = "key_hash"

    def __init__(
        self,
        spec: TableSpec,
        row_hash: sql.Composable,
        key_hash: sql.Composable,
        rows_are_distinct: bool,
        segments: int,
    ):
        super().__init__(spec, row_hash, rows_are_distinct, segments)
        self.key_hash = key_hash

    def _bucket(self, modulus: int) -> sql.Composable:
        # Written out where needed (WHERE and GROUP BY): the key hash covers only the
        # key columns, cheaper than a subquery fence, which would stop parallel plans.
        return sql.SQL("mod(({kh}) & {mask}::int8, {m})").format(
            kh=self.key_hash, mask=sql.Literal(_MAX_BIGINT), m=sql.Literal(modulus)
        )

    def top(self, pair: SessionPair) -> tuple[list[Segment], int, int, int]:
        mismatching, source_total, target_total = self._scan(pair, self._bucket(self.segments))
        top = [Segment((self.segments, int(m.ident[0])), m.source, m.target) for m in mismatching]
        return top, source_total, target_total, self.segments

    def splittable(self, segment: Segment) -> bool:
        modulus = segment.ident[0]
        return bool(modulus * BISECTION_FACTOR <= _MAX_BIGINT // 2)

    def split(self, pair: SessionPair, segments: list[Segment]) -> list[Segment]:
        out: list[Segment] = []
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
                Segment((child, int(m.ident[0])), m.source, m.target) for m in _mismatches(source_rows, target_rows, 1)
            ]
        return sorted(out, key=lambda s: s.ident)

    def fetch(self, pair: SessionPair, segments: list[Segment]) -> list[RowDifference]:
        differences: list[RowDifference] = []
        for modulus, group in _by_modulus(segments):
            statement = sql.SQL("SELECT 0, {keys}, {h} FROM {t} AS t WHERE {bucket} = ANY(%s)").format(
                keys=self.key_columns, h=self.row_hash, t=self.table, bucket=self._bucket(modulus)
            )
            differences += self._compare_rows(pair, statement, ([s.ident[1] for s in group],))
        return differences


def _child_width(lo: int, hi: int) -> int:
    return -(-(hi - lo + 1) // BISECTION_FACTOR)


def _range_batches(segments: list[Segment]) -> list[list[tuple[int, int]]]:
    """The key ranges of ``segments``, a bounded number per query."""
    return chunks([s.ident[0] for s in segments], _BATCH)


def _by_modulus(segments: list[Segment]) -> list[tuple[int, list[Segment]]]:
    groups: dict[int, list[Segment]] = {}
    for segment in segments:
        groups.setdefault(segment.ident[0], []).append(segment)
    return [(modulus, chunk) for modulus, group in sorted(groups.items()) for chunk in chunks(group, 4 * _BATCH)]


def compare_fetched(
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


def chunks(items: list[T], size: int) -> list[list[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]

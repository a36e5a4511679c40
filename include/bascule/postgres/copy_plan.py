"""The copy plan: what each mapped ``copy_table`` task copies.

A table up to ``transfer.split_table_above_mib`` (``pg_table_size`` at the snapshot) is one
unit, copied whole (``TRUNCATE`` + ``COPY`` in one target transaction). A larger table is
split into disjoint ranges of its first primary-key column, each about the threshold in
size, so that no single COPY, and no single retry, moves more than that. The ranges are
half-open (``lo <= key < hi``) and the first and last are unbounded, so together they
cover every key the table can hold, including keys inserted after the plan was made.

A split table is never truncated: each range deletes and re-copies only its own rows, so
ranges of one table can run at once and a retried range cannot wipe another's rows.

Only an integer first key column is split (its ranges are plain comparisons the btree of
the primary key answers). Anything else is copied whole, and the plan says why: an
operator reading the log then knows why a 200 GiB table ran as one task.

Cut points come from the planner's statistics (``pg_stats.histogram_bounds``: quantiles,
so ranges of about equal row counts) when they still span the key's current min/max, and
otherwise from equal-width steps between min and max (both read from the key's index).
The plan is small for XCom: table, range bounds and estimated bytes per unit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from psycopg2 import sql

from bascule.postgres.catalog import PgInventory, TableInfo

INTEGER_TYPES = frozenset({"smallint", "integer", "bigint"})
# Beyond this many ranges a table's tasks cost more in scheduling than they win in size.
MAX_RANGES = 64
# Statistics older than the table's growth leave the last range with everything added
# since: use the histogram only when it still spans most of the current keys.
_HISTOGRAM_MIN_SPAN = 0.9
MIB = 1024 * 1024


@dataclass(frozen=True)
class KeyRange:
    """Rows with ``lo <= column < hi``; ``None`` is unbounded on that side."""

    column: str
    lo: int | None
    hi: int | None
    index: int  # 1-based, in key order
    count: int

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    def predicate(self) -> sql.Composed:
        """The SQL condition; bounds are ints, so literals are safe."""
        column = sql.Identifier(self.column)
        parts = []
        if self.lo is not None:
            parts.append(sql.SQL("{} >= {}").format(column, sql.Literal(int(self.lo))))
        if self.hi is not None:
            parts.append(sql.SQL("{} < {}").format(column, sql.Literal(int(self.hi))))
        return sql.SQL(" and ").join(parts) if parts else sql.Composed([sql.SQL("true")])

    def describe(self) -> str:
        low = "-inf" if self.lo is None else str(self.lo)
        high = "+inf" if self.hi is None else str(self.hi)
        return f"range {self.label} of {self.column} [{low}, {high})"

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "lo": self.lo, "hi": self.hi, "index": self.index, "count": self.count}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KeyRange:
        lo, hi = data.get("lo"), data.get("hi")
        return cls(
            str(data["column"]),
            None if lo is None else int(lo),
            None if hi is None else int(hi),
            int(data["index"]),
            int(data["count"]),
        )


@dataclass(frozen=True)
class CopyUnit:
    """One mapped ``copy_table`` task: a whole table, or one key range of it."""

    table: str
    bytes: int
    range: KeyRange | None = None

    @property
    def evidence_name(self) -> str:
        """Unique per unit, so the ranges' evidence files never collide (write-once store).

        Percent-encoded beyond letters, digits and ``._-~``: a table name may hold a ``/``
        (which would nest the key) or a control character (which object stores refuse).
        """
        name = quote(self.table, safe="")
        if self.range is None:
            return name
        return f"{name}-range-{self.range.index:03d}of{self.range.count:03d}"

    def describe(self) -> str:
        return self.table if self.range is None else f"{self.table} {self.range.describe()}"

    def to_dict(self) -> dict[str, Any]:
        item: dict[str, Any] = {"table": self.table, "bytes": self.bytes}
        if self.range is not None:
            item["range"] = self.range.to_dict()
        return item

    @classmethod
    def from_item(cls, item: str | dict[str, Any]) -> CopyUnit:
        """A plan item from XCom; a bare table name (plans made before splitting existed) is a whole table."""
        if isinstance(item, str):
            return cls(item, 0)
        data = item.get("range")
        return cls(str(item["table"]), int(item.get("bytes", 0)), KeyRange.from_dict(data) if data else None)


@dataclass(frozen=True)
class CopyPlan:
    units: list[CopyUnit]
    notes: list[str]  # why a table over the threshold is copied whole, or how it was split

    def to_dict(self) -> dict[str, Any]:
        return {"units": [u.to_dict() for u in self.units], "notes": list(self.notes)}


def split_refusal(table: TableInfo) -> str | None:
    """Why ``table`` cannot be copied in key ranges, or None when it can."""
    if not table.primary_key:
        return "it has no primary key (ranges need a key that orders every row)"
    first = table.primary_key[0]
    column = next((c for c in table.columns if c.name == first), None)
    if column is None or column.type not in INTEGER_TYPES:
        kind = column.type if column else "unknown"
        return (
            f"its first primary-key column {first} is of type {kind}; only integer keys "
            f"({', '.join(sorted(INTEGER_TYPES))}) are split"
        )
    return None


def _min_max(cur: Any, table: TableInfo, column: str) -> tuple[int | None, int | None]:
    only = "" if table.kind == "p" else "only "  # inheritance children are copied as tables of their own
    cur.execute(
        sql.SQL("select min({c}), max({c}) from {only}{t}").format(
            c=sql.Identifier(column), only=sql.SQL(only), t=sql.Identifier(table.schema, table.name)
        )
    )
    low, high = cur.fetchone()
    return (None if low is None else int(low)), (None if high is None else int(high))


def _histogram(cur: Any, table: TableInfo, column: str) -> list[int]:
    # A partitioned root has only the "inherited" statistics (over all its partitions).
    cur.execute(
        "select histogram_bounds::text from pg_stats "
        "where schemaname = %s and tablename = %s and attname = %s and inherited = %s",
        (table.schema, table.name, column, table.kind == "p"),
    )
    row = cur.fetchone()
    if row is None or not row[0]:
        return []
    return [int(v) for v in str(row[0]).strip("{}").split(",") if v]


def cut_points(bounds: list[int], low: int, high: int, ranges: int) -> tuple[list[int], str]:
    """``ranges - 1`` strictly increasing cut points inside ``(low, high]``: quantiles of the
    histogram ``bounds`` when it spans the keys, equal-width steps otherwise. Fewer when the
    keys are too few to spread. The second value names the method, for the log."""
    span = high - low
    use_histogram = (
        len(bounds) > ranges and span > 0 and (bounds[-1] - bounds[0]) >= _HISTOGRAM_MIN_SPAN * span
    )
    if use_histogram:
        last = len(bounds) - 1
        raw = [bounds[round(i * last / ranges)] for i in range(1, ranges)]
    else:
        raw = [low + (i * (span + 1)) // ranges for i in range(1, ranges)]
    points: list[int] = []
    for point in raw:
        if low < point <= high and (not points or point > points[-1]):
            points.append(point)
    return points, "histogram quantiles" if use_histogram else "equal widths between min and max"


def plan_table(source_conn: Any, table: TableInfo, threshold_bytes: int) -> tuple[list[CopyUnit], str | None]:
    """The units of one table, and a note for the log when it is over the threshold."""
    if table.size_bytes <= threshold_bytes:
        return [CopyUnit(table.qualified, table.size_bytes)], None
    size = f"{table.size_bytes / MIB:,.0f} MiB"
    refusal = split_refusal(table)
    if refusal:
        return [CopyUnit(table.qualified, table.size_bytes)], f"{table.qualified} ({size}) is copied whole: {refusal}"
    column = table.primary_key[0]
    wanted = min(MAX_RANGES, math.ceil(table.size_bytes / threshold_bytes))
    with source_conn.cursor() as cur:
        low, high = _min_max(cur, table, column)
        bounds = _histogram(cur, table, column) if low is not None else []
    if low is None or high is None:
        return [CopyUnit(table.qualified, table.size_bytes)], f"{table.qualified} ({size}) is copied whole: it has no rows"
    points, how = cut_points(bounds, low, high, wanted)
    if not points:
        note = f"{table.qualified} ({size}) is copied whole: its key {column} holds too few values to split"
        return [CopyUnit(table.qualified, table.size_bytes)], note
    edges: list[int | None] = [None, *points, None]
    count = len(edges) - 1
    units = [
        CopyUnit(table.qualified, table.size_bytes // count, KeyRange(column, edges[i], edges[i + 1], i + 1, count))
        for i in range(count)
    ]
    return units, f"{table.qualified} ({size}) is copied in {count} ranges of {column} (cut points from {how})"


def plan_copy(source_conn: Any, inventory: PgInventory, threshold_mib: int) -> CopyPlan:
    """Every unit, tables largest first (the inventory's order), a split table's ranges in key order."""
    units: list[CopyUnit] = []
    notes: list[str] = []
    for table in inventory.tables:
        table_units, note = plan_table(source_conn, table, threshold_mib * MIB)
        units.extend(table_units)
        if note:
            notes.append(note)
    return CopyPlan(units, notes)

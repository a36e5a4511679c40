"""What a table diff is asked and what it answers: the spec, the differences, the report.

``TableSpec`` names the table, its key and the compared columns; ``TableDiff`` is
the report (counts, differing keys, how the segments went) that evidence keeps as
JSON; ``compare_leaf`` is the exact row-by-row comparison of one small segment, done
in Python on (key, row hash) pairs once the checksums have narrowed a difference down.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from bascule.exceptions import BasculeError
from bascule.identifiers import qualified_name

Kind = Literal["changed", "missing_on_target", "extra_on_target"]


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
        """The one text form (``bascule.identifiers``), so results key like the inventory."""
        return qualified_name(self.schema, self.name)

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
    # "key_range" or "key_hash" (how segments were cut), or "fingerprint": the whole-table
    # checksums were equal and no segment was read.
    method: str = "key_range"

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
    for key in sorted_keys(source.keys() | target.keys()):
        mine, theirs = source.get(key), target.get(key)
        if mine == theirs:
            continue
        kind: Kind = "changed" if mine and theirs else "missing_on_target" if mine else "extra_on_target"
        differences.append(RowDifference(key, kind))
    return differences


def _sortable(key: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple((value is None, value if value is not None else 0) for value in key)


def sorted_keys(keys: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Keys in order, NULLs last; any stable order where Python cannot compare the values."""
    try:
        return sorted(keys, key=_sortable)
    except TypeError:  # values Python cannot order (e.g. json): any stable order will do
        return sorted(keys, key=repr)

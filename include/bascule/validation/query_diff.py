"""Comparing one SQL shadow query's results: A/A calibration by column, then source against target.

:func:`compare_results` takes the query's three results (source, source again, target;
see :mod:`bascule.validation.table_shadow` for how they are fetched):

* the two source results calibrate the noise: a column whose values differ between them
  (``now()``, ``random()``, live writes) is non-deterministic and left out. If they still
  differ once those columns are set aside, the query cannot judge the target and the job
  fails;
* the target's result is compared with the first source result on the deterministic
  columns, as **multisets** of rows (``ordered=False``) or as **lists**
  (``ordered=True``). Numbers match within the tolerance
  (:func:`bascule.validation.shadow.numbers_match`); everything else must be equal.

Unordered rows are matched by their non-numeric columns first (the report names a row by
them, e.g. ``(chapter='I', year=2021)``), then by nearest numbers, so a changed count shows
as one changed row, not a missing and an extra one.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from bascule.validation.shadow import REPORT_MAX_DIFFERENCES, FieldDiff, ShadowComparison, json_text, numbers_match

ROWS_SHOWN = 10  # differing rows written into a report

Row = tuple[Any, ...]


@dataclass(frozen=True)
class QueryResult:
    """A query's column names and rows (values normalised by the run)."""

    columns: list[str]
    rows: list[Row]



# --- comparison records ------------------------------------------------------------------


@dataclass(frozen=True)
class RowDiff:
    """One row of a shadow query that is not the same on the target."""

    kind: str  # "changed", "missing" (on the target) or "extra" (only on the target)
    label: str  # row 3, or (chapter='I', year=2021)
    source: dict[str, Any] | None
    target: dict[str, Any] | None
    columns: tuple[str, ...] = ()  # changed: the columns that differ

    def to_json(self) -> dict[str, Any]:
        sides = {"source": self.source, "target": self.target}
        return {"kind": self.kind, "row": self.label, **sides, "columns": list(self.columns)}

    def describe(self) -> str:
        if self.kind == "changed":
            return f"{self.label}: {', '.join(self.columns)} differ; source {json_text(self.source)} target {json_text(self.target)}"
        if self.kind == "missing":
            return f"{self.label}: missing on the target; source {json_text(self.source)}"
        return f"{self.label}: extra on the target; target {json_text(self.target)}"


@dataclass(frozen=True)
class SqlShadowComparison(ShadowComparison):
    """A SQL shadow job's outcome: :class:`ShadowComparison` plus row counts and row diffs."""

    ordered: bool = False
    columns: list[str] = field(default_factory=list)
    source_rows: int | None = None
    target_rows: int | None = None
    row_differences: list[RowDiff] = field(default_factory=list)
    row_differences_total: int = 0

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out.update(
            ordered=self.ordered,
            columns=list(self.columns),
            source_rows=self.source_rows,
            target_rows=self.target_rows,
            row_differences=[d.to_json() for d in self.row_differences],
            row_differences_total=self.row_differences_total,
        )
        return out

    def headline(self) -> str:
        if self.error is not None:
            return super().headline()
        semantics = "ordered rows" if self.ordered else "rows as a multiset"
        tolerance = self.tolerance
        excluded = f"{len(self.non_deterministic)} non-deterministic column(s) excluded"
        if self.non_deterministic:
            excluded += f" ({', '.join(self.non_deterministic)})"
        if self.row_differences_total:
            return (
                f"shadow job '{self.job}': FAILED — {self.row_differences_total} differing row(s); "
                f"source {self.source_rows} row(s), target {self.target_rows} row(s) ({semantics}, {tolerance}); "
                f"{excluded}"
            )
        if self.fields_compared == 0 and self.non_deterministic:
            return f"shadow job '{self.job}': ok but nothing compared — every column was non-deterministic"
        return (
            f"shadow job '{self.job}': ok — {self.source_rows} row(s) x "
            f"{len(self.columns) - len(self.non_deterministic)} column(s) equal ({semantics}, {tolerance}); {excluded}"
        )

    def diff_report(self, limit: int = REPORT_MAX_DIFFERENCES) -> str:
        if self.error is not None or not self.row_differences:
            return super().diff_report(limit)
        lines = [self.headline()]
        shown = self.row_differences[: min(limit, ROWS_SHOWN)]
        for diff in shown:
            lines.append(f"  {diff.describe()}")
        more = self.row_differences_total - len(shown)
        if more > 0:
            lines.append(f"  ... and {more} more differing row(s)")
        if self.non_deterministic:
            lines.append(
                "  non-deterministic (differed between two source runs, not compared): "
                + ", ".join(self.non_deterministic)
            )
        return "\n".join(lines)


# --- comparing ---------------------------------------------------------------------------


def compare_results(
    job: str,
    first: QueryResult,
    again: QueryResult,
    target: QueryResult,
    ordered: bool,
    rel_tol: float,
    abs_tol: float,
    *,
    durations: Mapping[str, float] | None = None,
) -> SqlShadowComparison:
    """Calibrate on the two source results, then compare the target's with the first."""
    base: dict[str, Any] = {
        "job": job,
        "rel_tol": rel_tol,
        "abs_tol": abs_tol,
        "durations_s": dict(durations or {}),
        "ordered": ordered,
        "columns": list(first.columns),
        "source_rows": len(first.rows),
        "target_rows": len(target.rows),
    }
    if first.columns != again.columns:
        return SqlShadowComparison(
            error=f"the two source runs returned different columns: {first.columns} then {again.columns}",
            failed_run="source_again",
            **base,
        )
    if target.columns != first.columns:
        return SqlShadowComparison(
            error=f"the target returned columns {target.columns}, the source {first.columns}",
            failed_run="target",
            **base,
        )
    if len(first.rows) != len(again.rows):
        return SqlShadowComparison(
            error=f"the two source runs returned {len(first.rows)} and {len(again.rows)} rows: "
            "the query is not reproducible, so it cannot judge the target",
            failed_run="source_again",
            **base,
        )
    numeric = _numeric_columns(len(first.columns), (first.rows, again.rows, target.rows))
    noisy = _noisy_columns(first.rows, again.rows, numeric, rel_tol, abs_tol)
    kept = [i for i in range(len(first.columns)) if i not in noisy]
    noisy_names = [first.columns[i] for i in sorted(noisy)]
    base["non_deterministic"] = noisy_names
    if not kept:
        return SqlShadowComparison(fields_compared=0, **base)
    columns = [first.columns[i] for i in kept]
    kept_numeric = {j for j, i in enumerate(kept) if i in numeric}
    a, a_again, b = (_project(rows, kept) for rows in (first.rows, again.rows, target.rows))
    residue = _diff_rows(a, a_again, columns, ordered, kept_numeric, rel_tol, abs_tol)
    if residue:
        first_diff = residue[0]
        beyond = f" beyond the non-deterministic column(s) {', '.join(noisy_names)}" if noisy_names else ""
        return SqlShadowComparison(
            error=f"the two source runs differ{beyond} ({len(residue)} row(s)), e.g. {first_diff.label}: "
            f"first run {json_text(first_diff.source)}, second run {json_text(first_diff.target)}; make the query "
            "deterministic (a total ORDER BY when ordered, no sampling, no LIMIT without ORDER BY)",
            failed_run="source_again",
            **base,
        )
    diffs = _diff_rows(a, b, columns, ordered, kept_numeric, rel_tol, abs_tol)
    return SqlShadowComparison(
        fields_compared=max(len(a), len(b)) * len(columns),
        differences=_field_diffs(diffs[:REPORT_MAX_DIFFERENCES]),
        row_differences=diffs[:REPORT_MAX_DIFFERENCES],
        row_differences_total=len(diffs),
        **base,
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _numeric_columns(width: int, results: Iterable[Sequence[Row]]) -> set[int]:
    """Columns whose non-null values are all numbers, in every run."""
    numeric = set(range(width))
    for rows in results:
        for row in rows:
            for i in list(numeric):
                if row[i] is not None and not _is_number(row[i]):
                    numeric.discard(i)
    return numeric


def _same(left: Any, right: Any, numeric: bool, rel_tol: float, abs_tol: float) -> bool:
    if left is None or right is None:
        return left is None and right is None
    if numeric and _is_number(left) and _is_number(right):
        return numbers_match(left, right, rel_tol, abs_tol)
    return type(left) is type(right) and bool(left == right)


def _noisy_columns(
    first: Sequence[Row], again: Sequence[Row], numeric: set[int], rel_tol: float, abs_tol: float
) -> set[int]:
    """Columns whose values differ between the two source runs, compared as sorted multisets.

    Values, not positions: rows that merely come back in another order are caught
    afterwards, as a whole-query problem (an ORDER BY is missing), instead of turning
    every column into noise.
    """
    noisy: set[int] = set()
    width = len(first[0]) if first else 0
    for i in range(width):
        left = sorted((row[i] for row in first), key=_sort_key)
        right = sorted((row[i] for row in again), key=_sort_key)
        if not all(_same(x, y, i in numeric, rel_tol, abs_tol) for x, y in zip(left, right, strict=True)):
            noisy.add(i)
    return noisy


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    if _is_number(value):
        number = float(value)
        return (1, -math.inf if math.isnan(number) else number)
    return (2, (type(value).__name__, str(value)))


def _project(rows: Sequence[Row], kept: Sequence[int]) -> list[Row]:
    return [tuple(row[i] for i in kept) for row in rows]


def _diff_rows(
    source: list[Row],
    target: list[Row],
    columns: Sequence[str],
    ordered: bool,
    numeric: set[int],
    rel_tol: float,
    abs_tol: float,
) -> list[RowDiff]:
    if ordered:
        return _diff_ordered(source, target, columns, numeric, rel_tol, abs_tol)
    return _diff_multiset(source, target, columns, numeric, rel_tol, abs_tol)


def _diff_ordered(
    source: list[Row], target: list[Row], columns: Sequence[str], numeric: set[int], rel_tol: float, abs_tol: float
) -> list[RowDiff]:
    diffs: list[RowDiff] = []
    for position in range(max(len(source), len(target))):
        label = f"row {position + 1}"
        if position >= len(target):
            diffs.append(RowDiff("missing", label, _as_dict(columns, source[position]), None))
        elif position >= len(source):
            diffs.append(RowDiff("extra", label, None, _as_dict(columns, target[position])))
        else:
            changed = _changed_columns(source[position], target[position], columns, numeric, rel_tol, abs_tol)
            if changed:
                diffs.append(
                    RowDiff(
                        "changed",
                        label,
                        _as_dict(columns, source[position]),
                        _as_dict(columns, target[position]),
                        changed,
                    )
                )
    return diffs


def _diff_multiset(
    source: list[Row], target: list[Row], columns: Sequence[str], numeric: set[int], rel_tol: float, abs_tol: float
) -> list[RowDiff]:
    """Rows as multisets: exact matches first, then within tolerance inside a group of rows
    sharing their non-numeric values, then leftovers of a group paired as changed rows."""
    exact_left = Counter(source) - Counter(target)
    exact_right = Counter(target) - Counter(source)
    identity = [i for i in range(len(columns)) if i not in numeric]
    groups: dict[Row, tuple[list[Row], list[Row]]] = {}
    for rows, side in ((exact_left, 0), (exact_right, 1)):
        for row, count in rows.items():
            key = tuple(row[i] for i in identity)
            groups.setdefault(key, ([], []))[side].extend([row] * count)
    diffs: list[RowDiff] = []
    for key in sorted(groups, key=lambda k: tuple(_sort_key(v) for v in k)):
        left, right = (sorted(rows, key=lambda r: tuple(_sort_key(v) for v in r)) for rows in groups[key])
        unmatched_left: list[Row] = []
        for row in left:
            match = next(
                (
                    j
                    for j, other in enumerate(right)
                    if not _changed_columns(row, other, columns, numeric, rel_tol, abs_tol)
                ),
                None,
            )
            if match is None:
                unmatched_left.append(row)
            else:
                right.pop(match)
        label = _group_label(columns, identity, key)
        for row, other in zip(unmatched_left, right, strict=False):
            changed = _changed_columns(row, other, columns, numeric, rel_tol, abs_tol)
            diffs.append(RowDiff("changed", label, _as_dict(columns, row), _as_dict(columns, other), changed))
        paired = min(len(unmatched_left), len(right))
        diffs.extend(RowDiff("missing", label, _as_dict(columns, row), None) for row in unmatched_left[paired:])
        diffs.extend(RowDiff("extra", label, None, _as_dict(columns, row)) for row in right[paired:])
    return diffs


def _changed_columns(
    left: Row, right: Row, columns: Sequence[str], numeric: set[int], rel_tol: float, abs_tol: float
) -> tuple[str, ...]:
    return tuple(
        columns[i] for i in range(len(columns)) if not _same(left[i], right[i], i in numeric, rel_tol, abs_tol)
    )


def _group_label(columns: Sequence[str], identity: Sequence[int], key: Row) -> str:
    if not identity:
        return "row"
    return "(" + ", ".join(f"{columns[i]}={_literal(v)}" for i, v in zip(identity, key, strict=True)) + ")"


def _literal(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return json.dumps(_jsonable(value), ensure_ascii=False)


def _as_dict(columns: Sequence[str], row: Row) -> dict[str, Any]:
    return {name: _jsonable(value) for name, value in zip(columns, row, strict=True)}


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        return str(value)  # exact: "12.50", not 12.5
    if isinstance(value, dt.date | dt.time | dt.datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, uuid.UUID | dt.timedelta):
        return str(value)
    return str(value)


def _field_diffs(diffs: Sequence[RowDiff]) -> list[FieldDiff]:
    """The row diffs in :class:`FieldDiff` form, for code that reads ``ShadowComparison.differences``."""
    out: list[FieldDiff] = []
    for diff in diffs:
        if diff.kind == "changed" and diff.source is not None and diff.target is not None:
            out.extend(FieldDiff(f"{diff.label}.{c}", diff.source[c], diff.target[c]) for c in diff.columns)
        elif diff.kind == "missing":
            out.append(FieldDiff(diff.label, json_text(diff.source), None, "missing"))
        else:
            out.append(FieldDiff(diff.label, None, json_text(diff.target), "extra"))
    return out

"""PostgreSQL table suites as data: ``include/expectations/<suite>.yaml`` with ``kind: postgres_tables``.

The shape::

    kind: postgres_tables
    suite: hdh_registry_tables
    description: <text>
    foreign_keys: auto             # every FK of the source inventory: no orphan rows on the target
    tables:
      registry.patients:           # schema-qualified
        row_count: source          # the target's count(*) equals the source's
        not_null: [patient_id, sex]
        unique: [patient_id, [patient_id, stay_no]]   # a list is a compound key
        value_sets: {sex: ["1", "2", "9"]}
        ranges: {birth_year: {min: 1900, max: 2100}}
        regex: {department: "^[0-9]{2,3}$"}
        expectations:              # any other GX core expectation, as in the content suites
          - expectation: expect_column_values_to_be_between
            kwargs: {column: quantity, min_value: 0}
            description: <text>

Each shorthand becomes one GX core expectation (:meth:`TableChecks.specs`:
``expect_table_row_count_to_equal``, ``expect_column_values_to_not_be_null``,
``expect_column_values_to_be_unique`` or ``expect_compound_columns_to_be_unique``,
``expect_column_values_to_be_in_set``, ``expect_column_values_to_be_between``,
``expect_column_values_to_match_regex``). :mod:`bascule.validation.table_gates` runs
them on the target database.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bascule.identifiers import IdentifierError, qualified_name, split_qualified
from bascule.validation.suites import EXPECTATIONS_DIR, SuiteConfigError, SuiteProblems, read_suite_file

SUITE_KIND = "postgres_tables"
_SUITE_NAME = re.compile(r"[a-z][a-z0-9_]{0,99}")
_SUITE_FIELDS = {"kind", "suite", "description", "foreign_keys", "tables", "path"}
_TABLE_FIELDS = {"row_count", "not_null", "unique", "value_sets", "ranges", "regex", "expectations"}


# --- suites --------------------------------------------------------------------------


@dataclass(frozen=True)
class TableChecks:
    """What one suite expects of one target table."""

    table: str  # schema.table
    row_count: str | None = None  # "source"
    not_null: tuple[str, ...] = ()
    unique: tuple[str | tuple[str, ...], ...] = ()
    value_sets: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    ranges: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    regex: dict[str, str] = dataclasses.field(default_factory=dict)
    expectations: tuple[dict[str, Any], ...] = ()

    def specs(self, source_rows: int | tuple[int, int] | None) -> list[dict[str, Any]]:
        """The GX expectation specs (``{"expectation", "kwargs", "description"}``), in file order.

        ``source_rows`` is the source's count, or a (min, max) range when the source took
        writes while it was being counted (the range is exact once the source is frozen).
        """
        specs: list[dict[str, Any]] = []
        if self.row_count == "source" and isinstance(source_rows, tuple) and source_rows[0] != source_rows[1]:
            low, high = source_rows
            specs.append(
                _spec(
                    "expect_table_row_count_to_be_between",
                    {"min_value": low, "max_value": high},
                    f"row count within the source's [{low}, {high}] (writes in flight while counting)",
                )
            )
        elif self.row_count == "source" and source_rows is not None:
            if isinstance(source_rows, tuple):
                source_rows = source_rows[0]
            specs.append(
                _spec(
                    "expect_table_row_count_to_equal",
                    {"value": source_rows},
                    f"row count equals the source's ({source_rows})",
                )
            )
        for column in self.not_null:
            specs.append(_spec("expect_column_values_to_not_be_null", {"column": column}, f"{column} is never null"))
        for key in self.unique:
            if isinstance(key, tuple):
                specs.append(
                    _spec(
                        "expect_compound_columns_to_be_unique",
                        {"column_list": list(key)},
                        f"({', '.join(key)}) is unique",
                    )
                )
            else:
                specs.append(_spec("expect_column_values_to_be_unique", {"column": key}, f"{key} is unique"))
        for column, values in self.value_sets.items():
            specs.append(
                _spec(
                    "expect_column_values_to_be_in_set",
                    {"column": column, "value_set": list(values)},
                    f"{column} is one of {len(values)} codes",
                )
            )
        for column, bounds in self.ranges.items():
            kwargs = {"column": column, "min_value": bounds.get("min"), "max_value": bounds.get("max")}
            specs.append(
                _spec(
                    "expect_column_values_to_be_between",
                    kwargs,
                    f"{column} within [{bounds.get('min')}, {bounds.get('max')}]",
                )
            )
        for column, pattern in self.regex.items():
            specs.append(
                _spec(
                    "expect_column_values_to_match_regex",
                    {"column": column, "regex": pattern},
                    f"{column} matches {pattern}",
                )
            )
        specs.extend(dict(e) for e in self.expectations)
        return specs


@dataclass(frozen=True)
class TableSuite:
    name: str
    tables: tuple[TableChecks, ...]
    description: str = ""
    foreign_keys: str | None = None  # "auto": every FK of the inventory
    path: str | None = None


BUILTIN_SUITE = "bascule_builtin"


def builtin_table_suite(primary_keys: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """The gates that decide when a manifest lists no suite: every table's row count equals the
    source's, its primary key is present and unique, and no foreign key has an orphan row.

    ``primary_keys`` maps each table in scope (``schema.table`` as the snapshot names it) to
    its primary key columns (empty: a keyless table, checked for its row count only). The
    table diff, which runs first, compares every row besides. Names are in the text form of
    ``bascule.identifiers`` (``clinical.Encounter``, ``"my.schema".t``), which the gates
    quote themselves, so no table is left out for its spelling.
    """
    tables: dict[str, dict[str, Any]] = {}
    for table, key in primary_keys.items():
        checks: dict[str, Any] = {"row_count": "source"}
        if key:
            checks["not_null"] = list(key)
            checks["unique"] = [key[0]] if len(key) == 1 else [list(key)]
        tables[table] = checks
    return {
        "kind": SUITE_KIND,
        "suite": BUILTIN_SUITE,
        "description": "built-in gates (no suite in the manifest): row counts, primary keys, foreign keys",
        "foreign_keys": "auto",
        "tables": tables,
    }


def _spec(expectation: str, kwargs: dict[str, Any], description: str) -> dict[str, Any]:
    return {"expectation": expectation, "kwargs": kwargs, "description": description}


def suite_path(name: str, directory: str | Path = EXPECTATIONS_DIR) -> Path:
    """``<directory>/<name>.yaml`` for a suite name as the manifest spells it."""
    if not _SUITE_NAME.fullmatch(name):
        raise SuiteConfigError(f"suite name {name!r} must match {_SUITE_NAME.pattern} (a file in {directory})")
    return Path(directory) / f"{name}.yaml"


def load_table_suite(name: str, directory: str | Path = EXPECTATIONS_DIR) -> dict[str, Any]:
    """Read and check suite ``name``; return it as a plain (JSON-able) dict for
    :func:`bascule.validation.table_gates.run_table_suites`."""
    path = suite_path(name, directory)
    data = read_suite_file(path, "table suite")
    suite = parse_table_suite(data, where=str(path))
    if suite.name != name:
        raise SuiteConfigError(f"table suite {path}: 'suite' is {suite.name!r}, expected {name!r} (the file name)")
    if isinstance(data, dict):
        data = {**data, "path": str(path)}
    return dict(data)


def parse_table_suite(data: Any, *, where: str = "table suite") -> TableSuite:
    """Check a suite's structure; every problem is listed in one :class:`SuiteConfigError`.

    Expectation names and kwargs are checked against GX when the suite runs, before
    any query.
    """
    if not isinstance(data, Mapping):
        raise SuiteConfigError(f"{where}: top level must be a mapping")
    problems = SuiteProblems()
    unknown = set(data) - _SUITE_FIELDS
    problems.need(not unknown, f"unknown top-level field(s): {sorted(unknown)}")
    problems.need(data.get("kind") == SUITE_KIND, f"'kind' must be {SUITE_KIND!r} (got {data.get('kind')!r})")
    name = data.get("suite")
    problems.need(
        isinstance(name, str) and bool(_SUITE_NAME.fullmatch(name)), f"'suite' must match {_SUITE_NAME.pattern}"
    )
    foreign_keys = data.get("foreign_keys")
    problems.need(
        foreign_keys in (None, "auto", "none"), f"'foreign_keys' must be 'auto' or 'none' (got {foreign_keys!r})"
    )
    raw_tables = data.get("tables") or {}
    tables: list[TableChecks] = []
    if problems.need(isinstance(raw_tables, Mapping), "'tables' must be a mapping schema.table -> checks"):
        for table, checks in raw_tables.items():
            parsed = _table_checks(problems, table, checks)
            if parsed is not None:
                tables.append(parsed)
    problems.need(bool(raw_tables) or foreign_keys == "auto", "a suite needs 'tables' or 'foreign_keys: auto'")
    problems.raise_if_any(where)
    return TableSuite(
        name=str(name),
        tables=tuple(tables),
        description=str(data.get("description") or ""),
        foreign_keys="auto" if foreign_keys == "auto" else None,
        path=data.get("path"),
    )


def _table_checks(problems: SuiteProblems, table: Any, checks: Any) -> TableChecks | None:
    """One table's checks; None once the suite has a problem (recorded in ``problems``)."""
    at = f"tables.{table}"
    if not problems.need(isinstance(table, str) and is_qualified(table), f"{at}: use schema.table"):
        return None
    table = qualified_name(*split_qualified(table))  # one spelling per table, as the inventory has it
    if not problems.need(isinstance(checks, Mapping), f"{at} must be a mapping of checks"):
        return None
    extra = set(checks) - _TABLE_FIELDS
    problems.need(not extra, f"{at}: unknown field(s) {sorted(extra)}; known: {sorted(_TABLE_FIELDS)}")
    row_count = checks.get("row_count")
    problems.need(row_count in (None, "source"), f"{at}.row_count must be 'source' or absent (got {row_count!r})")
    not_null = checks.get("not_null") or []
    problems.need(is_name_list(not_null), f"{at}.not_null must be a list of column names")
    unique = _unique_keys(problems, at, checks.get("unique") or [])
    value_sets = checks.get("value_sets") or {}
    problems.need(
        isinstance(value_sets, Mapping) and all(isinstance(v, list) and v for v in value_sets.values()),
        f"{at}.value_sets must map columns to non-empty lists",
    )
    ranges = checks.get("ranges") or {}
    problems.need(
        isinstance(ranges, Mapping) and all(_is_bounds(b) for b in ranges.values()),
        f"{at}.ranges must map columns to {{min: .., max: ..}}",
    )
    regexes = checks.get("regex") or {}
    if problems.need(isinstance(regexes, Mapping), f"{at}.regex must map columns to patterns"):
        for column, pattern in regexes.items():
            try:
                re.compile(str(pattern))
            except re.error as exc:
                problems.add(f"{at}.regex.{column}: {exc}")
    expectations = checks.get("expectations") or []
    problems.check_expectations(at, expectations)
    if problems:  # the suite is refused: building the checks could trip over the wrong shapes
        return None
    return TableChecks(
        table=table,
        row_count=row_count,
        not_null=tuple(not_null),
        unique=tuple(unique),
        value_sets={str(k): list(v) for k, v in value_sets.items()},
        ranges={str(k): dict(v) for k, v in ranges.items()},
        regex={str(k): str(v) for k, v in regexes.items()},
        expectations=tuple(dict(e) for e in expectations),
    )


def _unique_keys(problems: SuiteProblems, at: str, raw: Any) -> list[str | tuple[str, ...]]:
    """``unique``: column names, or lists of them for compound keys."""
    unique: list[str | tuple[str, ...]] = []
    if problems.need(isinstance(raw, list), f"{at}.unique must be a list"):
        for key in raw:
            if isinstance(key, str):
                unique.append(key)
            elif problems.need(is_name_list(key) and len(key) > 1, f"{at}.unique: {key!r} is not a column or column list"):
                unique.append(tuple(key))
    return unique


def _is_bounds(bounds: Any) -> bool:
    return isinstance(bounds, Mapping) and set(bounds) <= {"min", "max"} and ("min" in bounds or "max" in bounds)


def is_qualified(text: str) -> bool:
    """``schema.table`` in the manifest syntax (docs/workloads.md#identifiers)."""
    try:
        split_qualified(text)
    except IdentifierError:
        return False
    return True


def is_name_list(value: Any) -> bool:
    """A list of non-empty strings (column names)."""
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)

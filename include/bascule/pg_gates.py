"""Great Expectations gates on the TARGET tables of a postgres workload.

Suites are data, in ``include/expectations/<suite>.yaml``, with ``kind: postgres_tables``::

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

Each shorthand becomes one GX core expectation (``expect_table_row_count_to_equal``,
``expect_column_values_to_not_be_null``, ``expect_column_values_to_be_unique`` or
``expect_compound_columns_to_be_unique``, ``expect_column_values_to_be_in_set``,
``expect_column_values_to_be_between``, ``expect_column_values_to_match_regex``); a
foreign key becomes an ``UnexpectedRowsExpectation`` whose query anti-joins the child
table with its parent, so an orphan is found even on a target where the constraint is
missing or NOT VALID. Everything runs through GX's SQL datasource on the real target
database: nothing is pulled into pandas.

Outcomes use :mod:`bascule.gates`' types (:class:`~bascule.gates.SuiteOutcome`, one per
table) and its offline HTML page, so approvers read postgres and object gates alike.
Offending rows are named by their primary key (``patient_id=42``).

The target URL carries a password: it is used to connect and nowhere else. Results,
summaries, the HTML page and every exception raised here name the target as
``postgresql://user:***@host:port/database``; error texts from the driver are scrubbed
of the password as well, and exceptions are raised without their (driver) cause.
"""

from __future__ import annotations

import dataclasses
import json
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from bascule.exceptions import BasculeError, StoreAccessError
from bascule.gates import (
    _GX_LOCK,
    _IGNORED_WARNING,
    BASCULE_ENGINE,
    EXPECTATIONS_DIR,
    MAX_LISTED,
    ExpectationOutcome,
    SuiteConfigError,
    SuiteOutcome,
    _exception_message,
    _gx,
    _int_or_none,
    _jsonable,
    build_expectations,
    render_report_html,
)

SUITE_KIND = "postgres_tables"
FK_EXPECTATION = "unexpected_rows_expectation"
_SUITE_NAME = re.compile(r"[a-z][a-z0-9_]{0,99}")
_QUALIFIED = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*\.[A-Za-z_][A-Za-z0-9_$]*")
_TABLE_FIELDS = {"row_count", "not_null", "unique", "value_sets", "ranges", "regex", "expectations"}
_SUMMARY_FORMAT: dict[str, Any] = {"result_format": "SUMMARY", "partial_unexpected_count": MAX_LISTED}
# Orphan rows are few and small (key + FK columns); GX fetches at most 200 of them.
_ROWS_FORMAT: dict[str, Any] = {"result_format": "COMPLETE"}


class PgGateError(BasculeError):
    """The gates could not run (not: the data failed them). The message never holds a password."""


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


def _spec(expectation: str, kwargs: dict[str, Any], description: str) -> dict[str, Any]:
    return {"expectation": expectation, "kwargs": kwargs, "description": description}


def suite_path(name: str, directory: str | Path = EXPECTATIONS_DIR) -> Path:
    """``<directory>/<name>.yaml`` for a suite name as the manifest spells it."""
    if not _SUITE_NAME.fullmatch(name):
        raise SuiteConfigError(f"suite name {name!r} must match {_SUITE_NAME.pattern} (a file in {directory})")
    return Path(directory) / f"{name}.yaml"


def load_table_suite(name: str, directory: str | Path = EXPECTATIONS_DIR) -> dict[str, Any]:
    """Read and check suite ``name``; return it as a plain (JSON-able) dict for :func:`run_table_suites`."""
    path = suite_path(name, directory)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SuiteConfigError(f"table suite {path}: cannot read: {exc}") from exc
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
    problems: list[str] = []

    def need(cond: bool, message: str) -> bool:
        if not cond:
            problems.append(message)
        return cond

    if not isinstance(data, Mapping):
        raise SuiteConfigError(f"{where}: top level must be a mapping")
    unknown = set(data) - {"kind", "suite", "description", "foreign_keys", "tables", "path"}
    need(not unknown, f"unknown top-level field(s): {sorted(unknown)}")
    need(data.get("kind") == SUITE_KIND, f"'kind' must be {SUITE_KIND!r} (got {data.get('kind')!r})")
    name = data.get("suite")
    need(isinstance(name, str) and bool(_SUITE_NAME.fullmatch(name)), f"'suite' must match {_SUITE_NAME.pattern}")
    foreign_keys = data.get("foreign_keys")
    need(foreign_keys in (None, "auto", "none"), f"'foreign_keys' must be 'auto' or 'none' (got {foreign_keys!r})")
    raw_tables = data.get("tables") or {}
    tables: list[TableChecks] = []
    if need(isinstance(raw_tables, Mapping), "'tables' must be a mapping schema.table -> checks"):
        for table, checks in raw_tables.items():
            at = f"tables.{table}"
            if not need(isinstance(table, str) and bool(_QUALIFIED.fullmatch(table)), f"{at}: use schema.table"):
                continue
            if not need(isinstance(checks, Mapping), f"{at} must be a mapping of checks"):
                continue
            extra = set(checks) - _TABLE_FIELDS
            need(not extra, f"{at}: unknown field(s) {sorted(extra)}; known: {sorted(_TABLE_FIELDS)}")
            row_count = checks.get("row_count")
            need(row_count in (None, "source"), f"{at}.row_count must be 'source' or absent (got {row_count!r})")
            not_null = checks.get("not_null") or []
            need(_names(not_null), f"{at}.not_null must be a list of column names")
            unique_raw = checks.get("unique") or []
            unique: list[str | tuple[str, ...]] = []
            if need(isinstance(unique_raw, list), f"{at}.unique must be a list"):
                for key in unique_raw:
                    if isinstance(key, str):
                        unique.append(key)
                    elif need(_names(key) and len(key) > 1, f"{at}.unique: {key!r} is not a column or column list"):
                        unique.append(tuple(key))
            value_sets = checks.get("value_sets") or {}
            need(
                isinstance(value_sets, Mapping) and all(isinstance(v, list) and v for v in value_sets.values()),
                f"{at}.value_sets must map columns to non-empty lists",
            )
            ranges = checks.get("ranges") or {}
            need(
                isinstance(ranges, Mapping)
                and all(
                    isinstance(b, Mapping) and set(b) <= {"min", "max"} and ("min" in b or "max" in b)
                    for b in ranges.values()
                ),
                f"{at}.ranges must map columns to {{min: .., max: ..}}",
            )
            regexes = checks.get("regex") or {}
            if need(isinstance(regexes, Mapping), f"{at}.regex must map columns to patterns"):
                for column, pattern in regexes.items():
                    try:
                        re.compile(str(pattern))
                    except re.error as exc:
                        problems.append(f"{at}.regex.{column}: {exc}")
            expectations = checks.get("expectations") or []
            if need(isinstance(expectations, list), f"{at}.expectations must be a list"):
                for j, e in enumerate(expectations):
                    if need(
                        isinstance(e, Mapping) and isinstance(e.get("expectation"), str),
                        f"{at}.expectations[{j}] needs an 'expectation' name",
                    ):
                        odd = set(e) - {"expectation", "kwargs", "description"}
                        need(not odd, f"{at}.expectations[{j}]: unknown field(s) {sorted(odd)}")
            if not problems:
                tables.append(
                    TableChecks(
                        table=table,
                        row_count=row_count,
                        not_null=tuple(not_null),
                        unique=tuple(unique),
                        value_sets={str(k): list(v) for k, v in value_sets.items()},
                        ranges={str(k): dict(v) for k, v in ranges.items()},
                        regex={str(k): str(v) for k, v in regexes.items()},
                        expectations=tuple(dict(e) for e in expectations),
                    )
                )
    need(bool(raw_tables) or foreign_keys == "auto", "a suite needs 'tables' or 'foreign_keys: auto'")
    if problems:
        raise SuiteConfigError(f"{where}:\n" + "\n".join(f"  - {p}" for p in problems))
    return TableSuite(
        name=str(name),
        tables=tuple(tables),
        description=str(data.get("description") or ""),
        foreign_keys="auto" if foreign_keys == "auto" else None,
        path=data.get("path"),
    )


def _names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


# --- foreign keys --------------------------------------------------------------------

_FOREIGN_KEYS_SQL = """
SELECT n.nspname, c.relname, con.conname,
       array_agg(a.attname ORDER BY k.ord), pn.nspname, pc.relname, array_agg(pa.attname ORDER BY k.ord)
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class pc ON pc.oid = con.confrelid
JOIN pg_namespace pn ON pn.oid = pc.relnamespace
CROSS JOIN LATERAL unnest(con.conkey, con.confkey) WITH ORDINALITY AS k(attnum, fattnum, ord)
JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
JOIN pg_attribute pa ON pa.attrelid = con.confrelid AND pa.attnum = k.fattnum
WHERE con.contype = 'f' AND n.nspname = ANY(%s)
GROUP BY n.nspname, c.relname, con.conname, pn.nspname, pc.relname
ORDER BY 1, 2, 3
"""


def read_foreign_keys(conn: Any, schemas: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """The foreign keys of ``schemas``, in the shape :func:`run_table_suites` takes.

    ``{"schema.child": [{"name", "columns", "ref_table", "ref_columns"}]}``, the shape of
    :mod:`bascule.pg_catalog`'s inventory; read from the SOURCE (the target may not have
    its constraints yet, or lost one).
    """
    out: dict[str, list[dict[str, Any]]] = {}
    with conn.cursor() as cur:
        cur.execute(_FOREIGN_KEYS_SQL, (list(schemas),))
        for schema, table, name, columns, ref_schema, ref_table, ref_columns in cur.fetchall():
            out.setdefault(f"{schema}.{table}", []).append(
                {
                    "name": name,
                    "columns": list(columns),
                    "ref_table": f"{ref_schema}.{ref_table}",
                    "ref_columns": list(ref_columns),
                }
            )
    return out


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _quote_table(qualified: str) -> str:
    schema, _, table = qualified.partition(".")
    return f"{_quote(schema)}.{_quote(table)}"


def _orphan_query(fk: Mapping[str, Any], key_columns: Sequence[str]) -> str:
    """Child rows whose (non-null) FK value has no parent row; GX fills ``{batch}`` with the child table.

    The JOIN keyword makes GX leave the batch unaliased, so it can be aliased here.
    """
    columns, ref_columns = list(fk["columns"]), list(fk["ref_columns"])
    shown = list(dict.fromkeys([*key_columns, *columns]))
    select = ", ".join(f"c.{_quote(c)}" for c in shown)
    on = " AND ".join(f"p.{_quote(r)} = c.{_quote(c)}" for c, r in zip(columns, ref_columns, strict=True))
    present = " AND ".join(f"c.{_quote(c)} IS NOT NULL" for c in columns)
    parent = _quote_table(str(fk["ref_table"])).replace("{", "{{").replace("}", "}}")
    return (
        f"SELECT {select} FROM {{batch}} AS c LEFT JOIN {parent} AS p ON {on} "
        f"WHERE {present} AND p.{_quote(ref_columns[0])} IS NULL"
    )


def normalise_foreign_keys(foreign_keys: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Check the inventory's foreign keys; return them as ``{"name", "columns", "ref_table", "ref_columns"}``.

    ``referenced_table``/``referenced_columns`` are accepted for ``ref_table``/``ref_columns``.
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for table, fks in foreign_keys.items():
        if not isinstance(fks, list | tuple):
            raise PgGateError(f"foreign_keys[{table!r}] must be a list of foreign keys")
        checked: list[dict[str, Any]] = []
        for raw in fks:
            fk: dict[str, Any] = dict(raw) if isinstance(raw, Mapping) else {}
            ref_table = fk.get("ref_table", fk.get("referenced_table"))
            ref_columns: Any = fk.get("ref_columns", fk.get("referenced_columns"))
            ok = (
                _names(fk.get("columns"))
                and _names(ref_columns)
                and len(fk["columns"]) == len(ref_columns)
                and isinstance(ref_table, str)
                and _QUALIFIED.fullmatch(ref_table) is not None
            )
            if not ok:
                raise PgGateError(
                    f"foreign_keys[{table!r}]: {fk!r} needs 'columns', 'ref_table' (schema.table) "
                    "and as many 'ref_columns'"
                )
            checked.append(
                {
                    "name": fk.get("name"),
                    "columns": list(fk["columns"]),
                    "ref_table": ref_table,
                    "ref_columns": list(ref_columns),
                }
            )
        out[str(table)] = checked
    return out


# --- running ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GateResult:
    """Every table's outcome, and where they were checked (the target, without its password)."""

    outcomes: list[SuiteOutcome]
    target: str

    @property
    def success(self) -> bool:
        # Nothing checked proves nothing: an empty gate does not pass.
        return bool(self.outcomes) and all(o.success for o in self.outcomes)

    @property
    def failed(self) -> list[SuiteOutcome]:
        return [o for o in self.outcomes if not o.success]

    def summary(self) -> list[str]:
        """One line for the gate, one per table."""
        evaluated = sum(o.evaluated for o in self.outcomes)
        failed = sum(o.failed for o in self.outcomes)
        verdict = "passed" if self.success else "FAILED"
        lines = [
            f"postgres table gates on {self.target}: {verdict} — {len(self.outcomes)} table(s), "
            f"{evaluated} expectation(s), {failed} failed"
        ]
        for o in self.outcomes:
            state = "ok" if o.success else f"FAILED {o.failed}/{o.evaluated}"
            lines.append(f"  {o.label}: {state}")
        return lines

    def failure_summary(self) -> str:
        """One line per failed expectation: suite/table, expectation, unexpected count, first rows."""
        return "\n".join(o.failure_summary() for o in self.failed)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "success": self.success,
            "tables": len(self.outcomes),
            "failed_tables": [o.label for o in self.failed],
            "outcomes": [o.to_json() for o in self.outcomes],
        }

    def render_html(self, title: str = "PostgreSQL table gates", context: Mapping[str, Any] | None = None) -> str:
        """The offline HTML page of :func:`bascule.gates.render_report_html`, target named without secret."""
        return render_report_html(title, self.outcomes, {"target": self.target, **dict(context or {})})


def run_table_suites(
    target_sqlalchemy_url: str,
    suites: Sequence[Mapping[str, Any]],
    source_row_counts: Mapping[str, int | tuple[int, int]],
    foreign_keys: Mapping[str, Sequence[Mapping[str, Any]]],
) -> GateResult:
    """Validate the target's tables with each suite; one :class:`SuiteOutcome` per suite and table.

    ``suites`` are suite dicts (:func:`load_table_suite`). ``source_row_counts`` maps
    ``schema.table`` to the source's ``count(*)``; a ``row_count: source`` table missing
    from it fails (never passes vacuously). ``foreign_keys`` is the inventory's
    ``{"schema.child": [{"name", "columns", "ref_table", "ref_columns"}]}``
    (:mod:`bascule.pg_catalog`'s ``TableInfo.foreign_keys``, or :func:`read_foreign_keys`); with ``foreign_keys: auto`` every one is checked for
    orphans, including on tables the suite does not list. A table missing on the target
    fails its suite. Unknown expectations or bad kwargs raise :class:`SuiteConfigError`
    before any query; an unreachable target raises
    :class:`~bascule.exceptions.StoreAccessError`.
    """
    parsed = [parse_table_suite(s, where=f"table suite {s.get('suite', '?')!r}") for s in suites]
    fks_by_table = normalise_foreign_keys(foreign_keys)
    url, shown, secrets = _target_url(target_sqlalchemy_url)
    plans: list[tuple[str, str, list[dict[str, Any]], list[dict[str, Any]], bool]] = []
    for suite in parsed:
        tables = {t.table: t for t in suite.tables}
        fk_tables = sorted(fks_by_table) if suite.foreign_keys == "auto" else []
        for table in [*tables, *(t for t in fk_tables if t not in tables)]:
            checks = tables.get(table, TableChecks(table=table))
            specs = checks.specs(source_row_counts.get(table))
            build_expectations(f"{suite.name}/{table}", specs)  # fail on a bad suite before any query
            fks = list(fks_by_table.get(table, [])) if suite.foreign_keys == "auto" else []
            row_count_missing = checks.row_count == "source" and table not in source_row_counts
            plans.append((suite.name, table, specs, fks, row_count_missing))
    gx = _gx()
    outcomes: list[SuiteOutcome] = []
    with _GX_LOCK:
        context = gx.get_context(mode="ephemeral")
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        datasources: dict[str, Any] = {}

        def datasource_for(schema: str) -> Any:
            # One datasource per schema, its search_path set: GX 1.x deprecates a table asset's schema_name.
            if schema not in datasources:
                try:
                    datasources[schema] = context.data_sources.add_postgres(
                        f"bascule_target_{len(datasources)}",
                        connection_string=url,
                        kwargs={"connect_args": {"options": f"-c search_path={_quote(schema)}"}},
                    )
                except Exception as exc:
                    raise _unreachable(shown, exc, secrets) from None
            return datasources[schema]

        try:
            for suite_name, table, specs, fks, row_count_missing in plans:
                datasource = datasource_for(table.partition(".")[0])
                outcomes.append(
                    _run_table(datasource, suite_name, table, specs, fks, row_count_missing, shown, secrets)
                )
        except StoreAccessError:
            raise
        except Exception as exc:
            raise PgGateError(f"table gates on {shown} could not run: {_scrub(_last_line(exc), secrets)}") from None
        finally:
            for datasource in datasources.values():  # close the pooled sessions now, not at garbage collection
                # GX holds two engines: the datasource's, and its execution engine's own.
                try:
                    datasource.get_engine().dispose()
                    datasource.get_execution_engine().engine.dispose()
                except Exception:  # closing is best effort; the verdict stands
                    pass
    return GateResult(outcomes, shown)


def _run_table(
    datasource: Any,
    suite_name: str,
    table: str,
    specs: list[dict[str, Any]],
    fks: Sequence[Mapping[str, Any]],
    row_count_missing: bool,
    shown: str,
    secrets: Sequence[str],
) -> SuiteOutcome:
    from great_expectations.expectations import UnexpectedRowsExpectation

    gx = _gx()
    schema, _, name = table.partition(".")
    extra: list[ExpectationOutcome] = []
    if row_count_missing:
        extra.append(
            ExpectationOutcome(
                "expect_table_row_count_to_equal",
                {"value": None},
                False,
                "row count equals the source's",
                error=f"no source row count was given for {table}",
                engine=BASCULE_ENGINE,
            )
        )
    key_columns = _primary_key(datasource, schema, name, shown, secrets)
    if key_columns is None:
        missing = ExpectationOutcome(
            "bascule_table_exists",
            {"table": table},
            False,
            "the table exists on the target",
            observed=False,
            engine=BASCULE_ENGINE,
        )
        unchecked = [missing, *extra]
        return SuiteOutcome(suite_name, False, len(unchecked), len(unchecked), unchecked, table=table, id_name="row")
    asset = datasource.add_table_asset(_asset_name(suite_name, table), table_name=name)
    batch = asset.add_batch_definition_whole_table("whole").get_batch()
    id_name = _key_name(key_columns)

    outcomes: list[ExpectationOutcome] = []
    if specs:
        expectations = gx.ExpectationSuite(name=_asset_name(suite_name, table))
        for expectation in build_expectations(f"{suite_name}/{table}", specs):
            expectations.add_expectation(expectation)
        result_format = dict(_SUMMARY_FORMAT)
        if key_columns:
            result_format["unexpected_index_column_names"] = list(key_columns)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_IGNORED_WARNING, category=UserWarning)
            validation = batch.validate(expectations, result_format=result_format)
        by_index = {int((r.expectation_config.meta or {})["bascule_index"]): r for r in validation.results}
        outcomes.extend(_convert(spec, by_index.get(i), key_columns, secrets) for i, spec in enumerate(specs))
    if fks:
        orphans = gx.ExpectationSuite(name=_asset_name(suite_name, table) + ".fk")
        for i, fk in enumerate(fks):
            orphans.add_expectation(
                UnexpectedRowsExpectation(
                    unexpected_rows_query=_orphan_query(fk, key_columns),
                    description=_fk_text(table, fk),
                    meta={"bascule_index": i},
                )
            )
        validation = batch.validate(orphans, result_format=dict(_ROWS_FORMAT))
        by_index = {int((r.expectation_config.meta or {})["bascule_index"]): r for r in validation.results}
        outcomes.extend(_convert_fk(table, fk, by_index.get(i), key_columns, secrets) for i, fk in enumerate(fks))
    outcomes.extend(extra)
    failed = sum(1 for o in outcomes if not o.success)
    return SuiteOutcome(
        suite=suite_name,
        success=failed == 0 and bool(outcomes),
        evaluated=len(outcomes),
        failed=failed,
        results=outcomes,
        table=table,
        rows=_observed_rows(outcomes),
        id_name=id_name,
    )


def _primary_key(
    datasource: Any, schema: str, table: str, shown: str, secrets: Sequence[str]
) -> tuple[str, ...] | None:
    """The table's primary key columns (empty tuple: none), or None if the table does not exist."""
    import sqlalchemy as sa

    try:
        engine = datasource.get_engine()
        inspector = sa.inspect(engine)
        if not inspector.has_table(table, schema=schema):
            return None
        constraint = inspector.get_pk_constraint(table, schema=schema)
    except sa.exc.OperationalError as exc:
        raise _unreachable(shown, exc, secrets) from None
    return tuple(constraint.get("constrained_columns") or ())


def _convert(
    spec: Mapping[str, Any], result: Any, key_columns: Sequence[str], secrets: Sequence[str]
) -> ExpectationOutcome:
    name = str(spec["expectation"])
    kwargs = _jsonable(dict(spec.get("kwargs") or {}))
    description = spec.get("description")
    if result is None:  # never count a missing result as a pass
        return ExpectationOutcome(name, kwargs, False, description, error="no result returned by GX")
    res: dict[str, Any] = dict(result.result or {})
    error = _exception_message(result.exception_info)
    ids = [
        _row_id(entry, key_columns)
        for entry in (res.get("partial_unexpected_index_list") or [])[:MAX_LISTED]
        if isinstance(entry, Mapping)
    ]
    observed = res.get("observed_value")
    return ExpectationOutcome(
        expectation=name,
        kwargs=kwargs,
        success=bool(result.success) and error is None,
        description=description,
        element_count=_int_or_none(res.get("element_count")),
        unexpected_count=_int_or_none(res.get("unexpected_count")),
        observed=None if observed is None else _jsonable(observed),
        unexpected_values=[_jsonable(v) for v in (res.get("partial_unexpected_list") or [])[:MAX_LISTED]],
        unexpected_ids=ids,
        error=None if error is None else _scrub(error, secrets),
    )


def _convert_fk(
    table: str, fk: Mapping[str, Any], result: Any, key_columns: Sequence[str], secrets: Sequence[str]
) -> ExpectationOutcome:
    kwargs = {
        "constraint": fk.get("name"),
        "columns": list(fk["columns"]),
        "references": f"{fk['ref_table']}({', '.join(fk['ref_columns'])})",
    }
    description = _fk_text(table, fk)
    if result is None:
        return ExpectationOutcome(FK_EXPECTATION, kwargs, False, description, error="no result returned by GX")
    res: dict[str, Any] = dict(result.result or {})
    error = _exception_message(result.exception_info)
    rows = [r for r in ((res.get("details") or {}).get("unexpected_rows") or []) if isinstance(r, Mapping)]
    return ExpectationOutcome(
        expectation=FK_EXPECTATION,
        kwargs=kwargs,
        success=bool(result.success) and error is None,
        description=description,
        unexpected_count=_int_or_none(res.get("observed_value")),
        unexpected_values=[_jsonable({c: r.get(c) for c in fk["columns"]}) for r in rows[:MAX_LISTED]],
        unexpected_ids=[_row_id(r, key_columns) for r in rows[:MAX_LISTED]] if key_columns else [],
        error=None if error is None else _scrub(error, secrets),
    )


def _fk_text(table: str, fk: Mapping[str, Any]) -> str:
    name = f" [{fk['name']}]" if fk.get("name") else ""
    return (
        f"no orphan rows: {table}({', '.join(fk['columns'])}) -> "
        f"{fk['ref_table']}({', '.join(fk['ref_columns'])}){name}"
    )


def _key_name(key_columns: Sequence[str]) -> str:
    if not key_columns:
        return "row"
    return key_columns[0] if len(key_columns) == 1 else f"({', '.join(key_columns)})"


def _row_id(entry: Mapping[str, Any], key_columns: Sequence[str]) -> str:
    """The row's primary key value as ``_key_name`` announces it: ``5`` or ``(5, 2)``."""
    if not key_columns:
        return json.dumps(_jsonable(dict(entry)), ensure_ascii=False, default=str)
    values = [str(_jsonable(entry.get(c))) for c in key_columns]
    return values[0] if len(values) == 1 else f"({', '.join(values)})"


def _observed_rows(outcomes: Sequence[ExpectationOutcome]) -> int | None:
    for o in outcomes:
        if o.expectation == "expect_table_row_count_to_equal" and isinstance(o.observed, int):
            return o.observed
    for o in outcomes:
        if o.element_count is not None:
            return o.element_count
    return None


def _asset_name(suite: str, table: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{suite}.{table}")


# --- the secret ------------------------------------------------------------------------


def _target_url(raw: str) -> tuple[str, str, list[str]]:
    """(URL for GX with the psycopg2 driver, URL to show without password, strings to scrub)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        raise PgGateError("target URL is not a SQLAlchemy URL (postgresql://user:***@host:port/database)") from None
    if url.get_backend_name() not in ("postgresql", "postgres"):
        raise PgGateError(f"target URL must be postgresql://..., not {url.get_backend_name()}://")
    url = url.set(drivername="postgresql+psycopg2")
    secrets = [raw]
    if url.password:
        password = str(url.password)
        secrets += [password, quote(password, safe=""), quote(password)]
    shown = url.set(drivername="postgresql", password=None).render_as_string(hide_password=True)
    return url.render_as_string(hide_password=False), shown, [s for s in secrets if s]


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _unreachable(shown: str, exc: BaseException, secrets: Sequence[str]) -> StoreAccessError:
    message = _scrub(_last_line(exc), secrets)
    retryable = "authentication failed" not in message and "does not exist" not in message
    return StoreAccessError(f"target database {shown}: cannot connect: {message}", retryable=retryable)


def _last_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())[:1000]

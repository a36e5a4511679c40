"""Great Expectations gates on the TARGET tables of a postgres workload.

Suites are data (:mod:`bascule.validation.table_suites`); each table's checks become GX
core expectations, and a foreign key becomes an ``UnexpectedRowsExpectation`` whose
query anti-joins the child table with its parent, so an orphan is found even on a
target where the constraint is missing or NOT VALID. Everything runs through GX's SQL
datasource on the real target database: nothing is pulled into pandas.

Outcomes are :class:`~bascule.validation.outcomes.SuiteOutcome` records, one per table,
and the page is :func:`bascule.validation.report.render_report_html`, so approvers read
postgres and object gates alike.
Offending rows are named by their primary key (``patient_id=42``).

The target URL carries a password: it is used to connect and nowhere else. Results,
summaries, the HTML page and every exception raised here name the target as
``postgresql://user:***@host:port/database``; error texts from the driver are scrubbed
of the password as well, and exceptions are raised without their (driver) cause.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from bascule.exceptions import BasculeError, StoreAccessError
from bascule.identifiers import qualified_name, split_qualified
from bascule.validation.gx import (
    GX_LOCK,
    asset_name,
    build_expectations,
    ephemeral_context,
    expectation_outcome,
    expectation_suite,
    int_or_none,
    outcome_of,
    summary_format,
    validate,
)
from bascule.validation.outcomes import BASCULE_ENGINE, MAX_LISTED, ExpectationOutcome, SuiteOutcome, jsonable
from bascule.validation.report import render_report_html
from bascule.validation.table_suites import TableChecks, is_name_list, is_qualified, parse_table_suite

FK_EXPECTATION = "unexpected_rows_expectation"
# Orphan rows are few and small (key + FK columns); GX fetches at most 200 of them.
_ROWS_FORMAT: dict[str, Any] = {"result_format": "COMPLETE"}


class PgGateError(BasculeError):
    """The gates could not run (not: the data failed them). The message never holds a password."""


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
    :mod:`bascule.postgres.catalog`'s inventory; read from the SOURCE (the target may not have
    its constraints yet, or lost one).
    """
    out: dict[str, list[dict[str, Any]]] = {}
    with conn.cursor() as cur:
        cur.execute(_FOREIGN_KEYS_SQL, (list(schemas),))
        for schema, table, name, columns, ref_schema, ref_table, ref_columns in cur.fetchall():
            out.setdefault(qualified_name(schema, table), []).append(
                {
                    "name": name,
                    "columns": list(columns),
                    "ref_table": qualified_name(ref_schema, ref_table),
                    "ref_columns": list(ref_columns),
                }
            )
    return out


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _option_value(value: str) -> str:
    # The server splits ``options`` on any white space (isspace: space, tab, newline ...); a
    # backslash keeps the next character, so a schema named "Clinical Data" or one holding a
    # newline survives as one argument.
    return "".join("\\" + ch if ch.isspace() or ch == "\\" else ch for ch in value)


def _quote_table(qualified: str) -> str:
    schema, table = split_qualified(qualified)
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
                is_name_list(fk.get("columns"))
                and is_name_list(ref_columns)
                and len(fk["columns"]) == len(ref_columns)
                and isinstance(ref_table, str)
                and is_qualified(ref_table)
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
    # The suites named no table and the scope had none to check (no table, no foreign key):
    # there is nothing to fail, so the gate passes and says so instead of failing in silence.
    nothing_in_scope: bool = False

    @property
    def success(self) -> bool:
        # Otherwise nothing checked proves nothing: an empty gate does not pass.
        if self.nothing_in_scope:
            return True
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
        """One line per failed expectation: suite/table, expectation, observed value, first rows.

        Never empty when the gate failed: a gate with no outcome says that nothing was checked.
        """
        if not self.success and not self.outcomes:
            return f"no table was checked on {self.target}: a gate that checks nothing cannot pass"
        return "\n".join(o.failure_summary() for o in self.failed)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "success": self.success,
            "nothing_in_scope": self.nothing_in_scope,
            "tables": len(self.outcomes),
            "failed_tables": [o.label for o in self.failed],
            "outcomes": [o.to_json() for o in self.outcomes],
        }

    def render_html(self, title: str = "PostgreSQL table gates", context: Mapping[str, Any] | None = None) -> str:
        """The offline HTML page of :func:`bascule.validation.report.render_report_html`, target named without secret."""
        return render_report_html(
            title, self.outcomes, {"target": self.target, **dict(context or {})}, nothing_in_scope=self.nothing_in_scope
        )


def run_table_suites(
    target_sqlalchemy_url: str,
    suites: Sequence[Mapping[str, Any]],
    source_row_counts: Mapping[str, int | tuple[int, int]],
    foreign_keys: Mapping[str, Sequence[Mapping[str, Any]]],
) -> GateResult:
    """Validate the target's tables with each suite; one :class:`SuiteOutcome` per suite and table.

    ``suites`` are suite dicts (:func:`bascule.validation.table_suites.load_table_suite`). ``source_row_counts`` maps
    ``schema.table`` to the source's ``count(*)``; a ``row_count: source`` table missing
    from it fails (never passes vacuously). ``foreign_keys`` is the inventory's
    ``{"schema.child": [{"name", "columns", "ref_table", "ref_columns"}]}``
    (:mod:`bascule.postgres.catalog`'s ``TableInfo.foreign_keys``, or :func:`read_foreign_keys`); with ``foreign_keys: auto`` every one is checked for
    orphans, including on tables the suite does not list. A table missing on the target
    fails its suite. Unknown expectations or bad kwargs raise
    :class:`~bascule.validation.suites.SuiteConfigError`
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
    outcomes: list[SuiteOutcome] = []
    with GX_LOCK:
        context = ephemeral_context()
        datasources: dict[str, Any] = {}

        def datasource_for(schema: str) -> Any:
            # One datasource per schema, its search_path set: GX 1.x deprecates a table asset's schema_name.
            if schema not in datasources:
                try:
                    datasources[schema] = context.data_sources.add_postgres(
                        f"bascule_target_{len(datasources)}",
                        connection_string=url,
                        kwargs={"connect_args": {"options": f"-c search_path={_option_value(_quote(schema))}"}},
                    )
                except Exception as exc:
                    raise _unreachable(shown, exc, secrets) from None
            return datasources[schema]

        try:
            for suite_name, table, specs, fks, row_count_missing in plans:
                datasource = datasource_for(split_qualified(table)[0])
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
    return GateResult(outcomes, shown, nothing_in_scope=bool(parsed) and not plans)


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
    schema, name = split_qualified(table)
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
    # GX pastes the table name into its SQL (the test query, {batch} of the orphan queries)
    # without quoting it, which folds "Encounter" to encounter: hand it the quoted SQL text,
    # marked never to be quoted again.
    import sqlalchemy as sa

    asset = datasource.add_table_asset(
        asset_name(suite_name, table), table_name=sa.sql.quoted_name(_quote(name), quote=False)
    )
    batch = _TableBatch(
        asset.add_batch_definition_whole_table("whole").get_batch(), suite_name, table, key_columns, secrets
    )
    outcomes: list[ExpectationOutcome] = []
    if specs:
        outcomes += batch.check_specs(specs)
    if fks:
        outcomes += batch.check_orphans(fks)
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
        id_name=_key_name(key_columns),
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


@dataclass(frozen=True)
class _TableBatch:
    """One target table as GX reads it, and what its outcomes need: row keys, secrets to scrub."""

    batch: Any
    suite_name: str
    table: str
    key_columns: tuple[str, ...]
    secrets: Sequence[str]

    def check_specs(self, specs: Sequence[Mapping[str, Any]]) -> list[ExpectationOutcome]:
        """The suite's expectations on the table; offending rows named by their primary key."""
        result_format = summary_format()
        if self.key_columns:
            result_format["unexpected_index_column_names"] = list(self.key_columns)
        built = build_expectations(f"{self.suite_name}/{self.table}", specs)
        by_index = validate(self.batch, expectation_suite(asset_name(self.suite_name, self.table), built), result_format)

        def row_id(entry: Any) -> str | None:
            return _row_id(entry, self.key_columns) if isinstance(entry, Mapping) else None

        return [expectation_outcome(spec, by_index.get(i), row_id, self.scrub) for i, spec in enumerate(specs)]

    def check_orphans(self, fks: Sequence[Mapping[str, Any]]) -> list[ExpectationOutcome]:
        """One orphan-rows expectation per foreign key of the table."""
        from great_expectations.expectations import UnexpectedRowsExpectation

        orphans = [
            UnexpectedRowsExpectation(
                unexpected_rows_query=_orphan_query(fk, self.key_columns),
                description=_fk_text(self.table, fk),
                meta={"bascule_index": i},
            )
            for i, fk in enumerate(fks)
        ]
        suite = expectation_suite(asset_name(self.suite_name, self.table) + ".fk", orphans)
        by_index = validate(self.batch, suite, _ROWS_FORMAT)
        return [self._orphan_outcome(fk, by_index.get(i)) for i, fk in enumerate(fks)]

    def _orphan_outcome(self, fk: Mapping[str, Any], result: Any) -> ExpectationOutcome:
        kwargs = {
            "constraint": fk.get("name"),
            "columns": list(fk["columns"]),
            "references": f"{fk['ref_table']}({', '.join(fk['ref_columns'])})",
        }

        def measures(res: dict[str, Any]) -> dict[str, Any]:
            rows = [r for r in ((res.get("details") or {}).get("unexpected_rows") or []) if isinstance(r, Mapping)]
            return {
                "unexpected_count": int_or_none(res.get("observed_value")),
                "unexpected_values": [jsonable({c: r.get(c) for c in fk["columns"]}) for r in rows[:MAX_LISTED]],
                "unexpected_ids": [_row_id(r, self.key_columns) for r in rows[:MAX_LISTED]] if self.key_columns else [],
            }

        return outcome_of(FK_EXPECTATION, kwargs, _fk_text(self.table, fk), result, measures, self.scrub)

    def scrub(self, text: str) -> str:
        return _scrub(text, self.secrets)


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
        return json.dumps(jsonable(dict(entry)), ensure_ascii=False, default=str)
    values = [str(jsonable(entry.get(c))) for c in key_columns]
    return values[0] if len(values) == 1 else f"({', '.join(values)})"


def _observed_rows(outcomes: Sequence[ExpectationOutcome]) -> int | None:
    for o in outcomes:
        if o.expectation == "expect_table_row_count_to_equal" and isinstance(o.observed, int):
            return o.observed
    for o in outcomes:
        if o.element_count is not None:
            return o.element_count
    return None


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

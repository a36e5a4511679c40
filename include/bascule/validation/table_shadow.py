"""SQL shadow runs: the same query on the source and on the target database, compared.

A postgres workload's shadow jobs are SQL files in ``include/sql/`` (:func:`load_query`):
the reports its users run (counts per diagnosis chapter, quantities per drug group...).
Each query runs **twice on the source**, then once on the target, each time in its own
READ ONLY transaction with a ``statement_timeout``:

* the two source runs (A/A) calibrate the noise, as :mod:`bascule.validation.object_shadow`
  does for object jobs: a column whose values differ between them (``now()``, ``random()``,
  ``clock_timestamp()``) is reported as non-deterministic and left out of the comparison.
  If the source results still differ once those columns are set aside (rows in a random
  order under ``ordered``, a ``LIMIT`` without ``ORDER BY``...), the job fails: its output
  cannot prove anything about the target;
* the target's result is compared with the first source run, on the deterministic
  columns: as **multisets** of rows (``ordered=False``: the order of rows is not part of
  the answer) or as **lists** (``ordered=True``). Numbers (integer, numeric, float) match
  within the tolerance (``math.isclose(rel_tol, abs_tol)``; exact by default): a float sum
  may add up in another order on another server. Everything else must be equal.

The comparison itself is :func:`bascule.validation.query_diff.compare_results`. A failing
job's report names it, gives the row counts on both sides and the first
differing rows, source and target side by side. Reports are :class:`bascule.validation.shadow`'s
:class:`~bascule.validation.shadow.ShadowReport`, so the glue, the evidence and the approver see SQL
and object shadow runs alike.

No Airflow import; connections are psycopg2 (DB-API) connections passed in.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bascule.exceptions import BasculeError, StoreAccessError
from bascule.validation.query_diff import QueryResult, SqlShadowComparison, compare_results
from bascule.validation.shadow import (
    RunFailed,
    RunName,
    ShadowComparison,
    ShadowReport,
    check_tolerances,
    check_unique_names,
    last_error_line,
    timed,
)

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
DEFAULT_STATEMENT_TIMEOUT_S = 300.0
DEFAULT_MAX_ROWS = 100_000

SqlJob = tuple[str, str, bool]  # (name, sql_text, ordered)


class ShadowQueryError(BasculeError, ValueError):
    """A shadow query file or text is unusable (outside include/sql, missing, several statements)."""


# --- queries ---------------------------------------------------------------------------


def load_query(name: str, directory: str | Path = SQL_DIR) -> str:
    """The text of ``<directory>/<name>`` (a ``.sql`` file); a path leaving the directory is refused."""
    if not name.endswith(".sql"):
        raise ShadowQueryError(f"shadow query {name!r}: expected a .sql file name")
    root = Path(directory).resolve()
    path = (root / name).resolve()
    if Path(name).is_absolute() or not path.is_relative_to(root):
        raise ShadowQueryError(f"shadow query {name!r}: must be a file inside {root}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ShadowQueryError(f"shadow query {name!r}: no such file in {root}") from None
    except OSError as exc:
        raise ShadowQueryError(f"shadow query {name!r}: cannot read: {exc}") from None
    single_statement(text, where=name)
    return text


def single_statement(sql_text: str, *, where: str = "shadow query") -> str:
    """``sql_text`` without its trailing semicolon; raises if it holds no or several statements.

    One statement only: a second one (``COMMIT; DELETE ...``) would run outside the
    read-only transaction the shadow run opens.
    """
    code = _code_only(sql_text)
    body = code.rstrip().rstrip(";").rstrip()
    if not body.strip():
        raise ShadowQueryError(f"{where}: no SQL statement")
    if ";" in body:
        raise ShadowQueryError(f"{where}: holds several statements; a shadow query is one SELECT")
    # Cut the original text where the statement's own code ends (comments after it go too).
    return sql_text[: len(body)].rstrip()


_TOKEN = re.compile(
    r"""--[^\n]*|/\*.*?\*/|'(?:[^']|'')*'|"(?:[^"]|"")*"|\$(?P<tag>[A-Za-z_]*)\$.*?\$(?P=tag)\$""",
    re.DOTALL,
)


def _code_only(sql_text: str) -> str:
    """The text with comments blanked and strings, quoted names and dollar quotes masked (same length)."""

    def mask(match: re.Match[str]) -> str:
        token = match.group(0)
        return " " * len(token) if token.startswith(("--", "/*")) else "x" * len(token)

    return _TOKEN.sub(mask, sql_text)


# --- running -------------------------------------------------------------------------------

def run_sql_shadow_jobs(
    source_conn: Any,
    target_conn: Any,
    jobs: Sequence[SqlJob],
    relative_tolerance: float = 0.0,
    absolute_tolerance: float = 0.0,
    *,
    statement_timeout_s: float = DEFAULT_STATEMENT_TIMEOUT_S,
    max_rows: int = DEFAULT_MAX_ROWS,
    before_target: Callable[[], Any] | None = None,
) -> ShadowReport:
    """Run each ``(name, sql_text, ordered)`` job on the source twice and the target once; compare.

    The target runs between the two source runs, after ``before_target`` (e.g. waiting
    until the replica has applied what the source had committed). A column equal in both
    source runs was stable over the target's run too, so the target must match it; a
    column that changed (a non-deterministic expression, or live writes) is excluded and
    named in the report.

    A job whose query fails (syntax, timeout, too many rows) is reported as that job's
    error, naming the run; the other jobs still run. A connection that is lost raises
    :class:`~bascule.exceptions.StoreAccessError` (retryable): every later job would
    fail the same way.
    """
    check_tolerances(relative_tolerance, absolute_tolerance)
    check_unique_names(job[0] for job in jobs)
    statements = [
        (name, single_statement(sql_text, where=f"shadow job {name!r}"), ordered) for name, sql_text, ordered in jobs
    ]
    comparisons: list[ShadowComparison] = []
    for name, statement, ordered in statements:
        durations: dict[str, float] = {}
        try:
            first = _run(source_conn, "source", statement, statement_timeout_s, max_rows, durations)
            if before_target is not None:
                before_target()
            target = _run(target_conn, "target", statement, statement_timeout_s, max_rows, durations)
            again = _run(source_conn, "source_again", statement, statement_timeout_s, max_rows, durations)
        except RunFailed as failure:
            error = _error_text(failure.exc)
            comparisons.append(
                SqlShadowComparison.of_failure(
                    name, failure, error, relative_tolerance, absolute_tolerance, durations, ordered=ordered
                )
            )
            continue
        comparisons.append(
            compare_results(
                name, first, again, target, ordered, relative_tolerance, absolute_tolerance, durations=durations
            )
        )
    return ShadowReport(comparisons)


def _run(
    conn: Any, run: RunName, statement: str, timeout_s: float, max_rows: int, durations: dict[str, float]
) -> QueryResult:
    """One run in a READ ONLY transaction, always rolled back; the connection is left as found."""
    import psycopg2

    if not conn.autocommit and conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
        raise ValueError(f"shadow {run} connection has a transaction open: commit or roll it back first")
    was_autocommit = conn.autocommit
    conn.autocommit = True  # our own BEGIN ... ROLLBACK, whatever the caller's mode
    try:
        with timed(run, durations):
            columns, rows = _fetch_read_only(conn, statement, timeout_s, max_rows)
    except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
        if conn.closed:
            raise StoreAccessError(f"shadow {run}: connection lost: {_error_text(exc)}", retryable=True) from None
        raise RunFailed(run, exc) from exc
    except (psycopg2.Error, ShadowQueryError) as exc:
        raise RunFailed(run, exc) from exc
    finally:
        if not conn.closed:
            conn.autocommit = was_autocommit
    return QueryResult(columns, [tuple(_normalise(v) for v in row) for row in rows])


def _fetch_read_only(conn: Any, statement: str, timeout_s: float, max_rows: int) -> tuple[list[str], list[Any]]:
    """The statement's columns and rows, in a READ ONLY transaction rolled back whatever happens."""
    with conn.cursor() as cur:
        cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            cur.execute("SET LOCAL statement_timeout = %s", (f"{max(1, int(timeout_s * 1000))}ms",))
            cur.execute(statement)
            if cur.description is None:
                raise ShadowQueryError("the statement returned no rows (a shadow query is a SELECT)")
            columns = [d[0] for d in cur.description]
            rows = cur.fetchmany(max_rows + 1)
            if len(rows) > max_rows:
                raise ShadowQueryError(f"more than {max_rows} rows: a shadow query should aggregate")
        finally:
            if not conn.closed:
                cur.execute("ROLLBACK")
    return columns, list(rows)


def _error_text(exc: BaseException) -> str:
    """``Type: first line`` (psycopg2 adds LINE/caret lines that belong in no headline)."""
    lines = last_error_line(exc).splitlines()
    return lines[0] if lines else type(exc).__name__


def _normalise(value: Any) -> Any:
    """Hashable, comparable values: timestamps in UTC, JSON values frozen, bytes as bytes."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC)
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True, default=str)
    return value



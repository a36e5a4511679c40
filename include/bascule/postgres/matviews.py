"""Materialized views: created by the schema copy, refreshed on the target at cutover, counted.

Logical replication carries tables, never a materialized view's rows. The schema copy
creates each view of the listed schemas on the target (``pg_dump`` puts the definition in
pre-data and its ``REFRESH`` in post-data, when the copy's rows are there); by cutover the
tables underneath have moved on, so the cutover refreshes every view on the target while
the source is frozen and the two sides are proven equal, before routing switches.

The proof is a row count: the target's refreshed view against the view's own definition
run on the frozen source. The source's stored view is not the reference, because it holds
whatever the application last refreshed, which may be stale by design.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from psycopg2 import sql

from bascule.exceptions import BasculeError
from bascule.identifiers import qualified_name

RUNBOOK = "docs/runbooks.md#postgres-materialized-view-count"

MATVIEWS_SQL = """
select n.nspname, c.relname, pg_get_viewdef(c.oid) from pg_class c
join pg_namespace n on n.oid = c.relnamespace
where c.relkind = 'm' and n.nspname = any(%(schemas)s::text[]) order by 1, 2
"""


class MaterializedViewMismatch(BasculeError):
    """A refreshed view on the target does not count what its definition counts on the source."""


def in_schemas(conn: Any, schemas: Sequence[str]) -> list[tuple[str, str, str]]:
    """``(schema, view, definition)`` of every materialized view of ``schemas``, by name."""
    with conn.cursor() as cur:
        cur.execute(MATVIEWS_SQL, {"schemas": list(schemas)})
        return [(schema, view, definition) for schema, view, definition in cur.fetchall()]


def _count_definition(source: Any, definition: str) -> int:
    # The definition is the source's own catalogue text (pg_get_viewdef), not user input.
    body = definition.strip().rstrip(";")
    with source.cursor() as cur:
        cur.execute(sql.SQL("select count(*) from ({}) as definition").format(sql.SQL(body)))
        return int(cur.fetchone()[0])


def _exists(target: Any, schema: str, view: str) -> bool:
    with target.cursor() as cur:
        cur.execute(
            "select 1 from pg_class c join pg_namespace n on n.oid = c.relnamespace "
            "where c.relkind = 'm' and n.nspname = %s and c.relname = %s",
            (schema, view),
        )
        return cur.fetchone() is not None


def refresh_on_target(source: Any, target: Any, schemas: Sequence[str]) -> list[dict[str, Any]]:
    """Refresh each view of ``schemas`` on the target and compare its rows with its definition's on the source.

    Both connections in autocommit; the source frozen and equal to the target (the
    cutover calls this after its final diff). Raises, naming the view and both counts,
    before routing switches.
    """
    done: list[dict[str, Any]] = []
    for schema, view, definition in in_schemas(source, schemas):
        name = qualified_name(schema, view)
        if not _exists(target, schema, view):
            raise MaterializedViewMismatch(
                f"materialized view {name} is missing on the target: the schema copy should have created it; "
                f"re-run schema_pre_data, then the cutover. Routing unchanged. Runbook: {RUNBOOK}"
            )
        started = time.monotonic()
        with target.cursor() as cur:
            cur.execute(sql.SQL("refresh materialized view {}").format(sql.Identifier(schema, view)))
            cur.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(schema, view)))
            target_rows = int(cur.fetchone()[0])
        expected = _count_definition(source, definition)
        if target_rows != expected:
            raise MaterializedViewMismatch(
                f"materialized view {name}: {target_rows} row(s) on the target after refresh, {expected} from its "
                f"definition on the frozen source. Routing unchanged. Runbook: {RUNBOOK}"
            )
        done.append(
            {
                "view": name,
                "target_rows": target_rows,
                "source_definition_rows": expected,
                "refresh_seconds": round(time.monotonic() - started, 3),
            }
        )
    return done

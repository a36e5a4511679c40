"""The validation phases of a postgres workload, run while the source still takes writes:
the table diff by segmented checksums and the Great Expectations suites (``validate``),
and the manifest's SQL run on both databases (``shadow_run``).

A live source means a difference can be a change still in flight: each check lets the
replica catch up to what the source had committed (``wait_until_applied``) before it
reads the target, and the GX suites read a replica held still (``replica_held``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from typing import Any, Literal

from psycopg2 import sql as psql

from bascule.governance.evidence.store import EvidenceStore
from bascule.postgres import catalog, catch_up, tablediff, tablediff_records, write_freeze
from bascule.postgres.phases import check_schema_unchanged, load_inventory, run_prefix, table_specs
from bascule.postgres.sides import PgSides, sqlalchemy_url
from bascule.postgres.statements import qualified_ident
from bascule.postgres.tablediff_segments import adaptive_segments
from bascule.workload import PostgresWorkload

# Other sessions' table counters reach pg_stat_user_tables at most once a second while
# they are busy: the closing counters are read after that, so no write is left out.
STATS_FLUSH_SECONDS = 1.2
SHADOW_ATTEMPTS = 5


def wait_until_applied(sides: PgSides, slot: str, *, timeout_s: float = 300.0) -> float:
    """Block until the replica has applied everything the source had committed when called."""
    with sides.autocommit_source() as source:
        lsn = catch_up.flush_point(source)
        return catch_up.wait_caught_up(source, slot, lsn, timeout_s, 0.5)


def diff_tables(
    sides: PgSides, inventory: catalog.PgInventory, *, slot: str | None, live: bool,
    progress: Callable[[int, int], None] | None = None,
) -> list[tablediff_records.TableDiff]:
    """Segmented-checksum diff of every table in scope.

    ``live``: the source takes writes, so a difference may be a change still in flight;
    those keys are re-checked once the replica has applied what the source had then.
    ``progress`` is told (segments done, segments in all) after each table: the tables not yet
    diffed count the segments their planner estimate gives (``adaptive_segments``), the done
    ones what they used (a table its whole-table fingerprints settled, read with no segment,
    counts as its estimate: all of it is done).
    """
    results: list[tablediff_records.TableDiff] = []
    done = 0
    planned = [adaptive_segments(t.row_estimate, tablediff.DEFAULT_LEAF_ROWS) for t in inventory.tables]
    with closing(sides.source()) as source, closing(sides.target()) as target:
        for index, spec in enumerate(table_specs(inventory)):
            diff = tablediff.diff_table(source, target, spec)
            if progress is not None:
                done += diff.segments or planned[index]
                progress(done, done + sum(planned[index + 1 :]))
            if diff.differences and live and slot:
                for _ in range(3):
                    wait_until_applied(sides, slot)
                    remaining = tablediff.recheck(source, target, spec, [d.key for d in diff.differences])
                    diff.differences = remaining
                    if not remaining:
                        break
            results.append(diff)
    return results


def describe_differences(diffs: list[tablediff_records.TableDiff]) -> str:
    """One line naming the tables that differ and how."""
    return "; ".join(d.summary() for d in diffs if d.differences)


def _count(conn: Any, table: str) -> int:
    with conn.cursor() as cur:
        cur.execute(psql.SQL("select count(*) from {}").format(qualified_ident(table)))
        return int(cur.fetchone()[0])


def _set_subscription(target: Any, subscription: str, state: Literal["enable", "disable"]) -> None:
    with target.cursor() as cur:
        cur.execute(psql.SQL("alter subscription {} {}").format(psql.Identifier(subscription), psql.SQL(state)))


@contextmanager
def replica_held(
    sides: PgSides, subscription: str, slot: str, tables: list[str]
) -> Iterator[dict[str, tuple[int, int]]]:
    """Hold the replica still (subscription disabled) and yield each table's source row count
    as a (min, max) range covering the writes the source took while the replica was pinned.

    The replica's state lies between the source count and the pause, so its row count is
    within the range; the range is exact when no write touched the table, and always once
    the source is frozen. The slot keeps the WAL meanwhile; apply resumes on exit.
    """
    with sides.autocommit_both() as (source, target):
        before = write_freeze.table_write_counters(source, tables)
        counts = {table: _count(source, table) for table in tables}
        wait_until_applied(sides, slot)
        _set_subscription(target, subscription, "disable")
        try:
            time.sleep(STATS_FLUSH_SECONDS)
            after = write_freeze.table_write_counters(source, tables)
            yield {
                table: (counts[table] - (after[table] - before[table]), counts[table] + (after[table] - before[table]))
                for table in tables
            }
        finally:
            _set_subscription(target, subscription, "enable")


def _evidence_uri(evidence: EvidenceStore, key: str) -> str:
    return evidence.uri(key[len(evidence.prefix) :])


def validate(
    workload: PostgresWorkload, sides: PgSides, evidence: EvidenceStore, snapshot: dict[str, Any], run_id: str,
    attempt: int, log: Callable[[str], None], progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Table diff by segmented checksums (re-checking what was in flight), then the GX suites."""
    from bascule.validation import table_gates, table_suites

    inventory = load_inventory(evidence, snapshot)
    base = run_prefix(run_id) + f"validate-try{attempt}/"
    with sides.autocommit_source() as source:
        check_schema_unchanged(workload, source, inventory)
    diffs = diff_tables(sides, inventory, slot=snapshot["slot"], live=True, progress=progress)
    for diff in diffs:
        log(diff.summary())
    diff_key = evidence.put_json(base + "table-diff.json", [d.to_dict() for d in diffs])
    differing = [d for d in diffs if d.differences]

    # No suite in the manifest: the built-in gates decide (row counts, keys, foreign keys).
    suites = [table_suites.load_table_suite(name) for name in workload.validation.suites] or [
        table_suites.builtin_table_suite({t.qualified: list(t.primary_key) for t in inventory.tables})
    ]
    foreign_keys = {t.qualified: list(t.foreign_keys) for t in inventory.tables}
    with replica_held(sides, workload.slot_name(), snapshot["slot"], list(snapshot["tables"])) as counts:
        gates = table_gates.run_table_suites(sqlalchemy_url(sides.target_params), suites, counts, foreign_keys)
    for line in gates.summary():
        log(line)
    gates_key = evidence.put_json(base + "gx-tables.json", gates.to_json())
    html_key = evidence.put_bytes(
        base + "gx-tables.html", gates.render_html(context={"workload": workload.id, "run": run_id}).encode(),
        "text/html; charset=utf-8",
    )  # fmt: skip
    return {
        "diff_ok": not differing,
        "tables": len(diffs),
        "rows": sum(d.source_rows for d in diffs),
        "differences": sum(len(d.differences) for d in diffs),
        "diff_summary": describe_differences(diffs),
        "diff_key": diff_key,
        "diff_uri": _evidence_uri(evidence, diff_key),
        "gates_ok": gates.success,
        "gates_summary": gates.failure_summary() if not gates.success else _passed_text(workload, gates),
        "gates_key": gates_key,
        "gates_uri": _evidence_uri(evidence, html_key),
        "source_row_counts": {t: list(r) for t, r in counts.items()},
    }


def _passed_text(workload: PostgresWorkload, gates: Any) -> str:
    if gates.nothing_in_scope:
        return "nothing in scope to check (no table, no foreign key)"
    which = f"{len(workload.validation.suites)} suite(s)" if workload.validation.suites else "built-in gates"
    return f"{which} passed on {len(gates.outcomes)} table(s)"


def failure_message(result: dict[str, Any]) -> str | None:
    """What ``validate`` found wrong, as the failing task's exception says it (None: all passed).

    The text itself names each failed check (table, expectation, observed value), so the
    on-call engineer reads it in the task's error without opening the report.
    """
    if not result["diff_ok"]:
        return (
            f"table diff found rows that differ: {result['diff_summary']}. Report: {result['diff_uri']}. "
            "Nothing downstream runs."
        )
    if not result["gates_ok"]:
        listed = "; ".join(line for line in str(result["gates_summary"]).splitlines() if line)
        return f"Great Expectations gates failed: {listed}. Report: {result['gates_uri']}."
    return None


def shadow_run(
    workload: PostgresWorkload, sides: PgSides, evidence: EvidenceStore, snapshot: dict[str, Any], run_id: str,
    attempt: int,
) -> dict[str, Any]:
    """The manifest's SQL on both databases, the replica caught up before each target run.

    Under live writes a column can change between the two source runs and is then not
    compared; each job is tried a few times and the reading that compared the most is kept.
    """
    from bascule.validation import table_shadow
    from bascule.validation.shadow import ShadowReport

    shadow = workload.shadow_run
    best: list[Any] = []
    with closing(sides.source()) as source, closing(sides.target()) as target:
        for job in shadow.jobs:
            assert job.query is not None  # the manifest refuses callables for postgres workloads
            sql_text = table_shadow.load_query(job.query)
            kept = None
            for _ in range(SHADOW_ATTEMPTS):
                report = table_shadow.run_sql_shadow_jobs(
                    source, target, [(job.name, sql_text, job.ordered)], shadow.relative_tolerance,
                    shadow.absolute_tolerance, before_target=lambda: wait_until_applied(sides, snapshot["slot"]),
                )  # fmt: skip
                comparison = report.comparisons[0]
                rank = (comparison.error is not None, len(comparison.non_deterministic))
                if kept is None or rank < kept[0]:
                    kept = (rank, comparison)
                if rank == (False, 0):
                    break
            assert kept is not None
            best.append(kept[1])
    report = ShadowReport(best)
    key = evidence.put_json(run_prefix(run_id) + f"shadow-try{attempt}.json", report.to_json())
    return {
        "ok": report.ok,
        "jobs": len(best),
        "summary": report.summary(),
        "diff_report": report.diff_report() if not report.ok else "",
        "report_key": key,
        "report_uri": _evidence_uri(evidence, key),
    }

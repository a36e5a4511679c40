"""The phases of a postgres workload (Azure Database for PostgreSQL -> Scaleway Managed PostgreSQL).

Each function is one task's transaction: it takes DB-API connections (and the
evidence store), does its work, writes its evidence and returns a small record for
XCom. Building connections from Airflow connections is the glue's job.

The join between bulk copy and change stream: ``snapshot`` creates the logical
replication slot before any table is copied, so the stream starts before every
copy snapshot (no gap). The overlap (changes between the slot's start and a table's
copy) is replayed idempotently through the overlap triggers until the apply worker
has passed every table's copy point; then the triggers go and apply is strict again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from psycopg2 import sql as psql

from bascule import pg_catalog, pg_copy, pg_replication, policy, tablediff
from bascule.evidence import EvidenceStore
from bascule.exceptions import BasculeError
from bascule.policy import CheckResult
from bascule.routing import Location, RoutingRegistry
from bascule.workload import PostgresWorkload

Connect = Callable[[], Any]


class SchemaDrift(BasculeError):
    """DDL ran on the source after the snapshot: logical replication does not carry it."""


class TablesDiffer(BasculeError):
    """Rows differ between source and target after the replica caught up."""


class MissingPrimaryKey(BasculeError):
    """A table in scope has no primary key and was not opted into the slower path."""


def run_key(run_id: str) -> str:
    """An S3-safe form of an Airflow run id (``manual__2026-11-29T00:00:00+00:00``)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _run_prefix(run_id: str) -> str:
    return f"runs/{run_key(run_id)}/"


@dataclass(frozen=True)
class PgSides:
    """How to reach both databases; each call opens a new connection (the caller closes it).

    The target server's subscription connects to the source with ``source_params`` too:
    the source's host must be reachable from the target server (docs/runbooks.md).
    """

    source: Connect
    target: Connect
    source_params: pg_copy.LibpqParams
    target_params: pg_copy.LibpqParams


def conninfo(params: pg_copy.LibpqParams) -> str:
    """A libpq conninfo string (values quoted), e.g. for the target server's subscription."""

    def quote(value: object) -> str:
        return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"

    parts = {"host": params.host, "port": params.port, "user": params.user, "password": params.password,
             "dbname": params.dbname}  # fmt: skip
    if params.sslmode:
        parts["sslmode"] = params.sslmode
    return " ".join(f"{key}={quote(value)}" for key, value in parts.items())


def connect_kwargs(params: pg_copy.LibpqParams) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"host": params.host, "port": params.port, "user": params.user,
                              "password": params.password, "dbname": params.dbname, "connect_timeout": 10}  # fmt: skip
    if params.sslmode:
        kwargs["sslmode"] = params.sslmode
    return kwargs


def _table_specs(inventory: pg_catalog.PgInventory) -> list[tablediff.TableSpec]:
    specs = []
    for table in inventory.tables:
        columns = [c.name for c in table.columns if not getattr(c, "generated", False)]
        keys = list(table.primary_key) or columns
        specs.append(tablediff.TableSpec(table.schema, table.name, keys, columns))
    return specs


def _inventory(evidence: EvidenceStore, snapshot: dict[str, Any]) -> pg_catalog.PgInventory:
    return pg_catalog.PgInventory.from_dict(evidence.read_json(snapshot["inventory_key"]))


# -- snapshot -------------------------------------------------------------------------


def take_snapshot(
    workload: PostgresWorkload, sides: PgSides, evidence: EvidenceStore, run_id: str, *, fresh_run: bool
) -> dict[str, Any]:
    """Inventory of the schemas in scope and the replication slot the change stream starts from.

    ``fresh_run``: the first try of a new run drops what an earlier, abandoned run left
    (its subscription, slot and publication), so two runs never share a stream.
    """
    slot = workload.slot_name()
    with closing(sides.source()) as source:
        source.autocommit = True
        inventory = pg_catalog.read_inventory(source, list(workload.source.schemas), list(workload.source.tables))
        keys_check = pg_catalog.check_primary_keys(
            inventory, list(workload.source.tables_without_primary_key), f"the manifest of '{workload.id}'"
        )
        if not keys_check.ok:
            raise MissingPrimaryKey(keys_check.detail)
        if fresh_run:
            with closing(sides.target()) as target:
                target.autocommit = True
                pg_replication.drop_replication(source, target, slot)
        full = [t for t in workload.source.tables_without_primary_key if t in {x.qualified for x in inventory.tables}]
        if full:
            pg_replication.set_replica_identity_full(source, full)
        # pgoutput decodes each change with the publication as it was when the change was
        # written: the publication must exist before the slot starts, or changes are lost.
        pg_replication.ensure_publication(source, slot, [t.qualified for t in inventory.tables])
        slot_lsn = pg_replication.create_slot(source, slot)
    name = _run_prefix(run_id) + f"inventory-{int(time.time())}.json"
    key = evidence.put_json(name, inventory.to_dict())
    return {
        "inventory_key": key,
        "slot": slot,
        "slot_lsn": slot_lsn,
        "tables": [t.qualified for t in inventory.tables],
        "rows_estimate": sum(t.row_estimate for t in inventory.tables),
        "bytes": sum(t.size_bytes for t in inventory.tables),
        "sequences": len(inventory.sequences),
        "taken_at": _now(),
    }


def check_schema_unchanged(workload: PostgresWorkload, source: Any, before: pg_catalog.PgInventory) -> None:
    """Refuse to go on when DDL changed the tables in scope since the snapshot."""
    now = pg_catalog.read_inventory(source, list(workload.source.schemas), list(workload.source.tables))
    changes = pg_catalog.schema_changes(before, now)
    if changes:
        raise SchemaDrift(
            "DDL on the source since the snapshot (logical replication does not carry schema changes): "
            + "; ".join(changes[:20])
            + ". Stop DDL on the source for the duration of the migration, then trigger a new run "
            "(a new snapshot picks up the new schema)."
        )


# -- schema and bulk copy ---------------------------------------------------------------


def apply_schema_section(
    workload: PostgresWorkload,
    sides: PgSides,
    evidence: EvidenceStore,
    snapshot: dict[str, Any],
    section: Literal["pre-data", "post-data"],
    run_id: str,
    attempt: int,
) -> dict[str, Any]:
    inventory = _inventory(evidence, snapshot)
    started = time.monotonic()
    sql = pg_copy.dump_schema(
        sides.source_params, section, list(workload.source.schemas), list(snapshot["tables"]),
        extensions=inventory.extensions,
    )  # fmt: skip
    with closing(sides.target()) as target:
        if section == "pre-data":
            target.autocommit = True
            # A rerun finds constraints from an earlier attempt: foreign keys would stop the
            # copy's TRUNCATE, so they go now and come back with post-data.
            drop_foreign_keys_in_scope(target, snapshot["tables"])
        pg_copy.apply_schema(target, sql, if_absent=True)
    name = _run_prefix(run_id) + f"schema-{section}-try{attempt}.sql"
    key = evidence.put_bytes(name, sql.encode(), "application/sql")
    return {"section": section, "bytes": len(sql), "seconds": round(time.monotonic() - started, 2), "ddl_key": key}


def drop_foreign_keys_in_scope(target: Any, tables: list[str]) -> int:
    """Drop the foreign keys of the in-scope target tables (post-data recreates them)."""
    with target.cursor() as cur:
        cur.execute(
            """
            select format('alter table %%I.%%I drop constraint %%I', n.nspname, c.relname, con.conname)
            from pg_constraint con
            join pg_class c on c.oid = con.conrelid
            join pg_namespace n on n.oid = c.relnamespace
            where con.contype = 'f' and n.nspname || '.' || c.relname = any(%s)
            """,
            (list(tables),),
        )
        statements = [row[0] for row in cur.fetchall()]
        for statement in statements:
            cur.execute(statement)
    return len(statements)


def copy_one_table(
    sides: PgSides, evidence: EvidenceStore, snapshot: dict[str, Any], table: str, run_id: str, attempt: int
) -> dict[str, Any]:
    inventory = _inventory(evidence, snapshot)
    info = next(t for t in inventory.tables if t.qualified == table)
    with closing(sides.source()) as source, closing(sides.target()) as target:
        report = pg_copy.copy_table(source, target, info)
    record = {
        "table": table,
        "rows": report.rows,
        "bytes": report.bytes,
        "seconds": round(report.seconds, 2),
        "source_lsn_after": report.source_lsn_after,
        "attempt": attempt,
    }
    evidence.put_json(_run_prefix(run_id) + f"copy/{table}-try{attempt}.json", record)
    return record


# -- change stream -----------------------------------------------------------------------


def start_replication(
    workload: PostgresWorkload, sides: PgSides, evidence: EvidenceStore, snapshot: dict[str, Any]
) -> dict[str, Any]:
    inventory = _inventory(evidence, snapshot)
    name = workload.slot_name()
    keyed = {t.qualified: list(t.primary_key) for t in inventory.tables if t.primary_key}
    with closing(sides.source()) as source, closing(sides.target()) as target:
        source.autocommit = True
        target.autocommit = True
        check_schema_unchanged(workload, source, inventory)
        pg_replication.ensure_publication(source, name, list(snapshot["tables"]))
        pg_replication.install_overlap_triggers(target, keyed)
        pg_replication.create_subscription(target, name, conninfo(sides.source_params), name, snapshot["slot"])
    return {"subscription": name, "publication": name, "overlap_triggers": sorted(keyed), "at": _now()}


def replication_status(workload: PostgresWorkload, sides: PgSides, overlap_end_lsn: str) -> dict[str, Any]:
    """One poll of the catch-up wait: lag, and whether the overlap has been replayed."""
    name = workload.slot_name()
    with closing(sides.source()) as source, closing(sides.target()) as target:
        source.autocommit = True
        target.autocommit = True
        lag = pg_replication.replication_lag(source, target, name)
        passed = pg_replication.passed_lsn(source, name, overlap_end_lsn) if overlap_end_lsn else True
    limits = workload.replication
    within = lag.lag_bytes <= limits.max_lag_bytes and (lag.lag_seconds or 0.0) <= limits.max_lag_seconds
    return {
        "lag_bytes": lag.lag_bytes,
        "lag_seconds": lag.lag_seconds,
        "source_lsn": lag.source_lsn,
        "confirmed_lsn": lag.confirmed_lsn,
        "overlap_replayed": passed,
        "ready": within and passed,
    }


def finish_catch_up(
    workload: PostgresWorkload, sides: PgSides, evidence: EvidenceStore, snapshot: dict[str, Any]
) -> dict[str, Any]:
    """The apply passed every copy point: strict apply from now on (a conflict stops it, loudly)."""
    inventory = _inventory(evidence, snapshot)
    keyed = {t.qualified: list(t.primary_key) for t in inventory.tables if t.primary_key}
    with closing(sides.source()) as source, closing(sides.target()) as target:
        source.autocommit = True
        target.autocommit = True
        check_schema_unchanged(workload, source, inventory)
        pg_replication.remove_overlap_triggers(target, keyed)
    return {"overlap_triggers_removed": sorted(keyed)}


def overlap_end(copies: list[dict[str, Any]]) -> str:
    """The latest source LSN any copy read at: the apply must pass it before strict mode."""

    def as_int(lsn: str) -> int:
        high, low = lsn.split("/")
        return (int(high, 16) << 32) + int(low, 16)

    lsns = [c["source_lsn_after"] for c in copies if c and c.get("source_lsn_after")]
    return max(lsns, key=as_int) if lsns else ""


# -- validation ----------------------------------------------------------------------------


def wait_until_applied(sides: PgSides, slot: str, *, timeout_s: float = 300.0) -> float:
    """Block until the replica has applied everything the source had committed when called."""
    with closing(sides.source()) as source:
        source.autocommit = True
        lsn = pg_replication.flush_point(source)
        return pg_replication.wait_caught_up(source, slot, lsn, timeout_s, 0.5)


def diff_tables(
    sides: PgSides, inventory: pg_catalog.PgInventory, *, slot: str | None, live: bool
) -> list[tablediff.TableDiff]:
    """Segmented-checksum diff of every table in scope.

    ``live``: the source takes writes, so a difference may be a change still in flight;
    those keys are re-checked once the replica has applied what the source had then.
    """
    results = []
    with closing(sides.source()) as source, closing(sides.target()) as target:
        for spec in _table_specs(inventory):
            diff = tablediff.diff_table(source, target, spec)
            if diff.differences and live and slot:
                for _ in range(3):
                    wait_until_applied(sides, slot)
                    remaining = tablediff.recheck(source, target, spec, [d.key for d in diff.differences])
                    diff.differences = remaining
                    if not remaining:
                        break
            results.append(diff)
    return results


def describe_differences(diffs: list[tablediff.TableDiff]) -> str:
    return "; ".join(d.summary() for d in diffs if d.differences)


# Other sessions' table counters reach pg_stat_user_tables at most once a second while
# they are busy: the closing counters are read after that, so no write is left out.
STATS_FLUSH_SECONDS = 1.2


def _count(conn: Any, table: str) -> int:
    schema, name = pg_replication.split_qualified(table)
    with conn.cursor() as cur:
        cur.execute(psql.SQL("select count(*) from {}.{}").format(psql.Identifier(schema), psql.Identifier(name)))
        return int(cur.fetchone()[0])


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
    with closing(sides.source()) as source, closing(sides.target()) as target:
        source.autocommit = True
        target.autocommit = True
        before = pg_replication.table_write_counters(source, tables)
        counts = {table: _count(source, table) for table in tables}
        wait_until_applied(sides, slot)
        with target.cursor() as cur:
            cur.execute(psql.SQL("alter subscription {} disable").format(psql.Identifier(subscription)))
        try:
            time.sleep(STATS_FLUSH_SECONDS)
            after = pg_replication.table_write_counters(source, tables)
            yield {
                table: (counts[table] - (after[table] - before[table]), counts[table] + (after[table] - before[table]))
                for table in tables
            }
        finally:
            with target.cursor() as cur:
                cur.execute(psql.SQL("alter subscription {} enable").format(psql.Identifier(subscription)))


def sqlalchemy_url(params: pg_copy.LibpqParams) -> str:
    from urllib.parse import quote

    url = (
        f"postgresql+psycopg2://{quote(params.user, safe='')}:{quote(params.password, safe='')}"
        f"@{params.host}:{params.port}/{quote(params.dbname, safe='')}"
    )
    return url + (f"?sslmode={params.sslmode}" if params.sslmode else "")


def validate(
    workload: PostgresWorkload,
    sides: PgSides,
    evidence: EvidenceStore,
    snapshot: dict[str, Any],
    run_id: str,
    attempt: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Table diff by segmented checksums (re-checking what was in flight), then the GX suites."""
    from bascule import pg_gates

    inventory = _inventory(evidence, snapshot)
    base = _run_prefix(run_id) + f"validate-try{attempt}/"
    with closing(sides.source()) as source:
        source.autocommit = True
        check_schema_unchanged(workload, source, inventory)
    diffs = diff_tables(sides, inventory, slot=snapshot["slot"], live=True)
    for diff in diffs:
        log(diff.summary())
    diff_key = evidence.put_json(base + "table-diff.json", [d.to_dict() for d in diffs])
    differing = [d for d in diffs if d.differences]

    suites = [pg_gates.load_table_suite(name) for name in workload.validation.suites]
    foreign_keys = {t.qualified: list(t.foreign_keys) for t in inventory.tables}
    with replica_held(sides, workload.slot_name(), snapshot["slot"], list(snapshot["tables"])) as counts:
        gates = pg_gates.run_table_suites(sqlalchemy_url(sides.target_params), suites, counts, foreign_keys)
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
        "diff_uri": evidence.uri(diff_key[len(evidence.prefix) :]),
        "gates_ok": gates.success,
        "gates_summary": gates.failure_summary() if not gates.success else f"{len(suites)} suite(s) passed",
        "gates_key": gates_key,
        "gates_uri": evidence.uri(html_key[len(evidence.prefix) :]),
        "source_row_counts": {t: list(r) for t, r in counts.items()},
    }


SHADOW_ATTEMPTS = 5


def shadow_run(
    workload: PostgresWorkload,
    sides: PgSides,
    evidence: EvidenceStore,
    snapshot: dict[str, Any],
    run_id: str,
    attempt: int,
) -> dict[str, Any]:
    """The manifest's SQL on both databases, the replica caught up before each target run.

    Under live writes a column can change between the two source runs and is then not
    compared; each job is tried a few times and the reading that compared the most is kept.
    """
    from bascule import pg_shadow
    from bascule.shadow import ShadowReport

    shadow = workload.shadow_run
    best: list[Any] = []
    with closing(sides.source()) as source, closing(sides.target()) as target:
        for job in shadow.jobs:
            assert job.query is not None  # the manifest refuses callables for postgres workloads
            sql_text = pg_shadow.load_query(job.query)
            kept = None
            for _ in range(SHADOW_ATTEMPTS):
                report = pg_shadow.run_sql_shadow_jobs(
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
    key = evidence.put_json(_run_prefix(run_id) + f"shadow-try{attempt}.json", report.to_json())
    return {
        "ok": report.ok,
        "jobs": len(best),
        "summary": report.summary(),
        "diff_report": report.diff_report() if not report.ok else "",
        "report_key": key,
        "report_uri": evidence.uri(key[len(evidence.prefix) :]),
    }


# -- cutover ----------------------------------------------------------------------------------


def locations(workload: PostgresWorkload, sides: PgSides) -> tuple[Location, Location]:
    source = sides.source_params
    target = sides.target_params
    return (
        Location("azure", f"postgresql://{source.host}:{source.port}", workload.source.database, ""),
        Location("scaleway", f"postgresql://{target.host}:{target.port}", workload.target.database, ""),
    )


def cutover(
    workload: PostgresWorkload,
    sides: PgSides,
    evidence: EvidenceStore,
    routing: RoutingRegistry,
    snapshot: dict[str, Any],
    run_id: str,
    attempt: int,
    log: Callable[[str], None],
    before_switch: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Freeze, drain, prove, carry sequences, switch, detach, smoke-check. Idempotent.

    A retry after the switch finds routing already on Scaleway and only finishes
    detaching the subscription and the smoke check. ``before_switch`` runs right before
    routing switches (the policy's last word); raising stops the cutover there.
    """
    inventory = _inventory(evidence, snapshot)
    name = workload.slot_name()
    roles = list(workload.source.application_roles)
    azure, scaleway = locations(workload, sides)
    routing.ensure(workload.id, azure, scaleway, run_id)
    current, _ = routing.read(workload.id)
    record: dict[str, Any] = {"workload": workload.id, "run_id": run_id, "attempt": attempt}
    with closing(sides.source()) as source, closing(sides.target()) as target:
        source.autocommit = True
        target.autocommit = True
        if current is not None and current.live == "scaleway":
            log("routing already points at Scaleway (an earlier attempt switched it): finishing the detach")
            record["already_switched"] = True
        else:
            check_schema_unchanged(workload, source, inventory)
            # Idempotent, and re-enables the subscription if an interrupted validation left it paused.
            pg_replication.create_subscription(target, name, conninfo(sides.source_params), name, snapshot["slot"])
            frozen_clock = time.monotonic()
            freeze = pg_replication.freeze_writes(source, workload.source.database, roles)
            record["frozen_at"] = _now()
            record["freeze"] = {"roles": roles, "terminated_sessions": freeze.terminated_sessions}
            log(f"source frozen: roles {roles} read-only, {freeze.terminated_sessions} session(s) ended")
            lsn = pg_replication.flush_point(source)
            waited = pg_replication.wait_caught_up(source, name, lsn, 600.0, 0.2)
            record["drain_seconds"] = round(waited, 2)
            log(f"replica caught up to {lsn} in {waited:.1f} s")
            diffs = [tablediff.diff_table(source, target, spec) for spec in _table_specs(inventory)]
            record["final_diff"] = [d.to_dict() for d in diffs]
            if any(d.differences for d in diffs):
                raise TablesDiffer(
                    f"final table diff after the freeze found differences: {describe_differences(diffs)}. "
                    "Routing was not switched; the rollback task unfreezes the source."
                )
            log(f"final diff: {len(diffs)} table(s) equal, {sum(d.source_rows for d in diffs):,} row(s)")
            record["sequences"] = pg_replication.sync_sequences(
                source, target, [f"{s.schema}.{s.name}" for s in inventory.sequences]
            )
            record["target_write_baseline"] = pg_replication.table_write_counters(target, list(snapshot["tables"]))
            before_switch()
            _, switched = routing.switch(workload.id, "scaleway", run_id, "cutover approved and verified")
            record["switched_at"] = _now()
            record["freeze_window_seconds"] = round(time.monotonic() - frozen_clock, 3)
            log(f"routing switched to Scaleway; writes were frozen for {record['freeze_window_seconds']:.1f} s")
        pg_replication.drop_replication(source, target, name)
        record["replication_dropped"] = True
        record["smoke"] = smoke_check(workload, routing, sides, list(snapshot["tables"]))
    record["routing"] = scaleway.describe()
    key = evidence.put_json(_run_prefix(run_id) + f"cutover-try{attempt}.json", record)
    record["evidence_key"] = key
    return record


def smoke_check(
    workload: PostgresWorkload, routing: RoutingRegistry, sides: PgSides, tables: list[str]
) -> dict[str, Any]:
    """Read through the routing document, as a consumer would: the live side answers for every table."""
    current, _ = routing.read(workload.id)
    if current is None or current.live != "scaleway":
        raise BasculeError(f"smoke check: routing of '{workload.id}' does not point at Scaleway")
    connect = sides.target if current.live == "scaleway" else sides.source
    counts = {}
    with closing(connect()) as conn, conn.cursor() as cur:
        for table in tables:
            schema, name = table.split(".", 1)
            cur.execute(f'select count(*) from "{schema}"."{name}"')
            counts[table] = cur.fetchone()[0]
    return {"live": current.live_location().describe(), "row_counts": counts}


def rollback(
    workload: PostgresWorkload,
    sides: PgSides,
    evidence: EvidenceStore,
    routing: RoutingRegistry,
    run_id: str,
    attempt: int,
    reason: str,
    target_write_baseline: dict[str, int] | None,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Routing back to the source and the source unfrozen; writes made on the target are reported."""
    current, _ = routing.read(workload.id)
    switched = False
    if current is not None:
        current, switched = routing.switch(workload.id, "azure", run_id, reason)
    target_writes: dict[str, int] = {}
    with closing(sides.source()) as source, closing(sides.target()) as target:
        source.autocommit = True
        target.autocommit = True
        pg_replication.unfreeze_writes(source, workload.source.database, list(workload.source.application_roles))
        # The source is live again: a slot left behind would make it keep WAL for nobody.
        pg_replication.drop_replication(source, target, workload.slot_name())
        if target_write_baseline:
            target_writes = pg_replication.writes_since(target, target_write_baseline)
    record = {
        "reason": reason,
        "routing_changed": switched,
        "live": current.live if current else "azure (never switched)",
        "source_unfrozen_roles": list(workload.source.application_roles),
        "target_writes_since_cutover": target_writes,
        "run_id": run_id,
        "at": _now(),
    }
    if target_writes:
        log(
            "WARNING: rows were written on the Scaleway target after the cutover and are NOT on the source: "
            + ", ".join(f"{t} ({n} change(s))" for t, n in target_writes.items())
            + ". They are still on the target. Do not drop it: follow the reverse-replication runbook "
            "(docs/runbooks.md#postgres-rollback-with-target-writes) to bring them back."
        )
    evidence.put_json(_run_prefix(run_id) + f"rollback-try{attempt}.json", record)
    return record


# -- preflight (database-specific checks, after the connection checks) ------------------------


def preflight_checks(
    workload: PostgresWorkload,
    sides: PgSides,
    evidence_bucket: Any,
    manifest_path: str,
    *,
    dry_run: bool,
    deployment: policy.Deployment,
) -> list[CheckResult]:
    """Replication readiness of both servers, keys, extensions, the evidence bucket, and the
    sovereignty/HDS policy on the target database (TLS) and the evidence bucket."""
    checks: list[CheckResult] = []
    with closing(sides.source()) as source:
        source.autocommit = True
        checks.extend(pg_catalog.check_source_server(source))
        inventory = pg_catalog.read_inventory(source, list(workload.source.schemas), list(workload.source.tables))
        checks.append(
            pg_catalog.check_primary_keys(inventory, list(workload.source.tables_without_primary_key), manifest_path)
        )
        checks.append(_check_application_roles(source, list(workload.source.application_roles), manifest_path))
        try:
            with closing(sides.target()) as target:
                target.autocommit = True
                checks.extend(pg_catalog.check_target_server(target, inventory.server_version_num))
                checks.append(pg_catalog.check_extensions(source, target, inventory))
                checks.extend(
                    policy.evaluate_postgres_target_policy(target, host=sides.target_params.host, deployment=deployment)
                )
        except Exception as exc:  # the target database may not exist yet (dry run / created later)
            if not dry_run:
                raise
            checks.append(CheckResult("target_server", True, f"not checked in a dry run: {str(exc).splitlines()[0]}"))
    bucket_check = _check_evidence_bucket(workload, evidence_bucket, manifest_path, dry_run=dry_run)
    checks.append(bucket_check)
    if bucket_check.ok and evidence_bucket.region() is not None:
        checks.extend(
            policy.evaluate_object_target_policy(
                evidence_bucket.client, evidence_bucket.bucket, evidence_bucket.endpoint, deployment=deployment,
                sse_customer_key=None, expected_region=workload.evidence.region,
            )
        )  # fmt: skip
    return checks


def _check_application_roles(source: Any, roles: list[str], manifest_path: str) -> CheckResult:
    with source.cursor() as cur:
        cur.execute("select rolname from pg_roles where rolname = any(%s)", (roles,))
        present = {row[0] for row in cur.fetchall()}
    missing = [r for r in roles if r not in present]
    if missing:
        return CheckResult(
            "application_roles",
            False,
            f"role(s) {missing} not found on the source; fix source.application_roles in {manifest_path} "
            "(the roles the applications write with: cutover makes them read-only)",
        )
    return CheckResult("application_roles", True, f"application role(s) {roles} exist (frozen at cutover)")


def _check_evidence_bucket(
    workload: PostgresWorkload, bucket: Any, manifest_path: str, *, dry_run: bool
) -> CheckResult:
    location = workload.evidence
    region = bucket.region()
    if region is None and location.create_if_missing and not dry_run:
        bucket.create(location.region)
        return CheckResult(
            "evidence_bucket", True, f"created evidence bucket {bucket.describe()} in '{location.region}'"
        )
    if region is None and location.create_if_missing:
        return CheckResult(
            "evidence_bucket", True, f"{bucket.describe()} would be created in '{location.region}' (dry run)"
        )
    if region is None:
        return CheckResult(
            "evidence_bucket",
            False,
            f"evidence bucket {bucket.describe()} does not exist; create it in '{location.region}' or set "
            f"evidence.create_if_missing: true in {manifest_path}",
        )
    if region != location.region:
        return CheckResult(
            "evidence_bucket",
            False,
            f"evidence bucket {bucket.describe()} is in '{region}', the manifest says '{location.region}' "
            f"(evidence.region in {manifest_path})",
        )
    return CheckResult("evidence_bucket", True, f"evidence bucket {bucket.describe()} in '{region}'")


def release_replication(workload: PostgresWorkload, sides: PgSides) -> dict[str, Any]:
    """Drop the subscription, slot and publication of a run that will not cut over.

    A logical slot nobody consumes makes the source keep its WAL forever: on a managed
    server that ends in a full disk. A new run takes a new snapshot anyway.
    """
    with closing(sides.source()) as source, closing(sides.target()) as target:
        source.autocommit = True
        target.autocommit = True
        pg_replication.drop_replication(source, target, workload.slot_name())
    return {"released": workload.slot_name(), "at": _now()}

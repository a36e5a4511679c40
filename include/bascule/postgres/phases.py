"""The first phases of a postgres workload (Azure Database for PostgreSQL -> Scaleway
Managed PostgreSQL), from the snapshot to the end of the catch-up, and what every phase
shares: run keys, the snapshot's inventory, and the schema-drift check.

Each function is one task's transaction: it takes DB-API connections (``PgSides``, and
the evidence store), does its work, writes its evidence and returns a small record for
XCom. Validation is in ``validation_phases``; cutover, rollback and release in
``cutover_phases``.

The join between bulk copy and change stream: ``take_snapshot`` creates the logical
replication slot before any table is copied, so the stream starts before every
copy snapshot (no gap). The overlap (changes between the slot's start and a table's
copy) is replayed idempotently through the overlap triggers until the apply worker
has passed every table's copy point; then the triggers go and apply is strict again.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from typing import Any, Literal

from bascule.exceptions import BasculeError
from bascule.governance.evidence.store import EvidenceStore
from bascule.identifiers import split_columns
from bascule.postgres import (
    bulk_copy,
    catalog,
    catch_up,
    cleanup,
    copy_plan,
    keyless,
    overlap,
    replication,
    replication_checks,
    schema_copy,
    schema_drift,
    scope_checks,
    tablediff_records,
)
from bascule.postgres.sides import PgSides, conninfo
from bascule.postgres.statements import split_qualified
from bascule.workload import PostgresWorkload


class SchemaDrift(BasculeError):
    """DDL ran on the source after the snapshot: logical replication does not carry it."""


class MissingPrimaryKey(BasculeError):
    """A table in scope has no primary key and was not opted into the slower path."""


def run_key(run_id: str) -> str:
    """An S3-safe form of an Airflow run id (``manual__2026-11-29T00:00:00+00:00``)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)


def utc_now() -> str:
    """Now, as an ISO 8601 UTC timestamp for the records."""
    return datetime.now(UTC).isoformat()


def run_prefix(run_id: str) -> str:
    """The evidence folder of a run."""
    return f"runs/{run_key(run_id)}/"


def table_specs(inventory: catalog.PgInventory) -> list[tablediff_records.TableSpec]:
    """What the table diff compares: every stored column, keyed by the primary key (else all columns)."""
    specs = []
    for table in inventory.tables:
        columns = [c.name for c in table.columns if not getattr(c, "generated", False)]
        keys = list(table.primary_key) or columns
        specs.append(tablediff_records.TableSpec(table.schema, table.name, keys, columns))
    return specs


def load_inventory(evidence: EvidenceStore, snapshot: dict[str, Any]) -> catalog.PgInventory:
    """The inventory ``take_snapshot`` wrote to the evidence."""
    return catalog.PgInventory.from_dict(evidence.read_json(snapshot["inventory_key"]))


def _keyless(workload: PostgresWorkload, tables: list[str]) -> list[str]:
    """The tables of ``tables`` the manifest migrates without a primary key (``keyless.py``)."""
    opted = set(workload.source.tables_without_primary_key)
    return [t for t in tables if t in opted]


def _stream_tables(workload: PostgresWorkload, tables: list[str]) -> list[str]:
    """The tables the publication carries from the slot's start: all but the keyless ones."""
    keyless_tables = set(_keyless(workload, tables))
    return [t for t in tables if t not in keyless_tables]


def _keyed_tables(inventory: catalog.PgInventory) -> dict[str, list[str]]:
    """Tables with a primary key -> its columns: those the overlap triggers protect."""
    return {t.qualified: list(t.primary_key) for t in inventory.tables if t.primary_key}


# -- snapshot -------------------------------------------------------------------------


def take_snapshot(
    workload: PostgresWorkload, sides: PgSides, evidence: EvidenceStore, run_id: str, *, fresh_run: bool
) -> dict[str, Any]:
    """Inventory of the schemas in scope and the replication slot the change stream starts from.

    ``fresh_run``: the first try of a new run drops what an earlier, abandoned run of this
    workload left (its subscription, slot and publication, as the ownership records in the
    evidence prove, ``cleanup``), so two runs never share a stream; a same-named object
    that no record shows as ours is refused (``cleanup.NotOurs``), never dropped.
    """
    slot = workload.slot_name()
    with sides.autocommit_source() as source:
        inventory = catalog.read_inventory(source, list(workload.source.schemas), list(workload.source.tables))
        keys_check = replication_checks.check_primary_keys(
            inventory, list(workload.source.tables_without_primary_key), f"the manifest of '{workload.id}'"
        )
        if not keys_check.ok:
            raise MissingPrimaryKey(keys_check.detail)
        with sides.autocommit_target() as target:
            # Refused before anything exists on either side (the same checks as preflight).
            scope_checks.refuse_out_of_scope(source, target, workload, inventory, f"the manifest of '{workload.id}'")
            # What an earlier run of this workload left goes (recorded as ours); a same-named
            # object nobody recorded is refused; then this run records that it creates the stream.
            if fresh_run or not cleanup.owned(evidence, slot):
                cleanup.claim(source, target, evidence, slot, run_id)
        full = [t for t in workload.source.tables_without_primary_key if t in {x.qualified for x in inventory.tables}]
        if full:
            replication.set_replica_identity_full(source, full)
            # The project's own DDL is part of the shape the snapshot expects: without this,
            # the drift check of start_replication reports it as someone else's change.
            inventory = with_replica_identity_full(inventory, full)
        # pgoutput decodes each change with the publication as it was when the change was
        # written: the publication must exist before the slot starts, or changes are lost.
        # Keyless tables join it at start_replication, synchronised by the subscription (keyless.py).
        replication.ensure_publication(source, slot, _stream_tables(workload, [t.qualified for t in inventory.tables]))
        slot_lsn = replication.create_slot(source, slot)
    name = run_prefix(run_id) + f"inventory-{int(time.time())}.json"
    key = evidence.put_json(name, inventory.to_dict())
    return {
        "inventory_key": key,
        "slot": slot,
        "slot_lsn": slot_lsn,
        "tables": [t.qualified for t in inventory.tables],
        "rows_estimate": sum(t.row_estimate for t in inventory.tables),
        "bytes": sum(t.size_bytes for t in inventory.tables),
        "sequences": len(inventory.sequences),
        "taken_at": utc_now(),
    }


def with_replica_identity_full(inventory: catalog.PgInventory, tables: list[str]) -> catalog.PgInventory:
    """The inventory as it is once ``REPLICA IDENTITY FULL`` is set on ``tables`` (qualified names)."""
    full = set(tables)
    return dataclasses.replace(
        inventory,
        tables=[
            dataclasses.replace(t, replica_identity="f") if {t.qualified, t.manifest_name} & full else t
            for t in inventory.tables
        ],
    )


def check_schema_unchanged(workload: PostgresWorkload, source: Any, before: catalog.PgInventory) -> None:
    """Refuse to go on when DDL changed the tables in scope since the snapshot."""
    now = catalog.read_inventory(source, list(workload.source.schemas), list(workload.source.tables))
    changes = schema_drift.schema_changes(before, now)
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
    """One ``pg_dump`` section of the source replayed on the target (re-runnable), its DDL kept as evidence."""
    inventory = load_inventory(evidence, snapshot)
    started = time.monotonic()
    sql = schema_copy.dump_schema(
        sides.source_params, section, list(workload.source.schemas), list(snapshot["tables"]),
        extensions=inventory.extensions,
    )  # fmt: skip
    with closing(sides.target()) as target:
        if section == "pre-data":
            target.autocommit = True
            # A rerun finds constraints from an earlier attempt: foreign keys would stop the
            # copy's TRUNCATE, so they go now and come back with post-data.
            drop_foreign_keys_in_scope(target, snapshot["tables"])
        schema_copy.apply_schema(target, sql, if_absent=True)
    name = run_prefix(run_id) + f"schema-{section}-try{attempt}.sql"
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
            where con.contype = 'f'
              and (n.nspname, c.relname) in (select * from unnest(%s::text[], %s::text[]))
            """,
            split_columns(tables),
        )
        statements = [row[0] for row in cur.fetchall()]
        for statement in statements:
            cur.execute(statement)
    return len(statements)


def plan_copy(
    workload: PostgresWorkload, sides: PgSides, evidence: EvidenceStore, snapshot: dict[str, Any], run_id: str,
    attempt: int,
) -> dict[str, Any]:
    """The copy units (whole tables, or key ranges of those over ``transfer.split_table_above_mib``),
    kept in the evidence; ``units`` is what the mapped ``copy_table`` tasks expand over."""
    inventory = load_inventory(evidence, snapshot)
    with sides.autocommit_source() as source:
        plan = copy_plan.plan_copy(source, inventory, workload.transfer.split_table_above_mib)
    key = evidence.put_json(run_prefix(run_id) + f"copy-plan-try{attempt}.json", plan.to_dict())
    return {"units": [u.to_dict() for u in plan.units], "notes": plan.notes, "plan_key": key}


def copy_one_table(
    sides: PgSides,
    evidence: EvidenceStore,
    snapshot: dict[str, Any],
    table: str | dict[str, Any],
    run_id: str,
    attempt: int,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """One copy unit's rows streamed from the source to the target; the record notes the source LSN after it.

    ``table`` is a plan item (``copy_plan.CopyUnit.to_dict``) or a bare table name (whole).
    Each range is a table copy of its own: its own snapshot, and its own copy point for
    ``overlap_end``, which the catch-up waits past (docs/architecture.md).
    """
    unit = copy_plan.CopyUnit.from_item(table)
    inventory = load_inventory(evidence, snapshot)
    info = next(t for t in inventory.tables if t.qualified == unit.table)
    with closing(sides.source()) as source, closing(sides.target()) as target:
        report = bulk_copy.copy_table(source, target, info, unit.range, progress)
    record: dict[str, Any] = {
        "table": unit.table,
        "rows": report.rows,
        "bytes": report.bytes,
        "seconds": round(report.seconds, 2),
        "source_lsn_after": report.source_lsn_after,
        "attempt": attempt,
    }
    if unit.range is not None:
        record["range"] = unit.range.to_dict()
    evidence.put_json(run_prefix(run_id) + f"copy/{unit.evidence_name}-try{attempt}.json", record)
    return record


# -- change stream -----------------------------------------------------------------------


def start_replication(
    workload: PostgresWorkload, sides: PgSides, evidence: EvidenceStore, snapshot: dict[str, Any]
) -> dict[str, Any]:
    """Overlap triggers on the target, then the subscription that replays the stream from the snapshot's slot."""
    inventory = load_inventory(evidence, snapshot)
    name = workload.slot_name()
    keyed = _keyed_tables(inventory)
    with sides.autocommit_both() as (source, target):
        check_schema_unchanged(workload, source, inventory)
        tables = list(snapshot["tables"])
        # A retry finds the keyless tables an earlier try added: they stay published.
        already = keyless.published(source, name)
        keyed_stream = set(_stream_tables(workload, tables))
        streamed = [t for t in tables if t in keyed_stream or split_qualified(t) in already]
        replication.ensure_publication(source, name, streamed)
        overlap.install_overlap_triggers(target, keyed)
        replication.create_subscription(target, name, conninfo(sides.source_params), name, snapshot["slot"])
        synchronised = keyless.synchronise(source, target, name, _keyless(workload, tables))
    return {
        "subscription": name, "publication": name, "overlap_triggers": sorted(keyed),
        "synchronised_by_subscription": synchronised, "at": utc_now(),
    }  # fmt: skip


def replication_status(workload: PostgresWorkload, sides: PgSides, overlap_end_lsn: str) -> dict[str, Any]:
    """One poll of the catch-up wait: lag, and whether the overlap has been replayed."""
    name = workload.slot_name()
    with sides.autocommit_both() as (source, target):
        lag = catch_up.replication_lag(source, target, name)
        passed = catch_up.passed_lsn(source, name, overlap_end_lsn) if overlap_end_lsn else True
        syncing = keyless.pending_sync(target, name)
    limits = workload.replication
    within = lag.lag_bytes <= limits.max_lag_bytes and (lag.lag_seconds or 0.0) <= limits.max_lag_seconds
    return {
        "lag_bytes": lag.lag_bytes,
        "lag_seconds": lag.lag_seconds,
        "source_lsn": lag.source_lsn,
        "confirmed_lsn": lag.confirmed_lsn,
        "overlap_replayed": passed,
        "synchronising": syncing,
        "ready": within and passed and not syncing,
    }


def finish_catch_up(
    workload: PostgresWorkload, sides: PgSides, evidence: EvidenceStore, snapshot: dict[str, Any]
) -> dict[str, Any]:
    """The apply passed every copy point: strict apply from now on (a conflict stops it, loudly)."""
    inventory = load_inventory(evidence, snapshot)
    keyed = _keyed_tables(inventory)
    with sides.autocommit_both() as (source, target):
        check_schema_unchanged(workload, source, inventory)
        overlap.remove_overlap_triggers(target, keyed)
    return {"overlap_triggers_removed": sorted(keyed)}


def overlap_end(copies: list[dict[str, Any]]) -> str:
    """The latest source LSN any copy read at: the apply must pass it before strict mode.

    A split table contributes one copy point per range; the maximum over all of them is
    past every range's snapshot, so the overlap triggers stay until every range's overlap
    has been replayed.
    """

    def as_int(lsn: str) -> int:
        high, low = lsn.split("/")
        return (int(high, 16) << 32) + int(low, 16)

    lsns = [c["source_lsn_after"] for c in copies if c and c.get("source_lsn_after")]
    return max(lsns, key=as_int) if lsns else ""

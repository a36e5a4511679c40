"""The last phases of a postgres workload: the cutover (freeze the source, let the replica
drain, prove both sides equal, carry the sequences, switch routing, detach, smoke-check),
the rollback to the source, and the release of a run that will not cut over.

All three drop the change stream: once routing is settled, a logical slot nobody
consumes would only make the source keep its WAL.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import closing
from typing import Any

from psycopg2 import sql

from bascule.exceptions import BasculeError
from bascule.governance.evidence.store import EvidenceStore
from bascule.governance.routing import Location, RoutingRegistry
from bascule.postgres import catalog, catch_up, cleanup, matviews, replication, sequences, tablediff, write_freeze
from bascule.postgres.phases import check_schema_unchanged, load_inventory, run_prefix, table_specs, utc_now
from bascule.postgres.sides import PgSides, conninfo
from bascule.postgres.statements import qualified_ident
from bascule.postgres.validation_phases import describe_differences
from bascule.workload import PostgresWorkload


class TablesDiffer(BasculeError):
    """Rows differ between source and target after the replica caught up."""


def locations(workload: PostgresWorkload, sides: PgSides) -> tuple[Location, Location]:
    """The routing document's two sides: the Azure source and the Scaleway target."""
    source = sides.source_params
    target = sides.target_params
    return (
        Location("azure", f"postgresql://{source.host}:{source.port}", workload.source.database, ""),
        Location("scaleway", f"postgresql://{target.host}:{target.port}", workload.target.database, ""),
    )


def _freeze_and_drain(
    workload: PostgresWorkload, source: Any, record: dict[str, Any], log: Callable[[str], None]
) -> None:
    """Make the application roles read-only, then wait until the replica has every committed write."""
    roles = list(workload.source.application_roles)
    freeze = write_freeze.freeze_writes(source, workload.source.database, roles)
    record["frozen_at"] = utc_now()
    record["freeze"] = {"roles": roles, "terminated_sessions": freeze.terminated_sessions}
    log(f"source frozen: roles {roles} read-only, {freeze.terminated_sessions} session(s) ended")
    lsn = catch_up.flush_point(source)
    waited = catch_up.wait_caught_up(source, workload.slot_name(), lsn, 600.0, 0.2)
    record["drain_seconds"] = round(waited, 2)
    log(f"replica caught up to {lsn} in {waited:.1f} s")


def _prove_equal(
    source: Any, target: Any, inventory: catalog.PgInventory, record: dict[str, Any], log: Callable[[str], None]
) -> None:
    """The final table diff under the freeze: any difference stops the cutover before routing switches."""
    diffs = [tablediff.diff_table(source, target, spec) for spec in table_specs(inventory)]
    record["final_diff"] = [d.to_dict() for d in diffs]
    if any(d.differences for d in diffs):
        raise TablesDiffer(
            f"final table diff after the freeze found differences: {describe_differences(diffs)}. "
            "Routing was not switched; the rollback task unfreezes the source."
        )
    log(f"final diff: {len(diffs)} table(s) equal, {sum(d.source_rows for d in diffs):,} row(s)")


def cutover(
    workload: PostgresWorkload, sides: PgSides, evidence: EvidenceStore, routing: RoutingRegistry,
    snapshot: dict[str, Any], run_id: str, attempt: int, log: Callable[[str], None],
    before_switch: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Freeze, drain, prove, carry sequences, switch, detach, smoke-check. Idempotent.

    A retry after the switch finds routing already on Scaleway and only finishes
    detaching the subscription and the smoke check. ``before_switch`` runs right before
    routing switches (the policy's last word); raising stops the cutover there.
    """
    inventory = load_inventory(evidence, snapshot)
    name = workload.slot_name()
    azure, scaleway = locations(workload, sides)
    routing.ensure(workload.id, azure, scaleway, run_id)
    current, _ = routing.read(workload.id)
    record: dict[str, Any] = {"workload": workload.id, "run_id": run_id, "attempt": attempt}
    with sides.autocommit_both() as (source, target):
        if current is not None and current.live == "scaleway":
            log("routing already points at Scaleway (an earlier attempt switched it): finishing the detach")
            record["already_switched"] = True
        else:
            check_schema_unchanged(workload, source, inventory)
            # Idempotent, and re-enables the subscription if an interrupted validation left it paused.
            replication.create_subscription(target, name, conninfo(sides.source_params), name, snapshot["slot"])
            frozen_clock = time.monotonic()
            _freeze_and_drain(workload, source, record, log)
            _prove_equal(source, target, inventory, record, log)
            record["sequences"] = sequences.sync_sequences(
                source, target, [s.qualified for s in inventory.sequences]
            )
            # Rows of materialized views are not in the stream: refreshed here, frozen and proven equal.
            record["materialized_views"] = matviews.refresh_on_target(source, target, list(workload.source.schemas))
            record["target_write_baseline"] = write_freeze.table_write_counters(target, list(snapshot["tables"]))
            before_switch()
            _, switched = routing.switch(workload.id, "scaleway", run_id, "cutover approved and verified")
            record["switched_at"] = utc_now()
            record["freeze_window_seconds"] = round(time.monotonic() - frozen_clock, 3)
            log(f"routing switched to Scaleway; writes were frozen for {record['freeze_window_seconds']:.1f} s")
        cleanup.record_dropped(evidence, name, run_id, replication.drop_replication(source, target, name))
        record["replication_dropped"] = True
        record["smoke"] = smoke_check(workload, routing, sides, list(snapshot["tables"]))
    record["routing"] = scaleway.describe()
    key = evidence.put_json(run_prefix(run_id) + f"cutover-try{attempt}.json", record)
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
            cur.execute(sql.SQL("select count(*) from {}").format(qualified_ident(table)))
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
    with sides.autocommit_both() as (source, target):
        write_freeze.unfreeze_writes(source, workload.source.database, list(workload.source.application_roles))
        # The source is live again: a slot left behind would make it keep WAL for nobody.
        dropped = replication.drop_replication(source, target, workload.slot_name())
        cleanup.record_dropped(evidence, workload.slot_name(), run_id, dropped)
        if target_write_baseline:
            target_writes = write_freeze.writes_since(target, target_write_baseline)
    record = {
        "reason": reason,
        "routing_changed": switched,
        "live": current.live if current else "azure (never switched)",
        "source_unfrozen_roles": list(workload.source.application_roles),
        "target_writes_since_cutover": target_writes,
        "run_id": run_id,
        "at": utc_now(),
    }
    if target_writes:
        log(
            "WARNING: rows were written on the Scaleway target after the cutover and are NOT on the source: "
            + ", ".join(f"{t} ({n} change(s))" for t, n in target_writes.items())
            + ". They are still on the target. Do not drop it: follow the reverse-replication runbook "
            "(docs/runbooks.md#postgres-rollback-with-target-writes) to bring them back."
        )
    evidence.put_json(run_prefix(run_id) + f"rollback-try{attempt}.json", record)
    return record


def release_replication(
    workload: PostgresWorkload, sides: PgSides, evidence: EvidenceStore, run_id: str
) -> dict[str, Any]:
    """Drop the subscription, slot and publication of a run that will not cut over, if this
    workload's ownership records show them as its own (``cleanup``); leave any other alone.

    A logical slot nobody consumes makes the source keep its WAL forever: on a managed
    server that ends in a full disk. A new run takes a new snapshot anyway.
    """
    with sides.autocommit_both() as (source, target):
        result = cleanup.release(source, target, evidence, workload.slot_name(), run_id)
    return {"released": workload.slot_name(), "at": utc_now(), **result}

"""Which replication objects are a workload's own, and their removal after a run that
will not cut over.

A workload's publication, slot and subscription share one deterministic name
(``PostgresWorkload.slot_name()``: ``bascule_<id>``). A name proves nothing, though: a
DBA or another tool may have made a slot of that name. So before creating them, the
snapshot writes an ownership record in the workload's evidence
(``replication/<name>/<time>-created-<run>.json``), and the release writes
``...-released-<run>.json`` once they are gone. An object is Bascule's when the latest
record of its name says *created*. Only then does a release (``release``, run by the
``release_replication`` task after a failure, or by the next run's snapshot) drop it;
an object of that name without such a record is left alone and named
(:class:`NotOurs`, docs/runbooks.md#postgres-orphaned-slot).

The records are also what an on-call engineer reads after a failure: which run created
the stream, and whether a release removed it. ``slot_report`` is the preflight's view:
every slot on the source and the WAL it keeps (``pg_wal_lsn_diff``), this workload's
own marked as such.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from psycopg2 import sql

from bascule.exceptions import BasculeError
from bascule.governance.evidence.store import EvidenceStore
from bascule.governance.policy import CheckResult
from bascule.postgres import keyless, replication
from bascule.postgres.statements import execute, fetch_one

RUNBOOK = "docs/runbooks.md#postgres-orphaned-slot"


class NotOurs(BasculeError):
    """A publication, slot or subscription has the workload's name but no record says Bascule created it."""


def _ledger(name: str) -> str:
    return f"replication/{name}/"


def _latest(evidence: EvidenceStore, name: str) -> str | None:
    """'created' or 'released': the latest ownership record of ``name`` (None: never recorded)."""
    keys = sorted(key.rsplit("/", 1)[-1] for key, _ in evidence.keys(_ledger(name)))
    if not keys:
        return None
    return "created" if "-created-" in keys[-1] else "released"


def owned(evidence: EvidenceStore, name: str) -> bool:
    """Whether the latest ownership record of ``name`` says a run of this workload created it."""
    return _latest(evidence, name) == "created"


def _record(evidence: EvidenceStore, name: str, what: str, run_id: str, document: dict[str, Any]) -> str:
    # A nanosecond timestamp first: records sort by time, and two tries never share a key.
    safe_run = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)
    key = f"{_ledger(name)}{time.time_ns():020d}-{what}-{safe_run}.json"
    return evidence.put_json(key, {"name": name, "event": what, "run_id": run_id, **document})


@dataclass(frozen=True)
class Present:
    """Which objects named ``name`` exist now: publication and slot on the source, subscription on the target."""

    publication: bool
    slot: bool
    subscription: bool

    def names(self) -> list[str]:
        return [kind for kind in ("publication", "slot", "subscription") if getattr(self, kind)]


def present(source: Any, target: Any | None, name: str) -> Present:
    publication = fetch_one(source, "select 1 from pg_publication where pubname = %s", (name,)) is not None
    slot = fetch_one(source, "select 1 from pg_replication_slots where slot_name = %s", (name,)) is not None
    subscription = target is not None and replication.find_subscription(target, name) is not None
    return Present(publication, slot, subscription)


def _not_ours(name: str, found: Present, database: str) -> NotOurs:
    return NotOurs(
        f"{' and '.join(found.names())} '{name}' exist(s) (source database '{database}') but no ownership record "
        f"of this workload says a Bascule run created it (evidence replication/{name}/): it is left alone. "
        f"Check what uses it: select * from pg_replication_slots where slot_name = '{name}'; then either drop it "
        f"deliberately (select pg_drop_replication_slot('{name}'); drop publication \"{name}\") or give the "
        f"workload another id. Runbook: {RUNBOOK}"
    )


def claim(source: Any, target: Any, evidence: EvidenceStore, name: str, run_id: str) -> dict[str, Any]:
    """Before the snapshot creates the stream: release what an earlier run of this workload left,
    refuse what is not ours, and record that this run creates ``name``.

    Returns what was released (empty when nothing was left).
    """
    found = present(source, target, name)
    released: dict[str, Any] = {}
    if found.names():
        if not owned(evidence, name):
            raise _not_ours(name, found, _database(source))
        released = release(source, target, evidence, name, run_id)
    database = _database(source)
    _record(
        evidence, name, "created", run_id, {"database": database, "objects": ["publication", "slot", "subscription"]}
    )
    return released


def release(source: Any, target: Any, evidence: EvidenceStore, name: str, run_id: str) -> dict[str, Any]:
    """Drop subscription, slot and publication ``name`` (and the subscription's table
    synchronisation slots) if they are this workload's; leave them alone otherwise.

    Returns ``{"dropped": {...}, "left_alone": [...], "record": key}``; idempotent.
    """
    found = present(source, target, name)
    if found.names() and not owned(evidence, name):
        return {"dropped": {}, "left_alone": found.names(), "reason": str(_not_ours(name, found, _database(source)))}
    subscription = replication.find_subscription(target, name)
    dropped = replication.drop_replication(source, target, name)
    # Detached before its drop, the subscription leaves its table synchronisation slots behind.
    sync_slots = keyless.sync_slots(source, subscription[0]) if subscription is not None else []
    for slot in sync_slots:
        execute(source, sql.SQL("select pg_drop_replication_slot({})").format(sql.Literal(slot)))
    key = None
    if any(dropped.values()) or sync_slots or _latest(evidence, name) == "created":
        key = _record(evidence, name, "released", run_id, {"dropped": dropped, "sync_slots": sync_slots})
    return {"dropped": dropped, "sync_slots": sync_slots, "left_alone": [], "record": key}


def record_dropped(evidence: EvidenceStore, name: str, run_id: str, dropped: dict[str, bool]) -> str | None:
    """After the cutover or a rollback dropped the stream: the ledger says it is no longer ours."""
    if _latest(evidence, name) != "created":
        return None
    return _record(evidence, name, "released", run_id, {"dropped": dropped, "sync_slots": []})


def _database(conn: Any) -> str:
    return str(fetch_one(conn, "select current_database()")[0])


# -- preflight -----------------------------------------------------------------------------------


def slot_report(source: Any, evidence: EvidenceStore | None, name: str) -> CheckResult:
    """Every replication slot on the source server and the WAL it retains; this workload's own named.

    Fails only when a slot of the workload's name exists that no record says is ours: the
    snapshot would refuse it. A slot of an earlier run of this workload passes (the
    snapshot releases it), with the WAL it holds, so the on-call engineer sees the cost.
    """
    with source.cursor() as cur:
        cur.execute(
            """
            select slot_name, coalesce(database, ''), active,
                   coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::bigint
            from pg_replication_slots order by 4 desc, 1
            """
        )
        slots = [(str(s), str(d), bool(a), int(w)) for s, d, a, w in cur.fetchall()]
    evidence_facts = {
        "slots": [{"slot": s, "database": d, "active": a, "retained_wal_bytes": w} for s, d, a, w in slots]
    }
    others = "; ".join(
        f"{s} ({d or 'physical'}, {'active' if a else 'inactive'}, retains {_mib(w)})"
        for s, d, a, w in slots
        if s != name
    )
    others_text = f" Other slots on the server: {others}." if others else ""
    own = [row for row in slots if row[0] == name]
    if not own:
        return CheckResult("replication_slots", True, f"no slot '{name}' on the source.{others_text}", evidence_facts)
    _, database, active, wal = own[0]
    if evidence is not None and owned(evidence, name):
        return CheckResult(
            "replication_slots",
            True,
            f"slot '{name}' of an earlier run of this workload is still there ({'active' if active else 'inactive'}) "
            f"and retains {_mib(wal)} of WAL; the snapshot releases it (or run release_replication now: "
            f"{RUNBOOK}).{others_text}",
            evidence_facts,
        )
    return CheckResult(
        "replication_slots",
        False,
        f"slot '{name}' exists in database '{database}' ({'active' if active else 'inactive'}, retains {_mib(wal)} "
        f"of WAL) but no ownership record of this workload says a Bascule run created it; the snapshot would "
        f"refuse it. Find its owner (pg_stat_replication), then drop it deliberately or change the workload id. "
        f"Runbook: {RUNBOOK}.{others_text}",
        evidence_facts,
    )


def _mib(size: int) -> str:
    return f"{size / 1048576:.1f} MiB"

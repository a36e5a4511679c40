"""The phases of an object-store workload, as plain functions the Airflow operators call.

Each phase reads what an earlier phase wrote to the evidence (by the key that phase
returned) and writes its own result there; what it returns is small enough for XCom.
One object's path reads straight through: listed once in the snapshot inventory,
copied once by its shard, verified against the hash taken at the source, compared
once in validation, recorded once in the evidence.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bascule.exceptions import BasculeError
from bascule.governance.evidence.store import EvidenceStore
from bascule.governance.routing import Location, RoutingRegistry
from bascule.objects.compare import expected_md5, iter_delta
from bascule.objects.freeze import describe_freeze, freeze, unfreeze
from bascule.objects.inventory import InventoryWriter, read_inventory, shard, write_inventory
from bascule.objects.merge_join import read_ahead

# Parity lives in its own module; these names stay importable from here (operators, benchmark).
from bascule.objects.parity import (
    MAX_PROBLEMS_LISTED,
    ParityOutcome,
    describe_problems,
    prove_parity,
    readback_md5,
    target_inventory,
)
from bascule.objects.transfer_records import RecordSpool, record_files, records_name
from bascule.storage.azure_blob import AzureBlobContainer
from bascule.storage.base import ObjectInfo
from bascule.storage.s3 import S3Bucket
from bascule.workload import ObjectStoreWorkload

if TYPE_CHECKING:
    from bascule.objects.copy_report import ShardReport

SMOKE_SAMPLE = 20
__all__ = ["ParityOutcome", "describe_problems", "prove_parity", "readback_md5", "target_inventory"]


class PhaseFailed(BasculeError):
    """A phase found something wrong with the data. Retrying cannot help; the message says what."""


class TransferIncomplete(BasculeError):
    """Some objects of a shard failed; a retry copies only those (the rest are skipped)."""


def snapshot_id_for(run_id: str, try_number: int) -> str:
    """A snapshot per task attempt: evidence is write-once, so a rerun records a new one."""
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', run_id)}-try{try_number}"


def _now() -> str:
    return datetime.now(UTC).isoformat()


# -- snapshot ---------------------------------------------------------------------------


def take_snapshot(
    workload: ObjectStoreWorkload, source: AzureBlobContainer, evidence: EvidenceStore, snapshot_id: str
) -> dict[str, Any]:
    started = time.monotonic()
    summary = write_inventory(
        source.iter_objects(workload.source.prefix), evidence, f"snapshots/{snapshot_id}/source-inventory.jsonl.gz"
    )
    record = {
        "snapshot_id": snapshot_id,
        "inventory_key": summary.key,
        "inventory_sha256": summary.sha256,
        "objects": summary.count,
        "bytes": summary.bytes,
        "too_large": summary.too_large,
        "taken_at": _now(),
        "seconds": round(time.monotonic() - started, 3),
        "source": source.describe() + f" prefix '{workload.source.prefix}'",
    }
    evidence.put_json(f"snapshots/{snapshot_id}/snapshot.json", record)
    if summary.too_large:
        listed = ", ".join(f"'{o['key']}' ({o['size']:,} bytes)" for o in summary.too_large[:20])
        raise PhaseFailed(
            f"{len(summary.too_large)} object(s) exceed Scaleway's 5 TB object limit and cannot be migrated "
            f"as one object: {listed}. Split them at the source or exclude them, then rerun. "
            f"No byte was moved. Inventory: {evidence.uri(summary.key[len(evidence.prefix) :])}"
        )
    return record


# -- transfer ---------------------------------------------------------------------------


def _copy_objects(
    workload: ObjectStoreWorkload,
    objects: Iterable[ObjectInfo],
    source: AzureBlobContainer,
    target: S3Bucket,
    snapshot_id: str,
    **options: Any,
) -> ShardReport:
    """``copy_shard`` with what the manifest fixes (prefixes, concurrency, part size); ``options`` per caller."""
    from bascule.objects.copy_config import CopyConfig
    from bascule.objects.shard import copy_shard

    part_size = workload.transfer.part_size_mib * 1024 * 1024
    return copy_shard(
        objects, source, target, source_prefix=workload.source.prefix, target_prefix=workload.target.prefix,
        snapshot_id=snapshot_id, concurrency=workload.transfer.concurrency,
        config=CopyConfig(preferred_part_size=part_size), **options,
    )  # fmt: skip


def transfer_shard(
    workload: ObjectStoreWorkload,
    source: AzureBlobContainer,
    target: S3Bucket,
    evidence: EvidenceStore,
    snapshot: dict[str, Any],
    shard_index: int,
    attempt: int,
    progress: Callable[[Any], None] | None = None,
) -> dict[str, Any]:

    def objects() -> Iterator[ObjectInfo]:
        return shard(read_inventory(evidence, snapshot["inventory_key"]), shard_index, workload.transfer.shards)

    # One extra pass over the (compressed, streamed) inventory buys the on-call log an ETA.
    total_objects = total_bytes = 0
    for info in objects():
        total_objects += 1
        total_bytes += info.size
    spool = RecordSpool()  # what each object's copy verified, sorted into the evidence at the end
    report = _copy_objects(
        workload,
        objects(),
        source,
        target,
        snapshot["snapshot_id"],
        progress=progress,
        total_objects=total_objects,
        total_bytes=total_bytes,
        records=spool.add,
    )
    result = report.to_dict()
    name = f"snapshots/{snapshot['snapshot_id']}/transfer/shard-{shard_index:04d}-try{attempt}.json"
    # Published even when some objects failed: what was copied is proven, and a retry copies the rest.
    records_key = spool.publish(evidence, records_name(name.removesuffix(f"-try{attempt}.json"), attempt))
    report_key = evidence.put_json(name, {"shard": shard_index, "attempt": attempt, "records_key": records_key, **result})
    summary = {
        "shard": shard_index,
        "copied": report.copied,
        "skipped": report.skipped,
        "failed": report.failed,
        "bytes": report.bytes_copied,
        "retries": report.retries,
        "report_key": report_key,
        "records_key": records_key,
    }
    if report.failed:
        first = "; ".join(f"'{f.key}': {f.reason}" for f in report.failures[:10])
        raise TransferIncomplete(
            f"shard {shard_index}: {report.failed} object(s) failed, {report.copied} copied, "
            f"{report.skipped} already there. First failures: {first}. Full report: {evidence.uri(name)}. "
            "A retry copies only what is missing."
        )
    return summary


# -- cutover ----------------------------------------------------------------------------


def locations(workload: ObjectStoreWorkload, source: AzureBlobContainer, target: S3Bucket) -> tuple[Location, Location]:
    return (
        Location("azure", source.account_url, workload.source.container, workload.source.prefix),
        Location("scaleway", target.endpoint, workload.target.bucket, workload.target.prefix),
    )


def smoke_check(
    workload: ObjectStoreWorkload,
    routing: RoutingRegistry,
    target_for: Callable[[str], S3Bucket],
    final_objects: Iterable[ObjectInfo],
    count: int | None = None,
) -> dict[str, Any]:
    """Read a sample of objects through the routing document, as a consumer would, and hash them.

    ``final_objects`` may be a stream (the final inventory read back) of ``count`` objects:
    every ``count // SMOKE_SAMPLE``-th is taken, nothing else is held.
    """
    current, _ = routing.read(workload.id)
    if current is None or current.live != "scaleway":
        raise PhaseFailed(f"smoke check: routing of '{workload.id}' does not point to Scaleway after the switch")
    live = current.live_location()
    bucket = target_for(live.container)
    md5_of = readback_md5(bucket)
    if count is None:
        final_objects = list(final_objects)  # a list given: its length is known for free
        count = len(final_objects)
    step = max(1, count // SMOKE_SAMPLE)
    sample = itertools.islice(itertools.islice(final_objects, 0, None, step), SMOKE_SAMPLE)
    checked, mismatches = 0, []
    for info in sample:
        key = live.prefix + info.key[len(workload.source.prefix) :]
        stored = bucket.head(key)
        want = expected_md5(info, stored)
        if stored is None or want is None or md5_of(key) != want:
            mismatches.append(key)
        checked += 1
    if mismatches:
        raise PhaseFailed(
            f"smoke check through routing ({live.describe()}) failed for {mismatches[:10]}: "
            "consumers would read wrong or missing data; the rollback task restores routing to Azure"
        )
    return {"checked": checked, "location": live.describe()}


def sync_delta(
    workload: ObjectStoreWorkload,
    source: AzureBlobContainer,
    target: S3Bucket,
    evidence: EvidenceStore,
    snapshot: dict[str, Any],
    base: str,
    attempt: int,
    log: Callable[[str], None],
    since_key: str | None = None,
) -> dict[str, Any]:
    """After the freeze: one listing of the source, merge-joined with the snapshot inventory, copies what changed.

    ``since_key``: the inventory to compare with (default the snapshot's); a later delta
    round gives the previous round's listing, so it copies only what changed since.

    The listing (5,000 names a page, Azure's default) is written to the evidence as the
    final inventory while it streams, and new or modified objects flow straight to
    the copier: memory holds the deleted keys and the first 1,000 changed ones, never
    the inventory. Requests: N/5,000 list pages + O(changes) (a HEAD and a copy per
    changed object, a DELETE per deleted one). A rerun lists again into its own
    attempt's files and skips what an earlier attempt copied.
    """

    final = InventoryWriter(evidence, f"{base}/final-inventory.jsonl.gz")
    counts = {"new": 0, "modified": 0}
    changed_keys: list[str] = []
    deleted: list[str] = []

    def to_copy() -> Iterator[ObjectInfo]:
        listing = final.recording(source.iter_objects(workload.source.prefix))
        for change in iter_delta(read_inventory(evidence, since_key or snapshot["inventory_key"]), listing):
            if change.kind == "deleted":
                deleted.append(change.info.key)
                continue
            counts[change.kind] += 1
            if len(changed_keys) < MAX_PROBLEMS_LISTED:
                changed_keys.append(change.info.key)
            yield change.info

    spool = RecordSpool()
    try:
        report = _copy_objects(
            workload,
            to_copy(),
            source,
            target,
            snapshot["snapshot_id"],
            # Few objects changed: a HEAD each beats listing the whole target prefix.
            target_keys=None,
            records=spool.add,
        )
    except BaseException:
        final.discard()
        spool.close()
        raise
    summary = final.close()
    records_key = spool.publish(evidence, records_name(f"{base}/delta", attempt))
    since = "the previous round's listing" if since_key else f"snapshot {snapshot['snapshot_id']}"
    log(
        f"delta since {since} over {summary.count:,} listed object(s): "
        f"{counts['new']} new, {counts['modified']} modified, {len(deleted)} deleted"
    )
    if report.failed:
        raise TransferIncomplete(
            f"final delta sync: {report.failed} object(s) failed: {report.to_dict()['failures'][:10]}"
        )
    for key in deleted:
        target.delete(workload.target_key(key))
    return {
        "final_inventory_key": summary.key,
        "objects": summary.count,
        "records_key": records_key,
        "delta": {
            "changed": changed_keys,
            "new": counts["new"],
            "modified": counts["modified"],
            "deleted": deleted[:MAX_PROBLEMS_LISTED],
            "deleted_count": len(deleted),
            "copied": report.copied,
        },
    }


def _late_changes(evidence: EvidenceStore, synced_key: str, parity_key: str) -> tuple[list[str], int]:
    """Objects that changed between a round's delta listing and its parity listing: (first names, count)."""
    names: list[str] = []
    count = 0
    for change in iter_delta(read_inventory(evidence, synced_key), read_inventory(evidence, parity_key)):
        count += 1
        if len(names) < MAX_PROBLEMS_LISTED:
            names.append(f"{change.info.key} ({change.kind})")
    return names, count


def final_parity(
    workload: ObjectStoreWorkload,
    source: AzureBlobContainer,
    target: S3Bucket,
    evidence: EvidenceStore,
    snapshot: dict[str, Any],
    name: str,
    context: dict[str, Any],
) -> tuple[ParityOutcome, str]:
    """Parity at cutover against a fresh source listing (read ahead, so it lists beside the target's).

    The listing is kept in the evidence as ``<name>/parity-inventory.jsonl.gz``; its key is
    returned with the outcome. Every record file of the snapshot is used: the shards' and
    each delta round's, later ones superseding earlier ones.
    """
    listed = InventoryWriter(evidence, f"{name}/parity-inventory.jsonl.gz")
    fresh = listed.recording(read_ahead(source.iter_objects(workload.source.prefix)))
    records = record_files(evidence, f"snapshots/{snapshot['snapshot_id']}/")
    try:
        parity = prove_parity(workload, fresh, target, evidence, name, context, record_keys=records)
    except BaseException:
        listed.discard()
        raise
    return parity, listed.close().key


def settle_delta(
    workload: ObjectStoreWorkload,
    source: AzureBlobContainer,
    target: S3Bucket,
    evidence: EvidenceStore,
    snapshot: dict[str, Any],
    base: str,
    attempt: int,
    context: dict[str, Any],
    log: Callable[[str], None],
    *,
    after_round: Callable[[int], None] = lambda _: None,
) -> tuple[dict[str, Any], ParityOutcome]:
    """Delta rounds until the final parity holds, at most ``cutover.freeze.delta_rounds`` of them.

    Each round syncs what changed since the previous round's listing (the first: since the
    snapshot), then proves parity against a *fresh* source listing, read ahead so that it
    lists beside the target: a change that landed after the round's listing (a writer the
    freeze does not stop) fails that parity and is the next round's delta. A parity that
    fails with nothing changed is a data problem, not a race: it stops at once.
    Runbook: docs/runbooks.md#object-delta-not-settled.
    """
    rounds = workload.cutover.freeze.delta_rounds
    since: str | None = None
    late_by_round: list[dict[str, Any]] = []
    deltas: list[dict[str, Any]] = []
    for number in range(1, rounds + 1):
        # Round 1 keeps the names earlier runs used; later rounds get a folder each.
        name = base if number == 1 else f"{base}/round-{number}"
        synced = sync_delta(workload, source, target, evidence, snapshot, name, attempt, log, since_key=since)
        deltas.append(synced["delta"])
        after_round(number)
        parity, parity_key = final_parity(workload, source, target, evidence, snapshot, name, context)
        if parity.success:
            # "delta" stays what changed since the snapshot (round 1); later rounds' are listed after it.
            return {
                **synced,
                "delta": deltas[0],
                "later_deltas": deltas[1:],
                "final_inventory_key": parity_key,
                "rounds": number,
                "late_changes": late_by_round,
            }, parity
        late, count = _late_changes(evidence, synced["final_inventory_key"], parity_key)
        report = evidence.uri(parity.report_key[len(evidence.prefix) :])
        if not count:
            problems = describe_problems(parity.problems, total=parity.problem_count)
            raise PhaseFailed(
                f"parity after the final delta sync failed; routing NOT switched: {problems}. Report: {report}"
            )
        late_by_round.append({"round": number, "count": count, "objects": late[:20]})
        log(f"delta round {number} of {rounds}: {count} object(s) changed after its listing: {late[:10]}")
        since = synced["final_inventory_key"]
    raise PhaseFailed(
        f"the source kept changing after {rounds} delta round(s) (cutover.freeze.delta_rounds): {count} object(s) "
        f"of container '{workload.source.container}' changed after the last round's listing: {late[:20]}. A writer "
        f"the freeze (method {workload.cutover.freeze.method}) does not stop is still writing: an account key, an "
        "Entra ID role assignment or a SAS of another policy. The source is unfrozen and routing is unchanged "
        f"(still Azure). Stop that writer, then clear the cutover task. Parity report: {report} "
        "(docs/runbooks.md#object-delta-not-settled)"
    )


def _unfreeze_after_failure(workload: ObjectStoreWorkload, container_client: Any, log: Callable[[str], None]) -> None:
    try:
        undone = unfreeze(container_client, workload.source.prefix, workload.id, config=workload.cutover.freeze)
        log(f"cutover stopped before the switch: source unfrozen ({undone.released} lease(s) released, "
            f"policy restored: {undone.policy_restored or 'none frozen'})")  # fmt: skip
    except Exception as exc:  # the original failure matters more; the rollback task unfreezes again
        log(f"cutover stopped before the switch and unfreezing failed ({exc}); the rollback task retries it")


def cutover(
    workload: ObjectStoreWorkload,
    *,
    container_client: Any,
    source: AzureBlobContainer,
    target: S3Bucket,
    target_for: Callable[[str], S3Bucket],
    evidence: EvidenceStore,
    routing: RoutingRegistry,
    snapshot: dict[str, Any],
    run_id: str,
    attempt: int,
    context: dict[str, Any],
    log: Callable[[str], None],
    before_switch: Callable[[], None] = lambda: None,
    after_round: Callable[[int], None] = lambda _: None,
) -> dict[str, Any]:
    """``before_switch`` runs right before routing switches (the policy's last word); raising stops it.

    ``after_round(n)`` runs after delta round ``n`` copied, before its parity lists the source:
    a seam for tests of a change that lands there.
    """
    sid = snapshot["snapshot_id"]
    base = f"snapshots/{sid}/cutover-try{attempt}"
    started = time.monotonic()
    # The Azure SDK pools 10 connections per client: more threads would only queue.
    # The policy as it was goes to the evidence before the freeze changes it (unfreeze restores it).
    frozen = freeze(
        container_client, workload.source.prefix, workload.id, concurrency=8, config=workload.cutover.freeze,
        on_record=lambda before: evidence.put_json(f"{base}/freeze-policy-before.json", before),
    )  # fmt: skip
    frozen_at, frozen_clock = _now(), time.monotonic()
    log(f"source frozen at {frozen_at}: {describe_freeze(frozen, workload.source.prefix)}")

    try:
        synced, parity = settle_delta(
            workload, source, target, evidence, snapshot, base, attempt, context, log, after_round=after_round
        )
        final_key = synced["final_inventory_key"]

        azure, scaleway = locations(workload, source, target)
        routing.ensure(workload.id, azure, scaleway, run_id)
        before_switch()
    except BaseException:
        # Routing still points to Azure, so the source is still the truth: writers must not stay
        # blocked while on-call investigates or the task waits to retry (a retry freezes again).
        _unfreeze_after_failure(workload, container_client, log)
        raise
    _, switched = routing.switch(workload.id, "scaleway", run_id, f"cutover of snapshot {sid}")
    switched_at, switched_clock = _now(), time.monotonic()
    log(f"routing of '{workload.id}' now points to {scaleway.describe()} (changed: {switched})")

    smoke = smoke_check(workload, routing, target_for, read_inventory(evidence, final_key), synced["objects"])
    record = {
        "snapshot_id": sid,
        "frozen_at": frozen_at,
        "switched_at": switched_at,
        # Writers are blocked from the first lease: the freeze itself counts as downtime.
        "freeze_seconds": round(frozen_clock - started, 3),
        "frozen_to_switch_seconds": round(switched_clock - frozen_clock, 3),
        "freeze_to_switch_seconds": round(switched_clock - started, 3),
        # Part of freeze_seconds spent waiting for the policy change to take effect (Azure: up to 30 s).
        "probe_wait_seconds": frozen.probe_wait_seconds,
        "freeze_method": frozen.method,
        "freeze": frozen.to_dict(),
        "delta": synced["delta"],
        "delta_rounds": synced["rounds"],
        "late_changes": synced["late_changes"],
        "later_deltas": synced["later_deltas"],
        "final_inventory_key": final_key,
        "parity": parity.to_dict(),
        "smoke": smoke,
        "routing": scaleway.describe(),
    }
    evidence.put_json(f"{base}/cutover.json", record)
    return record


# -- content validation and shadow run ------------------------------------------------------


class _Reader:
    """A dataset seen through relative keys, over either store (``bascule.validation.object_shadow.DatasetReader``)."""

    def __init__(self, relative_keys: list[str], read: Callable[[str], bytes]):
        self._keys = relative_keys
        self._read = read

    def keys(self, prefix: str = "") -> Iterator[str]:
        return (k for k in self._keys if k.startswith(prefix))

    def read(self, key: str) -> bytes:
        return self._read(key)


def dataset_readers(
    workload: ObjectStoreWorkload,
    source: AzureBlobContainer,
    target: S3Bucket,
    evidence: EvidenceStore,
    snapshot: dict[str, Any],
) -> tuple[_Reader, _Reader]:
    """Source and target readers over the snapshot's keys, relative to each side's prefix."""
    relative = [o.key[len(workload.source.prefix) :] for o in read_inventory(evidence, snapshot["inventory_key"])]
    src = _Reader(relative, lambda key: source.read_all(workload.source.prefix + key))
    tgt = _Reader(relative, lambda key: target.read_all(workload.target.prefix + key))
    return src, tgt


def run_content_suites(
    workload: ObjectStoreWorkload,
    source: AzureBlobContainer,
    target: S3Bucket,
    evidence: EvidenceStore,
    snapshot: dict[str, Any],
    base: str,
    context: dict[str, Any],
) -> dict[str, Any]:
    """The manifest's GX content suites on the target copy; results and an offline HTML report in the evidence."""
    from bascule.validation import object_gates
    from bascule.validation.report import render_report_html
    from bascule.validation.suites import EXPECTATIONS_DIR

    src, tgt = dataset_readers(workload, source, target, evidence, snapshot)
    keys = list(src.keys())
    outcomes = []
    for name in workload.validation.suites:
        path = EXPECTATIONS_DIR / f"{name}.yaml"
        if not path.exists():
            raise PhaseFailed(
                f"validation suite '{name}' named in the manifest has no file {path}; add it or fix validation.suites"
            )
        outcomes += object_gates.run_content_suite(object_gates.load_content_suite(path), src.read, tgt.read, keys)
    success = all(o.success for o in outcomes)
    results_key = evidence.put_json(f"{base}/content.json", [o.to_json() for o in outcomes])
    html = render_report_html(f"Content validation: {workload.id}", outcomes, context)
    report_key = evidence.put_bytes(f"{base}/content.html", html.encode(), "text/html; charset=utf-8")
    return {
        "success": success,
        "suites": [{"suite": o.suite, "table": o.table, "success": o.success} for o in outcomes],
        "failure_summary": "\n".join(o.failure_summary() for o in outcomes if not o.success),
        "results_key": results_key,
        "report_key": report_key,
        "report_uri": evidence.uri(report_key[len(evidence.prefix) :]),
    }


def run_shadow_jobs(
    workload: ObjectStoreWorkload,
    source: AzureBlobContainer,
    target: S3Bucket,
    evidence: EvidenceStore,
    name: str,
    *,
    snapshot: dict[str, Any],
    propagate: tuple[type[BaseException], ...] = (),
) -> tuple[Any, str]:
    from bascule.validation.object_shadow import resolve_job, run_shadow

    jobs = [(job.name, resolve_job(job.callable)) for job in workload.shadow_run.jobs if job.callable]
    src, tgt = dataset_readers(workload, source, target, evidence, snapshot)
    report = run_shadow(
        jobs,
        src,
        tgt,
        rel_tol=workload.shadow_run.relative_tolerance,
        abs_tol=workload.shadow_run.absolute_tolerance,
        propagate=propagate,
    )
    key = evidence.put_json(f"{name}/shadow.json", report.to_json())
    return report, key

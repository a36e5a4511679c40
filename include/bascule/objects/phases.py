"""The phases of an object-store workload, as plain functions the Airflow operators call.

Each phase reads what an earlier phase wrote to the evidence (by the key that phase
returned) and writes its own result there; what it returns is small enough for XCom.
One object's path reads straight through: listed once in the snapshot inventory,
copied once by its shard, verified against the hash taken at the source, compared
once in validation, recorded once in the evidence.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bascule.exceptions import BasculeError
from bascule.governance.evidence.store import EVIDENCE_ROOT, EvidenceStore
from bascule.governance.routing import Location, RoutingRegistry
from bascule.objects.compare import ComparisonRow, compare, delta, expected_md5
from bascule.objects.freeze import freeze
from bascule.objects.inventory import read_inventory, shard, write_inventory
from bascule.storage.azure_blob import AzureBlobContainer
from bascule.storage.base import ObjectInfo
from bascule.storage.s3 import S3Bucket
from bascule.workload import ObjectStoreWorkload

SMOKE_SAMPLE = 20


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
    from bascule.objects.copy_config import CopyConfig
    from bascule.objects.shard import copy_shard

    def objects() -> Iterator[ObjectInfo]:
        return shard(read_inventory(evidence, snapshot["inventory_key"]), shard_index, workload.transfer.shards)

    # One extra pass over the (compressed, streamed) inventory buys the on-call log an ETA.
    total_objects = total_bytes = 0
    for info in objects():
        total_objects += 1
        total_bytes += info.size
    report = copy_shard(
        objects(),
        source,
        target,
        source_prefix=workload.source.prefix,
        target_prefix=workload.target.prefix,
        snapshot_id=snapshot["snapshot_id"],
        concurrency=workload.transfer.concurrency,
        config=CopyConfig(preferred_part_size=workload.transfer.part_size_mib * 1024 * 1024),
        progress=progress,
        total_objects=total_objects,
        total_bytes=total_bytes,
    )
    result = report.to_dict()
    name = f"snapshots/{snapshot['snapshot_id']}/transfer/shard-{shard_index:04d}-try{attempt}.json"
    report_key = evidence.put_json(name, {"shard": shard_index, "attempt": attempt, **result})
    summary = {
        "shard": shard_index,
        "copied": report.copied,
        "skipped": report.skipped,
        "failed": report.failed,
        "bytes": report.bytes_copied,
        "retries": report.retries,
        "report_key": report_key,
    }
    if report.failed:
        first = "; ".join(f"'{f.key}': {f.reason}" for f in report.failures[:10])
        raise TransferIncomplete(
            f"shard {shard_index}: {report.failed} object(s) failed, {report.copied} copied, "
            f"{report.skipped} already there. First failures: {first}. Full report: {evidence.uri(name)}. "
            "A retry copies only what is missing."
        )
    return summary


# -- parity -----------------------------------------------------------------------------


def target_inventory(target: S3Bucket, prefix: str, *, concurrency: int = 16) -> Iterator[ObjectInfo]:
    """A fresh inventory of the target with each object's metadata (a HEAD per object).

    A listing has no user metadata, and the recorded source hash lives there.
    Bascule's own files under ``_bascule/`` are not part of the dataset.
    """
    listed = (o for o in target.iter_objects(prefix) if not o.key.startswith(EVIDENCE_ROOT))

    def detailed(info: ObjectInfo) -> ObjectInfo:
        return target.head(info.key) or info

    with ThreadPoolExecutor(concurrency) as pool:
        yield from pool.map(detailed, listed)


def readback_md5(target: S3Bucket) -> Callable[[str], str]:
    def md5_of(key: str) -> str:
        digest = hashlib.md5(usedforsecurity=False)
        stream = target.get_stream(key)
        try:
            for chunk in iter(lambda: stream.read(1024 * 1024), b""):
                digest.update(chunk)
        finally:
            stream.close()
        return base64.b64encode(digest.digest()).decode()

    return md5_of


@dataclass
class ParityOutcome:
    success: bool
    rows: int
    problems: list[dict[str, Any]]
    results_key: str
    report_key: str
    summary: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "objects": self.rows,
            "problems": len(self.problems),
            "results_key": self.results_key,
            "report_key": self.report_key,
        }


def prove_parity(
    workload: ObjectStoreWorkload,
    source_objects: Iterable[ObjectInfo],
    target: S3Bucket,
    evidence: EvidenceStore,
    name: str,
    context: dict[str, Any],
) -> ParityOutcome:
    """Compare the source inventory with a fresh target inventory through the GX parity suite."""
    from bascule.validation import object_gates
    from bascule.validation.report import render_report_html
    rows: list[ComparisonRow] = list(
        compare(
            source_objects,
            # One HEAD per object: as many threads as the client has pooled connections for.
            target_inventory(target, workload.target.prefix, concurrency=workload.transfer.concurrency),
            source_prefix=workload.source.prefix,
            target_prefix=workload.target.prefix,
            readback_md5=readback_md5(target),
        )
    )
    outcome = object_gates.run_parity(r.to_dict() for r in rows)
    problems = [
        r.to_dict() for r in rows if not (r.in_source and r.in_target and r.source_size == r.target_size and r.verified)
    ]
    results_key = evidence.put_json(
        f"{name}/parity.json", {"outcome": outcome.to_json(), "objects": len(rows), "problems": problems[:1000]}
    )
    html = render_report_html(f"Parity: {workload.id}", [outcome], context)
    report_key = evidence.put_bytes(f"{name}/parity.html", html.encode(), "text/html; charset=utf-8")
    return ParityOutcome(outcome.success, len(rows), problems, results_key, report_key, outcome.failure_summary())


def describe_problems(problems: list[dict[str, Any]], limit: int = 20) -> str:
    def why(row: dict[str, Any]) -> str:
        if not row["in_target"]:
            return "missing on the target"
        if not row["in_source"]:
            return "on the target but not in the source snapshot"
        if row["source_size"] != row["target_size"]:
            return f"size {row['target_size']} on the target, {row['source_size']} at the source"
        if row["source_md5"] != row["target_md5"]:
            return f"recorded hash {row['target_md5']} differs from the source's {row['source_md5']}"
        return "target bytes do not match the source hash (read back and hashed)"

    lines = [f"'{row['key']}': {why(row)}" for row in problems[:limit]]
    more = f" (and {len(problems) - limit} more)" if len(problems) > limit else ""
    return "; ".join(lines) + more


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
    final_objects: list[ObjectInfo],
) -> dict[str, Any]:
    """Read a sample of objects through the routing document, as a consumer would, and hash them."""
    current, _ = routing.read(workload.id)
    if current is None or current.live != "scaleway":
        raise PhaseFailed(f"smoke check: routing of '{workload.id}' does not point to Scaleway after the switch")
    live = current.live_location()
    bucket = target_for(live.container)
    md5_of = readback_md5(bucket)
    step = max(1, len(final_objects) // SMOKE_SAMPLE)
    sample = final_objects[::step][:SMOKE_SAMPLE]
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
) -> dict[str, Any]:
    """``before_switch`` runs right before routing switches (the policy's last word); raising stops it."""
    from bascule.objects.copy_config import CopyConfig
    from bascule.objects.shard import copy_shard

    sid = snapshot["snapshot_id"]
    base = f"snapshots/{sid}/cutover-try{attempt}"
    started = time.monotonic()
    # The Azure SDK pools 10 connections per client: more threads would only queue.
    frozen = freeze(container_client, workload.source.prefix, workload.id, concurrency=8)
    frozen_at, frozen_clock = _now(), time.monotonic()
    log(f"source frozen: {frozen.leased} blob(s) leased under '{workload.source.prefix}' at {frozen_at}")

    final = write_inventory(source.iter_objects(workload.source.prefix), evidence, f"{base}/final-inventory.jsonl.gz")
    changes = delta(read_inventory(evidence, snapshot["inventory_key"]), read_inventory(evidence, final.key))
    log(f"delta since snapshot {sid}: {len(changes.changed)} new or modified, {len(changes.deleted)} deleted")
    report = copy_shard(
        changes.changed,
        source,
        target,
        source_prefix=workload.source.prefix,
        target_prefix=workload.target.prefix,
        snapshot_id=sid,
        concurrency=workload.transfer.concurrency,
        config=CopyConfig(preferred_part_size=workload.transfer.part_size_mib * 1024 * 1024),
    )
    if report.failed:
        raise TransferIncomplete(
            f"final delta sync: {report.failed} object(s) failed: {report.to_dict()['failures'][:10]}"
        )
    for key in changes.deleted:
        target.delete(workload.target_key(key))

    parity = prove_parity(workload, read_inventory(evidence, final.key), target, evidence, base, context)
    if not parity.success:
        raise PhaseFailed(
            f"parity after the final delta sync failed; routing NOT switched: {describe_problems(parity.problems)}. "
            f"Report: {evidence.uri(parity.report_key[len(evidence.prefix) :])}"
        )

    azure, scaleway = locations(workload, source, target)
    routing.ensure(workload.id, azure, scaleway, run_id)
    before_switch()
    _, switched = routing.switch(workload.id, "scaleway", run_id, f"cutover of snapshot {sid}")
    switched_at, switched_clock = _now(), time.monotonic()
    log(f"routing of '{workload.id}' now points to {scaleway.describe()} (changed: {switched})")

    smoke = smoke_check(workload, routing, target_for, list(read_inventory(evidence, final.key)))
    record = {
        "snapshot_id": sid,
        "frozen_at": frozen_at,
        "switched_at": switched_at,
        # Writers are blocked from the first lease: the freeze itself counts as downtime.
        "freeze_seconds": round(frozen_clock - started, 3),
        "frozen_to_switch_seconds": round(switched_clock - frozen_clock, 3),
        "freeze_to_switch_seconds": round(switched_clock - started, 3),
        "delta": {
            "changed": [o.key for o in changes.changed][:1000],
            "deleted": changes.deleted[:1000],
            "copied": report.copied,
        },
        "final_inventory_key": final.key,
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

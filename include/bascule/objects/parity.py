"""Parity of an object workload: the source inventory, the transfer records and a target listing, merge-joined.

Run at validate and again at cutover, after the delta sync. No HEAD per object: a
listing (1,000 a page) gives each target object's key, size and ETag; the records
say what the copier verified; only objects neither proves are read back (GET) and
hashed (:mod:`bascule.objects.compare`). Rows stream into the GX gate in batches.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bascule.governance.bucket_rules import ARCHIVE_STORAGE_CLASSES
from bascule.governance.evidence.store import EvidenceStore
from bascule.objects.compare import compare
from bascule.objects.transfer_records import TransferRecord, latest_records, record_files
from bascule.storage.base import ObjectInfo
from bascule.storage.client_side import RUNBOOK
from bascule.storage.s3 import S3Bucket
from bascule.workload import ObjectStoreWorkload


def target_inventory(target: S3Bucket, prefix: str) -> Iterator[ObjectInfo]:
    """A fresh listing of the target (key, size, ETag; 1,000 a page), in S3's key order.

    No HEAD per object: what the metadata used to prove, the transfer records prove
    now (:mod:`bascule.objects.transfer_records`). Every object listed is data: Bascule
    writes nothing of its own into the data bucket (its evidence has its own bucket).
    """
    return iter(target.iter_objects(prefix))


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


MAX_PROBLEMS_LISTED = 1000  # failing objects named in the parity evidence; all are counted


@dataclass
class ParityOutcome:
    success: bool
    rows: int
    problems: list[dict[str, Any]]  # the first MAX_PROBLEMS_LISTED failing objects
    results_key: str
    report_key: str
    summary: str
    problem_count: int = 0  # every failing object, listed or not
    readbacks: int = 0  # objects whose bytes had to be read back (GET) and hashed
    storage_classes: dict[str, int] = field(default_factory=dict)  # of every listed target object

    def to_dict(self) -> dict[str, Any]:
        """The small record XCom and the evidence carry: counts and keys, never the problem list."""
        counts = {"success": self.success, "objects": self.rows, "problems": self.problem_count}
        keys = {"results_key": self.results_key, "report_key": self.report_key}
        return counts | {"readbacks": self.readbacks, "storage_classes": self.storage_classes} | keys


class _StorageClasses:
    """Every listed target object's storage class, tallied as the listing streams (HDS: no archive class)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.archived: list[str] = []  # the first MAX_PROBLEMS_LISTED

    def watch(self, listing: Iterable[ObjectInfo]) -> Iterator[ObjectInfo]:
        for info in listing:
            storage_class = (info.access_tier or "STANDARD").upper()
            self.counts[storage_class] = self.counts.get(storage_class, 0) + 1
            if storage_class in ARCHIVE_STORAGE_CLASSES and len(self.archived) < MAX_PROBLEMS_LISTED:
                self.archived.append(f"{info.key} ({storage_class})")
            yield info


class _ClientSideRecords:
    """On a client-side target: every object's transfer record must say it was sealed under the workload's KEK.

    An object whose record does not (copied before the workload switched to client-side
    encryption, or under another key-encryption key) fails parity by name.
    """

    def __init__(self, kek_fingerprint: str | None):
        self.kek_fingerprint = kek_fingerprint
        self.count = 0
        self.unsealed: list[str] = []  # the first MAX_PROBLEMS_LISTED

    def watch(self, records: Iterable[TransferRecord]) -> Iterator[TransferRecord]:
        for record in records:
            if self.kek_fingerprint is not None and record.client_side_kek != self.kek_fingerprint:
                self.count += 1
                if len(self.unsealed) < MAX_PROBLEMS_LISTED:
                    found = record.client_side_kek or "no client-side encryption"
                    self.unsealed.append(f"{record.target_key} ({found})")
            yield record


def _is_problem(row: dict[str, Any]) -> bool:
    return not (row["in_source"] and row["in_target"] and row["source_size"] == row["target_size"] and row["verified"])


def prove_parity(
    workload: ObjectStoreWorkload,
    source_objects: Iterable[ObjectInfo],
    target: S3Bucket,
    evidence: EvidenceStore,
    name: str,
    context: dict[str, Any],
    *,
    record_keys: Iterable[str] | None = None,
) -> ParityOutcome:
    """Merge-join the source inventory, the transfer records and a target listing through the GX parity gate.

    Memory stays flat: rows stream into the gate in batches and only the first
    :data:`MAX_PROBLEMS_LISTED` failing objects are kept (all are counted). The
    records default to every record file of the snapshot that ``name`` is under
    (``snapshots/<id>/...``): the shards' and any earlier cutover delta's.
    """
    from bascule.validation import object_gates
    from bascule.validation.report import render_report_html

    if record_keys is None:
        record_keys = record_files(evidence, name.rsplit("/", 1)[0] + "/") if "/" in name else []
    md5_of = readback_md5(target)
    readbacks = 0

    def counted_readback(key: str) -> str:
        nonlocal readbacks
        readbacks += 1
        return md5_of(key)

    problems: list[dict[str, Any]] = []
    problem_count = rows = 0
    classes = _StorageClasses()
    kek = getattr(target, "client_side", None)
    sealed = _ClientSideRecords(kek.fingerprint if kek is not None else None)

    def streamed_rows() -> Iterator[dict[str, Any]]:
        nonlocal problem_count, rows
        for row in compare(
            source_objects,
            classes.watch(target_inventory(target, workload.target.prefix)),
            source_prefix=workload.source.prefix,
            target_prefix=workload.target.prefix,
            readback_md5=counted_readback,
            records=sealed.watch(latest_records(evidence, record_keys)),
            etag_is_md5=target.etag_is_md5,
        ):
            data = row.to_dict()
            rows += 1
            if _is_problem(data):
                problem_count += 1
                if len(problems) < MAX_PROBLEMS_LISTED:
                    problems.append(data)
            yield data

    outcome = object_gates.run_parity_streamed(streamed_rows())
    results_key = evidence.put_json(
        f"{name}/parity.json",
        {
            "outcome": outcome.to_json(),
            "objects": rows,
            "problem_count": problem_count,
            "readbacks": readbacks,
            "problems": problems,
            "storage_classes": classes.counts,
            "archived": classes.archived,
            "not_client_side_encrypted": sealed.unsealed,
        },
    )
    html = render_report_html(f"Parity: {workload.id}", [outcome], context)
    report_key = evidence.put_bytes(f"{name}/parity.html", html.encode(), "text/html; charset=utf-8")
    summary = outcome.failure_summary()
    if classes.archived:
        summary = f"{len(classes.archived)} object(s) in an archive class, e.g. {classes.archived[:5]}; {summary}"
    if sealed.count:
        summary = (
            f"{sealed.count} object(s) whose transfer record does not show client-side encryption under key-encryption "
            f"key {sealed.kek_fingerprint}, e.g. {sealed.unsealed[:5]}: re-run the transfer ({RUNBOOK}); {summary}"
        )
    return ParityOutcome(
        outcome.success and not classes.archived and not sealed.count, rows, problems, results_key, report_key, summary, problem_count,
        readbacks, classes.counts,
    )  # fmt: skip


def describe_problems(problems: list[dict[str, Any]], limit: int = 20, total: int | None = None) -> str:
    """The first ``limit`` failing objects and why; ``total`` counts those beyond the listed ``problems``."""

    def why(row: dict[str, Any]) -> str:
        if not row["in_target"]:
            return "missing on the target"
        if not row["in_source"]:
            return "on the target but not in the source snapshot"
        if row["source_size"] != row["target_size"]:
            return f"size {row['target_size']} on the target, {row['source_size']} at the source"
        if row["source_md5"] != row["target_md5"]:
            return f"recorded hash {row['target_md5']} differs from the source's {row['source_md5']}"
        if row["source_md5"] is None:
            return "no hash of this version of the source was recorded: re-run the transfer to copy and record it"
        return "target bytes do not match the source hash (read back and hashed)"

    lines = [f"'{row['key']}': {why(row)}" for row in problems[:limit]]
    count = max(total or 0, len(problems))
    more = f" (and {count - limit} more)" if count > limit else ""
    return "; ".join(lines) + more

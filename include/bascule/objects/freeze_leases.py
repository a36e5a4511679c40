"""Freeze by leases (``cutover.freeze.method: leases``): for small containers only.

Mechanism (works the same on real Azure and on Azurite):

1. a marker in the container's metadata, ``bascule_frozen_by=<workload>``, that
   well-behaved writers check and that the runbook points to;
2. an infinite lease on every blob under the workload's prefix, with a lease id
   derived from the workload id: without that id nobody can overwrite or delete a
   leased blob, and any run of this workload can release the leases later.

Leases do not stop the creation of *new* blobs. The cutover therefore syncs the
delta (new, modified, deleted since the snapshot) after freezing and re-proves
parity on the final listing. It costs one request per blob while writers wait, so it
is refused above ``cutover.freeze.max_objects`` (preflight, and again here); large
containers freeze by their stored access policy (``objects/freeze_access_policy.py``).
"""

from __future__ import annotations

import itertools
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from bascule.exceptions import BasculeError

MARKER = "bascule_frozen_by"
MARKER_SINCE = "bascule_frozen_since"
_NAMESPACE = uuid.UUID("4f0b7a52-4c1e-4a43-9f5b-6d1f2a9c3e11")


class FreezeError(BasculeError):
    """Some blobs could not be frozen: the cutover must not proceed."""


def lease_id_for(workload_id: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"bascule-freeze:{workload_id}"))


@dataclass
class LeaseReport:
    workload_id: str
    leased: int = 0
    released: int = 0
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_up_to(container: Any, prefix: str, cap: int) -> int:
    """How many blobs are under ``prefix``, counting no further than ``cap + 1`` (a bounded listing)."""
    names = container.list_blobs(name_starts_with=prefix or None)
    return sum(1 for _ in itertools.islice(names, cap + 1))


def too_many_message(container_name: str, prefix: str, count: int, cap: int) -> str:
    return (
        f"container '{container_name}' holds more than {cap:,} blobs under prefix '{prefix}' (counted {count:,} "
        f"before stopping); freezing by leases takes one request per blob while writers are blocked, and "
        f"cutover.freeze.max_objects is {cap:,}. Set cutover.freeze.method: stored_access_policy with the "
        f"policy_id the writers' SAS tokens use (docs/runbooks.md#object-freeze-failed)"
    )


def freeze(
    container: Any, prefix: str, workload_id: str, *, concurrency: int = 16, max_objects: int | None = None
) -> LeaseReport:
    """Mark the container and lease every blob under ``prefix``. Idempotent.

    ``max_objects``: refuse before taking any lease if there are more blobs than that (the
    container may have grown since preflight).
    """
    if max_objects is not None and (count := count_up_to(container, prefix, max_objects)) > max_objects:
        raise FreezeError(too_many_message(container.container_name, prefix, count, max_objects))
    report = LeaseReport(workload_id)
    metadata = dict(container.get_container_properties().metadata or {})
    if metadata.get(MARKER) != workload_id:
        metadata.update({MARKER: workload_id, MARKER_SINCE: datetime.now(UTC).isoformat()})
        container.set_container_metadata(metadata)
    lease_id = lease_id_for(workload_id)

    def lease(name: str) -> str | None:
        try:
            container.get_blob_client(name).acquire_lease(lease_duration=-1, lease_id=lease_id)
        except ResourceNotFoundError:
            return None  # deleted since listing: the delta sync will see it gone
        except (ResourceExistsError, HttpResponseError) as exc:
            return f"{name}: {getattr(exc, 'error_code', None) or exc}"
        return ""

    with ThreadPoolExecutor(concurrency) as pool:
        names = (blob.name for blob in container.list_blobs(name_starts_with=prefix or None))
        for outcome in pool.map(lease, names):
            if outcome == "":
                report.leased += 1
            elif outcome:
                report.failures.append(outcome)
    if report.failures:
        raise FreezeError(
            f"could not freeze {len(report.failures)} blob(s) of workload '{workload_id}' "
            f"(leased by someone else?): {report.failures[:10]}. Find the lease holder, then clear the task"
        )
    return report


def unfreeze(container: Any, prefix: str, workload_id: str, *, concurrency: int = 16) -> LeaseReport:
    """Release this workload's leases and remove the marker. Idempotent."""
    from azure.storage.blob import BlobLeaseClient

    report = LeaseReport(workload_id)
    lease_id = lease_id_for(workload_id)

    def release(name: str) -> bool:
        try:
            BlobLeaseClient(container.get_blob_client(name), lease_id=lease_id).release()
        except (ResourceNotFoundError, HttpResponseError):
            return False  # not leased, or leased by someone else: not ours to release
        return True

    with ThreadPoolExecutor(concurrency) as pool:
        names = (blob.name for blob in container.list_blobs(name_starts_with=prefix or None))
        report.released = sum(pool.map(release, names))
    metadata = dict(container.get_container_properties().metadata or {})
    if metadata.get(MARKER) == workload_id:
        metadata.pop(MARKER, None)
        metadata.pop(MARKER_SINCE, None)
        container.set_container_metadata(metadata)
    return report


def frozen_by(container: Any) -> str | None:
    return (container.get_container_properties().metadata or {}).get(MARKER)

"""Freezing writes on the Azure source for the duration of a cutover: which method, and its evidence.

Two methods, named by the manifest's ``cutover.freeze.method`` (docs/workloads.md#cutover):

- ``stored_access_policy`` (``freeze_access_policy``): writers hold SAS tokens bound to a
  named policy; narrowing it to read+list freezes them all in O(1) requests, confirmed by
  a probe write that must be refused before the delta sync starts;
- ``leases`` (``freeze_leases``): one infinite lease per blob, for small containers
  (refused above ``max_objects``).

Both also set the container marker ``bascule_frozen_by=<workload>`` that the runbook
points to. Writers a SAS policy cannot freeze (account keys, Entra ID role assignments)
are a runbook step: docs/runbooks.md#object-freeze-writers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from bascule.objects import freeze_access_policy as policy
from bascule.objects import freeze_leases as leases
from bascule.objects.freeze_leases import MARKER, MARKER_SINCE, FreezeError, frozen_by, lease_id_for
from bascule.workload import Freeze

__all__ = ["MARKER", "MARKER_SINCE", "FreezeError", "FreezeReport", "freeze", "frozen_by", "lease_id_for", "unfreeze"]


@dataclass
class FreezeReport:
    """What a freeze or unfreeze did, for the log and the evidence (``to_dict``)."""

    workload_id: str
    method: str = "leases"
    leased: int = 0
    released: int = 0
    failures: list[str] = field(default_factory=list)
    # stored_access_policy only: the policy before the change, what it was narrowed to, the probe's wait.
    policy_id: str | None = None
    policy_before: dict[str, Any] | None = None
    frozen_permission: str | None = None
    policy_restored: dict[str, Any] | None = None
    probe_wait_seconds: float = 0.0
    probe_attempts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def freeze(
    container: Any,
    prefix: str,
    workload_id: str,
    *,
    concurrency: int = 16,
    config: Freeze | None = None,
    probe: Callable[[], bool] | None = None,
    on_record: Callable[[dict[str, Any]], object] = lambda _: None,
    sleep: Callable[[float], None] = time.sleep,
) -> FreezeReport:
    """Freeze the writers of ``prefix`` by the manifest's method. Idempotent; raises FreezeError.

    ``config=None`` is today's leases without a cap (callers that predate the manifest field).
    ``probe``, ``sleep``: seams for tests of the policy method; ``on_record`` gets the policy
    as it was, before it changes.
    """
    if config is None or config.method == "leases":
        cap = config.max_objects if config is not None else None
        leased = leases.freeze(container, prefix, workload_id, concurrency=concurrency, max_objects=cap)
        return FreezeReport(workload_id, "leases", leased=leased.leased, failures=leased.failures)
    assert config.policy_id is not None  # the manifest model requires it for this method
    done = policy.freeze_policy(
        container,
        workload_id,
        config.policy_id,
        probe_timeout_seconds=config.probe_timeout_seconds,
        probe=probe,
        on_record=on_record,
        sleep=sleep,
    )
    return FreezeReport(
        workload_id,
        "stored_access_policy",
        policy_id=done.policy_id,
        policy_before=done.before,
        frozen_permission=done.frozen_permission,
        probe_wait_seconds=round(done.probe_wait_seconds, 3),
        probe_attempts=done.probe_attempts,
    )


def unfreeze(
    container: Any, prefix: str, workload_id: str, *, concurrency: int = 16, config: Freeze | None = None
) -> FreezeReport:
    """Undo this workload's freeze. Idempotent.

    A recorded policy is restored whatever the manifest says now (the record on the container
    is what was changed); leases are only released for the leases method, because releasing
    lists every blob, which the policy method exists to avoid.
    """
    restored = policy.restore_policy(container, workload_id)
    method = "leases" if config is None else config.method
    report = FreezeReport(workload_id, method, policy_restored=restored)
    if restored is not None:
        report.policy_id = restored["policy_id"]
    if method == "leases":
        report.released = leases.unfreeze(container, prefix, workload_id, concurrency=concurrency).released
    return report


def describe_freeze(report: FreezeReport, prefix: str) -> str:
    """One log line an on-call engineer can act on."""
    if report.method == "leases":
        return f"{report.leased} blob(s) leased under '{prefix}'"
    before = (report.policy_before or {}).get("permission")
    return (
        f"stored access policy '{report.policy_id}' narrowed from '{before}' to '{report.frozen_permission}'; "
        f"a probe write was refused after {report.probe_wait_seconds:.1f} s ({report.probe_attempts} attempt(s))"
    )

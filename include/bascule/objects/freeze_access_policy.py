"""Freeze by revoking write access: the container's stored access policy, in O(1) requests.

Writers hold SAS tokens bound to a stored access policy (``si=<policy_id>``). Narrowing
that one policy to read+list cuts every such token off at once, whatever the number of
blobs: a few requests instead of one lease per blob while writers wait.

What the freeze changes is recorded before it changes anything, twice: in the report
(the cutover puts it in the evidence) and in the container's metadata, next to the
freeze marker, so that any later run (retry, rollback, another worker) restores exactly
what was there without needing this run's memory.

Azure documents that a policy change may take up to 30 s to take effect, so the freeze
is only done when a probe write with a SAS of that policy is refused (403); until then
the delta sync must not start, or a write could land after the final listing.
Runbook: docs/runbooks.md#object-freeze-failed.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from bascule.objects.freeze_leases import MARKER, MARKER_SINCE, FreezeError

# The policy as it was before the freeze (base64 JSON: metadata values are ASCII header values).
RECORD = "bascule_frozen_policy"
PROBE_PREFIX = "_bascule_freeze_probe/"
RUNBOOK = "docs/runbooks.md#object-freeze-failed"
WRITERS_RUNBOOK = "docs/runbooks.md#object-freeze-writers"
# Only these survive a freeze: a frozen policy never grants what it did not grant before.
_KEPT = "rl"


class PolicyFreezeError(FreezeError):
    """The stored access policy could not freeze the writers: the cutover must not go on."""


@dataclass(frozen=True)
class PolicyState:
    """One stored access policy, exactly as the service returned it (times as ISO strings)."""

    policy_id: str
    permission: str | None
    start: str | None
    expiry: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"policy_id": self.policy_id, "permission": self.permission, "start": self.start, "expiry": self.expiry}

    def encode(self) -> str:
        return base64.b64encode(json.dumps(self.to_dict(), sort_keys=True).encode()).decode()

    @classmethod
    def decode(cls, text: str) -> PolicyState:
        data = json.loads(base64.b64decode(text))
        return cls(data["policy_id"], data["permission"], data["start"], data["expiry"])


def _iso(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return str(value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))


def read_policies(container: Any) -> tuple[Any, dict[str, PolicyState]]:
    """``(public_access, {policy_id: state})`` of the container, in one request."""
    acl = container.get_container_access_policy()
    policies = {}
    for identifier in acl["signed_identifiers"]:
        policy = identifier.access_policy
        policies[identifier.id] = PolicyState(
            identifier.id,
            getattr(policy, "permission", None),
            _iso(getattr(policy, "start", None)),
            _iso(getattr(policy, "expiry", None)),
        )
    return acl["public_access"], policies


def missing_policy_message(container_name: str, policy_id: str, existing: list[str]) -> str:
    return (
        f"stored access policy '{policy_id}' does not exist on container '{container_name}' "
        f"(policies there: {sorted(existing) or 'none'}); set cutover.freeze.policy_id to the policy the "
        f"writers' SAS tokens are bound to (their 'si=' parameter), or create it and re-issue the tokens "
        f"({RUNBOOK})"
    )


def frozen_permission(state: PolicyState, container_name: str) -> str:
    """The policy's permissions without any write: never more than it granted before."""
    if not state.permission:
        raise PolicyFreezeError(
            f"stored access policy '{state.policy_id}' on container '{container_name}' sets no permissions: its "
            "tokens carry their own, which no policy change can narrow. Give the policy its permissions and "
            f"re-issue the tokens without 'sp=', or use cutover.freeze.method: leases ({RUNBOOK})"
        )
    return "".join(p for p in _KEPT if p in state.permission)


def _write(container: Any, public_access: Any, policies: dict[str, PolicyState], changed: PolicyState) -> None:
    """Set one policy, keeping the others and the public access level as they are.

    The service replaces the whole list, and omitting the public access header makes the
    container private: both are passed back exactly as read.
    """
    from azure.storage.blob import AccessPolicy

    merged = {**policies, changed.policy_id: changed}
    container.set_container_access_policy(
        {p.policy_id: AccessPolicy(permission=p.permission, start=p.start, expiry=p.expiry) for p in merged.values()},
        public_access=public_access,
    )


def sas_probe(container: Any, workload_id: str, policy_id: str, **client_kwargs: Any) -> Callable[[], bool]:
    """A probe that writes one tiny blob with a SAS of ``policy_id``; True while writes are accepted.

    Signing the SAS needs the account key of the source connection (a SAS bound to a
    stored access policy cannot be a user-delegation SAS). ``client_kwargs`` go to the
    probe's BlobClient (e.g. ``raw_response_hook`` to count its requests).
    """
    from azure.storage.blob import BlobClient, generate_blob_sas

    key = getattr(container.credential, "account_key", None)
    if not key:
        raise PolicyFreezeError(
            f"cannot sign a probe SAS for policy '{policy_id}' on container '{container.container_name}': the "
            "source connection has no account key. Give the connection the account key, or use "
            f"cutover.freeze.method: leases ({RUNBOOK})"
        )
    name = f"{PROBE_PREFIX}{workload_id}"
    account_url = container.url.rsplit("/", 1)[0]  # the container URL ends with its name

    def probe() -> bool:
        sas = generate_blob_sas(
            container.account_name, container.container_name, name, account_key=key, policy_id=policy_id
        )
        blob = BlobClient(account_url, container.container_name, name, credential=sas, **client_kwargs)
        try:
            blob.upload_blob(b"bascule freeze probe", overwrite=True)
        except HttpResponseError as exc:
            if exc.status_code == 403:
                return False
            raise
        # It was written: remove it with the connection's own rights (the policy may not allow delete).
        try:
            container.delete_blob(name)
        except ResourceNotFoundError:
            pass
        return True

    return probe


@dataclass
class PolicyFreeze:
    """What a policy freeze did: the evidence of the change and of the wait."""

    policy_id: str
    before: dict[str, Any]
    frozen_permission: str
    public_access: Any
    probe_wait_seconds: float
    probe_attempts: int


def freeze_policy(
    container: Any,
    workload_id: str,
    policy_id: str,
    *,
    probe_timeout_seconds: float = 60.0,
    probe: Callable[[], bool] | None = None,
    on_record: Callable[[dict[str, Any]], object] = lambda _: None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> PolicyFreeze:
    """Narrow ``policy_id`` to read+list, then wait until a probe write is refused. Idempotent.

    ``on_record`` receives the policy as it was before anything changes (the cutover writes
    it to the evidence). ``probe`` is a seam for tests; by default a SAS write (``sas_probe``).
    """
    name = container.container_name
    public_access, policies = read_policies(container)
    if policy_id not in policies:
        raise PolicyFreezeError(missing_policy_message(name, policy_id, list(policies)))
    metadata = dict(container.get_container_properties().metadata or {})
    if metadata.get(MARKER) == workload_id and RECORD in metadata:
        # A retry: the policy is (partly) frozen already; what was there first is the record.
        before = PolicyState.decode(metadata[RECORD])
    else:
        before = policies[policy_id]
    narrowed = frozen_permission(before, name)
    check = probe or sas_probe(container, workload_id, policy_id)
    on_record(before.to_dict())
    if metadata.get(RECORD) != before.encode():
        # Written before the policy changes: a crash after this line leaves a restorable state.
        metadata.update({MARKER: workload_id, MARKER_SINCE: datetime.now(UTC).isoformat(), RECORD: before.encode()})
        container.set_container_metadata(metadata)
    if policies[policy_id].permission != narrowed:
        _write(container, public_access, policies, PolicyState(policy_id, narrowed, before.start, before.expiry))

    started, attempts = clock(), 0
    while True:
        attempts += 1
        if not check():
            return PolicyFreeze(policy_id, before.to_dict(), narrowed, public_access, clock() - started, attempts)
        waited = clock() - started
        if waited >= probe_timeout_seconds:
            break
        sleep(min(1.0, max(probe_timeout_seconds - waited, 0.0)))
    restore_policy(container, workload_id)
    raise PolicyFreezeError(
        f"a write with a SAS of policy '{policy_id}' on container '{name}' was still accepted {waited:.0f} s after "
        f"narrowing the policy to '{narrowed}': it is not the policy the writers use, or the service did not apply "
        f"it. The policy is restored to '{before.permission}' and the cutover stopped before the delta sync; "
        f"routing is unchanged ({RUNBOOK})"
    )


def restore_policy(container: Any, workload_id: str) -> dict[str, Any] | None:
    """Put the recorded policy back exactly, then drop the record and marker. Idempotent.

    Returns what was restored, or None if this workload had no policy frozen.
    """
    metadata = dict(container.get_container_properties().metadata or {})
    if metadata.get(MARKER) != workload_id or RECORD not in metadata:
        return None
    before = PolicyState.decode(metadata[RECORD])
    public_access, policies = read_policies(container)
    if policies.get(before.policy_id) != before:
        # Restored first, record dropped second: a crash in between restores again, harmlessly.
        _write(container, public_access, policies, before)
    for key in (MARKER, MARKER_SINCE, RECORD):
        metadata.pop(key, None)
    container.set_container_metadata(metadata)
    return before.to_dict()

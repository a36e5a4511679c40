"""The application that keeps writing objects to the demo's source container, through a SAS.

It stands in for an object workload's real writers: it holds only a container SAS bound
to the container's stored access policy (``si=<policy>``), never the account key, so the
cutover's freeze (the policy narrowed to read+list, docs/workloads.md#cutover) cuts it
off exactly as it cuts off a real one. Each attempt goes to a JSON Lines log in the
format of :mod:`bascule.synthetic.writes_log`:

- ``acknowledged`` once the service answered the PUT, with the blob's MD5: those are
  the writes the migration must not lose;
- ``refused`` on 403 (the freeze): nothing was written;
- ``failed`` on anything else (a timeout is in doubt: the check never counts it).

:func:`check_blob_target` then names every acknowledged write that is not on the target
bucket with the same bytes. Every write is a new blob under ``app-writes/``, so the
last acknowledged version of a key is its only one. The SDKs are imported where used.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bascule.synthetic.writes_log import ACKNOWLEDGED, FAILED, REFUSED, LogWatching, WriterStats, read_log

WRITES_PREFIX = "app-writes/"
# What an application's SAS needs: read, add, create, write, list (no delete).
WRITER_PERMISSION = "racwl"


def create_writer_policy(container: Any, policy_id: str, *, days: int = 7) -> None:
    """What the platform's ops do once: the stored access policy the writers' SAS tokens are bound to.

    Other policies and the public access level are kept (the service replaces the whole list).
    """
    from azure.storage.blob import AccessPolicy

    acl = container.get_container_access_policy()
    policies = {i.id: i.access_policy for i in acl["signed_identifiers"]}
    expiry = (datetime.now(UTC) + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    policies[policy_id] = AccessPolicy(permission=WRITER_PERMISSION, expiry=expiry)
    container.set_container_access_policy(policies, public_access=acl["public_access"])


def writer_sas(account_name: str, account_key: str, container: str, policy_id: str) -> str:
    """A container SAS that carries no permission of its own: the policy decides, so narrowing it revokes it."""
    from azure.storage.blob import generate_container_sas

    return generate_container_sas(account_name, container, account_key=account_key, policy_id=policy_id)


class BlobWriter(LogWatching):
    """Writes a small JSON blob every ``interval`` seconds until stopped; slower once refused.

    A thread, not a process: it only waits on HTTP, and the demo and tests read its log
    while it runs. ``client_kwargs`` go to the SDK's ContainerClient.
    """

    def __init__(
        self,
        account_url: str,
        container: str,
        sas: str,
        log_path: str | Path,
        *,
        interval: float = 0.5,
        refused_interval: float = 2.0,
        **client_kwargs: Any,
    ):
        from azure.storage.blob import ContainerClient

        self._client = ContainerClient(account_url, container, credential=sas, **client_kwargs)
        self.log_path = Path(log_path)
        self._interval, self._refused_interval = interval, refused_interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bascule-blob-writer", daemon=True)
        self._seq = 0

    def start(self) -> BlobWriter:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_text("")
        self._thread.start()
        return self

    def stop(self, timeout: float = 15.0) -> WriterStats:
        self._stop.set()
        self._thread.join(timeout)
        return self.stats()

    def _run(self) -> None:
        with open(self.log_path, "a", encoding="utf-8") as log:
            while not self._stop.is_set():
                status = self._write_one(log)
                self._stop.wait(self._refused_interval if status == REFUSED else self._interval)

    def _write_one(self, log: Any) -> str:
        from azure.core.exceptions import HttpResponseError

        self._seq += 1
        key = f"{WRITES_PREFIX}{self._seq:06d}.json"
        body = json.dumps({"seq": self._seq, "written_at": datetime.now(UTC).isoformat()}).encode()
        record: dict[str, Any] = {"seq": self._seq, "key": key}
        try:
            self._client.upload_blob(key, body, overwrite=True)
        except HttpResponseError as exc:
            status = REFUSED if exc.status_code == 403 else FAILED
            record["error"] = f"HTTP {exc.status_code}: {str(exc).splitlines()[0]}"
        except Exception as exc:  # a timeout or reset: in doubt, so never counted as acknowledged
            status, record["error"] = FAILED, f"{type(exc).__name__}: {exc}"
        else:
            status, record["md5"] = ACKNOWLEDGED, base64.b64encode(hashlib.md5(body).digest()).decode()
        record.update(status=status, at=datetime.now(UTC).isoformat())
        # One line per write, flushed: the log is read while the writer runs.
        log.write(json.dumps(record) + "\n")
        log.flush()
        return status

    def __enter__(self) -> BlobWriter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def acknowledged_writes(log: str | Path) -> Iterator[dict[str, Any]]:
    return (r for r in read_log(log) if r.get("status") == ACKNOWLEDGED)


def check_blob_target(
    s3_client: Any, bucket: str, log: str | Path, *, target_key: Callable[[str], str] = lambda key: key
) -> list[str]:
    """Every acknowledged write that is not on ``bucket`` with its bytes, as ``'<key>': why``; [] if all are."""
    problems = []
    for record in acknowledged_writes(log):
        key = target_key(record["key"])
        try:
            body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except s3_client.exceptions.NoSuchKey:
            problems.append(f"'{key}': acknowledged at {record['at']}, missing on the target")
            continue
        if base64.b64encode(hashlib.md5(body).digest()).decode() != record["md5"]:
            problems.append(f"'{key}': acknowledged at {record['at']}, different bytes on the target")
    return problems

"""Where a workload is live: the routing registry consumers read.

One JSON document per workload, ``_bascule/routing/<workload>.json`` in the workload's
evidence bucket (``evidence.bucket``; never an object workload's data bucket, which holds
the source's objects only). Consumers (jobs, notebooks, APIs) read it to learn where to find the data;
switching a workload is rewriting that document. Writes are compare-and-swap on the
document's ETag (``If-Match`` / ``If-None-Match``), so two runs can never switch the
same workload at once without one of them noticing. The document keeps its history.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from botocore.exceptions import ClientError

from bascule.exceptions import BasculeError, StoreAccessError

Side = Literal["azure", "scaleway"]
ROUTING_PREFIX = "_bascule/routing/"


class RoutingConflict(BasculeError):
    """Someone else changed the routing document between our read and our write."""


@dataclass(frozen=True)
class Location:
    side: Side
    endpoint: str
    container: str  # container (Azure) or bucket (S3)
    prefix: str

    def describe(self) -> str:
        return f"{self.side}:{self.endpoint}/{self.container}/{self.prefix}"


@dataclass
class Routing:
    workload_id: str
    live: Side
    locations: dict[str, Location]
    updated_at: str
    updated_by_run: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def live_location(self) -> Location:
        return self.locations[self.live]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Routing:
        locations = {side: Location(**loc) for side, loc in data["locations"].items()}
        return cls(**{**data, "locations": locations})


class RoutingRegistry:
    def __init__(self, client: Any, bucket: str):
        self._client = client
        self.bucket = bucket

    def key(self, workload_id: str) -> str:
        return f"{ROUTING_PREFIX}{workload_id}.json"

    def read(self, workload_id: str) -> tuple[Routing | None, str | None]:
        """The current routing and its ETag, or (None, None) if the workload was never routed."""
        try:
            answer = self._client.get_object(Bucket=self.bucket, Key=self.key(workload_id))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None, None
            raise StoreAccessError(
                f"routing document s3://{self.bucket}/{self.key(workload_id)}: {exc}", retryable=True
            ) from None
        return Routing.from_json(json.loads(answer["Body"].read())), answer["ETag"]

    def ensure(self, workload_id: str, azure: Location, scaleway: Location, run_id: str) -> Routing:
        """Register the workload as live on Azure if it has no routing yet."""
        current, _ = self.read(workload_id)
        if current is not None:
            return current
        routing = Routing(
            workload_id, "azure", {"azure": azure, "scaleway": scaleway}, _now(), run_id,
            history=[{"at": _now(), "live": "azure", "run_id": run_id, "reason": "registered"}],
        )  # fmt: skip
        self._write(routing, etag=None)
        return routing

    def switch(self, workload_id: str, to: Side, run_id: str, reason: str) -> tuple[Routing, bool]:
        """Make ``to`` live. Returns the routing and whether anything changed (idempotent)."""
        current, etag = self.read(workload_id)
        if current is None:
            raise RoutingConflict(f"workload '{workload_id}' has no routing document; run the migration DAG first")
        if current.live == to:
            return current, False
        current.history.append({"at": _now(), "live": to, "run_id": run_id, "reason": reason, "previous": current.live})
        current.live = to
        current.updated_at = _now()
        current.updated_by_run = run_id
        self._write(current, etag=etag)
        return current, True

    def _write(self, routing: Routing, etag: str | None) -> None:
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        body = json.dumps(routing.to_json(), indent=2).encode()
        try:
            self._client.put_object(
                Bucket=self.bucket,
                Key=self.key(routing.workload_id),
                Body=body,
                ContentType="application/json",
                # S3 requires a Content-MD5 (or checksum) for any write into an Object Lock bucket (evidence buckets).
                ContentMD5=base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode(),
                **condition,
            )
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 412:
                raise RoutingConflict(
                    f"routing of '{routing.workload_id}' changed while this run was switching it; "
                    "read the routing document's history, then clear the task to retry"
                ) from None
            raise StoreAccessError(f"routing document write failed: {exc}", retryable=True) from None


def _now() -> str:
    return datetime.now(UTC).isoformat()

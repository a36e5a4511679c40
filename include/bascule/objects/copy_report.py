"""What a copy reports: one object's outcome, a shard's tally, and the heartbeats of a running shard."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from bascule.progress import fmt_bytes as _fmt_bytes  # one formatter for every progress line

Status = Literal["copied", "skipped", "failed"]


@dataclass(frozen=True)
class CopyOutcome:
    key: str
    status: Status
    bytes: int
    md5_b64: str | None
    seconds: float
    reason: str = ""
    target_key: str = ""
    retries: int = 0
    multipart: bool = False
    # How the server checked the bytes of a copy: "content-md5" (every PUT or part carried a
    # Content-MD5 the server verified) or "etag" (a streamed part's ETag matched its MD5).
    server_check: str | None = None


@dataclass(frozen=True)
class ShardFailure:
    key: str
    target_key: str
    reason: str


@dataclass
class ShardReport:
    snapshot_id: str
    objects: int = 0
    copied: int = 0
    skipped: int = 0
    failed: int = 0
    bytes_copied: int = 0
    bytes_skipped: int = 0
    retries: int = 0
    seconds: float = 0.0
    failures: list[ShardFailure] = field(default_factory=list)
    stopped: str | None = None  # why the shard stopped before its end, if it did

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.stopped is None

    @property
    def bytes(self) -> int:
        """Bytes copied (skipped objects excluded)."""
        return self.bytes_copied

    @property
    def rate_mb_s(self) -> float:
        return self.bytes_copied / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def add(self, outcome: CopyOutcome) -> None:
        self.objects += 1
        self.retries += outcome.retries
        if outcome.status == "copied":
            self.copied += 1
            self.bytes_copied += outcome.bytes
        elif outcome.status == "skipped":
            self.skipped += 1
            self.bytes_skipped += outcome.bytes
        else:
            self.failed += 1
            self.failures.append(ShardFailure(outcome.key, outcome.target_key, outcome.reason))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able record (large shards: write it to object storage, pass its key by XCom)."""
        data = asdict(self)
        data["ok"] = self.ok
        data["bytes"] = self.bytes_copied
        data["rate_mb_s"] = round(self.rate_mb_s, 3)
        data["seconds"] = round(self.seconds, 3)
        return data

    def summary(self) -> str:
        line = (
            f"shard of snapshot {self.snapshot_id}: {self.objects:,} objects, copied {self.copied:,} "
            f"({_fmt_bytes(self.bytes_copied)}), skipped {self.skipped:,}, failed {self.failed:,}, "
            f"{self.retries:,} retries, {self.seconds:.1f} s, {self.rate_mb_s:.1f} MB/s"
        )
        if self.stopped:
            line += f"; {self.stopped}"
        elif self.failures:
            line += f"; first failure: {self.failures[0].key}: {self.failures[0].reason}"
        return line


@dataclass(frozen=True)
class Progress:
    """A heartbeat of a running shard, for the on-call log."""

    objects_done: int
    objects_total: int | None
    copied: int
    skipped: int
    failed: int
    bytes_done: int  # copied + skipped objects, plus bytes already sent of objects in flight
    bytes_total: int | None
    elapsed_s: float
    rate_mb_s: float  # bytes actually transferred per second (skips excluded)
    eta_s: float | None

    def describe(self) -> str:
        objects = f"{self.objects_done:,}" + (f"/{self.objects_total:,}" if self.objects_total is not None else "")
        size = _fmt_bytes(self.bytes_done) + (f" of {_fmt_bytes(self.bytes_total)}" if self.bytes_total else "")
        eta = f", ETA {_fmt_duration(self.eta_s)}" if self.eta_s is not None else ""
        return (
            f"{objects} objects (copied {self.copied:,}, skipped {self.skipped:,}, failed {self.failed:,}), "
            f"{size}, {self.rate_mb_s:.1f} MB/s{eta}"
        )


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"

"""Copy a snapshot shard with a pool of threads: bounded in memory, tallied in a report, heartbeats on the way."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Container, Iterable, Iterator, Sequence, Sized
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

from bascule.exceptions import BasculeError
from bascule.objects.copy_config import CopyConfig
from bascule.objects.copy_engine import copy_object
from bascule.objects.copy_report import CopyOutcome, Progress, ShardReport
from bascule.objects.transfer_records import TransferRecord
from bascule.storage.base import ObjectInfo

if TYPE_CHECKING:
    from bascule.storage.azure_blob import AzureBlobContainer
    from bascule.storage.s3 import S3Bucket

log = logging.getLogger(__name__)

# copy_shard(target_keys="auto") on an iterable of unknown length lists at most this many keys.
AUTO_LIST_MAX_KEYS = 100_000


def target_key_for(key: str, source_prefix: str, target_prefix: str) -> str:
    """Where a source key lands: ``target_prefix`` + the key without ``source_prefix``."""
    if not key.startswith(source_prefix):
        raise ValueError(f"blob '{key}' is not under the source prefix '{source_prefix}'")
    return target_prefix + key[len(source_prefix) :]


def list_target_keys(target: S3Bucket, prefix: str) -> set[str]:
    """Keys under ``prefix`` at the target (a fresh listing): pass as ``copy_shard(target_keys=...)``.

    One LIST per 1,000 keys instead of one HEAD per object; worth it on a first run
    into an empty or sparse prefix, where most keys are absent.
    """
    return {info.key for info in target.iter_objects(prefix)}


def copy_shard(
    objects: Iterable[ObjectInfo],
    source: AzureBlobContainer,
    target: S3Bucket,
    *,
    target_prefix: str,
    source_prefix: str,
    snapshot_id: str,
    concurrency: int = 8,
    progress: Callable[[Progress], None] | None = None,
    progress_interval_s: float = 10.0,
    config: CopyConfig | None = None,
    part_size: int | None = None,
    target_keys: Container[str] | Literal["auto"] | None = "auto",
    total_objects: int | None = None,
    total_bytes: int | None = None,
    cancel: threading.Event | None = None,
    stop_after_failures: int | None = 100,
    records: Callable[[TransferRecord], None] | None = None,
) -> ShardReport:
    """Copy every object of ``objects`` (a snapshot shard) with ``concurrency`` threads.

    - One object's failure never stops the shard: it is counted, with its reason,
      in the report. Raises only for bad arguments, or when the calling thread is
      interrupted (after cancelling and draining the workers).
    - ``objects`` is consumed lazily through a bounded window: memory stays flat
      for 100k objects.
    - Keys absent from ``target_keys`` skip the HEAD of the idempotency check
      (present ones still get one, for their metadata). ``"auto"`` lists
      ``target_prefix`` first, unless it holds far more keys than the shard
      (:data:`AUTO_LIST_MAX_KEYS` when the shard's length is unknown); None HEADs
      every object; or pass the keys of a fresh listing (:func:`list_target_keys`).
    - ``progress`` gets a :class:`Progress` every ``progress_interval_s`` and once
      at the end, on the calling thread.
    - ``part_size`` is a shortcut for ``config.preferred_part_size``.
    - Setting ``cancel`` stops the shard between chunks; multipart uploads in
      flight are aborted. So does a run of ``stop_after_failures`` failures in a
      row (None: never), which smells systemic (revoked key, full quota): grinding
      through 100k objects would only bury the cause; ``report.stopped`` says why.
    - ``records`` gets a :class:`TransferRecord` per copied or skipped object, on
      the calling thread, as copies finish (in that order, not the input's).
    """
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    cfg = config or CopyConfig()
    if part_size is not None:
        cfg = dataclasses.replace(cfg, preferred_part_size=part_size)
    objects_total = total_objects if total_objects is not None else _len_or_none(objects)
    if target_keys == "auto":
        target_keys = _auto_target_keys(target, target_prefix, objects_total)
    if total_bytes is None and isinstance(objects, Sequence):
        total_bytes = sum(o.size for o in objects)
    run = _ShardRun(
        source=source,
        target=target,
        source_prefix=source_prefix,
        target_prefix=target_prefix,
        snapshot_id=snapshot_id,
        config=cfg,
        target_keys=target_keys,
        stop=cancel or threading.Event(),
        stop_after_failures=stop_after_failures,
        records=records,
    )
    heartbeat = _Heartbeat(
        run=run, progress=progress, interval_s=progress_interval_s, objects_total=objects_total, total_bytes=total_bytes
    )
    return run.copy_all(objects, concurrency, heartbeat)


class _Meter:
    """Bytes in motion across threads, for progress lines."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, n: int) -> None:
        with self._lock:
            self.value += n


@dataclass(eq=False)
class _ShardRun:
    """One call of :func:`copy_shard`: copies objects on worker threads and tallies them on the calling one."""

    source: AzureBlobContainer
    target: S3Bucket
    source_prefix: str
    target_prefix: str
    snapshot_id: str
    config: CopyConfig
    target_keys: Container[str] | None
    stop: threading.Event
    stop_after_failures: int | None
    records: Callable[[TransferRecord], None] | None = None
    report: ShardReport = field(init=False)
    witness: _EtagWitness | None = field(init=False, default=None)
    meter: _Meter = field(init=False, default_factory=_Meter)  # bytes sent of copies still in flight
    finished_bytes: int = field(init=False, default=0)  # copied + skipped objects
    started: float = field(init=False, default_factory=time.monotonic)
    _consecutive_failures: int = field(init=False, default=0)
    # No more objects to pull: the input ran out, or the shard is stopping.
    _exhausted: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.report = ShardReport(snapshot_id=self.snapshot_id)
        if self.records is not None:
            self.witness = _EtagWitness(self.target)

    def copy_all(self, objects: Iterable[ObjectInfo], concurrency: int, heartbeat: _Heartbeat) -> ShardReport:
        pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="bascule-copy")
        try:
            # Enough queued work to keep threads busy, little held in memory.
            self._drive(pool, iter(objects), 2 * concurrency, heartbeat)
        except BaseException:
            # Interrupted (task killed, timeout): stop workers between chunks; multipart
            # uploads in flight abort themselves; nothing half-written stays visible.
            self.stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        self.report.seconds = time.monotonic() - self.started
        heartbeat.beat()
        log.info("%s", self.report.summary())
        return self.report

    def _drive(
        self, pool: ThreadPoolExecutor, objects: Iterator[ObjectInfo], window: int, heartbeat: _Heartbeat
    ) -> None:
        pending: dict[Future[CopyOutcome], ObjectInfo] = {}
        while True:
            while not self._exhausted and len(pending) < window:
                obj = next(objects, None)
                if obj is None:
                    self._exhausted = True
                    break
                pending[pool.submit(self._copy_one, obj)] = obj
            if not pending:
                return
            done, _ = wait(pending, timeout=heartbeat.seconds_to_next(), return_when=FIRST_COMPLETED)
            for future in done:
                self._record(pending.pop(future), future)
            heartbeat.beat_if_due()

    def _copy_one(self, obj: ObjectInfo) -> CopyOutcome:
        try:
            tkey = target_key_for(obj.key, self.source_prefix, self.target_prefix)
        except ValueError as exc:
            return CopyOutcome(obj.key, "failed", obj.size, None, 0.0, f"{exc}; the shard was built wrongly")
        absent = self.target_keys is not None and tkey not in self.target_keys
        sent = 0

        def counted(n: int) -> None:
            nonlocal sent
            sent += n
            self.meter.add(n)

        try:
            return copy_object(
                obj,
                self.source,
                cast("S3Bucket", self.witness) if self.witness is not None else self.target,
                snapshot_id=self.snapshot_id,
                target_key=tkey,
                config=self.config,
                target_absent=absent,
                on_bytes=counted,
                cancel=self.stop,
            )
        finally:
            self.meter.add(-sent)  # the finished object is accounted for in the report now

    def _record(self, obj: ObjectInfo, future: Future[CopyOutcome]) -> None:
        try:
            outcome = future.result()
        except Exception as exc:  # copy_object returns failures; this is a bug, keep going
            log.exception("copy of '%s' crashed", obj.key)
            outcome = CopyOutcome(obj.key, "failed", obj.size, None, 0.0, f"unexpected {exc!r}")
        self.report.add(outcome)
        if self.witness is not None:
            etag = self.witness.take(outcome.target_key)
            if self.records is not None and outcome.status != "failed":
                self.records(_record_of(obj, outcome, etag, self.target))
        if outcome.status != "failed":
            self.finished_bytes += outcome.bytes
            self._consecutive_failures = 0
        elif not self.stop.is_set():
            self._consecutive_failures += 1
            if self.stop_after_failures is not None and self._consecutive_failures >= self.stop_after_failures:
                self._stop_as_systemic(outcome)

    def _stop_as_systemic(self, last: CopyOutcome) -> None:
        self.report.stopped = (
            f"stopped after {self._consecutive_failures} failures in a row (last: {last.key}: "
            f"{last.reason}); something systemic is wrong (credentials, network, quota): fix "
            "it and re-run, copied objects are skipped"
        )
        log.error("%s", self.report.stopped)
        self.stop.set()
        self._exhausted = True  # pull no more objects; those in flight end as cancelled


def _record_of(obj: ObjectInfo, outcome: CopyOutcome, target_etag: str | None, target: S3Bucket) -> TransferRecord:
    sse_c, client_side = target.sse_c, getattr(target, "client_side", None)
    return TransferRecord(
        key=obj.key,
        target_key=outcome.target_key,
        status="copied" if outcome.status == "copied" else "skipped",
        size=obj.size,
        source_etag=obj.etag,
        md5=outcome.md5_b64,
        md5_checked_at_source=obj.content_md5 is not None and outcome.md5_b64 == obj.content_md5,
        target_etag=target_etag,
        multipart=outcome.multipart,
        server_check=outcome.server_check if outcome.status == "copied" else None,
        sse_c_key_md5=sse_c.fingerprint if sse_c is not None else None,
        client_side_kek=client_side.fingerprint if client_side is not None else None,
    )


class _EtagWitness:
    """The target, remembering per key the last ETag it answered (PUT, CompleteMultipartUpload, CopyObject, HEAD).

    The copier returns what it verified but not the ETag the target gave the object;
    parity needs that ETag to tell, from a listing alone, that the object was not
    rewritten since. Memory: one entry per object in flight, taken when it finishes.
    """

    def __init__(self, target: S3Bucket):
        self._target = target
        self._lock = threading.Lock()
        self._etags: dict[str, str | None] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)

    def take(self, key: str) -> str | None:
        with self._lock:
            return self._etags.pop(key, None)

    def _saw(self, key: str, etag: str | None) -> None:
        with self._lock:
            self._etags[key] = etag

    def head(self, key: str) -> ObjectInfo | None:
        found = self._target.head(key)
        self._saw(key, found.etag if found is not None else None)
        return found

    def put_object(self, key: str, *args: Any, **kwargs: Any) -> str:
        etag = self._target.put_object(key, *args, **kwargs)
        self._saw(key, etag)
        return etag

    def complete_multipart(self, key: str, *args: Any, **kwargs: Any) -> str:
        etag = self._target.complete_multipart(key, *args, **kwargs)
        self._saw(key, etag)
        return etag

    def replace_metadata(self, key: str, **kwargs: Any) -> str:
        etag = self._target.replace_metadata(key, **kwargs)
        self._saw(key, etag)
        return etag


@dataclass(eq=False)
class _Heartbeat:
    """The :class:`Progress` lines of a running shard, every ``interval_s`` and once at its end."""

    run: _ShardRun
    progress: Callable[[Progress], None] | None
    interval_s: float
    objects_total: int | None
    total_bytes: int | None
    _next: float = field(init=False)

    def __post_init__(self) -> None:
        self._next = self.run.started + self.interval_s

    def seconds_to_next(self) -> float | None:
        """How long the calling thread may wait for copies before the next beat (None: no beats)."""
        return max(0.0, self._next - time.monotonic()) if self.progress is not None else None

    def beat_if_due(self) -> None:
        if self.progress is not None and time.monotonic() >= self._next:
            self.beat()
            self._next = time.monotonic() + self.interval_s

    def beat(self) -> None:
        if self.progress is None:
            return
        progress = self._now()
        try:
            self.progress(progress)
        except Exception:  # a broken log sink must not fail a migration
            log.exception("progress callback failed (ignored)")

    def _now(self) -> Progress:
        report = self.run.report
        elapsed = time.monotonic() - self.run.started
        in_flight = self.run.meter.value
        transferred = report.bytes_copied + in_flight
        done = self.run.finished_bytes + in_flight
        rate = transferred / elapsed if elapsed > 0 else 0.0
        eta: float | None = None
        if self.total_bytes is not None and rate > 0:
            eta = max(0.0, (self.total_bytes - done) / rate)
        elif self.objects_total and report.objects:
            eta = (self.objects_total - report.objects) * elapsed / report.objects
        return Progress(
            objects_done=report.objects,
            objects_total=self.objects_total,
            copied=report.copied,
            skipped=report.skipped,
            failed=report.failed,
            bytes_done=done,
            bytes_total=self.total_bytes,
            elapsed_s=elapsed,
            rate_mb_s=rate / 1e6,
            eta_s=eta,
        )


def _auto_target_keys(target: S3Bucket, prefix: str, objects_total: int | None) -> set[str] | None:
    # One LIST per 1,000 keys beats one HEAD per object unless the target prefix is
    # much larger than the shard: stop listing past that point and HEAD instead.
    cap = 2 * objects_total + 1_000 if objects_total is not None else AUTO_LIST_MAX_KEYS
    keys: set[str] = set()
    try:
        for info in target.iter_objects(prefix):
            keys.add(info.key)
            if len(keys) > cap:
                log.info("target prefix '%s' holds over %d keys: checking objects one HEAD each", prefix, cap)
                return None
    except BasculeError as exc:
        # Only an optimisation: without it every object gets a HEAD.
        log.warning("could not list the target prefix '%s' (%s): checking objects one HEAD each", prefix, exc)
        return None
    return keys


def _len_or_none(objects: Iterable[ObjectInfo]) -> int | None:
    return len(objects) if isinstance(objects, Sized) else None

"""How a copy is tuned (part sizes, chunk sizes, retry policy) and how its SDK clients must be configured."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bascule.objects.parts import DEFAULT_MULTIPART_THRESHOLD, DEFAULT_PART_SIZE, MiB, plan_parts

# Bytes per ranged GET on the source. Bodies stream through in socket-sized blocks,
# so this bounds requests (and what one failed GET re-reads), not memory.
DEFAULT_CHUNK_SIZE = 64 * MiB
DEFAULT_MAX_BUFFERED_PART_SIZE = 32 * MiB


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, bounded in attempts and in total waiting.

    Defaults: 6 attempts, waits of ~0.5, 1, 2, 4, 8 s (each between half and all of
    that), at most 60 s of waiting for one operation.
    """

    max_attempts: int = 6
    base_delay_s: float = 0.5
    max_delay_s: float = 20.0
    max_total_delay_s: float = 60.0

    def delay(self, retry_number: int, rng: random.Random) -> float:
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (retry_number - 1))
        # "Equal jitter": never near zero (a retry storm), never in lockstep with the other threads.
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


@dataclass(frozen=True)
class CopyConfig:
    # Objects up to this size go in one buffered PUT; parts are this size (or larger,
    # to stay within 1,000 parts). Memory per object in flight is about one part.
    preferred_part_size: int = DEFAULT_PART_SIZE
    # See bascule.objects.parts for why 128 MiB. A single PUT above preferred_part_size must
    # stream, which needs the MD5 up front (the blob's Content-MD5) and a target
    # client able to stream: otherwise such objects go multipart.
    multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD
    # Bytes per ranged GET on the source (streamed: bounds requests, not memory).
    chunk_size: int = DEFAULT_CHUNK_SIZE
    # Parts larger than this (objects above ~31 GiB) are streamed, not held.
    max_buffered_part_size: int = DEFAULT_MAX_BUFFERED_PART_SIZE
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # Multipart uploads fix metadata before the first byte; for blobs without
    # Content-MD5 the computed MD5 is added afterwards by a server-side in-place copy
    # (no egress, objects up to 5 GB). Off: such objects carry no md5chksum.
    record_computed_md5: bool = True
    # Streamed parts (above max_buffered_part_size) cannot carry a Content-MD5 (it is
    # not known before the part is read); their ETag, the part's MD5 on S3/Scaleway
    # without SSE-C, is checked instead. Turn off for SSE-C targets, where it is not.
    verify_part_etag: bool = True
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    seed: int | None = None  # jitter; fixed only in tests

    def __post_init__(self) -> None:
        if self.chunk_size <= 0 or self.max_buffered_part_size <= 0:
            raise ValueError("chunk_size and max_buffered_part_size must be > 0")
        # Validates the part size and threshold against Scaleway's limits once, up front.
        plan_parts(0, self.preferred_part_size, self.multipart_threshold)


def recommended_s3_config(concurrency: int = 8) -> dict[str, Any]:
    """``botocore.config.Config(**kwargs)`` for the target client of a copier with ``concurrency`` threads.

    - ``max_pool_connections`` >= threads: botocore's default (10) makes threads
      queue for a connection, or open and drop one per request.
    - botocore's own retries off: the copier retries every call itself, with
      classification, jitter, per-part granularity and a count in the report;
      two stacked layers would multiply attempts (6 x 5) and hide them.
    - ``request_checksum_calculation="when_required"``: boto3 >= 1.36 otherwise adds
      a CRC32 to each upload, which some S3-compatible stores reject and which over
      plain HTTP forces it to read a streamed body twice. Content-MD5 is sent instead.
    - ``payload_signing_enabled=False``: SigV4 would otherwise hash every body over
      plain HTTP (again reading a stream twice). Over HTTPS with Content-MD5 botocore
      already sends unsigned payloads; this only makes HTTP behave the same.
    Through an Airflow S3Hook these go in the connection extra's ``config_kwargs``.
    """
    return {
        "max_pool_connections": max(10, concurrency + 2),
        "retries": {"mode": "standard", "total_max_attempts": 1},
        "connect_timeout": 10,
        "read_timeout": 120,
        "tcp_keepalive": True,
        "request_checksum_calculation": "when_required",
        "response_checksum_validation": "when_required",
        "s3": {"payload_signing_enabled": False},
    }


def recommended_azure_client_kwargs() -> dict[str, Any]:
    """Keyword arguments for the source ``BlobServiceClient``.

    The storage SDK's default retry waits 15 s, then 18 s, then 24 s before it gives
    up; stacked under the copier's retries that would stall a thread for minutes.
    Its connection pool holds 10 connections (requests' default): above ~10 threads,
    pass a ``session`` whose HTTPAdapter has ``pool_maxsize`` >= threads. Under
    Airflow (root logger at INFO) the SDK's ``azure.core.pipeline.policies.http_logging_policy``
    logger writes two records per request: set it to WARNING in the task.
    ``connection_data_block_size``: reads of 1 MiB instead of 256 KiB cost ~14 % less
    CPU per GB (bench/transfer.py, dataset B). Through an Airflow WasbHook, put these
    in the connection's extra: the hook passes extra fields to the client.
    """
    return {"retry_total": 0, "connection_timeout": 10, "read_timeout": 120, "connection_data_block_size": 1024 * 1024}

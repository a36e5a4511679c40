"""Part planning for uploads into Scaleway Object Storage.

Scaleway's limits apply even where the local stand-in (moto) is laxer, so a plan
that passes the tests also passes in production:

- at most 1,000 parts per multipart upload (AWS allows 10,000: do not copy AWS habits);
- every part but the last between 5 MB and 5 GB;
- objects up to 5 TB.

Units, chosen on the safe side of each limit: the minimum part is 5 MiB (which is
more than 5 MB), the maximum part is 5 GB and the maximum object 5 TB in decimal
units (smaller than 5 GiB / 5 TiB). Scaleway's documentation says "GB"/"TB"
without defining them, so whichever unit it means, these values fit.

Single PUT or multipart? Below ``multipart_threshold`` (default 128 MiB) an object
goes in one PUT. The copier streams a single PUT with one read chunk in memory,
so the threshold is not a memory bound; it is the price of a failure (a failed
single PUT restarts from byte 0, a failed part only redoes that part) weighed
against the cost of multipart (three more requests, and on the stand-in half the
throughput). 128 MiB keeps the redo cost of one failure under a few seconds on a
datacentre link while most health-data files (CSV/Parquet exports) stay one PUT.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from bascule.exceptions import BasculeError

KiB = 1024
MiB = 1024 * KiB

MAX_PARTS = 1_000
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * 1000**3
MAX_SINGLE_PUT_SIZE = 5 * 1000**3
MAX_OBJECT_SIZE = 5 * 1000**4

DEFAULT_PART_SIZE = 8 * MiB
DEFAULT_MULTIPART_THRESHOLD = 128 * MiB


class ObjectTooLarge(BasculeError):
    """The object is bigger than one Scaleway object may be (5 TB). Retrying cannot help."""

    retryable = False

    def __init__(self, key: str, size: int, limit: int = MAX_OBJECT_SIZE):
        self.key = key
        self.size = size
        super().__init__(
            f"object '{key}' is {size:,} bytes, above the {limit:,}-byte (5 TB) maximum of one Scaleway object; "
            "it cannot be copied as one object: split it at the source, or exclude it from the workload"
        )


@dataclass(frozen=True)
class PartPlan:
    """How one object of ``size`` bytes is uploaded.

    ``multipart`` False means one PUT of ``size`` bytes (``part_count`` 1, even for
    an empty object). Otherwise every part is ``part_size`` bytes except the last,
    which holds what remains.
    """

    size: int
    part_size: int
    part_count: int
    multipart: bool

    def parts(self) -> Iterator[tuple[int, int, int]]:
        """``(part_number, offset, length)`` for each part; part numbers start at 1 as in S3."""
        if not self.multipart:
            yield 1, 0, self.size
            return
        for index in range(self.part_count):
            offset = index * self.part_size
            yield index + 1, offset, min(self.part_size, self.size - offset)


def plan_parts(
    size: int,
    preferred_part_size: int = DEFAULT_PART_SIZE,
    multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
    *,
    key: str = "<unnamed>",
) -> PartPlan:
    """Plan the upload of ``size`` bytes within Scaleway's limits.

    Objects smaller than ``multipart_threshold`` go in one PUT. Larger ones use
    ``preferred_part_size`` parts, grown (to a whole MiB) when the object would
    otherwise need more than 1,000 parts. ``key`` only names the object in errors.
    """
    if size < 0:
        raise ValueError(f"object '{key}': negative size {size}")
    if not MIN_PART_SIZE <= preferred_part_size <= MAX_PART_SIZE:
        raise ValueError(
            f"preferred_part_size {preferred_part_size:,} is outside Scaleway's part limits "
            f"[{MIN_PART_SIZE:,}, {MAX_PART_SIZE:,}] bytes"
        )
    if not 0 < multipart_threshold <= MAX_SINGLE_PUT_SIZE + 1:
        raise ValueError(
            f"multipart_threshold {multipart_threshold:,} must be in [1, {MAX_SINGLE_PUT_SIZE + 1:,}]: "
            "a single PUT cannot exceed 5 GB"
        )
    if size > MAX_OBJECT_SIZE:
        raise ObjectTooLarge(key, size)
    if size < multipart_threshold:
        return PartPlan(size=size, part_size=size, part_count=1, multipart=False)

    # The smallest part that keeps the count within 1,000, rounded up to a MiB so
    # offsets stay aligned; the rounding may overshoot 5 GB only for objects within
    # a MiB per part of 5 TB, where the cap itself still fits 1,000 parts.
    needed = -(-size // MAX_PARTS)
    needed_mib = -(-needed // MiB) * MiB
    part_size = min(max(preferred_part_size, needed_mib), MAX_PART_SIZE)
    part_count = -(-size // part_size)
    # Cannot fail given the checks above; kept because breaking this costs a whole upload.
    assert part_count <= MAX_PARTS, (size, part_size, part_count)
    return PartPlan(size=size, part_size=part_size, part_count=part_count, multipart=True)

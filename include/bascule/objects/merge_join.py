"""Merge-joins of sorted listings: compare two stores without holding either in memory.

Both stores list in a fixed order, and a merge-join of two sorted streams needs one
item of each at a time. The orders are not the same, which is why each join names
the order it relies on and checks it as the items stream:

- **S3 (ListObjectsV2) lists in UTF-8 binary order**, which is Unicode code point
  order, which is how Python compares ``str``: :func:`s3_order`.
- **Azure Blob lists in UTF-16 code unit order** (seen on Azurite 3.35: '😀' U+1F600,
  two surrogates starting 0xD83D, sorts *before* '\\uffee'): :func:`azure_order`. It
  agrees with code point order except between characters above U+FFFF and those in
  U+E000-U+FFFF, which health-data file names rarely hold.

A stream that is not in the order a join assumes would make it report objects as
missing and extra that are neither; :class:`ListingOrderError` stops the join at the
first key out of place instead, naming both keys and the runbook section.
"""

from __future__ import annotations

import heapq
import json
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from bascule.exceptions import BasculeError

L = TypeVar("L")
R = TypeVar("R")
T = TypeVar("T")

RUNBOOK = "docs/runbooks.md#listing-order"


class ListingOrderError(BasculeError):
    """A listing a merge-join relies on is not sorted: the join would report wrong objects."""


def s3_order(key: str) -> str:
    """S3's listing order (UTF-8 bytes), which is Python's own ``str`` order."""
    return key


def azure_order(key: str) -> bytes:
    """Azure Blob's listing order: UTF-16 code units, compared as big-endian bytes."""
    return key.encode("utf-16-be", "surrogatepass")


def checked_order(
    items: Iterable[T], key: Callable[[T], str], order: Callable[[str], Any], *, what: str
) -> Iterator[tuple[Any, str, T]]:
    """``(order(key), key, item)`` for each item; raises if a key is not strictly after the one before.

    A repeated key is an error too: a listing names each object once, and a join that
    met a key twice would compare one side with two.
    """
    previous: tuple[Any, str] | None = None
    for item in items:
        name = key(item)
        rank = order(name)
        if previous is not None and not previous[0] < rank:
            verb = "listed twice" if previous[1] == name else f"listed after {previous[1]!r}"
            raise ListingOrderError(
                f"{what}: key {name!r} is {verb}, out of the order the comparison relies on "
                f"({order.__name__}). Nothing was compared past this point, so no object is reported "
                f"missing or extra on its account. See {RUNBOOK}"
            )
        previous = (rank, name)
        yield rank, name, item


def merge_join(
    left: Iterable[L],
    right: Iterable[R],
    *,
    left_key: Callable[[L], str],
    right_key: Callable[[R], str],
    order: Callable[[str], Any] = s3_order,
    left_name: str = "left listing",
    right_name: str = "right listing",
) -> Iterator[tuple[str, L | None, R | None]]:
    """A full outer join of two streams sorted by ``order(key)``: ``(key, left item or None, right item or None)``.

    One item of each side is held at a time. Keys come out in ``order``. A side given as a
    list is sorted first (it is in memory already, so that costs nothing more); a stream (a
    listing, an inventory read back) must arrive sorted, which the join checks.
    """
    lefts = checked_order(_sorted_if_listed(left, left_key, order), left_key, order, what=left_name)
    rights = checked_order(_sorted_if_listed(right, right_key, order), right_key, order, what=right_name)
    a = next(lefts, None)
    b = next(rights, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            assert a is not None
            yield a[1], a[2], None
            a = next(lefts, None)
        elif a is None or b[0] < a[0]:
            yield b[1], None, b[2]
            b = next(rights, None)
        else:
            yield a[1], a[2], b[2]
            a, b = next(lefts, None), next(rights, None)


class _End:
    """The end of a read-ahead stream, with the error that ended it, if any."""

    def __init__(self, error: BaseException | None = None):
        self.error = error


def read_ahead(items: Iterable[T], depth: int = 5000) -> Iterator[T]:
    """``items`` fetched by a thread at most ``depth`` ahead of the consumer, in the same order.

    A merge-join pulls from two listings in one thread, so each waits for the other's
    pages; reading one side ahead lets both list at once (the cutover's parity lists the
    source and the target while the source stays frozen). Memory holds ``depth`` items
    (one Azure page); an error in the listing is raised where the consumer reads.
    """
    buffer: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def fill() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_End())
        except BaseException as exc:  # handed to the consumer, which raises it
            put(_End(exc))

    thread = threading.Thread(target=fill, name="bascule-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        stop.set()  # a consumer that stops early must not leave the thread blocked on a full buffer
        thread.join(timeout=30)


def _sorted_if_listed(items: Iterable[T], key: Callable[[T], str], order: Callable[[str], Any]) -> Iterable[T]:
    if isinstance(items, Sequence):
        return sorted(items, key=lambda item: order(key(item)))
    return items


def sorted_records(
    records: Iterable[dict[str, Any]], key: Callable[[dict[str, Any]], Any], *, run_size: int = 50_000
) -> Iterator[dict[str, Any]]:
    """``records`` sorted by ``key`` with at most ``run_size`` of them in memory (an external merge sort).

    Sorted runs go to temporary files (JSON Lines) that are merged with a heap, so a
    shard of any size is sorted in flat memory. Equal keys keep their input order.
    """
    with tempfile.TemporaryDirectory(prefix="bascule-sort-") as tmp:
        runs: list[str] = []
        batch: list[dict[str, Any]] = []
        for record in records:
            batch.append(record)
            if len(batch) >= run_size:
                runs.append(_write_run(tmp, len(runs), batch, key))
                batch = []
        if not runs:  # everything fitted in one run: no file needed
            yield from sorted(batch, key=key)
            return
        if batch:
            runs.append(_write_run(tmp, len(runs), batch, key))
        files = [open(path, encoding="utf-8") for path in runs]  # noqa: SIM115 - closed below
        try:
            streams = [(json.loads(line) for line in f) for f in files]
            yield from heapq.merge(*streams, key=key)
        finally:
            for f in files:
                f.close()


def _write_run(directory: str, number: int, batch: list[dict[str, Any]], key: Callable[[dict[str, Any]], Any]) -> str:
    path = os.path.join(directory, f"run-{number:05d}.jsonl")
    with open(path, "w", encoding="utf-8") as out:
        for record in sorted(batch, key=key):
            out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
    return path

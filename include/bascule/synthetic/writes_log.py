"""The writer's log: one JSON Lines record per attempted change, and what it adds up to.

A change is logged ``acknowledged`` only after COMMIT returned: those are the writes a
migration must not lose. :func:`expected_state` reduces the log to the rows the target
must hold. Writes refused by the cutover freeze (read-only role) are logged ``refused``,
so the freeze shows in the log as the moment acknowledgements stop and refusals start
(:class:`WriterStats`).

Standard library only.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

ACKNOWLEDGED = "acknowledged"  # COMMIT returned: the write must survive the migration
REFUSED = "refused"  # the server refused it (read-only role after the cutover freeze)
DISCONNECTED = "disconnected"  # the session ended before COMMIT: nothing was written
IN_DOUBT = "in_doubt"  # the session ended during COMMIT: written or not, nobody knows
FAILED = "failed"  # any other error (constraint, connection refused...)
NOOP = "noop"  # the row picked no longer exists: nothing to write
STATUSES = (ACKNOWLEDGED, REFUSED, DISCONNECTED, IN_DOUBT, FAILED, NOOP)

LogRecord = dict[str, Any]
RowKey = tuple[str, Any]  # (table, key): key is an int, or a tuple for composite keys


@dataclass(frozen=True)
class WriterStats:
    """Counts of a writer's log, by status, with the moments the freeze shows at."""

    counts: dict[str, int]
    last_acknowledged_at: str | None = None
    first_refused_at: str | None = None
    last_refused_at: str | None = None

    @property
    def acknowledged(self) -> int:
        return self.counts.get(ACKNOWLEDGED, 0)

    @property
    def refused(self) -> int:
        return self.counts.get(REFUSED, 0)

    @property
    def failures(self) -> int:
        """Attempts that did not write: refused, disconnected, in doubt, failed."""
        return sum(self.counts.get(s, 0) for s in (REFUSED, DISCONNECTED, IN_DOUBT, FAILED))

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class LogWatching:
    """What the owner of a running writer asks of its log: counts so far, and waiting for a condition.

    Shared by the registry's writer and the object writer; each sets ``log_path`` and may
    override ``_check_running`` to fail fast when the writer died.
    """

    log_path: Path

    def stats(self) -> WriterStats:
        return summarise_log(self.log_path)

    def acknowledged(self) -> int:
        """Writes acknowledged so far (COMMIT returned, or the service answered the PUT)."""
        return self.stats().acknowledged

    def refused(self) -> int:
        """Writes refused so far (the cutover's freeze)."""
        return self.stats().refused

    def _check_running(self) -> None:
        """Raise if the writer can no longer write; by default there is nothing to check."""

    def wait_for(self, predicate: Callable[[WriterStats], bool], timeout: float = 30.0) -> WriterStats:
        """Poll the log until ``predicate(stats)`` holds; raise TimeoutError (with the stats) if not."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if predicate(stats):
                return stats
            self._check_running()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{type(self).__name__}: condition not met within {timeout}s; stats {stats.counts}")
            time.sleep(0.1)


def read_log(log: str | Path | Iterable[LogRecord]) -> list[LogRecord]:
    """The records of a writer's log (a JSON Lines path, or records already read).

    A last line cut short (the writer killed mid-write) is ignored.
    """
    if not isinstance(log, str | Path):
        return list(log)
    records: list[LogRecord] = []
    with open(log, encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):  # a torn last line: its write was never acknowledged to us
                continue
            raise ValueError(f"writer log {log}: line {number} is not JSON") from None
    return records


def summarise_log(log: str | Path | Iterable[LogRecord]) -> WriterStats:
    counts = {status: 0 for status in STATUSES}
    last_ack = first_refused = last_refused = None
    for record in read_log(log):
        status = str(record.get("status"))
        counts[status] = counts.get(status, 0) + 1
        if status == ACKNOWLEDGED:
            last_ack = record.get("at")
        elif status == REFUSED:
            first_refused = first_refused or record.get("at")
            last_refused = record.get("at")
    return WriterStats(counts, last_ack, first_refused, last_refused)


def row_key(record: Mapping[str, Any]) -> RowKey:
    """The ``(table, key)`` a record wrote to; a composite key as a tuple."""
    key = record["key"]
    return (str(record["table"]), tuple(key) if isinstance(key, list) else key)


def expected_state(log: str | Path | Iterable[LogRecord]) -> dict[RowKey, dict[str, Any] | None]:
    """The rows the acknowledged writes leave: ``{(table, key): values, or None if deleted}``.

    Later writes to a row replace earlier ones. A row whose last write is in doubt
    (the session ended during COMMIT) is left out: either outcome is correct.
    """
    state: dict[RowKey, dict[str, Any] | None] = {}
    for record in sorted(read_log(log), key=lambda r: int(r.get("seq", 0))):
        status = record.get("status")
        if status not in (ACKNOWLEDGED, IN_DOUBT) or record.get("key") is None:
            continue
        key = row_key(record)
        if status == IN_DOUBT:
            state.pop(key, None)
        elif record["op"] == "delete":
            state[key] = None
        else:
            state[key] = dict(record["values"])
    return state


def row_values(names: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    """A row as JSON-able values compared the same way on any server.

    numeric as its exact text ("12.50"), dates ISO, timestamps with a zone in UTC.
    """
    return {name: _jsonable(value) for name, value in zip(names, row, strict=True)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return (value.astimezone(UTC) if value.tzinfo else value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def last_seq(log_path: str | Path) -> int:
    """A restarted writer continues the sequence of an existing log."""
    if not Path(log_path).exists():
        return 0
    return max((int(r.get("seq", 0)) for r in read_log(log_path)), default=0)

"""The Postgres phases' progress hooks, each driven with a fake reporter (no database).

The copy reports the bytes its target side has read from the pipe, the table diff its
segments done of all, and the catch-up's trigger the lag samples it hands back in its event.
"""

from __future__ import annotations

import asyncio
import os
from types import SimpleNamespace
from typing import Any

import pytest

from bascule.postgres import bulk_copy, validation_phases
from bascule.progress import ProgressReporter, lag_progress

pytestmark = pytest.mark.unit


class FakeReporter:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int | None]] = []
        self.total: int | None = None

    def update(self, done: int) -> None:
        self.calls.append((done, self.total))


class _Sql:
    def as_string(self, conn: Any) -> str:
        return "copy"


class _Source:
    rowcount = 3

    def copy_expert(self, statement: str, out: Any, size: int) -> None:
        for chunk in (b"a" * 10, b"b" * 20, b"c" * 5):
            out.write(chunk)
            out.flush()  # one read per chunk on the other side, as a real COPY's stream arrives


class _Target:
    def __init__(self) -> None:
        self.received = b""

    def copy_expert(self, statement: str, reader: Any, size: int) -> None:
        while data := reader.read(size):
            self.received += data


def test_the_copy_reports_the_bytes_streamed_so_far() -> None:
    reporter = FakeReporter()
    target = _Target()
    rows, copied = bulk_copy._stream(_Source(), target, _Sql(), _Sql(), None, None, "s.t", "s.t", reporter.update)
    assert (rows, copied, len(target.received)) == (3, 35, 35)
    done = [d for d, _ in reporter.calls]
    assert done == sorted(done) and done[-1] == 35  # cumulative, ending at every byte the target took


def test_the_counting_reader_without_progress_only_counts() -> None:
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"xyz")
    os.close(write_fd)
    reader = bulk_copy._CountingReader(read_fd)
    assert reader.read() == b"xyz" and reader.bytes == 3
    os.close(read_fd)


def _progress_of_two_tables(monkeypatch: pytest.MonkeyPatch, segments_used: list[int]) -> list[tuple[int, int]]:
    """The progress calls of diffing a 150,000-row and a 10-row table whose diffs used these segments."""
    used = iter(segments_used)

    def diff_table(source: Any, target: Any, spec: Any) -> Any:
        return SimpleNamespace(segments=next(used), differences=[])

    monkeypatch.setattr(validation_phases.tablediff, "diff_table", diff_table)
    column = SimpleNamespace(name="id")
    tables = [
        SimpleNamespace(schema="s", name=name, columns=[column], primary_key=["id"], row_estimate=rows)
        for name, rows in (("big", 150_000), ("small", 10))
    ]
    conn = SimpleNamespace(close=lambda: None)
    sides = SimpleNamespace(source=lambda: conn, target=lambda: conn)
    reporter = FakeReporter()
    validation_phases.diff_tables(
        sides, SimpleNamespace(tables=tables), slot=None, live=False,
        progress=lambda done, total: (setattr(reporter, "total", total), reporter.update(done)),
    )  # fmt: skip
    return reporter.calls


def test_the_table_diff_reports_segments_done_of_all(monkeypatch: pytest.MonkeyPatch) -> None:
    # After the first table: its 300 done, the second's estimate (256, the minimum) still to do.
    assert _progress_of_two_tables(monkeypatch, [300, 256]) == [(300, 556), (556, 556)]


def test_a_table_settled_by_its_fingerprints_counts_its_estimate_as_done(monkeypatch: pytest.MonkeyPatch) -> None:
    # The first table's fingerprints were equal (0 segments read): its estimate, 150,000 rows
    # at 500 a segment, is done.
    assert _progress_of_two_tables(monkeypatch, [0, 256]) == [(300, 556), (556, 556)]


def test_the_trigger_hands_back_its_lag_history(monkeypatch: pytest.MonkeyPatch) -> None:
    from bascule_airflow.postgres_trigger import ReplicationCaughtUpTrigger

    lags = iter([3000, 1000])

    def poll(self: Any) -> dict[str, Any]:
        lag = next(lags)
        return {"lag_bytes": lag, "lag_seconds": 1.0, "overlap_replayed": True, "ready": lag < 2000}

    monkeypatch.setattr(ReplicationCaughtUpTrigger, "_poll", poll)
    trigger = ReplicationCaughtUpTrigger({}, "0/1", deadline=1e12, poll_seconds=0, lag_history=[[0.0, 5000]])
    classpath, kwargs = trigger.serialize()
    assert kwargs["lag_history"] == [[0.0, 5000]]  # the sample taken before deferring survives the hand-over

    async def first_event() -> Any:
        async for event in trigger.run():
            return event.payload

    payload = asyncio.run(first_event())
    assert payload["status"] == "ready"
    assert [lag for _, lag in payload["lag_history"]] == [5000, 3000, 1000]
    record = lag_progress(payload["lag_history"], payload["lag_seconds"])
    assert record["lag_bytes"] == 1000 and record["done"] == 4000 and record["total"] == 5000


def test_the_lag_record_says_whether_it_shrinks() -> None:
    shrinking = lag_progress([[0.0, 10_000_000], [10.0, 5_000_000]], 3.0)
    assert shrinking["shrink_rate"] == 500_000.0 and shrinking["eta_s"] == 10.0
    assert shrinking["line"] == "lag 5.0 MB, 3 s; shrinking 500.0 kB/s ETA 0:00:10"
    growing = lag_progress([[0.0, 1_000], [10.0, 2_000]])
    assert growing["eta_s"] is None and "not shrinking (100 B/s growth)" in growing["line"]
    assert lag_progress([[5.0, 42]])["line"] == "lag 42 B; rate unknown yet"
    assert lag_progress([])["lag_bytes"] is None


def test_a_byte_stream_reads_in_sizes() -> None:
    now = [0.0]
    reporter = ProgressReporter(total=None, unit="bytes", clock=lambda: now[0])
    now[0] = 10.0
    reporter.update(25_000_000)
    assert reporter.snapshot().line() == "25.0 MB 2.5 MB/s ETA ?"


def test_a_copy_record_names_its_table_and_a_failed_write_is_ignored() -> None:
    from bascule_airflow.progress import PROGRESS_XCOM_KEY, progress_reporter, publish_progress

    pushed: list[tuple[str, Any]] = []
    ti = SimpleNamespace(xcom_push=lambda key, value: pushed.append((key, value)))
    reporter = progress_reporter({"ti": ti}, "bytes", label="registry.stays range 2/4")
    reporter.update(1_000)
    ((key, record),) = pushed
    assert key == PROGRESS_XCOM_KEY and record["line"].startswith("registry.stays range 2/4: 1.0 kB ")

    def refuse(key: str, value: Any) -> None:
        raise RuntimeError("the API server is restarting")

    publish_progress({"ti": SimpleNamespace(xcom_push=refuse)}, {"line": "x"})  # logged, not raised

"""The progress reporter: its line, its ETA, and that it logs and publishes at a bounded rate."""

from __future__ import annotations

import pytest

from bascule.progress import ProgressReporter

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_line_shows_done_total_pct_rate_and_eta() -> None:
    clock = Clock()
    reporter = ProgressReporter(total=400, unit="objects", bytes_total=4_000_000, clock=clock)
    clock.now += 10
    reporter.update(100, 1_000_000)
    assert reporter.snapshot().line() == "100/400 (25.0%) 10.0 objects/s, 100.0 kB/s ETA 0:00:30"
    record = reporter.snapshot().to_json()
    assert (record["done"], record["total"], record["eta_s"], record["rate"]) == (100, 400, 30.0, 10.0)


def test_unknown_total_and_rows_without_bytes() -> None:
    clock = Clock()
    reporter = ProgressReporter(total=None, unit="rows", clock=clock)
    clock.now += 4
    reporter.advance(200)
    assert reporter.snapshot().line() == "200 50.0 rows/s ETA ?"


def test_log_and_publish_are_rate_limited_and_finish_always_reports() -> None:
    clock = Clock()
    lines: list[str] = []
    published: list[dict] = []
    reporter = ProgressReporter(
        total=1000, clock=clock, log=lines.append, publish=published.append, log_every=5, publish_every=15
    )
    for _ in range(300):  # 30 s of updates, ten a second
        clock.now += 0.1
        reporter.advance(1)
    assert 5 <= len(lines) <= 7, lines
    assert 2 <= len(published) <= 3, published
    reporter.finish()
    assert published[-1]["done"] == 300 and lines[-1].startswith("300/1,000 (30.0%)")


def test_a_failing_publisher_never_fails_the_work() -> None:
    def broken(_: dict) -> None:
        raise RuntimeError("xcom down")

    lines: list[str] = []
    reporter = ProgressReporter(total=2, publish=broken, log=lines.append)
    reporter.finish()
    assert "could not be published" in lines[-1]

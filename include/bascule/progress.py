"""Progress of a long phase: done/total, bytes, rate, ETA; a log line and a published record, each rate-limited.

Plain Python so every kind uses the same words: the object transfer, the Postgres copy and
diff, catch-up. The reporter is told absolute counts (``update``) or increments
(``advance``); it writes ``done/total (pct%) rate ETA`` to ``log`` at most every
``log_every`` seconds and hands a small dict to ``publish`` at most every
``publish_every`` seconds (the glue stores it where the control room reads it), plus once
at ``finish``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"  # pragma: no cover - the loop always returns


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


@dataclass(frozen=True)
class ProgressSnapshot:
    unit: str
    done: int
    total: int | None
    bytes_done: int | None
    bytes_total: int | None
    elapsed_s: float

    @property
    def pct(self) -> float | None:
        if self.total:
            return min(100.0, 100.0 * self.done / self.total)
        if self.total == 0:
            return 100.0
        return None

    @property
    def rate(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def bytes_rate(self) -> float | None:
        if self.bytes_done is None:
            return None
        return self.bytes_done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """From bytes when both sides are known (objects differ in size), else from counts."""
        if self.bytes_total is not None and self.bytes_done is not None and self.bytes_rate:
            return max(0.0, (self.bytes_total - self.bytes_done) / self.bytes_rate)
        if self.total is not None and self.rate > 0:
            return max(0.0, (self.total - self.done) / self.rate)
        return None

    def line(self) -> str:
        """``120/400 (30.0%) 12.0 objects/s, 4.1 MB/s ETA 0:00:23``."""
        if self.unit == "bytes":  # a byte stream (a table's COPY): sizes read better than counts
            total = f"/{fmt_bytes(self.total)}" if self.total is not None else ""
            pct = f" ({self.pct:.1f}%)" if self.pct is not None else ""
            return f"{fmt_bytes(self.done)}{total}{pct} {fmt_bytes(self.rate)}/s ETA {fmt_duration(self.eta_s)}"
        total = f"/{self.total:,}" if self.total is not None else ""
        pct = f" ({self.pct:.1f}%)" if self.pct is not None else ""
        rate = f" {self.rate:,.1f} {self.unit}/s"
        if self.bytes_rate is not None:
            rate += f", {fmt_bytes(self.bytes_rate)}/s"
        return f"{self.done:,}{total}{pct}{rate} ETA {fmt_duration(self.eta_s)}"

    def to_json(self) -> dict[str, Any]:
        return {
            "unit": self.unit, "done": self.done, "total": self.total, "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total, "elapsed_s": round(self.elapsed_s, 1), "rate": round(self.rate, 2),
            "eta_s": None if self.eta_s is None else round(self.eta_s, 1), "line": self.line(),
        }  # fmt: skip


@dataclass(eq=False)
class ProgressReporter:
    total: int | None
    unit: str = "objects"
    bytes_total: int | None = None
    log: Callable[[str], None] | None = None
    publish: Callable[[dict[str, Any]], None] | None = None
    log_every: float = 5.0
    publish_every: float = 15.0
    clock: Callable[[], float] = time.monotonic
    done: int = 0
    bytes_done: int | None = None
    _started: float = field(init=False)
    _next_log: float = field(init=False)
    _next_publish: float = field(init=False)

    def __post_init__(self) -> None:
        self._started = self.clock()
        self._next_log = self._started + self.log_every
        self._next_publish = self._started  # the first record goes out at once: the page shows a start

    def snapshot(self) -> ProgressSnapshot:
        return ProgressSnapshot(
            self.unit, self.done, self.total, self.bytes_done, self.bytes_total, self.clock() - self._started
        )

    def update(self, done: int, bytes_done: int | None = None) -> None:
        self.done = done
        if bytes_done is not None:
            self.bytes_done = bytes_done
        self._emit(force=False)

    def advance(self, count: int = 1, nbytes: int = 0) -> None:
        self.update(
            self.done + count, (self.bytes_done or 0) + nbytes if nbytes or self.bytes_done is not None else None
        )

    def finish(self) -> None:
        self._emit(force=True)

    def _emit(self, *, force: bool) -> None:
        now = self.clock()
        snap: ProgressSnapshot | None = None
        if self.log is not None and (force or now >= self._next_log):
            snap = self.snapshot()
            self.log(snap.line())
            self._next_log = now + self.log_every
        if self.publish is not None and (force or now >= self._next_publish):
            snap = snap or self.snapshot()
            try:
                self.publish(snap.to_json())
            except Exception:  # noqa: BLE001 - progress is advice: a failed publish never fails the work
                if self.log is not None:
                    self.log("progress could not be published (ignored)")
            self._next_publish = now + self.publish_every


LAG_HISTORY_SAMPLES = 60  # at one sample a poll, about five minutes: enough for a rate, small for an XCom


def keep_lag_sample(history: list[list[float]], at: float, lag_bytes: int) -> list[list[float]]:
    """``history`` with ``[at, lag_bytes]`` appended, the oldest dropped past ``LAG_HISTORY_SAMPLES``."""
    return [*history, [round(at, 1), lag_bytes]][-LAG_HISTORY_SAMPLES:]


def lag_progress(history: list[list[float]], lag_seconds: float | None = None) -> dict[str, Any]:
    """The catch-up's record from its lag samples ``[[time, lag_bytes], ...]``: the lag now, the rate
    it shrinks (bytes/s over the samples; negative when it grows) and the ETA at that rate.

    ``done``/``total`` are the bytes caught up since the first sample of the first one's lag, so
    the page's bar fills as the lag shrinks.
    """
    if not history:
        return {"unit": "bytes", "done": 0, "total": None, "lag_bytes": None, "line": "lag unknown yet"}
    (t0, first), (t1, last) = history[0], history[-1]
    rate = (first - last) / (t1 - t0) if t1 > t0 else None
    eta = last / rate if rate and rate > 0 else None
    if rate is None:
        trend = "rate unknown yet"
    elif rate > 0:
        trend = f"shrinking {fmt_bytes(rate)}/s ETA {fmt_duration(eta)}"
    else:
        trend = f"not shrinking ({fmt_bytes(-rate)}/s growth)" if rate < 0 else "not shrinking"
    seconds = f", {lag_seconds:.0f} s" if lag_seconds is not None else ""
    return {
        "unit": "bytes", "done": max(0, int(first - last)), "total": int(first), "lag_bytes": int(last),
        "lag_seconds": lag_seconds, "shrink_rate": None if rate is None else round(rate, 1),
        "eta_s": None if eta is None else round(eta, 1), "history": history,
        "line": f"lag {fmt_bytes(last)}{seconds}; {trend}",
    }  # fmt: skip

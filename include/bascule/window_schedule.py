"""When a manifest's maintenance window next opens, in its own time zone.

Apart from the manifest schema (``bascule.workload``): the schema says what a window is,
this computes with it (daylight-saving gaps and folds), for the DAG's window sensor
and the programme view.
"""

from __future__ import annotations

from datetime import time

import pendulum

from bascule.workload import WEEKDAYS, MaintenanceWindow


def next_window_opening(window: MaintenanceWindow, after: pendulum.DateTime) -> pendulum.DateTime:
    """The first moment at or after ``after`` at which the maintenance window is open.

    Wall-clock times are resolved in the window's timezone: on a spring-forward day a
    02:00 that does not exist opens at the first instant after the gap (03:00), and on
    a fall-back day an ambiguous 02:00 opens at its first occurrence.
    """
    tz = pendulum.timezone(window.timezone)
    local = after.in_timezone(tz)
    for day_offset in range(-1, 8):
        day = local.date().add(days=day_offset)
        if WEEKDAYS[day.weekday()] not in window.days:
            continue
        opens = _wall_clock(day, window.start, tz)
        closes_day = day.add(days=1) if window.end <= window.start else day  # crossing midnight
        closes = _wall_clock(closes_day, window.end, tz)
        if opens <= after < closes:
            return after
        if opens >= after:
            return opens.in_timezone("UTC")
    raise AssertionError("a window with at least one day always opens within a week")


def _wall_clock(day: pendulum.Date, at: time, tz: pendulum.Timezone | pendulum.FixedTimezone) -> pendulum.DateTime:
    # fold=0 picks the first of two ambiguous instants (fall back). Inside a
    # spring-forward gap pendulum's fold=0 moves the time back before the gap,
    # which would open the window early; fold=1 moves it to just after the gap.
    first = pendulum.datetime(day.year, day.month, day.day, at.hour, at.minute, tz=tz, fold=0)
    if (first.hour, first.minute) == (at.hour, at.minute):
        return first
    return pendulum.datetime(day.year, day.month, day.day, at.hour, at.minute, tz=tz, fold=1)

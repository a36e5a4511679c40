"""A phase's progress, published where the control room reads it: an XCom of the running task.

Why an XCom (docs/architecture.md#progress): it is per task instance and map index, the API
server reads it under the same DAG permissions as the rest, a retry clears it, and it is
small. The reporter bounds the rate (one write per ``publish_every`` seconds per task).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

PROGRESS_XCOM_KEY = "bascule_progress"
_logger = logging.getLogger(__name__)


def progress_reporter(
    context: Any, unit: str, *, total: int | None = None, bytes_total: int | None = None,
    log: Callable[[str], None] | None = None, label: str | None = None,
) -> Any:  # fmt: skip
    """``label`` prefixes the published line (what a map index stands for: ``registry.stays range 2/4``)."""
    from bascule.progress import ProgressReporter

    def publish(record: dict[str, Any]) -> None:
        publish_progress(context, {**record, "line": f"{label}: {record['line']}"} if label else record)

    return ProgressReporter(total=total, unit=unit, bytes_total=bytes_total, log=log, publish=publish)


def publish_progress(context: Any, record: dict[str, Any]) -> None:
    """One progress record, as is: for a phase whose rate is bounded by its own pace (the catch-up's
    deferrals), not by a reporter. Progress is advice: a failed write is logged, never raised."""
    try:
        context["ti"].xcom_push(key=PROGRESS_XCOM_KEY, value=record)
    except Exception as exc:  # noqa: BLE001 - the work goes on without its progress record
        _logger.warning("progress could not be published (ignored): %s", exc)


def segments_progress(reporter: Any) -> Callable[[int, int], None]:
    """The table diff's hook (segments done, segments in all, whose estimate firms up table by table)."""

    def update(done: int, total: int) -> None:
        reporter.total = total
        reporter.update(done)

    return update

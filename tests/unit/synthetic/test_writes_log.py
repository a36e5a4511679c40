"""The writer log's reduction, without a server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bascule.synthetic import writes_log
from bascule.synthetic.registry import DISPENSATIONS, PATIENTS, STAYS

pytestmark = pytest.mark.unit


def _write(path: Path, records: list[dict], tail: str = "") -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
    return path


def test_later_acknowledged_writes_win_and_writes_in_doubt_drop_the_row(tmp_path: Path) -> None:
    log = _write(
        tmp_path / "writes.jsonl",
        [
            {"seq": 1, "status": "acknowledged", "op": "insert", "table": PATIENTS, "key": 1, "values": {"a": 1}},
            {"seq": 2, "status": "acknowledged", "op": "update", "table": PATIENTS, "key": 1, "values": {"a": 2}},
            {"seq": 3, "status": "in_doubt", "op": "update", "table": PATIENTS, "key": 2, "values": {"a": 9}},
            {"seq": 4, "status": "acknowledged", "op": "insert", "table": PATIENTS, "key": 3, "values": {"a": 3}},
            {"seq": 5, "status": "acknowledged", "op": "delete", "table": PATIENTS, "key": 3, "values": None},
            {"seq": 6, "status": "refused", "op": "insert", "table": PATIENTS, "error": "25006 read-only"},
            {"seq": 7, "status": "in_doubt", "op": "delete", "table": PATIENTS, "key": 1, "values": None},
            {"seq": 8, "status": "acknowledged", "op": "insert", "table": STAYS, "key": [4, 1], "values": {"b": 1}},
            {"seq": 9, "status": "noop", "op": "update", "table": DISPENSATIONS},
            {"seq": 10, "status": "acknowledged", "op": "update", "table": PATIENTS, "key": 2, "values": {"a": 5}},
        ],
        tail='{"seq": 11, "sta',  # the writer was killed mid-line: that write was never acknowledged
    )
    assert writes_log.expected_state(log) == {
        (PATIENTS, 2): {"a": 5},  # in doubt, then acknowledged again: known again
        (PATIENTS, 3): None,
        (STAYS, (4, 1)): {"b": 1},
    }
    stats = writes_log.summarise_log(log)
    assert (stats.acknowledged, stats.refused, stats.counts[writes_log.IN_DOUBT], stats.counts[writes_log.NOOP]) == (6, 1, 2, 1)
    assert stats.failures == 3


def test_a_corrupt_line_inside_the_log_is_an_error(tmp_path: Path) -> None:
    log = tmp_path / "writes.jsonl"
    log.write_text('{"seq": 1}\nnot json\n{"seq": 2}\n')
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        writes_log.read_log(log)


def test_rows_are_logged_with_exact_portable_values() -> None:
    from datetime import UTC, date, datetime, timedelta, timezone
    from decimal import Decimal

    paris = timezone(timedelta(hours=1))
    row = writes_log.row_values(
        ["q", "d", "t", "n"], [Decimal("12.50"), date(2024, 2, 29), datetime(2024, 3, 1, 1, 30, tzinfo=paris), None]
    )
    assert row == {"q": "12.50", "d": "2024-02-29", "t": datetime(2024, 3, 1, 0, 30, tzinfo=UTC).isoformat(), "n": None}

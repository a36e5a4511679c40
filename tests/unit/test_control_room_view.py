"""How the control room reads a run: the current phase and the progress of mapped phases."""

from __future__ import annotations

import pytest

from bascule_airflow.control_room.view import current_phase, progress

pytestmark = pytest.mark.unit


def _ti(task_id: str, state: str, map_index: int = -1) -> dict:
    return {"task_id": task_id, "state": state, "map_index": map_index}


def test_the_phase_at_work_wins_then_the_failed_one() -> None:
    tasks = [_ti("preflight", "success"), _ti("snapshot", "success"), _ti("copy_table", "running", 0)]
    assert current_phase(tasks)["task_id"] == "copy_table"
    failed = [_ti("preflight", "failed"), _ti("snapshot", "upstream_failed")]
    assert current_phase(failed)["task_id"] == "preflight"


def test_a_mapped_phase_counts_its_done_instances_and_shows_published_records() -> None:
    tasks = [_ti("copy_table", "success", 0), _ti("copy_table", "success", 1), _ti("copy_table", "running", 2),
             _ti("transfer", "running", 0)]  # fmt: skip
    record = {"done": 5, "total": 10, "line": "5/10 (50.0%) 1.0 objects/s ETA 0:00:05"}
    values = {("transfer", "bascule_progress", 0): record, ("transfer", "bascule_progress", 1): record}
    rows = progress(values, tasks)
    assert rows[0]["line"] == "0/1 shards done"
    assert rows[1] == {"task_id": "copy_table", "map_index": -1, "done": 2, "total": 3, "line": "2/3 tables done"}
    assert rows[2] == {"task_id": "transfer", "map_index": 0, **record}  # shard 1 is not running: not shown
    assert len(rows) == 3

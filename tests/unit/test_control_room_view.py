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


def test_postgres_progress_shows_the_copy_the_diff_and_the_catch_up_lag() -> None:
    from bascule.progress import lag_progress

    copy = {"unit": "bytes", "done": 25_000_000, "total": None, "line": "25.0 MB 2.5 MB/s ETA ?"}
    diff = {"unit": "segments", "done": 300, "total": 556, "line": "300/556 (54.0%) 30.0 segments/s ETA 0:00:08"}
    lag = lag_progress([[0.0, 10_000_000], [10.0, 5_000_000]], 3.0)
    values = {("copy_table", "bascule_progress", 0): copy, ("validate", "bascule_progress", -1): diff,
              ("catch_up", "bascule_progress", -1): lag}  # fmt: skip
    running = [_ti("copy_table", "running", 0), _ti("copy_table", "success", 1), _ti("catch_up", "deferred"),
               _ti("validate", "running")]  # fmt: skip
    rows = {(r["task_id"], r["map_index"]): r for r in progress(values, running)}
    assert rows[("copy_table", -1)]["line"] == "1/2 tables done"
    assert rows[("copy_table", 0)]["line"] == "25.0 MB 2.5 MB/s ETA ?"
    assert rows[("validate", -1)]["line"].startswith("300/556 (54.0%)")
    assert rows[("catch_up", -1)]["line"] == "lag 5.0 MB, 3 s; shrinking 500.0 kB/s ETA 0:00:10"
    # A catch-up that timed out keeps its lag on the page; a finished copy does not.
    failed = progress(values, [_ti("catch_up", "failed"), _ti("copy_table", "success", 0)])
    assert [r["task_id"] for r in failed] == ["catch_up"]

"""Mapped-task results read alike for one map index and for several."""

from __future__ import annotations

import pytest

from bascule_airflow.xcoms import mapped_results

pytestmark = pytest.mark.unit


class _PulledTI:
    def __init__(self, value):
        self.value = value
        self.asked: list[str] = []

    def xcom_pull(self, task_ids):
        self.asked.append(task_ids)
        return self.value


def test_a_lone_map_index_comes_back_as_a_list_of_one() -> None:
    ti = _PulledTI({"shard": 0, "copied": 3})  # what Airflow 3 returns for `shards: 1`
    assert mapped_results(ti, "transfer") == [{"shard": 0, "copied": 3}]
    assert ti.asked == ["transfer"]


def test_several_map_indexes_keep_their_order_and_drop_empty_results() -> None:
    ti = _PulledTI([{"shard": 0}, None, {"shard": 2}])
    assert mapped_results(ti, "transfer") == [{"shard": 0}, {"shard": 2}]


def test_nothing_pushed_is_an_empty_list() -> None:
    assert mapped_results(_PulledTI(None), "copy_table") == []

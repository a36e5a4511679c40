"""The wait for the maintenance window before a cutover (either kind): deferrable, holding no worker slot."""

from __future__ import annotations

from pathlib import Path

import pendulum
import pytest
import yaml

from bascule.window_schedule import next_window_opening
from bascule.workload import WEEKDAYS, MaintenanceWindow, parse_manifest
from bascule_airflow.maintenance_window import WaitForWindowOperator

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = yaml.safe_load((ROOT / "include" / "workloads" / "snds_extracts.yaml").read_text())


def _workload(days: list[str], start: str = "02:00", end: str = "05:00") -> dict:
    window = {"timezone": "Europe/Paris", "days": days, "start": start, "end": end}
    data = {**TEMPLATE, "cutover": {"window": window}}
    return parse_manifest(Path("w.yaml"), yaml.safe_dump(data)).model_dump(mode="json")


def test_closed_window_defers_to_its_next_opening_holding_no_slot() -> None:
    from airflow.providers.standard.triggers.temporal import DateTimeTrigger
    from airflow.sdk.exceptions import TaskDeferred

    today = WEEKDAYS[pendulum.now("Europe/Paris").weekday()]
    later = [d for d in WEEKDAYS if d != today][:1]  # a day that is not today: the window is closed now
    workload = _workload(later)
    operator = WaitForWindowOperator(task_id="wait_for_window", workload=workload, manifest_path="w.yaml")
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context={})
    trigger = deferred.value.trigger
    assert isinstance(trigger, DateTimeTrigger)
    assert deferred.value.method_name == "execute_complete"
    window = MaintenanceWindow.model_validate(workload["cutover"]["window"])
    expected = next_window_opening(window, pendulum.now("UTC"))
    moment = trigger.serialize()[1]["moment"]
    assert abs((pendulum.instance(moment) - expected).total_seconds()) < 60
    assert pendulum.instance(moment).in_timezone("Europe/Paris").hour == 2


def test_open_window_does_not_defer() -> None:
    now = pendulum.now("Europe/Paris")
    if (now.hour, now.minute) == (23, 59):
        pytest.skip("the one minute this all-day window is closed")
    workload = _workload(list(WEEKDAYS), start="00:00", end="23:59")
    operator = WaitForWindowOperator(task_id="wait_for_window", workload=workload, manifest_path="w.yaml")
    assert operator.execute(context={}) is None

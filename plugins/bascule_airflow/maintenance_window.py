"""The wait before a cutover of either kind: until the workload's maintenance window is open."""

from __future__ import annotations

from typing import Any

from bascule_airflow.common import PhaseOperator


class WaitForWindowOperator(PhaseOperator):
    """Wait, deferred (no worker slot), until the workload's maintenance window is open."""

    phase = "wait_for_window"
    ui_color = "#e8f6f4"

    def execute(self, context: Any) -> None:
        import pendulum
        from airflow.providers.standard.triggers.temporal import DateTimeTrigger

        from bascule.window_schedule import next_window_opening
        from bascule_airflow.clients import workload_model

        workload = workload_model(self.workload)
        now = pendulum.now("UTC")
        opening = next_window_opening(workload.cutover.window, now)
        window = workload.cutover.window
        if opening <= now:
            self.log.info(
                "maintenance window is open (%s %s-%s %s)", window.days, window.start, window.end, window.timezone
            )
            return
        self.log.info(
            "maintenance window closed; waiting (deferred, no worker slot) until %s (%s local)",
            opening.isoformat(), opening.in_timezone(window.timezone).to_datetime_string(),
        )  # fmt: skip
        self.defer(trigger=DateTimeTrigger(moment=opening), method_name="execute_complete")

    def execute_complete(self, context: Any, event: Any = None) -> None:
        self.log.info("maintenance window opened")

"""The buttons on every phase task in the Airflow UI: runbook section, control-room page, reports.

Each points at the control room (``/bascule`` on the API server), which renders the
runbook and serves the stored reports after checking the caller's DAG access, so no link
needs a credential of the evidence bucket.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperatorLink

from bascule_airflow.links import report_url, runbook_url, workload_url


class RunbookLink(BaseOperatorLink):
    name = "Runbook"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return runbook_url(operator.runbook_section())


class ControlRoomLink(BaseOperatorLink):
    name = "Control room"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return workload_url(operator.workload["id"], ti_key.run_id)


class EvidenceReportLink(BaseOperatorLink):
    name = "Evidence report"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return report_url(operator.workload["id"], ti_key.run_id, "evidence")


class ValidationReportLink(BaseOperatorLink):
    name = "Validation report"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return report_url(operator.workload["id"], ti_key.run_id, "validation")


PHASE_LINKS = (RunbookLink(), ControlRoomLink(), EvidenceReportLink(), ValidationReportLink())

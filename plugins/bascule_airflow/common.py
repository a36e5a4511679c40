"""What every kind's phase operators share: the base classes and the rollback and routing plumbing.

The kinds' operator modules (``object_store``, ``postgres``) build on this and never on
each other. A phase turns the domain's errors into Airflow's: a problem with the data or
a refusal fails at once (``AirflowFailException``); a transient fault raises normally so
the task's retries apply.
"""

from __future__ import annotations

from typing import Any, NoReturn

from airflow.sdk import BaseOperator

from bascule_airflow.assets import record_routing_event
from bascule_airflow.evidence_records import append, chain_for
from bascule_airflow.extra_links import PHASE_LINKS


class PhaseOperator(BaseOperator):
    """One phase of a workload's migration: the manifest (as validated JSON) travels with the task."""

    phase = "phase"
    # Runbook, control room, evidence and validation reports: links, not paths (bascule_airflow.extra_links).
    operator_extra_links = PHASE_LINKS

    def __init__(self, *, workload: dict[str, Any], manifest_path: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.workload = workload
        self.manifest_path = manifest_path

    def runbook_section(self) -> str:
        """The runbook's anchor for this phase."""
        return self.phase

    def runbook(self) -> str:
        """A link to the rendered section (served by the control room), not a file path."""
        from bascule_airflow.links import runbook_url

        return runbook_url(self.runbook_section())

    def _fail_or_retry(self, exc: Exception) -> NoReturn:
        """Re-raise ``exc`` as the right Airflow outcome, with the runbook section."""
        from airflow.sdk.exceptions import AirflowFailException

        from bascule.exceptions import StoreAccessError

        if isinstance(exc, StoreAccessError) and exc.retryable:
            raise exc
        raise AirflowFailException(f"{exc}\nRunbook: {self.runbook()}") from None

    def _record_shadow_run(
        self, context: Any, ok: bool, jobs: int, summary: list[str], report_key: str, diff_report: str, report_uri: str
    ) -> None:
        """The shadow run's record in the chain; a difference between the two sides fails the task."""
        from airflow.sdk.exceptions import AirflowFailException

        for line in summary:
            self.log.info("%s", line)
        append(
            context, self.workload, "shadow_run",
            {"success": ok, "jobs": jobs, "summary": "; ".join(summary)[:2000]},
            [report_key],
        )  # fmt: skip
        if not ok:
            raise AirflowFailException(
                f"shadow run found differences between Azure and Scaleway:\n{diff_report}\n"
                f"Report: {report_uri}. Runbook: {self.runbook()}"
            )

    def _record_completion(self, context: Any, evidence: Any, name: str, summary: dict[str, Any]) -> str:
        """The migration's closing record: ``summary`` stored in the evidence as ``name``, noted in the chain."""
        key = evidence.put_json(name, summary)
        append(context, self.workload, "note", {"summary": f"migration of {summary['workload']} complete"}, [key])
        return key


class SnapshotPhaseOperator(PhaseOperator):
    """A phase that works on the snapshot: ``snapshot`` is the snapshot task's XCom (resolved at run time)."""

    template_fields = ("snapshot",)

    def __init__(self, *, snapshot: Any, **kwargs: Any):
        super().__init__(**kwargs)
        self.snapshot = snapshot


class RollbackPhaseOperator(PhaseOperator):
    """Routing back to Azure; each kind says what else it undoes.

    ``when="requested"`` runs when an operator triggers the DAG with the rollback Param;
    ``when="cutover_failed"`` runs only if the cutover task itself failed.
    """

    phase = "rollback"
    ui_color = "#fde8e8"
    template_fields = ("reason",)

    def __init__(self, *, when: str, reason: str = "", **kwargs: Any):
        super().__init__(**kwargs)
        self.when = when
        self.reason = reason

    def _start_rollback(self, context: Any) -> str:
        """Skip unless there is something to roll back; the reason to record."""
        if self.when == "cutover_failed":
            skip_unless_cutover_failed(context)
        return self.reason or ("cutover failed" if self.when == "cutover_failed" else "rollback requested")

    def _seal_if_requested(self, context: Any) -> None:
        """A requested rollback is the run's last word: its evidence chain is sealed."""
        if self.when == "requested":
            chain_for(self.workload, context["run_id"]).seal(self.task_id)


def skip_unless_cutover_failed(context: Any) -> None:
    """``rollback_after_failed_cutover`` runs on any upstream failure; it acts only if the cutover itself failed."""
    from airflow.sdk.exceptions import AirflowSkipException

    states = context["ti"].get_task_states(
        dag_id=context["dag"].dag_id, task_ids=["cutover"], run_ids=[context["run_id"]]
    )
    state = states.get(context["run_id"], {}).get("cutover")
    if state != "failed":
        raise AirflowSkipException(f"cutover is {state}, not failed: nothing to roll back")


def mirror_routing_variable(workload_id: str, live: str, location: str) -> None:
    """Mirror the routing document in an Airflow Variable, for consumers that read Variables."""
    import json

    from airflow.sdk import Variable

    Variable.set(f"bascule_routing_{workload_id}", json.dumps({"live": live, "location": location}))
    # The same fact as an Asset event, for DAGs scheduled on the workload (bascule_airflow.assets).
    record_routing_event(workload_id, live, location)

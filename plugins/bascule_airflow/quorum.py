"""The approvals recorded for a run, and the quorum they form on the evidence the approvers saw.

Shared by the approval gate, which records the responses, and by each kind's cutover,
whose first step re-checks the recorded quorum against the evidence as it is then: a
gate marked "success" by hand, or evidence changed after the approvals, stops it.
"""

from __future__ import annotations

from typing import Any

from bascule_airflow.xcoms import mapped_results

RUNBOOK = "docs/runbooks.md"

# The XComs each kind's approver is shown; their digest binds the approvals.
EVIDENCE_TASKS = {
    "object_store": ("snapshot", "transfer", "validate", "shadow_run"),
    "postgres": ("snapshot", "copy_table", "catch_up", "validate", "shadow_run"),
}


class GateNotApproved(Exception):
    pass


def gate_evidence(context: Any, kind: str) -> dict[str, Any]:
    ti = context["ti"]
    evidence: dict[str, Any] = {}
    for task_id in EVIDENCE_TASKS[kind]:
        mapped = task_id in ("transfer", "copy_table")
        evidence[task_id] = mapped_results(ti, task_id) if mapped else ti.xcom_pull(task_ids=task_id)
    return evidence


def run_key(run_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)


def approvals_store(workload: dict[str, Any]) -> Any:
    from bascule_airflow import clients

    return clients.evidence_store(clients.workload_model(workload))


def gate_rules(workload: dict[str, Any], triggered_by: str | None) -> Any:
    from bascule.governance.approvals import GateRules

    approvals = workload["approvals"]
    return GateRules(tuple(approvals["approvers"]), int(approvals["required"]), triggered_by)


def recorded_responses(store: Any, run_id: str) -> list[Any]:
    from bascule.governance.approvals import Response

    prefix = f"approvals/{run_key(run_id)}/responses/"
    keys = sorted(key for key, _ in store.keys(prefix))
    return [Response.from_json(store.read_json(key)) for key in keys]


def verify_quorum(context: Any, workload: dict[str, Any]) -> dict[str, Any]:
    """Called by the cutover: the recorded approvals must still form a quorum on today's evidence."""
    from bascule.governance.approvals import evaluate, evidence_digest

    digest = evidence_digest(gate_evidence(context, workload["kind"]))
    triggered_by = getattr(context["dag_run"], "triggering_user_name", None)
    state = evaluate(
        recorded_responses(approvals_store(workload), context["run_id"]), gate_rules(workload, triggered_by), digest
    )
    if state.outcome != "approved":
        void = "; ".join(why for _, why in state.not_counted)
        raise GateNotApproved(
            f"no valid approval quorum for this cutover on the current evidence ({digest[:12]}): "
            f"{state.describe()}{'; not counted: ' + void if void else ''}. Clear approve_cutover to ask again. "
            f"Runbook: {RUNBOOK}#approve_cutover"
        )
    return {"approved_by": state.approved_by, "evidence_digest": digest}


def require_quorum(context: Any, workload: dict[str, Any]) -> dict[str, Any]:
    """The cutover's first step: fail at once unless the recorded quorum holds on today's evidence."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        approval = verify_quorum(context, workload)
    except GateNotApproved as exc:
        raise AirflowFailException(str(exc)) from None
    context["task"].log.info("approved by %s on evidence %s", approval["approved_by"], approval["evidence_digest"][:12])
    return approval

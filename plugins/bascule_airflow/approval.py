"""The cutover approval gate: Airflow's human-in-the-loop task, made into a quorum.

Airflow's HITL task ends on the first response. This gate records each response in
the evidence (who, when, decision, reason, digest of the evidence shown), decides
with ``bascule.approvals`` and, while the quorum is not reached, asks again in the
same task instance: parked in ``awaiting_input``, holding no worker slot. The user
who triggered the run is not assigned (Airflow refuses their answer) and would not
be counted anyway. There is no default option and no bypass: a deadline without
quorum fails the run, a rejection fails it with the approver's reason.

The cutover re-checks the recorded quorum against the evidence as it is then, so a
gate marked "success" by hand, or evidence changed after the approvals, stops it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param

from bascule_airflow.evidence_records import append

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
        value = ti.xcom_pull(task_ids=task_id)
        if task_id in ("transfer", "copy_table"):
            value = [v for v in (value or []) if v]
        evidence[task_id] = value
    return evidence


def _run_key(run_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)


def _store(workload: dict[str, Any]) -> Any:
    from bascule_airflow import clients
    from bascule_airflow.object_store import workload_model

    return clients.evidence_store(workload_model(workload))


def _rules(workload: dict[str, Any], triggered_by: str | None) -> Any:
    from bascule.approvals import GateRules

    approvals = workload["approvals"]
    return GateRules(tuple(approvals["approvers"]), int(approvals["required"]), triggered_by)


def recorded_responses(store: Any, run_id: str) -> list[Any]:
    from bascule.approvals import Response

    prefix = f"approvals/{_run_key(run_id)}/responses/"
    keys = sorted(key for key, _ in store.keys(prefix))
    return [Response.from_json(store.read_json(key)) for key in keys]


def verify_quorum(context: Any, workload: dict[str, Any]) -> dict[str, Any]:
    """Called by the cutover: the recorded approvals must still form a quorum on today's evidence."""
    from bascule.approvals import evaluate, evidence_digest

    digest = evidence_digest(gate_evidence(context, workload["kind"]))
    triggered_by = getattr(context["dag_run"], "triggering_user_name", None)
    state = evaluate(recorded_responses(_store(workload), context["run_id"]), _rules(workload, triggered_by), digest)
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


class CutoverApprovalOperator(HITLOperator):
    """Waits, holding no worker slot, until the quorum of distinct approvers approves (or one rejects)."""

    APPROVE = "Approve"
    REJECT = "Reject"
    ui_color = "#fdf3d8"

    def __init__(self, *, workload: dict[str, Any], **kwargs: Any):
        approvals = workload["approvals"]
        # The DAG's own Params (dry_run, rollback) are not questions for the approver.
        kwargs.pop("params", None)
        super().__init__(
            subject=f"Approve the cutover of workload '{workload['id']}' to Scaleway?",
            options=[self.APPROVE, self.REJECT],
            multiple=False,
            defaults=None,
            assigned_users=[{"id": a, "name": a} for a in approvals["approvers"]],
            response_timeout=timedelta(minutes=approvals["timeout_minutes"]),
            params={
                "reason": Param(
                    "",
                    type="string",
                    title="Reason",
                    description="Why you approve or reject (recorded with your decision and the evidence digest).",
                )
            },
            **kwargs,
        )
        self.workload = workload

    def _body(self, context: Any, digest: str, state_line: str) -> str:
        if self.workload["kind"] == "postgres":
            from bascule_airflow.postgres import cutover_body
        else:
            from bascule_airflow.object_store import cutover_body
        approvals = self.workload["approvals"]
        return "\n".join(
            [
                cutover_body(context),
                "",
                f"**Evidence digest** `{digest}` (your approval is bound to it; if the evidence changes, "
                "approvals given on it are void and the gate asks again).",
                f"**Quorum**: {approvals['required']} distinct approver(s) among {', '.join(approvals['approvers'])}; "
                "the user who triggered the run cannot approve it. " + state_line,
            ]
        )

    def execute(self, context: Any) -> Any:
        from airflow.sdk.exceptions import AirflowFailException

        from bascule.approvals import evaluate, evidence_digest

        triggered_by = getattr(context["dag_run"], "triggering_user_name", None)
        rules = _rules(self.workload, triggered_by)
        eligible = [a for a in rules.approvers if a != triggered_by]
        if len(eligible) < rules.required:
            raise AirflowFailException(
                f"the quorum of {rules.required} cannot be reached: {triggered_by} triggered this run and cannot "
                f"approve it, which leaves {eligible}. Have another operator trigger the run, or name more "
                f"approvers in the manifest. Runbook: {RUNBOOK}#approve_cutover"
            )
        # Airflow refuses a response from anyone not assigned: the triggering user is left out.
        self.assigned_users = [{"id": a, "name": a} for a in eligible]
        digest = evidence_digest(gate_evidence(context, self.workload["kind"]))
        store = _store(self.workload)
        state = evaluate(recorded_responses(store, context["run_id"]), rules, digest)
        opened = datetime.now(UTC)
        store.put_json(
            f"approvals/{_run_key(context['run_id'])}/gate-try{context['ti'].try_number}.json",
            {
                "opened_at": opened.isoformat(),
                "deadline": (opened + self.response_timeout).isoformat() if self.response_timeout else None,
                "evidence_digest": digest,
                "approvers": list(rules.approvers),
                "assigned": eligible,
                "required": rules.required,
                "triggered_by": triggered_by,
            },
        )
        if state.outcome == "approved":
            # Approvals already recorded on this very evidence (the task was cleared): nothing to ask.
            self.log.info("already %s on evidence %s", state.describe(), digest[:12])
            return {"approved_by": state.approved_by, "evidence_digest": digest}
        self.body = self._body(context, digest, state.describe())
        self.log.info("asking %s for %d approval(s) on evidence %s", eligible, rules.required, digest)
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from airflow.providers.standard.exceptions import HITLTimeoutError
        from airflow.sdk.exceptions import AirflowFailException, TaskAwaitingInput
        from airflow.sdk.execution_time.hitl import upsert_hitl_detail

        from bascule.approvals import Response, evaluate, evidence_digest

        store = _store(self.workload)
        run_key = _run_key(context["run_id"])
        triggered_by = getattr(context["dag_run"], "triggering_user_name", None)
        rules = _rules(self.workload, triggered_by)
        try:
            decision = super().execute_complete(context, event)
        except HITLTimeoutError:
            digest = evidence_digest(gate_evidence(context, self.workload["kind"]))
            state = evaluate(recorded_responses(store, context["run_id"]), rules, digest)
            timeout = {"decision": "timeout", "at": datetime.now(UTC).isoformat(), "state": state.describe()}
            store.put_json(f"approvals/{run_key}/timeout-try{context['ti'].try_number}.json", timeout)
            append(context, self.workload, "approval", {**timeout, "user": None, "success": False})
            raise AirflowFailException(
                f"deadline reached without quorum ({state.describe()}): the cutover does not happen on a timeout. "
                f"Trigger a new run when approvers are available. Runbook: {RUNBOOK}#approve_cutover"
            ) from None
        user = decision["responded_by_user"] or {}
        digest = evidence_digest(gate_evidence(context, self.workload["kind"]))
        response = Response(
            user=str(user.get("id") or user.get("name")),
            decision=decision["chosen_options"][0],
            at=str(decision["responded_at"]),
            reason=(decision.get("params_input") or {}).get("reason") or "",
            evidence_digest=digest,
        )
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        key = store.put_json(f"approvals/{run_key}/responses/{stamp}-{response.user}.json", response.to_json())
        append(
            context, self.workload, "approval", response.to_json(), [key], actor=response.user,
            idempotency_key=f"approval:{response.user}:{response.at}",
        )  # fmt: skip
        state = evaluate(recorded_responses(store, context["run_id"]), rules, digest)
        for counted_out, why in state.not_counted:
            if counted_out == response:
                self.log.warning("response of %s not counted: %s", response.user, why)
        if state.outcome == "rejected":
            raise AirflowFailException(f"cutover {state.describe()}. Nothing was cut over.")
        if state.outcome == "approved":
            self.log.info("cutover %s on evidence %s", state.describe(), digest[:12])
            return {"approved_by": state.approved_by, "evidence_digest": digest, "reason": response.reason}
        # Not enough distinct approvals yet: ask again, in the same task, until the deadline.
        self.log.info("%s; asking again", state.describe())
        gate = store.read_json(store.prefix + f"approvals/{run_key}/gate-try{context['ti'].try_number}.json")
        remaining = None
        if gate.get("deadline"):
            remaining = datetime.fromisoformat(gate["deadline"]) - datetime.now(UTC)
            if remaining.total_seconds() <= 0:
                raise AirflowFailException(
                    f"deadline reached without quorum ({state.describe()}). Runbook: {RUNBOOK}#approve_cutover"
                )
        upsert_hitl_detail(
            ti_id=context["task_instance"].id,
            options=self.options,
            subject=self.subject,
            body=self.body,
            defaults=self.defaults,
            multiple=self.multiple,
            params=self.serialized_params,
            assigned_users=self.assigned_users,
        )
        raise TaskAwaitingInput(method_name="execute_complete", timeout=remaining)

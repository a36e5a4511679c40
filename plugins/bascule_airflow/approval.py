"""The cutover approval gate: Airflow's human-in-the-loop task, made into a quorum.

Airflow's HITL task ends on the first response. This gate records each response in
the evidence (who, when, decision, reason, digest of the evidence shown), decides
with ``bascule.governance.approvals`` and, while the quorum is not reached, asks again in the
same task instance: parked in ``awaiting_input``, holding no worker slot. The user
who triggered the run is not assigned (Airflow refuses their answer) and would not
be counted anyway. There is no default option and no bypass: a deadline without
quorum fails the run, a rejection fails it with the approver's reason.

The cutover re-checks the recorded quorum (``bascule_airflow.quorum``) against the
evidence as it is then, so a gate marked "success" by hand, or evidence changed after
the approvals, stops it. What the approver is shown comes from the workload's kind,
through the ``describe_cutover`` the DAG factory hands the gate.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param

from bascule_airflow.evidence_records import append
from bascule_airflow.quorum import (
    RUNBOOK,
    approvals_store,
    gate_evidence,
    gate_rules,
    recorded_responses,
    run_key,
)


class CutoverApprovalOperator(HITLOperator):
    """Waits, holding no worker slot, until the quorum of distinct approvers approves (or one rejects)."""

    APPROVE = "Approve"
    REJECT = "Reject"
    ui_color = "#fdf3d8"

    def __init__(self, *, workload: dict[str, Any], describe_cutover: Callable[[Any], str], **kwargs: Any):
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
        self.describe_cutover = describe_cutover

    def _body(self, context: Any, digest: str, state: Any, eligible: list[str], deadline: str | None) -> str:
        # Rendering (and the record the control room reads) lives in gate_view, owned by #15.
        from bascule_airflow.gate_view import publish_gate

        return publish_gate(
            context, self.workload["id"], self.describe_cutover(context), state, eligible, digest, deadline
        )

    def execute(self, context: Any) -> Any:
        from airflow.sdk.exceptions import AirflowFailException

        from bascule.governance.approvals import evaluate, evidence_digest

        triggered_by = getattr(context["dag_run"], "triggering_user_name", None)
        rules = gate_rules(self.workload, triggered_by)
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
        store = approvals_store(self.workload)
        state = evaluate(recorded_responses(store, context["run_id"]), rules, digest)
        opened = datetime.now(UTC)
        store.put_json(
            f"approvals/{run_key(context['run_id'])}/gate-try{context['ti'].try_number}.json",
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
        deadline = (opened + self.response_timeout).isoformat() if self.response_timeout else None
        self.body = self._body(context, digest, state, eligible, deadline)
        self.log.info("asking %s for %d approval(s) on evidence %s", eligible, rules.required, digest)
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from airflow.providers.standard.exceptions import HITLTimeoutError
        from airflow.sdk.exceptions import AirflowFailException, TaskAwaitingInput
        from airflow.sdk.execution_time.hitl import upsert_hitl_detail

        from bascule.governance.approvals import Response, evaluate, evidence_digest

        store = approvals_store(self.workload)
        this_run = run_key(context["run_id"])
        triggered_by = getattr(context["dag_run"], "triggering_user_name", None)
        rules = gate_rules(self.workload, triggered_by)
        try:
            decision = super().execute_complete(context, event)
        except HITLTimeoutError:
            digest = evidence_digest(gate_evidence(context, self.workload["kind"]))
            state = evaluate(recorded_responses(store, context["run_id"]), rules, digest)
            timeout = {"decision": "timeout", "at": datetime.now(UTC).isoformat(), "state": state.describe()}
            store.put_json(f"approvals/{this_run}/timeout-try{context['ti'].try_number}.json", timeout)
            append(context, self.workload, "approval", {**timeout, "user": None, "success": False})
            raise AirflowFailException(
                f"deadline reached without quorum ({state.describe()}): the cutover does not happen on a timeout. "
                f"Trigger a new run when approvers are available. Runbook: {RUNBOOK}#approve_cutover"
            ) from None
        user = decision["responded_by_user"] or {}
        digest = evidence_digest(gate_evidence(context, self.workload["kind"]))
        response = Response(
            # The name, not the id: manifests list user names, and FAB's ids are numbers.
            user=str(user.get("name") or user.get("id")),
            decision=decision["chosen_options"][0],
            at=str(decision["responded_at"]),
            reason=(decision.get("params_input") or {}).get("reason") or "",
            evidence_digest=digest,
        )
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        key = store.put_json(f"approvals/{this_run}/responses/{stamp}-{response.user}.json", response.to_json())
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
        gate = store.read_json(store.prefix + f"approvals/{this_run}/gate-try{context['ti'].try_number}.json")
        remaining = None
        if gate.get("deadline"):
            remaining = datetime.fromisoformat(gate["deadline"]) - datetime.now(UTC)
            if remaining.total_seconds() <= 0:
                raise AirflowFailException(
                    f"deadline reached without quorum ({state.describe()}). Runbook: {RUNBOOK}#approve_cutover"
                )
        # Publishes the new quorum record ("1 of 2 ...") the control room shows, and re-asks with the
        # new body. Airflow 3.3's upsert keeps a request's first body; the control room plugin's
        # middleware (control_room/gate_body.py) writes this one, so Required Actions reads it too.
        eligible = [a for a in rules.approvers if a != triggered_by]
        self.body = self._body(context, digest, state, eligible, gate.get("deadline"))
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

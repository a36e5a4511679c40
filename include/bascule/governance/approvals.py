"""Approval gates people can trust: quorum, four-eyes, evidence-bound.

Airflow's human-in-the-loop task ends on the first response, so the quorum is kept
here: every response is recorded (who, when, decision, reason, the digest of the
evidence shown) and this module decides, from all recorded responses, whether the
gate is approved, rejected, or must ask again. Nothing here approves by default:
an empty or incomplete record set is never "approved".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Decision = Literal["Approve", "Reject"]


@dataclass(frozen=True)
class Response:
    user: str
    decision: Decision
    at: str
    reason: str
    evidence_digest: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Response:
        return cls(**{k: data[k] for k in ("user", "decision", "at", "reason", "evidence_digest")})


@dataclass(frozen=True)
class GateRules:
    approvers: tuple[str, ...]
    required: int
    triggered_by: str | None


@dataclass
class GateState:
    """The gate's verdict over every response recorded so far."""

    outcome: Literal["approved", "rejected", "waiting"]
    approved_by: list[str] = field(default_factory=list)
    rejected_by: Response | None = None
    # Responses that do not count, each with the reason why (shown to people and recorded).
    not_counted: list[tuple[Response, str]] = field(default_factory=list)
    needed: int = 0

    def describe(self) -> str:
        if self.outcome == "rejected" and self.rejected_by is not None:
            r = self.rejected_by
            return f"rejected by {r.user} at {r.at}: {r.reason or '(no reason given)'}"
        done = ", ".join(self.approved_by) or "nobody yet"
        if self.outcome == "approved":
            return f"approved by {done} ({len(self.approved_by)} of {self.needed} required)"
        return f"{len(self.approved_by)} of {self.needed} approval(s) so far ({done}); waiting for more"


def evidence_digest(evidence: dict[str, Any]) -> str:
    """sha256 over the canonical JSON of the evidence an approver is shown.

    Any change (a validation re-run writes new reports under new keys) gives a new
    digest, which voids approvals given on the old one.
    """
    canonical = json.dumps(evidence, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def refusal(response_user: str, rules: GateRules) -> str | None:
    """Why this user's response cannot count, whatever they answer; None if it can."""
    if rules.triggered_by and response_user == rules.triggered_by:
        return f"four-eyes: {response_user} triggered this run and cannot approve its cutover"
    if response_user not in rules.approvers:
        return f"{response_user} is not a named approver of this workload ({', '.join(rules.approvers)})"
    return None


def evaluate(responses: list[Response], rules: GateRules, current_digest: str) -> GateState:
    """The gate's state: a rejection by a counted approver ends it; enough distinct approvals pass it."""
    state = GateState(outcome="waiting", needed=rules.required)
    for response in responses:
        why = refusal(response.user, rules)
        if why is None and response.evidence_digest != current_digest:
            why = (
                f"given on evidence {response.evidence_digest[:12]}, which has changed since "
                f"(now {current_digest[:12]}): approvals on old evidence are void"
            )
        if why is None and response.decision == "Approve" and response.user in state.approved_by:
            why = f"{response.user} already approved: a quorum needs distinct people"
        if why is not None:
            state.not_counted.append((response, why))
            continue
        if response.decision == "Reject":
            state.outcome = "rejected"
            state.rejected_by = response
            return state
        state.approved_by.append(response.user)
    if len(state.approved_by) >= rules.required:
        state.outcome = "approved"
    return state

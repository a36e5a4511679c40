"""What an approver reads at the cutover gate, and the small record the control room shows.

Both are rendered from the quorum state (``approvals.GateState``) and the evidence the
earlier phases recorded, so the Required Actions page of Airflow and the Migrations page
say the same thing in the same words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bascule.governance.approvals import GateState

_COUNT_WORDS = {1: "one more", 2: "two more", 3: "three more"}


@dataclass(frozen=True)
class EvidenceSummary:
    """The facts the approval rests on, as the validate and shadow phases recorded them."""

    digest: str
    parity: str  # "PASS" / "FAIL" / "not recorded"
    shadow: str
    report_url: str | None = None


def waiting_for(state: GateState, eligible: list[str]) -> list[str]:
    """Who may still approve: the eligible approvers who have not approved yet."""
    return [user for user in eligible if user not in state.approved_by]


def quorum_line(state: GateState, eligible: list[str]) -> str:
    """``1 of 2 approvals: approver1; waiting for one more of: approver2``."""
    got = len(state.approved_by)
    head = f"{got} of {state.needed} approval{'s' if state.needed != 1 else ''}"
    who = ", ".join(state.approved_by) if state.approved_by else "none yet"
    if state.outcome == "rejected":
        return f"{head}: {who}; {state.describe()}"
    if state.outcome == "approved":
        return f"{head}: {who}; quorum reached"
    missing = max(state.needed - got, 0)
    more = _COUNT_WORDS.get(missing, f"{missing} more")
    return f"{head}: {who}; waiting for {more} of: {', '.join(waiting_for(state, eligible)) or 'nobody left'}"


def verdict(recorded: dict[str, Any] | None, key: str) -> str:
    """PASS/FAIL from a phase's recorded result, or say it is missing (never guessed)."""
    if not recorded or key not in recorded:
        return "not recorded"
    return "PASS" if recorded[key] else "FAIL"


def render_gate_body(
    description: str, state: GateState, eligible: list[str], evidence: EvidenceSummary, as_of: str = ""
) -> str:
    """The gate's Markdown body: quorum state first (what the approver must know), then the evidence.

    The gate rewrites it after each response; ``as_of`` dates it, so a reader can tell its age
    wherever Airflow keeps an older body (docs/security.md#approval-gates).
    """
    report = f"[auditor report]({evidence.report_url})" if evidence.report_url else "written when the run completes"
    live = f" ([live state]({evidence.report_url}))" if evidence.report_url else ""
    return "\n".join(
        [
            f"**Quorum: {quorum_line(state, eligible)}**",
            "",
            f"_({'as of ' + as_of + '; ' if as_of else ''}the control room shows it live{live})_",
            "",
            "| evidence summary | |",
            "|---|---|",
            f"| evidence digest | `{evidence.digest}` |",
            f"| parity verdict | {evidence.parity} |",
            f"| shadow-run verdict | {evidence.shadow} |",
            f"| report | {report} |",
            "",
            "Your approval is bound to this digest: if the evidence changes, approvals given on it are void "
            "and the gate asks again. The user who triggered the run cannot approve it.",
            "",
            description,
        ]
    )


def gate_record(state: GateState, eligible: list[str], digest: str, deadline: str | None) -> dict[str, Any]:
    """The small record (an XCom) the control room reads instead of re-deriving the quorum."""
    return {
        "outcome": state.outcome,
        "required": state.needed,
        "approved_by": list(state.approved_by),
        "waiting_for": waiting_for(state, eligible) if state.outcome == "waiting" else [],
        "eligible": list(eligible),
        "deadline": deadline,
        "evidence_digest": digest,
        "summary": quorum_line(state, eligible),
    }

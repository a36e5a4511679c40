"""The words an approver reads at the gate: the quorum line and the evidence summary."""

from __future__ import annotations

import pytest

from bascule.governance.approvals import GateRules, Response, evaluate
from bascule.governance.gate_summary import EvidenceSummary, gate_record, quorum_line, render_gate_body, verdict

pytestmark = pytest.mark.unit

RULES = GateRules(("approver1", "approver2"), 2, "operator")
DIGEST = "d" * 64


def _approve(user: str, decision: str = "Approve") -> Response:
    return Response(user=user, decision=decision, at="2026-12-04T10:00:00+00:00", reason="ok", evidence_digest=DIGEST)  # type: ignore[arg-type]


def test_one_of_two_names_who_approved_and_who_may_still() -> None:
    state = evaluate([_approve("approver1")], RULES, DIGEST)
    assert quorum_line(state, ["approver1", "approver2"]) == (
        "1 of 2 approvals: approver1; waiting for one more of: approver2"
    )


def test_nobody_yet_and_quorum_reached() -> None:
    assert quorum_line(evaluate([], RULES, DIGEST), ["approver1", "approver2"]) == (
        "0 of 2 approvals: none yet; waiting for two more of: approver1, approver2"
    )
    done = evaluate([_approve("approver1"), _approve("approver2")], RULES, DIGEST)
    assert quorum_line(done, ["approver1", "approver2"]) == "2 of 2 approvals: approver1, approver2; quorum reached"


def test_a_rejection_says_who_and_why() -> None:
    state = evaluate([_approve("approver2", "Reject")], RULES, DIGEST)
    assert "rejected by approver2" in quorum_line(state, ["approver1", "approver2"])


def test_body_leads_with_the_quorum_and_carries_the_evidence_summary() -> None:
    state = evaluate([_approve("approver1")], RULES, DIGEST)
    evidence = EvidenceSummary(DIGEST, "PASS", "FAIL", "http://x/bascule/workloads/w?run=r")
    body = render_gate_body("### Cutover of snapshot `s1`", state, ["approver1", "approver2"], evidence)
    assert body.splitlines()[0] == "**Quorum: 1 of 2 approvals: approver1; waiting for one more of: approver2**"
    assert f"| evidence digest | `{DIGEST}` |" in body
    assert "| parity verdict | PASS |" in body and "| shadow-run verdict | FAIL |" in body
    assert "[auditor report](http://x/bascule/workloads/w?run=r)" in body
    assert body.endswith("### Cutover of snapshot `s1`")


def test_body_says_when_it_was_written_so_an_older_one_shows_its_age() -> None:
    state = evaluate([_approve("approver1")], RULES, DIGEST)
    evidence = EvidenceSummary(DIGEST, "PASS", "PASS", "http://x/bascule/workloads/w?run=r")
    body = render_gate_body("d", state, ["approver1", "approver2"], evidence, as_of="2026-12-06 20:51:03 UTC")
    assert body.splitlines()[2] == (
        "_(as of 2026-12-06 20:51:03 UTC; the control room shows it live "
        "([live state](http://x/bascule/workloads/w?run=r)))_"
    )


def test_record_for_the_control_room_and_verdicts_never_guessed() -> None:
    record = gate_record(evaluate([_approve("approver1")], RULES, DIGEST), ["approver1", "approver2"], DIGEST, None)
    assert (record["approved_by"], record["waiting_for"], record["required"]) == (["approver1"], ["approver2"], 2)
    assert verdict(None, "ok") == "not recorded" and verdict({"ok": True}, "ok") == "PASS"

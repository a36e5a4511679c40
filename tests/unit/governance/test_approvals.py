"""The quorum rules of the approval gate, on recorded responses."""

from __future__ import annotations

import pytest

from bascule.governance.approvals import GateRules, Response, evaluate, evidence_digest, refusal

pytestmark = pytest.mark.unit

RULES = GateRules(approvers=("alice", "bob", "carol", "dan"), required=2, triggered_by="olivia")
DIGEST = evidence_digest({"validate": {"diff_ok": True}})


def _r(user: str, decision: str = "Approve", digest: str = DIGEST, reason: str = "") -> Response:
    return Response(user=user, decision=decision, at="2026-11-29T00:00:00Z", reason=reason, evidence_digest=digest)  # type: ignore[arg-type]


def test_no_response_is_never_approved() -> None:
    state = evaluate([], RULES, DIGEST)
    assert state.outcome == "waiting"
    assert state.approved_by == []


def test_two_distinct_approvers_reach_a_quorum_of_two() -> None:
    state = evaluate([_r("alice"), _r("bob")], RULES, DIGEST)
    assert state.outcome == "approved"
    assert state.approved_by == ["alice", "bob"]


def test_one_approver_answering_twice_is_counted_once() -> None:
    state = evaluate([_r("alice"), _r("alice")], RULES, DIGEST)
    assert state.outcome == "waiting"
    assert state.approved_by == ["alice"]
    assert "already approved: a quorum needs distinct people" in state.not_counted[0][1]


def test_the_triggering_user_never_counts_even_if_listed() -> None:
    rules = GateRules(approvers=("alice", "olivia"), required=1, triggered_by="olivia")
    state = evaluate([_r("olivia")], rules, DIGEST)
    assert state.outcome == "waiting"
    assert "four-eyes" in state.not_counted[0][1]
    assert refusal("olivia", rules) is not None
    assert refusal("alice", rules) is None


def test_a_user_not_named_never_counts() -> None:
    state = evaluate([_r("mallory"), _r("alice")], RULES, DIGEST)
    assert state.outcome == "waiting"
    assert "not a named approver" in state.not_counted[0][1]


def test_changed_evidence_voids_earlier_approvals() -> None:
    old = evidence_digest({"validate": {"diff_ok": True, "report": "validate-try1"}})
    new = evidence_digest({"validate": {"diff_ok": True, "report": "validate-try2"}})
    assert old != new
    state = evaluate([_r("alice", digest=old), _r("bob", digest=old), _r("carol", digest=new)], RULES, new)
    assert state.outcome == "waiting"
    assert state.approved_by == ["carol"]
    assert all("void" in why for _, why in state.not_counted)


def test_a_rejection_by_an_approver_ends_the_gate_with_its_reason() -> None:
    state = evaluate([_r("alice"), _r("bob", "Reject", reason="shadow diff unexplained")], RULES, DIGEST)
    assert state.outcome == "rejected"
    assert "rejected by bob" in state.describe() and "shadow diff unexplained" in state.describe()


def test_a_rejection_by_someone_not_counted_does_not_end_the_gate() -> None:
    state = evaluate([_r("olivia", "Reject")], RULES, DIGEST)
    assert state.outcome == "waiting"


def test_digest_is_canonical() -> None:
    assert evidence_digest({"a": 1, "b": [1, 2]}) == evidence_digest({"b": [1, 2], "a": 1})
    assert evidence_digest({"a": 1}) != evidence_digest({"a": 2})

"""The chain's hashing rules and link checks, on records built in memory."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from bascule.governance.evidence.records import (
    MalformedRecord,
    Record,
    StoredRecord,
    canonical_bytes,
    check_links,
    genesis_prev,
    parse_record_bytes,
    record_hash,
    run_key_for,
)
from bascule.governance.evidence.report import render_markdown, render_report

pytestmark = pytest.mark.unit

WORKLOAD, RUN = "patients", "manual__2025-06-01T10_00_00_00_00-1a2b3c4d"
ARTIFACT = {"key": "_bascule/patients/snapshots/s1/inventory.jsonl.gz", "sha256": "ab" * 32, "size": 10}


def build_chain(kinds: list[str], workload: str = WORKLOAD, run: str = RUN) -> list[Record]:
    records: list[Record] = []
    prev = genesis_prev(workload, run)
    for seq, kind in enumerate(["genesis", *kinds]):
        if kind == "seal":
            payload = {"digest": records[-1].hash, "records": seq, "object_lock": False}
        else:
            payload = {"n": seq, "object_lock": False} if kind == "genesis" else {"n": seq, "note": "é"}
        record = Record.build(
            seq=seq,
            kind=kind,
            at=f"2025-06-01T10:00:{seq:02d}.000Z",
            actor="task",
            payload=payload,
            artifacts=[ARTIFACT] if kind == "inventory" else [],
            prev=prev,
            idempotency_key=None,
        )
        records.append(record)
        prev = record.hash
    return records


def stored(records: list[Record]) -> list[StoredRecord]:
    return [StoredRecord(r.seq, f"chain/{r.seq:06d}.json", r) for r in records]


def replace(record: Record, **changes: object) -> Record:
    return Record.from_dict({**record.to_dict(), **changes})


def test_canonical_bytes_are_sorted_compact_utf8() -> None:
    assert canonical_bytes({"b": 1, "a": {"d": [1, 2], "c": "é"}}) == '{"a":{"c":"é","d":[1,2]},"b":1}'.encode()
    # The same content in another key order hashes the same.
    assert canonical_bytes({"a": 1, "b": 2}) == canonical_bytes({"b": 2, "a": 1})
    with pytest.raises(ValueError):
        canonical_bytes({"x": float("nan")})


def test_record_hash_covers_every_field_but_hash() -> None:
    record = build_chain(["inventory"])[1]
    body = {k: v for k, v in record.to_dict().items() if k != "hash"}
    assert record.hash == hashlib.sha256(canonical_bytes(body)).hexdigest()
    assert record_hash({**record.to_dict(), "hash": "anything"}) == record.hash
    for field, value in [("payload", {"n": 2}), ("actor", "eve"), ("at", "2025"), ("prev", "0" * 64), ("seq", 9)]:
        assert record_hash({**record.to_dict(), field: value}) != record.hash, field


def test_stored_form_round_trips() -> None:
    record = build_chain(["inventory"])[1]
    assert Record.from_dict(parse_record_bytes(record.to_bytes())) == record
    assert json.loads(record.to_bytes())["artifacts"] == [ARTIFACT]


def test_payload_is_stored_as_the_json_that_was_hashed() -> None:
    record = Record.build(
        seq=1, kind="note", at="t", actor="a", payload={"t": (1, 2)}, artifacts=[], prev="p", idempotency_key=None
    )
    assert record.payload == {"t": [1, 2]}
    assert record_hash(json.loads(record.to_bytes())) == record.hash


def test_genesis_prev_binds_workload_and_run() -> None:
    value = genesis_prev("patients", "run-1")
    expected = hashlib.sha256(
        b'{"chain":"bascule-evidence-chain/1","run_key":"run-1","workload":"patients"}'
    ).hexdigest()
    assert value == expected
    assert genesis_prev("patients", "run-2") != value
    assert genesis_prev("other", "run-1") != value


def test_run_key_is_safe_and_collision_free() -> None:
    key = run_key_for("manual__2025-06-01T10:00:00+00:00")
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", key)
    assert key.startswith("manual__2025-06-01T10_00_00_00_00-")
    assert run_key_for("a:b") != run_key_for("a_b")
    assert run_key_for("scheduled__x") == "scheduled__x"
    assert not run_key_for("../etc").startswith(".")


def test_duplicate_fields_are_refused() -> None:
    with pytest.raises(MalformedRecord, match="duplicate field 'kind'"):
        parse_record_bytes(b'{"kind":"approval","kind":"note"}')


def test_intact_chain_verifies_with_its_head_digest() -> None:
    records = build_chain(["inventory", "approval", "seal"])
    broken, sealed, digest = check_links(stored(records), WORKLOAD, RUN)
    assert broken is None
    assert sealed is True
    assert digest == records[-1].hash


def test_changed_payload_is_the_first_broken_record() -> None:
    records = build_chain(["inventory", "approval", "cutover"])
    records[2] = replace(records[2], payload={"n": 2, "decision": "approved"})
    broken, _, digest = check_links(stored(records), WORKLOAD, RUN)
    assert broken is not None and broken.seq == 2
    assert broken.reason == "record 2 (approval): content changed — hash mismatch"
    assert digest is None


def test_rehashed_record_breaks_the_next_link() -> None:
    records = build_chain(["inventory", "approval", "cutover"])
    forged = {**records[2].to_dict(), "payload": {"decision": "approved"}}
    records[2] = replace(records[2], payload=forged["payload"], hash=record_hash(forged))
    broken, _, _ = check_links(stored(records), WORKLOAD, RUN)
    assert broken is not None
    assert broken.reason == "record 3 (cutover) prev does not match record 2"


def test_gap_is_reported_as_missing_record() -> None:
    records = build_chain(["inventory", "approval", "cutover", "note"])
    del records[3]
    broken, _, _ = check_links(stored(records), WORKLOAD, RUN)
    assert broken is not None and broken.seq == 3
    assert broken.reason == "record 3 missing: sequence jumps from 2 to 4"


def test_swapped_records_are_reported_as_reordered() -> None:
    records = build_chain(["inventory", "approval", "cutover"])
    items = stored(records)
    items[1], items[2] = (
        StoredRecord(1, items[1].key, records[2]),
        StoredRecord(2, items[2].key, records[1]),
    )
    broken, _, _ = check_links(items, WORKLOAD, RUN)
    assert broken is not None and broken.seq == 1
    assert "holds record 2 (approval)" in broken.reason and "reordered" in broken.reason


def test_chain_of_another_run_does_not_verify() -> None:
    records = build_chain(["inventory"], run="other-run")
    broken, _, _ = check_links(stored(records), WORKLOAD, RUN)
    assert broken is not None and broken.seq == 0
    assert "genesis value" in broken.reason


def test_record_after_seal_and_false_seal_are_caught() -> None:
    records = build_chain(["inventory", "seal"])
    late = Record.build(
        seq=3, kind="note", at="t", actor="x", payload={}, artifacts=[], prev=records[-1].hash, idempotency_key=None
    )
    broken, _, _ = check_links(stored([*records, late]), WORKLOAD, RUN)
    assert broken is not None and broken.reason == "record 3 (note) appended after the seal (record 2)"

    records = build_chain(["inventory"])
    lying_seal = Record.build(
        seq=2,
        kind="seal",
        at="t",
        actor="x",
        payload={"digest": "0" * 64, "records": 2},
        artifacts=[],
        prev=records[-1].hash,
        idempotency_key=None,
    )
    broken, _, _ = check_links(stored([*records, lying_seal]), WORKLOAD, RUN)
    assert broken is not None and "seal digest does not match" in broken.reason


def test_artifact_check_is_reported_on_its_record() -> None:
    records = build_chain(["inventory", "approval"])
    broken, _, _ = check_links(
        stored(records), WORKLOAD, RUN, lambda r: "artifact x sha256 differs" if r.artifacts else None
    )
    assert broken is not None and broken.reason == "record 1 (inventory): artifact x sha256 differs"


def test_report_escapes_content_and_loads_nothing_from_outside() -> None:
    records = build_chain(["inventory"])
    approval = Record.build(
        seq=2,
        kind="approval",
        at="t",
        actor="alice",
        payload={"decision": "approved", "reason": "<script>alert(1)</script>", "evidence_digest": "d" * 64},
        artifacts=[],
        prev=records[-1].hash,
        idempotency_key=None,
    )
    page = render_report([*records, approval], {})
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "<link" not in page.lower()
    assert "d" * 64 in page
    markdown = render_markdown([*records, approval])
    assert "<script>" not in markdown


def test_record_not_under_compliance_lock_breaks_a_locked_chain() -> None:
    records = build_chain(["inventory"])
    genesis = replace(records[0], payload={"object_lock": True})
    genesis = replace(genesis, hash=record_hash(genesis.to_dict()))
    inventory = replace(records[1], prev=genesis.hash)
    inventory = replace(inventory, hash=record_hash(inventory.to_dict()))
    items = [
        StoredRecord(0, "chain/000000.json", genesis, lock_known=True, lock_mode="COMPLIANCE"),
        StoredRecord(1, "chain/000001.json", inventory, lock_known=True, lock_mode="GOVERNANCE"),
    ]
    broken, _, _ = check_links(items, WORKLOAD, RUN)
    assert broken is not None and broken.reason == (
        "record 1 (inventory): not under Object Lock although the chain was opened with it"
    )
    # Headers not visible (no s3:GetObjectRetention) is not evidence of tampering.
    items[1] = StoredRecord(1, "chain/000001.json", inventory)
    assert check_links(items, WORKLOAD, RUN)[0] is None


def test_report_lists_the_encryption_the_lock_state_and_each_hds_rule_with_its_verdict() -> None:
    records = build_chain(["inventory"])
    checks = [
        {"name": "policy_encryption_at_rest", "ok": True, "detail": "SSE-C",
         "evidence": {"sse_c": True, "sse_c_key_md5": "tP/LI3N87DFaSk0aoqYgzg=="}},
        {"name": "policy_no_lifecycle", "ok": False, "detail": "bucket 'b' has enabled lifecycle rule(s) 'ia'"},
        {"name": "policy_sse_c_sampled", "ok": True, "detail": "20 sampled object(s): HEAD without the key 400"},
    ]  # fmt: skip
    policy = Record.build(
        seq=2, kind="policy", at="t", actor="preflight", artifacts=[], prev=records[-1].hash, idempotency_key=None,
        payload={"ok": False, "checks": [{"name": "source_location_exists", "ok": True, "detail": "x"}],
                 "policy": {"ok": False, "checks": checks}, "when": "preflight"},
    )  # fmt: skip
    page = render_report([*records, policy], {})
    hds = page[page.index("<h2>HDS rules</h2>") : page.index("<h2>Approvals</h2>")]
    assert "SSE-C (AES256), customer key MD5 tP/LI3N87DFaSk0aoqYgzg==" in hds
    assert "Evidence under Object Lock</th><td>unknown" in hds  # no verifier verdict given
    for name, verdict in (("policy_no_lifecycle", "FAILED"), ("policy_sse_c_sampled", "passed")):
        assert re.search(rf"<code>{name}</code></td><td><span class=\"\w+\">{verdict}</span>", hds), name
    assert "source_location_exists" not in hds  # a preflight check, not a policy rule
    assert "SecNumCloud qualification is in progress" in hds and "SecNumCloud-qualified" not in page


def test_report_shows_client_side_encryption_with_its_kek_and_the_deletion_mechanism() -> None:
    records = build_chain(["inventory"])
    checks = [
        {"name": "policy_encryption_at_rest", "ok": True, "detail": "client-side",
         "evidence": {"method": "client_side", "sse_c": False, "client_side_kek_md5": "Kek/MD5==",
                      "bucket_default_encryption": ["AES256"]}},
        {"name": "policy_client_side_sampled", "ok": True, "detail": "3 sampled object(s) carry the envelope"},
    ]  # fmt: skip
    policy = Record.build(
        seq=2, kind="policy", at="t", actor="preflight", artifacts=[], prev=records[-1].hash, idempotency_key=None,
        payload={"ok": True, "policy": {"ok": True, "checks": checks}, "when": "preflight"},
    )  # fmt: skip
    page = render_report([*records, policy], {})
    hds = page[page.index("<h2>HDS rules</h2>") : page.index("<h2>Approvals</h2>")]
    assert "client-side (AES-256-GCM frames" in hds and "key-encryption key MD5 Kek/MD5==" in hds
    assert "bucket default encryption for compliant deletion: AES256" in hds
    assert re.search(r"<code>policy_client_side_sampled</code></td><td><span class=\"\w+\">passed</span>", hds)

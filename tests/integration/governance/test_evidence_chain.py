"""The evidence chain against the S3 stand-in: appends from several writers, tampering caught, CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from bascule.governance.evidence.chain import ChainBroken, ChainSealed, EvidenceChain
from bascule.governance.evidence.records import chain_prefix, genesis_prev, run_key_for
from bascule.governance.evidence.verify import verify

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
WORKLOAD = "patients"


def make_bucket(client: Any, *, locked: bool = False) -> str:
    name = f"chain-{uuid.uuid4().hex[:12]}"
    client.create_bucket(
        Bucket=name, CreateBucketConfiguration={"LocationConstraint": "fr-par"}, ObjectLockEnabledForBucket=locked
    )
    return name


def new_run() -> str:
    return run_key_for(f"manual__{datetime.now(UTC).isoformat()}-{uuid.uuid4().hex[:6]}")


def put_artifact(client: Any, bucket: str, name: str, body: bytes) -> str:
    key = f"_bascule/{WORKLOAD}/snapshots/s1/{name}"
    client.put_object(Bucket=bucket, Key=key, Body=body)
    return key


def record_key(run: str, seq: int) -> str:
    return f"{chain_prefix(WORKLOAD, run)}{seq:06d}.json"


def read(client: Any, bucket: str, key: str) -> bytes:
    return bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())


def full_chain(client: Any, bucket: str, run: str, *, reason: str = "parity proven") -> EvidenceChain:
    """genesis, inventory (+artifact), transfer_report, validation, approval, cutover, seal."""
    chain = EvidenceChain(client, bucket, WORKLOAD, run, run_id=f"run id of {run}")
    inventory = put_artifact(client, bucket, "source-inventory.jsonl.gz", b"inventory-bytes" * 1000)
    chain.append("inventory", "snapshot", {"tables": 3, "rows": 1200, "bytes": 98765}, [inventory])
    chain.append("transfer_report", "copy_table", {"table": "public.a", "rows": 1200, "bytes": 98765})
    chain.append("validation", "validate", {"success": True, "summary": "3 tables equal"})
    chain.append(
        "approval",
        "approve_cutover",
        {"decision": "approved", "approver": "alice", "reason": reason, "evidence_digest": chain.digest()},
    )
    chain.append("cutover", "cutover", {"frozen_at": "2025-06-01T10:00:00Z", "switched_at": "2025-06-01T10:00:09Z"})
    chain.seal("cutover")
    return chain


def test_appended_chain_verifies_and_is_sealed(s3_client: Any) -> None:
    bucket, run = make_bucket(s3_client), new_run()
    chain = full_chain(s3_client, bucket, run)
    records = chain.records()
    assert [r.kind for r in records] == [
        "genesis",
        "inventory",
        "transfer_report",
        "validation",
        "approval",
        "cutover",
        "seal",
    ]
    assert [r.seq for r in records] == list(range(7))
    assert records[0].prev == genesis_prev(WORKLOAD, run)
    assert records[0].payload["object_lock"] is False
    assert records[-1].payload == {"digest": records[-2].hash, "records": 6, "object_lock": False}
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix=chain_prefix(WORKLOAD, run))["Contents"]
    assert [o["Key"] for o in listed] == [record_key(run, i) for i in range(7)]

    result = verify(s3_client, bucket, WORKLOAD, run)
    assert result.ok, result.reason
    assert (result.records, result.first_broken, result.sealed) == (7, None, True)
    assert result.digest == chain.digest() == records[-1].hash
    inventory = records[1].artifacts[0]
    assert inventory["size"] == len(b"inventory-bytes" * 1000)
    assert result.artifacts[inventory["key"]]["status"] == "ok"


def test_changed_payload_names_that_record(s3_client: Any) -> None:
    bucket, run = make_bucket(s3_client), new_run()
    full_chain(s3_client, bucket, run)
    key = record_key(run, 4)
    s3_client.put_object(Bucket=bucket, Key=key, Body=read(s3_client, bucket, key).replace(b"alice", b"mallory"))
    result = verify(s3_client, bucket, WORKLOAD, run)
    assert not result.ok
    assert result.first_broken == 4
    assert result.reason == "record 4 (approval): content changed — hash mismatch"
    assert result.digest is None and result.sealed is False


def test_deleted_middle_record_is_caught(s3_client: Any) -> None:
    bucket, run = make_bucket(s3_client), new_run()
    full_chain(s3_client, bucket, run)
    s3_client.delete_object(Bucket=bucket, Key=record_key(run, 3))
    result = verify(s3_client, bucket, WORKLOAD, run)
    assert (result.ok, result.first_broken) == (False, 3)
    assert result.reason == "record 3 missing: sequence jumps from 2 to 4"


def test_swapped_records_are_caught(s3_client: Any) -> None:
    bucket, run = make_bucket(s3_client), new_run()
    full_chain(s3_client, bucket, run)
    two, three = read(s3_client, bucket, record_key(run, 2)), read(s3_client, bucket, record_key(run, 3))
    s3_client.put_object(Bucket=bucket, Key=record_key(run, 2), Body=three)
    s3_client.put_object(Bucket=bucket, Key=record_key(run, 3), Body=two)
    result = verify(s3_client, bucket, WORKLOAD, run)
    assert (result.ok, result.first_broken) == (False, 2)
    assert "holds record 3 (validation)" in result.reason and "reordered" in result.reason


def test_changed_artifact_is_caught(s3_client: Any) -> None:
    bucket, run = make_bucket(s3_client), new_run()
    chain = full_chain(s3_client, bucket, run)
    key = chain.records()[1].artifacts[0]["key"]
    s3_client.put_object(Bucket=bucket, Key=key, Body=b"inventory-bytes" * 999 + b"inventory-bytez")
    result = verify(s3_client, bucket, WORKLOAD, run)
    assert (result.ok, result.first_broken) == (False, 1)
    assert result.reason.startswith(f"record 1 (inventory): artifact {key} sha256 differs")
    assert result.artifacts[key]["status"] == "differs"

    s3_client.delete_object(Bucket=bucket, Key=key)
    result = verify(s3_client, bucket, WORKLOAD, run)
    assert result.reason == f"record 1 (inventory): artifact {key} missing from the bucket"
    assert verify(s3_client, bucket, WORKLOAD, run, check_artifacts=False).ok


def test_nothing_is_appended_after_the_seal(s3_client: Any) -> None:
    bucket, run = make_bucket(s3_client), new_run()
    chain = full_chain(s3_client, bucket, run)
    seal = chain.records()[-1]
    other_process = EvidenceChain(s3_client, bucket, WORKLOAD, run)
    with pytest.raises(ChainSealed, match="sealed at record 6"):
        other_process.append("note", "late_task", {"text": "too late"})
    assert other_process.seal("retry") == seal
    assert len(chain.records()) == 7


def test_a_retry_with_the_same_idempotency_key_appends_once(s3_client: Any) -> None:
    bucket, run = make_bucket(s3_client), new_run()
    first_try = EvidenceChain(s3_client, bucket, WORKLOAD, run)
    written = first_try.append("table_diff", "validate", {"success": True}, idempotency_key="validate:0")
    first_try.append("note", "other", {"text": "in between"})
    retry = EvidenceChain(s3_client, bucket, WORKLOAD, run)  # a new task process
    again = retry.append("table_diff", "validate", {"success": True}, idempotency_key="validate:0")
    assert again == written
    assert retry.find("validate:0") == written and retry.find("validate:1") is None
    assert [r.kind for r in retry.records()] == ["genesis", "table_diff", "note"]


def test_concurrent_writers_build_one_consecutive_chain(s3_client: Any) -> None:
    bucket, run = make_bucket(s3_client), new_run()
    per_writer, errors = 15, []
    start = threading.Barrier(2)

    def writer(kind: str) -> None:
        chain = EvidenceChain(s3_client, bucket, WORKLOAD, run)  # one per thread, like one per task process
        start.wait()
        try:
            for i in range(per_writer):
                chain.append(kind, f"{kind}_task", {"i": i}, idempotency_key=f"{kind}:{i}")
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(kind,)) for kind in ("transfer_report", "table_diff")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    records = EvidenceChain(s3_client, bucket, WORKLOAD, run).records()
    assert [r.seq for r in records] == list(range(2 * per_writer + 1))
    for kind in ("transfer_report", "table_diff"):
        # Each writer's records are all there, in its own order.
        assert [r.payload["i"] for r in records if r.kind == kind] == list(range(per_writer))
    result = verify(s3_client, bucket, WORKLOAD, run)
    assert result.ok and result.records == 2 * per_writer + 1


def test_appending_to_a_tampered_chain_is_refused(s3_client: Any) -> None:
    bucket, run = make_bucket(s3_client), new_run()
    chain = EvidenceChain(s3_client, bucket, WORKLOAD, run)
    chain.append("approval", "approve", {"decision": "rejected"})
    key = record_key(run, 1)
    s3_client.put_object(Bucket=bucket, Key=key, Body=read(s3_client, bucket, key).replace(b"rejected", b"approved"))
    with pytest.raises(ChainBroken, match="record 1 \\(approval\\): content changed"):
        EvidenceChain(s3_client, bucket, WORKLOAD, run).append("cutover", "cutover", {})


def test_object_lock_bucket_locks_records_and_artifacts(s3_client: Any) -> None:
    bucket, run = make_bucket(s3_client, locked=True), new_run()
    chain = EvidenceChain(s3_client, bucket, WORKLOAD, run)
    assert chain.object_lock is True
    artifact_key = put_artifact(s3_client, bucket, "report.html", b"<html>report</html>")
    chain.append("validation", "validate", {"success": True}, [artifact_key])
    chain.append("note", "validate", {"text": "tail"})
    assert chain.records()[0].payload["object_lock"] is True
    six_years = datetime.now(UTC) + timedelta(days=6 * 365)
    for key in (record_key(run, 0), record_key(run, 2), artifact_key):
        head = s3_client.head_object(Bucket=bucket, Key=key)
        assert head["ObjectLockMode"] == "COMPLIANCE", key
        assert head["ObjectLockRetainUntilDate"] > six_years, key
    assert verify(s3_client, bucket, WORKLOAD, run).ok

    version = s3_client.head_object(Bucket=bucket, Key=record_key(run, 1))["VersionId"]
    with pytest.raises(ClientError):
        s3_client.delete_object(Bucket=bucket, Key=record_key(run, 1), VersionId=version)

    # Deleting the tail of an unsealed chain leaves a valid-looking prefix: the version history shows it.
    s3_client.delete_object(Bucket=bucket, Key=record_key(run, 2))
    result = verify(s3_client, bucket, WORKLOAD, run)
    assert (result.ok, result.first_broken) == (False, 2)
    assert result.reason.startswith("record 2 deleted after it was written")

    # A new version with changed content: the hash breaks, and the history says it was rewritten.
    key = record_key(run, 1)
    s3_client.put_object(Bucket=bucket, Key=key, Body=read(s3_client, bucket, key).replace(b"true", b"false"))
    result = verify(s3_client, bucket, WORKLOAD, run)
    assert result.first_broken == 1
    assert "content changed — hash mismatch" in result.reason and "rewritten after it was written" in result.reason


# -- command line -------------------------------------------------------------------------


def run_cli(s3_client: Any, *args: str, module: bool = False) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "y",
        "AWS_DEFAULT_REGION": "fr-par",
    }
    entry = ["-m", "bascule.governance.evidence"] if module else [str(ROOT / "scripts" / "verify_evidence.py")]
    return subprocess.run(
        [sys.executable, *entry, *args, "--endpoint-url", s3_client.meta.endpoint_url],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )


def test_cli_exit_codes_and_report(s3_client: Any, tmp_path: Path) -> None:
    bucket, run = make_bucket(s3_client), new_run()
    full_chain(s3_client, bucket, run, reason="<script>alert('x')</script> looks fine")
    uri = f"s3://{bucket}/_bascule/{WORKLOAD}/runs/{run}/"
    report = tmp_path / "report.html"

    ok = run_cli(s3_client, uri, "--report", str(report), "--require-seal")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("OK: 7 record(s), sealed")
    page = report.read_text()
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert not re.search(r"""<(script|link|img|iframe)\b""", page, re.I)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "alice" in page and "98,765" in page and "passed" in page

    listed = run_cli(s3_client, "--list", f"s3://{bucket}/_bascule/{WORKLOAD}/")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith(f"{run}\t7 record(s)")

    key = record_key(run, 4)
    s3_client.put_object(Bucket=bucket, Key=key, Body=read(s3_client, bucket, key).replace(b"alice", b"bob"))
    broken = run_cli(s3_client, "verify", uri, module=True)
    assert broken.returncode == 1, broken.stderr
    assert "record 4 (approval): content changed — hash mismatch" in broken.stdout

    assert run_cli(s3_client, "s3://only-a-bucket/").returncode == 2
    missing = run_cli(s3_client, f"s3://chain-no-such-bucket-{uuid.uuid4().hex[:8]}/_bascule/{WORKLOAD}/runs/r/")
    assert missing.returncode == 2 and "NoSuchBucket" in missing.stderr
    empty = run_cli(s3_client, f"s3://{bucket}/_bascule/{WORKLOAD}/runs/no-such-run/")
    assert empty.returncode == 2 and "no evidence chain" in empty.stderr
    assert "evidence.bucket in its manifest" in empty.stderr  # where to look instead


def test_cli_require_seal_fails_an_open_chain(s3_client: Any) -> None:
    bucket, run = make_bucket(s3_client), new_run()
    EvidenceChain(s3_client, bucket, WORKLOAD, run).append("note", "task", {"text": "open"})
    uri = f"s3://{bucket}/_bascule/{WORKLOAD}/runs/{run}/"
    assert run_cli(s3_client, uri).returncode == 0
    assert run_cli(s3_client, uri, "--require-seal").returncode == 1

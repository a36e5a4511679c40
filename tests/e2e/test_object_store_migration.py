"""Object-store migrations through a real Airflow (scheduler, API server, triggerer) and the REST API.

One ``airflow standalone`` serves the module. Each test owns one workload (its own
container and data bucket; the workloads share one evidence bucket under Object Lock, each
under its own prefix), so tests do not disturb each other. Approvals are given over
the REST API by ``approver1``, never by the ``operator`` who triggered the run.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from azure.storage.blob import BlobServiceClient, ContainerClient

import devstack
from airflow_stack import AirflowStack, Api
from bascule.synthetic.blob_writer import BlobWriter, check_blob_target, create_writer_policy, writer_sas
from bascule.synthetic.documents import DocumentsSpec, generate_migration_demo
from bascule.synthetic.snds import SMALL, upload_to_azure

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = yaml.safe_load((ROOT / "include" / "workloads" / "snds_extracts.yaml").read_text())
WORKLOADS = (
    "e2e_full",
    "e2e_reject",
    "e2e_timeout",
    "e2e_corrupt",
    "e2e_drift",
    "e2e_quorum",
    "e2e_bound",
    "e2e_bypass",
)
DOCUMENTS = DocumentsSpec(documents=40, large_files=1, large_size=6 * 1024 * 1024)
EVIDENCE_BUCKET = "e2e-objects-evidence"  # created by the first preflight, with Object Lock


def _container_name(workload: str) -> str:
    return workload.replace("_", "-") + "-src"


def _bucket_name(workload: str) -> str:
    return workload.replace("_", "-") + "-dst"


def _manifest(workload: str) -> dict:
    data = json.loads(json.dumps(TEMPLATE))
    data["id"] = workload
    data["source"]["container"] = _container_name(workload)
    data["target"]["bucket"] = _bucket_name(workload)
    data["evidence"]["bucket"] = EVIDENCE_BUCKET
    data["transfer"] = {"shards": 2, "concurrency": 4, "part_size_mib": 5}
    data["approvals"] = {"approvers": ["approver1", "approver2"], "required": 1, "timeout_minutes": 60}
    if workload == "e2e_timeout":
        data["approvals"]["timeout_minutes"] = 1
    if workload == "e2e_quorum":
        # The operator is listed too: four-eyes must still keep them out of their own run.
        data["approvals"] = {"approvers": ["operator", "approver1", "approver2"], "required": 2}
    if workload == "e2e_bound":
        data["approvals"]["required"] = 2
    if workload == "e2e_drift":
        # The other freeze method, through Airflow too: one lease per blob (a few dozen here).
        data["cutover"]["freeze"] = {"method": "leases", "max_objects": 50_000}
    return data


@pytest.fixture(scope="module")
def azure(blob_service: BlobServiceClient) -> BlobServiceClient:
    return blob_service


@pytest.fixture(scope="module")
def s3(s3_client):
    return s3_client


@pytest.fixture(scope="module")
def airflow(standins: devstack.Ports, session_dir: Path, azure: BlobServiceClient) -> Iterator[AirflowStack]:
    workloads = session_dir / "e2e-workloads"
    workloads.mkdir(exist_ok=True)
    for workload in WORKLOADS:
        (workloads / f"{workload}.yaml").write_text(yaml.safe_dump(_manifest(workload), sort_keys=False))
        container = azure.get_container_client(_container_name(workload))
        upload_to_azure(container, generate_migration_demo(SMALL, DOCUMENTS))
        # The stored access policy the manifest's freeze narrows, as the platform's ops create it.
        create_writer_policy(container, TEMPLATE["cutover"]["freeze"]["policy_id"])
    stack = AirflowStack(
        home=session_dir / "e2e-airflow",
        port=devstack.free_port(),
        state_dir=session_dir / "e2e-airflow-state",
        extra_env={**devstack.local_connections(standins), "BASCULE_WORKLOADS_DIR": str(workloads)},
    )
    stack.start()
    stack.airflow("dags", "reserialize")
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def operator(airflow: AirflowStack) -> Api:
    api = airflow.api("operator")
    for workload in WORKLOADS:
        api.unpause(f"migrate_{workload}")
    return api


@pytest.fixture(scope="module")
def approver(airflow: AirflowStack) -> Api:
    return airflow.api("approver1")


def _trigger_and_reach_gate(operator: Api, workload: str, **conf) -> str:
    dag_id = f"migrate_{workload}"
    run_id = operator.trigger(dag_id, {"dry_run": False, "rollback": False, **conf})
    state = operator.reach_gate(dag_id, run_id)
    assert state == "awaiting_input", f"{dag_id}: {state}; {operator.failure_report(dag_id, run_id)}"
    return run_id


def _source_objects(container: ContainerClient) -> dict[str, tuple[bytes, str | None, dict]]:
    found = {}
    for blob in container.list_blobs(include=["metadata"]):
        body = container.download_blob(blob.name).readall()
        found[blob.name] = (body, blob.content_settings.content_type, dict(blob.metadata or {}))
    return found


def _target_objects(s3, bucket: str) -> dict[str, tuple[bytes, str | None, dict]]:
    """Every object of the data bucket: nothing is skipped, Bascule writes nothing of its own there."""
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", ()):
            assert item["Key"] not in found, f"{item['Key']} listed twice"
            answer = s3.get_object(Bucket=bucket, Key=item["Key"])
            found[item["Key"]] = (answer["Body"].read(), answer.get("ContentType"), answer.get("Metadata", {}))
    return found


def _routing(s3, workload: str) -> dict | None:
    try:
        answer = s3.get_object(Bucket=EVIDENCE_BUCKET, Key=f"_bascule/routing/{workload}.json")
    except s3.exceptions.NoSuchKey:
        return None
    return json.loads(answer["Body"].read())


def _evidence(s3, workload: str, suffix: str) -> list[dict]:
    bucket = EVIDENCE_BUCKET
    keys = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"_bascule/{workload}/")
        for item in page.get("Contents", ())
        if item["Key"].endswith(suffix)
    ]
    return [json.loads(s3.get_object(Bucket=bucket, Key=k)["Body"].read()) for k in sorted(keys)]


def _responses(s3, workload: str) -> list[dict]:
    """Every recorded gate response of the workload, oldest first (keys start with a UTC stamp)."""
    return [r for r in _evidence(s3, workload, ".json") if "decision" in r and "evidence_digest" in r]


def _assert_target_matches_source(azure: BlobServiceClient, s3, workload: str) -> None:
    source = _source_objects(azure.get_container_client(_container_name(workload)))
    target = _target_objects(s3, _bucket_name(workload))
    # Same names, same count, nothing else: no evidence, approval, routing or report file among them.
    assert sorted(target) == sorted(source), f"extra in the data bucket: {sorted(set(target) - set(source))[:10]}"
    assert len(target) == len(source)
    for key, (body, content_type, metadata) in source.items():
        t_body, t_type, t_meta = target[key]
        assert hashlib.md5(t_body).digest() == hashlib.md5(body).digest(), f"bytes differ for {key!r}"
        assert t_type == content_type, f"content type differs for {key!r}"
        for name, value in metadata.items():
            assert t_meta.get(name) == value, f"metadata {name} differs for {key!r}"
        assert t_meta["md5chksum"] == base64.b64encode(hashlib.md5(body).digest()).decode()


def test_full_migration_then_idempotent_rerun_then_rollback(
    azure, s3, operator, approver, airflow, tmp_path: Path
) -> None:
    dag_id = "migrate_e2e_full"
    run_id = _trigger_and_reach_gate(operator, "e2e_full")
    # An application writing through a SAS of the policy from here on: its writes are all in the
    # delta (the snapshot is taken), and the cutover's policy freeze must cut it off.
    policy = TEMPLATE["cutover"]["freeze"]["policy_id"]
    sas = writer_sas(devstack.AZURITE_ACCOUNT, devstack.AZURITE_KEY, _container_name("e2e_full"), policy)
    with BlobWriter(azure.url, _container_name("e2e_full"), sas, tmp_path / "blob-writes.jsonl", interval=0.2) as app:
        app.wait_for(lambda stats: stats.acknowledged >= 3)
        approver.respond(dag_id, run_id, "approve_cutover", "Approve", "evidence reviewed")
        assert operator.wait_for(dag_id, run_id, timeout=600) == "success", operator.task_states(dag_id, run_id)
        writes = app.wait_for(lambda stats: stats.refused >= 1)
    assert writes.last_acknowledged_at < writes.first_refused_at, "nothing is acknowledged after the freeze"
    assert check_blob_target(s3, _bucket_name("e2e_full"), app.log_path) == [], "an acknowledged write was lost"
    (record,) = _evidence(s3, "e2e_full", "cutover.json")
    assert record["freeze_method"] == "stored_access_policy" and record["freeze"]["policy_id"] == policy
    assert record["delta"]["new"] >= writes.acknowledged, record["delta"]

    _assert_target_matches_source(azure, s3, "e2e_full")
    transferred = [operator.xcom(dag_id, run_id, "transfer", i) for i in range(2)]
    assert sum(t["copied"] for t in transferred) == SMALL.object_count + DOCUMENTS.documents + DOCUMENTS.large_files
    routing = _routing(s3, "e2e_full")
    assert routing["live"] == "scaleway"
    (approval,) = _responses(s3, "e2e_full")
    assert (approval["decision"], approval["user"], approval["reason"]) == ("Approve", "approver1", "evidence reviewed")
    assert approval["evidence_digest"] == operator.xcom(dag_id, run_id, "approve_cutover")["evidence_digest"]
    cutover = operator.xcom(dag_id, run_id, "cutover")
    assert cutover["freeze_to_switch_seconds"] > 0

    # A second run moves nothing and ends in the same state.
    rerun = _trigger_and_reach_gate(operator, "e2e_full")
    approver.respond(dag_id, rerun, "approve_cutover", "Approve", "rerun")
    assert operator.wait_for(dag_id, rerun, timeout=600) == "success", operator.task_states(dag_id, rerun)
    again = [operator.xcom(dag_id, rerun, "transfer", i) for i in range(2)]
    assert sum(t["copied"] for t in again) == 0
    # Everything is skipped: the first transfer's objects and the application's, which its cutover's delta copied.
    assert sum(t["skipped"] for t in again) == sum(t["copied"] for t in transferred) + record["delta"]["new"]
    _assert_target_matches_source(azure, s3, "e2e_full")

    # Rollback on demand: routing back to Azure, source writable again; twice is harmless.
    container = azure.get_container_client(_container_name("e2e_full"))
    for attempt in range(2):
        rollback = operator.trigger(dag_id, {"rollback": True, "rollback_reason": f"drill {attempt}"})
        assert operator.wait_for(dag_id, rollback, timeout=300) == "success"
        states = operator.task_states(dag_id, rollback)
        assert states["rollback_requested"] == "success" and states["preflight"] == "skipped"
        assert _routing(s3, "e2e_full")["live"] == "azure"
    container.upload_blob(
        "patients/patients.csv", container.download_blob("patients/patients.csv").readall(), overwrite=True
    )
    history = [h["live"] for h in _routing(s3, "e2e_full")["history"]]
    assert history == ["azure", "scaleway", "azure"], history
    _assert_evidence_verifies_locked(s3, run_id)


def _assert_evidence_verifies_locked(s3, run_id: str) -> None:
    """The first run's chain verifies from the evidence bucket, each record locked; a locked record
    cannot be deleted, and an overwrite on top of it is reported by the verifier."""
    from botocore.exceptions import ClientError

    from bascule.governance.evidence.records import run_key_for
    from bascule.governance.evidence.verify import verify

    lock = s3.get_object_lock_configuration(Bucket=EVIDENCE_BUCKET)["ObjectLockConfiguration"]
    assert lock["ObjectLockEnabled"] == "Enabled" and lock["Rule"]["DefaultRetention"]["Mode"] == "COMPLIANCE"
    result = verify(s3, EVIDENCE_BUCKET, "e2e_full", run_key_for(run_id))
    assert result.ok and result.sealed and result.object_lock, result.summary()
    assert result.records >= 8 and len(result.locks) == result.records
    assert {entry["mode"] for entry in result.locks} == {"COMPLIANCE"}, result.locks
    assert all(entry["retain_until"] for entry in result.locks)

    first = f"_bascule/e2e_full/runs/{run_key_for(run_id)}/chain/000001.json"
    version = s3.head_object(Bucket=EVIDENCE_BUCKET, Key=first)["VersionId"]
    with pytest.raises(ClientError):
        s3.delete_object(Bucket=EVIDENCE_BUCKET, Key=first, VersionId=version)
    s3.put_object(Bucket=EVIDENCE_BUCKET, Key=first, Body=b'{"forged": true}', ContentMD5=_md5_b64(b'{"forged": true}'))
    forged = verify(s3, EVIDENCE_BUCKET, "e2e_full", run_key_for(run_id))
    assert not forged.ok and forged.first_broken == 1, forged.summary()
    assert s3.get_object(Bucket=EVIDENCE_BUCKET, Key=first, VersionId=version)["ObjectLockMode"] == "COMPLIANCE"


def _md5_b64(body: bytes) -> str:
    return base64.b64encode(hashlib.md5(body).digest()).decode()


def test_reject_fails_the_run_and_nothing_cuts_over(azure, s3, operator, approver) -> None:
    dag_id = "migrate_e2e_reject"
    run_id = _trigger_and_reach_gate(operator, "e2e_reject")
    approver.respond(dag_id, run_id, "approve_cutover", "Reject", "shadow diff needs review")
    assert operator.wait_for(dag_id, run_id, timeout=300) == "failed"
    states = operator.task_states(dag_id, run_id)
    assert states["approve_cutover"] == "failed"
    assert states["cutover"] in ("upstream_failed", None)
    assert _routing(s3, "e2e_reject") is None, "no routing may exist: nothing was cut over"
    (record,) = _responses(s3, "e2e_reject")
    assert (record["decision"], record["reason"]) == ("Reject", "shadow diff needs review")
    container = azure.get_container_client(_container_name("e2e_reject"))
    container.upload_blob("patients/patients.csv", b"still writable", overwrite=True)  # never frozen


def test_no_response_before_the_deadline_means_no_cutover(s3, operator) -> None:
    dag_id = "migrate_e2e_timeout"
    run_id = _trigger_and_reach_gate(operator, "e2e_timeout")
    assert operator.wait_for(dag_id, run_id, timeout=240) == "failed"
    states = operator.task_states(dag_id, run_id)
    assert states["approve_cutover"] == "failed"
    assert states["cutover"] in ("upstream_failed", None)
    assert _routing(s3, "e2e_timeout") is None


def test_corrupted_target_object_fails_validation_naming_it(s3, operator, approver) -> None:
    dag_id = "migrate_e2e_corrupt"
    first = _trigger_and_reach_gate(operator, "e2e_corrupt")
    approver.respond(dag_id, first, "approve_cutover", "Reject", "stop before cutover")
    operator.wait_for(dag_id, first, timeout=300)

    bucket, key = _bucket_name("e2e_corrupt"), "stays/year=2024/month=03/stays.csv"
    original = s3.get_object(Bucket=bucket, Key=key)
    body = bytearray(original["Body"].read())
    body[len(body) // 2] ^= 0x01  # one bit of one byte; the recorded hash is kept
    s3.put_object(
        Bucket=bucket, Key=key, Body=bytes(body), Metadata=original["Metadata"], ContentType=original["ContentType"]
    )

    run_id = operator.trigger(dag_id, {"dry_run": False, "rollback": False})
    assert operator.wait_for(dag_id, run_id, timeout=600) == "failed"
    states = operator.task_states(dag_id, run_id)
    assert states["validate"] == "failed"
    assert all(states[t] in ("upstream_failed", None) for t in ("shadow_run", "approve_cutover", "cutover"))
    log = operator.task_log(dag_id, run_id, "validate")
    assert key in log and "read back and hashed" in log, log[-3000:]


def test_drift_after_snapshot_is_synced_at_cutover(azure, s3, operator, approver) -> None:
    dag_id = "migrate_e2e_drift"
    container = azure.get_container_client(_container_name("e2e_drift"))
    run_id = _trigger_and_reach_gate(operator, "e2e_drift")
    container.upload_blob("documents/added after snapshot.txt", b"new", overwrite=True)
    container.upload_blob("patients/patients.csv", b"patient_id,sex,birth_year,department\n", overwrite=True)
    deleted = next(b.name for b in container.list_blobs(name_starts_with="documents/year="))
    container.delete_blob(deleted)

    approver.respond(dag_id, run_id, "approve_cutover", "Approve", "drift drill")
    assert operator.wait_for(dag_id, run_id, timeout=600) == "success", operator.task_states(dag_id, run_id)
    _assert_target_matches_source(azure, s3, "e2e_drift")
    (record,) = _evidence(s3, "e2e_drift", "cutover.json")
    assert record["freeze_method"] == "leases" and record["freeze"]["leased"] > 0
    delta = record["delta"]
    assert sorted(delta["changed"]) == ["documents/added after snapshot.txt", "patients/patients.csv"]
    assert delta["deleted"] == [deleted]


def _wait_asked_again(operator: Api, dag_id: str, run_id: str) -> None:
    """After a response that does not complete the quorum, the same task parks again."""
    state = operator.reach_gate(dag_id, run_id, timeout=120)
    assert state == "awaiting_input", f"the gate did not ask again: {operator.failure_report(dag_id, run_id)}"


def test_quorum_needs_two_distinct_approvers_and_never_the_triggering_user(s3, operator, airflow) -> None:
    from airflow_stack import ApiError

    dag_id = "migrate_e2e_quorum"
    run_id = _trigger_and_reach_gate(operator, "e2e_quorum")
    # Four-eyes: the operator triggered the run; although listed, they may not answer.
    with pytest.raises(ApiError) as refused:
        operator.respond(dag_id, run_id, "approve_cutover", "Approve", "my own run")
    assert refused.value.status == 403
    # A viewer is refused too, and so is an admin who is not a named approver.
    for user in ("viewer", "admin"):
        with pytest.raises(ApiError) as other_refused:
            airflow.api(user).respond(dag_id, run_id, "approve_cutover", "Approve", "")
        assert other_refused.value.status == 403, user

    first, second = airflow.api("approver1"), airflow.api("approver2")
    first.respond(dag_id, run_id, "approve_cutover", "Approve", "first look")
    _wait_asked_again(operator, dag_id, run_id)
    # The same approver answering again does not make two approvals.
    first.respond(dag_id, run_id, "approve_cutover", "Approve", "me again")
    _wait_asked_again(operator, dag_id, run_id)
    assert _routing(s3, "e2e_quorum") is None, "one person cannot satisfy a 2-approval gate"
    second.respond(dag_id, run_id, "approve_cutover", "Approve", "second pair of eyes")
    assert operator.wait_for(dag_id, run_id, timeout=600) == "success", operator.task_states(dag_id, run_id)
    assert _routing(s3, "e2e_quorum")["live"] == "scaleway"
    gate = operator.xcom(dag_id, run_id, "approve_cutover")
    assert gate["approved_by"] == ["approver1", "approver2"]
    recorded = _responses(s3, "e2e_quorum")
    assert [r["user"] for r in recorded] == ["approver1", "approver1", "approver2"]
    assert {r["evidence_digest"] for r in recorded} == {gate["evidence_digest"]}


def test_approvals_on_changed_evidence_are_void(s3, operator, airflow) -> None:
    dag_id = "migrate_e2e_bound"
    run_id = _trigger_and_reach_gate(operator, "e2e_bound")
    first, second = airflow.api("approver1"), airflow.api("approver2")
    first.respond(dag_id, run_id, "approve_cutover", "Approve", "before the fix")
    _wait_asked_again(operator, dag_id, run_id)

    # Validation re-runs (as after a fix): new reports, new evidence digest.
    operator.clear(dag_id, run_id, ["validate"], downstream=True)
    _wait_asked_again(operator, dag_id, run_id)
    second.respond(dag_id, run_id, "approve_cutover", "Approve", "after the fix")
    _wait_asked_again(operator, dag_id, run_id)  # approver1's approval was on the old evidence: void
    assert _routing(s3, "e2e_bound") is None
    first.respond(dag_id, run_id, "approve_cutover", "Approve", "re-approved on the new evidence")
    assert operator.wait_for(dag_id, run_id, timeout=600) == "success", operator.task_states(dag_id, run_id)
    digests = [r["evidence_digest"] for r in _responses(s3, "e2e_bound")]
    assert len(set(digests)) == 2 and digests[1] == digests[2], digests


def test_a_gate_marked_success_by_hand_does_not_cut_over(s3, operator) -> None:
    dag_id = "migrate_e2e_bypass"
    run_id = _trigger_and_reach_gate(operator, "e2e_bypass")
    operator.set_task_state(dag_id, run_id, "approve_cutover", "success")
    assert operator.wait_for(dag_id, run_id, timeout=300) == "failed"
    assert operator.task_states(dag_id, run_id)["cutover"] == "failed"
    assert _routing(s3, "e2e_bypass") is None or _routing(s3, "e2e_bypass")["live"] == "azure"
    log = operator.task_log(dag_id, run_id, "cutover")
    assert "no valid approval quorum" in log, log[-3000:]

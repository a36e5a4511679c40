"""One object migration on the CeleryExecutor stack, through everything a distributed
deployment does to it: a worker killed (``kill -9`` of its whole process tree) while it
copies shards, the approval gate answered by FAB users with the project's roles, and the
scheduler killed while the gate waits between two approvals.

The tests run in file order on one DAG run (``RUN`` below): each one starts where the
previous one left it, so the stack and the data are paid for once.
"""

from __future__ import annotations

import base64
import hashlib
import time

import pytest

from airflow_stack import ApiError
from bascule.synthetic.documents import DocumentsSpec, generate_migration_demo
from bascule.synthetic.snds import SMALL, upload_to_azure
from celery_stack import who_ran_what
from dist_support import BUCKET, CONTAINER, OBJECT_WORKLOAD, assert_evidence_chain_verifies

pytestmark = pytest.mark.distributed

DAG = f"migrate_{OBJECT_WORKLOAD}"
GATE = "approve_cutover"
# Enough small objects that four shards of two threads take tens of seconds on 2 busy cores.
DOCUMENTS = DocumentsSpec(documents=1500, large_files=2, large_size=6 * 1024 * 1024)
RUN: dict = {}


def _target_md5s(s3, bucket: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", ()):  # data only: the evidence has its own bucket
            assert item["Key"] not in found, f"{item['Key']} listed twice"
            found[item["Key"]] = hashlib.md5(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()).hexdigest()
    return found


def _copied_so_far(s3, bucket: str) -> int:
    try:
        pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket=bucket))
    except s3.exceptions.NoSuchBucket:
        return 0
    return sum(len(page.get("Contents", ())) for page in pages)


def _running_transfers(api) -> list[dict]:
    answer = api.get(f"/api/v2/dags/{DAG}/dagRuns/{RUN['run_id']}/taskInstances?task_id=transfer&limit=50")
    return [ti for ti in answer["task_instances"] if ti["task_id"] == "transfer" and ti["state"] == "running"]


def test_a_worker_killed_mid_transfer_loses_and_duplicates_nothing(celery_stack, stack_operator, stack_s3, stack_azure):
    source = stack_azure.get_container_client(CONTAINER)
    started = time.monotonic()
    objects = list(generate_migration_demo(SMALL, DOCUMENTS))
    seeded = upload_to_azure(source, objects)
    expected = {o.key: hashlib.md5(o.body).hexdigest() for o in objects}
    print(f"\nseeded {seeded.count} objects ({seeded.bytes / 1e6:.1f} MB) in {time.monotonic() - started:.0f} s")
    stack_operator.unpause(DAG)
    RUN["run_id"] = run_id = stack_operator.trigger(DAG, {"dry_run": False, "rollback": False})

    # Kill the worker of a running shard once a fifth of the objects are on the target.
    bucket = BUCKET
    deadline = time.monotonic() + 240
    while _copied_so_far(stack_s3, bucket) < seeded.count // 5 or not _running_transfers(stack_operator):
        assert time.monotonic() < deadline, stack_operator.failure_report(DAG, run_id)
        assert stack_operator.run_state(DAG, run_id) in ("queued", "running"), stack_operator.failure_report(
            DAG, run_id
        )
        time.sleep(0.5)
    victim_tis = _running_transfers(stack_operator)
    victim = victim_tis[0]["hostname"]
    killed_shards = sorted(ti["map_index"] for ti in victim_tis if ti["hostname"] == victim)
    on_target_at_kill = _copied_so_far(stack_s3, bucket)
    killed_at = time.monotonic()
    print(f"run started; kill {killed_at - started:.0f} s after the seeding began")
    tree = celery_stack.kill(victim)
    print(f"\nkill -9 of {victim} ({len(tree)} processes) while it ran shards {killed_shards}; "
          f"{on_target_at_kill}/{seeded.count} objects on the target")  # fmt: skip
    celery_stack.restart(victim)  # the stack has two workers again; the lost tasks are not resumed by it

    transfers = {}
    for shard in range(4):
        state = stack_operator.wait_for(DAG, run_id, task=f"transfer[{shard}]", states=("success",), timeout=300)
        assert state == "success", stack_operator.failure_report(DAG, run_id)
        transfers[shard] = stack_operator.xcom(DAG, run_id, "transfer", shard)
    print(f"transfer done {time.monotonic() - killed_at:.0f} s after the kill")
    rows = who_ran_what(stack_operator, DAG, run_id)
    retried = {ti["map_index"] for ti in rows if ti["task_id"] == "transfer" and ti["try_number"] > 1}
    assert set(killed_shards) <= retried, f"the killed shards {killed_shards} were retried: {retried}"
    # Shards ran on both workers: the victim before the kill, the survivor (at least) after it.
    assert {ti["hostname"] for ti in rows if ti["task_id"] == "transfer"} | {victim} == {"worker1", "worker2"}

    # Independently of Bascule's own reports: exactly the source's keys, each with the source's bytes.
    assert _target_md5s(stack_s3, bucket) == expected
    assert sum(t["copied"] + t["skipped"] for t in transfers.values()) == seeded.count
    skipped = sum(transfers[s]["skipped"] for s in killed_shards)
    copied_again = sum(transfers[s]["copied"] for s in killed_shards)
    print(f"retried shards {killed_shards}: {skipped} objects already verified and skipped, {copied_again} copied")
    assert skipped > 0, "objects copied and verified before the kill must not be copied again"
    # Each object carries the source MD5 it was verified against (what rclone check reads too).
    for key in list(expected)[:: max(1, len(expected) // 50)]:
        meta = stack_s3.head_object(Bucket=bucket, Key=key)["Metadata"]
        assert base64.b64decode(meta["md5chksum"]).hex() == expected[key], key


def test_only_a_named_approver_may_answer_the_gate(celery_stack, stack_operator):
    run_id = RUN["run_id"]
    state = stack_operator.reach_gate(DAG, run_id, timeout=300)
    assert state == "awaiting_input", stack_operator.failure_report(DAG, run_id)
    approver1, approver3 = celery_stack.api("approver1"), celery_stack.api("approver3")

    def refused(api, action) -> int:
        with pytest.raises(ApiError) as caught:
            action(api)
        return caught.value.status

    answer = lambda api: api.respond(DAG, run_id, GATE, "Approve", f"{api.user} tries")  # noqa: E731
    # The operator triggered the run (four-eyes) and has no HITL edit right; approver3 holds the
    # Approver role but is not named in the manifest; the viewer may only look.
    assert refused(stack_operator, answer) == 403
    assert refused(approver3, answer) == 403
    assert refused(celery_stack.api("viewer"), answer) == 403
    # The Approver role answers gates and does nothing else to a run.
    assert refused(approver1, lambda api: api.trigger(DAG)) == 403
    assert refused(approver1, lambda api: api.set_task_state(DAG, run_id, GATE, "success")) == 403
    assert refused(approver1, lambda api: api.clear(DAG, run_id, ["validate"])) == 403
    assert refused(approver1, lambda api: api.post("/api/v2/connections", {"connection_id": "x", "conn_type": "http"})) == 403  # fmt: skip
    approver1.respond(DAG, run_id, GATE, "Approve", "evidence reviewed (approver1)")
    detail = stack_operator.hitl_detail(DAG, run_id, GATE)
    assert detail["responded_by_user"]["name"] == "approver1", detail


def test_a_scheduler_killed_during_the_approval_wait_keeps_the_recorded_approval(
    celery_stack, stack_operator, stack_s3
):
    run_id = RUN["run_id"]
    # The gate asks again (quorum 2); approver1's answer is in the evidence.
    assert stack_operator.reach_gate(DAG, run_id, timeout=180) == "awaiting_input"
    celery_stack.kill("scheduler")
    time.sleep(5)
    celery_stack.restart("scheduler")
    assert stack_operator.wait_for(DAG, run_id, task=GATE, states=("awaiting_input",), timeout=60) == "awaiting_input"
    celery_stack.api("approver2").respond(DAG, run_id, GATE, "Approve", "evidence reviewed (approver2)")
    state = stack_operator.wait_for(DAG, run_id, timeout=420)
    who_ran_what(stack_operator, DAG, run_id)
    assert state == "success", stack_operator.failure_report(DAG, run_id)
    approved_by = stack_operator.xcom(DAG, run_id, GATE)["approved_by"]
    assert sorted(approved_by) == ["approver1", "approver2"], approved_by

    assert_evidence_chain_verifies(stack_operator, DAG, run_id, stack_s3.meta.endpoint_url)

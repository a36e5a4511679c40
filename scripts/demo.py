"""`make demo`: migrate the two demo workloads end to end on local stand-ins.

It starts Azurite and moto, and two throwaway PostgreSQL clusters (the Azure source
and the Scaleway target); seeds the synthetic SNDS-like dataset into Azurite and a
synthetic health registry database into the source cluster; starts Airflow
(``airflow standalone``: SQLite, LocalExecutor, UI on 127.0.0.1); triggers
``migrate_snds_extracts`` and ``migrate_hdh_registry`` as the ``operator`` user
through the REST API while an application keeps writing to the registry; waits for
the approval gates, where ``approver1`` then ``approver2`` (other people) approve as on the
Migrations page (its JSON, then Airflow's HITL endpoint, as the page's button does: no
browser), printing the quorum the page shows before and after each; waits for the
cutovers, and prints what happened and where the evidence is. An application also
keeps writing objects to the source container through a SAS bound to its stored access
policy (``app-writers``, created here as the platform's ops would): the object cutover's
freeze cuts it off, and the demo checks that every write it saw acknowledged is on Scaleway. The stack stays up
for exploring; ``make down`` stops all of it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from typing import TYPE_CHECKING
from urllib.parse import quote

import devstack
import pgclusters
from airflow_stack import AirflowStack, Api

if TYPE_CHECKING:
    from bascule.synthetic.blob_writer import BlobWriter

STATE = devstack.DEFAULT_STATE_DIR
DEMO_WORKLOAD = "snds_extracts"
DEMO_DAG = f"migrate_{DEMO_WORKLOAD}"
DEMO_BUCKET = "hdh-snds-extracts"
EVIDENCE_BUCKET = "hdh-migration-evidence"  # both workloads' evidence, under Object Lock
PORTS = devstack.Ports(**devstack.DEMO_PORTS)
PG_WORKLOAD = "hdh_registry"
PG_DAG = f"migrate_{PG_WORKLOAD}"
# The example downstream pipeline, scheduled on the object workload's Asset (dags/bascule_demo_consumers.py).
CONSUMER_DAG = f"follow_bascule_workload_{DEMO_WORKLOAD}"
PG_PORTS = (15432, 15433)
APP_ROLE, APP_PASSWORD = "hdh_app", "demo-app-password"
DEMO_CONTAINER = "snds-extracts"
# The stored access policy the object application's SAS is bound to: the manifest's
# cutover.freeze.policy_id (include/workloads/snds_extracts.yaml).
WRITERS_POLICY = "app-writers"


def stack(pg: tuple[pgclusters.PgCluster, pgclusters.PgCluster]) -> AirflowStack:
    return AirflowStack(
        home=STATE / "airflow",
        port=int(os.environ.get("BASCULE_DEMO_API_PORT", "8080")),
        state_dir=STATE,
        # The demo's consumer DAG follows the object workload's Asset (dags/bascule_demo_consumers.py).
        extra_env={
            **devstack.local_connections(PORTS), **pgclusters.airflow_connections(*pg),
            "BASCULE_FOLLOW_WORKLOAD": DEMO_WORKLOAD,
        },
    )  # fmt: skip


def seed_registry(source: pgclusters.PgCluster) -> dict[str, int]:
    """The synthetic health registry on the source cluster, and the role its application writes with."""
    from contextlib import closing

    from bascule.synthetic import registry

    with closing(source.connect()) as admin, admin.cursor() as cur:
        cur.execute(f"create role {APP_ROLE} login password %s", (APP_PASSWORD,))
        cur.execute(f"create database {PG_WORKLOAD}")
    with closing(source.connect(PG_WORKLOAD)) as conn:
        registry.create_schema(conn)
        counts = registry.populate(conn, patients=20_000, seed=2026)  # every table of both schemas
        registry.create_application_role(conn, APP_ROLE, APP_PASSWORD, PG_WORKLOAD)
        return counts


def seed_dataset(ports: devstack.Ports = PORTS) -> tuple[int, int]:
    from azure.storage.blob import BlobServiceClient

    from bascule.synthetic.blob_writer import create_writer_policy
    from bascule.synthetic.documents import DocumentsSpec, generate_migration_demo
    from bascule.synthetic.snds import DEMO, upload_to_azure

    service = BlobServiceClient(
        devstack.azurite_url(ports.azurite),
        credential={"account_name": devstack.AZURITE_ACCOUNT, "account_key": devstack.AZURITE_KEY},
    )
    objects = generate_migration_demo(DEMO, DocumentsSpec(documents=10_000, large_files=3, large_size=64 * 2**20))
    container = service.get_container_client(DEMO_CONTAINER)
    summary = upload_to_azure(container, objects)
    create_writer_policy(container, WRITERS_POLICY)  # what the platform's ops set up once, for the writers
    return summary.count, summary.bytes


def object_writer() -> BlobWriter:
    """The object application: a SAS of the policy, never the account key, so the freeze can cut it off."""
    from bascule.synthetic.blob_writer import BlobWriter, writer_sas

    sas = writer_sas(devstack.AZURITE_ACCOUNT, devstack.AZURITE_KEY, DEMO_CONTAINER, WRITERS_POLICY)
    return BlobWriter(devstack.azurite_url(PORTS.azurite), DEMO_CONTAINER, sas, STATE / "blob-writes.jsonl")


def report_object_writes(writer: BlobWriter) -> bool:
    """Print the object application's acknowledged writes and whether each is on Scaleway; True if all are."""
    import boto3

    from bascule.synthetic.blob_writer import check_blob_target

    stats = writer.stats()
    s3 = boto3.client(
        "s3", endpoint_url=f"http://127.0.0.1:{PORTS.moto}", region_name=devstack.TARGET_REGION,
        aws_access_key_id="demo", aws_secret_access_key="demo",
    )  # fmt: skip
    missing = check_blob_target(s3, DEMO_BUCKET, writer.log_path)
    print(
        f"{DEMO_WORKLOAD}: the application wrote through a SAS of stored access policy '{WRITERS_POLICY}': "
        f"{stats.acknowledged:,} writes acknowledged before the freeze (last at {stats.last_acknowledged_at}), "
        f"{stats.refused:,} refused after it (first at {stats.first_refused_at}). Acknowledged writes on Scaleway "
        f"(bucket {DEMO_BUCKET}): "
        + ("all of them." if not missing else f"{len(missing)} NOT there: {missing[:10]}")
    )
    # The data bucket holds the source's objects and nothing else: Bascule's files are in the evidence bucket.
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=DEMO_BUCKET, Prefix="_bascule/")
    own = [item["Key"] for page in pages for item in page.get("Contents", ())]
    print(
        f"{DEMO_WORKLOAD}: data bucket {DEMO_BUCKET} holds "
        + (f"no Bascule file (evidence in s3://{EVIDENCE_BUCKET}/)." if not own else f"{len(own)} Bascule file(s): {own[:5]}")
    )
    return not missing and not own


def trigger(operator: Api, dag_id: str) -> str:
    operator.unpause(dag_id)
    run_id = operator.trigger(dag_id, {"dry_run": False, "rollback": False}, note="make demo")
    print(f"Triggered {dag_id} run {run_id} as 'operator'.")
    return run_id


def report_consumer(operator: Api, timeout: float = 180) -> bool:
    """The consumer DAG ran on the cutover's Asset event and read where the data now lives."""
    deadline = time.monotonic() + timeout
    while not (consumer_runs := operator.get(f"/api/v2/dags/{CONSUMER_DAG}/dagRuns")["dag_runs"]):
        if time.monotonic() > deadline:
            print(f"{CONSUMER_DAG}: no run {timeout:.0f} s after the cutover's Asset event")
            return False
        time.sleep(3)
    run_id = consumer_runs[0]["dag_run_id"]
    if operator.wait_for(CONSUMER_DAG, run_id, timeout=timeout) != "success":
        print(f"{CONSUMER_DAG}: run {run_id} did not succeed")
        return False
    seen = operator.xcom(CONSUMER_DAG, run_id, "read_location")
    print(f"{CONSUMER_DAG} ran on the Asset event: live on {seen['live']} at {seen['location']}")
    return seen["live"] == "scaleway"


def approve_and_finish(airflow: AirflowStack, operator: Api, workload_id: str, run_id: str) -> str:
    """Two approvers sign off from the Migrations page, one after the other; neither triggered the run."""
    dag_id = f"migrate_{workload_id}"
    print(
        f"{dag_id}: approvers answer on the Migrations page, {airflow.url}/plugin/migrations "
        f"(this run: {airflow.url}/bascule/workloads/{workload_id}?run={quote(run_id, safe='')})"
    )
    for approver_name in ("approver1", "approver2"):
        if operator.reach_gate(dag_id, run_id, timeout=1800) != "awaiting_input":
            return operator.run_state(dag_id, run_id)
        approver = airflow.api(approver_name)
        # What the page's Approve button does (its JSON, then Airflow's own HITL endpoint), no browser needed.
        before, after = approver.answer_from_control_room(
            workload_id, run_id, "Approve", f"demo: evidence reviewed by {approver_name}"
        )
        print(f"{dag_id}: the Migrations page showed '{before}'; '{approver_name}' pressed Approve; now '{after}'")
        if "waiting for" in after:
            # Airflow's own Required Actions page reads the same request body: the gate rewrote it.
            body = approver.wait_for_required_action(dag_id, run_id, after).get("body") or "(no body)"
            print(f"{dag_id}: Airflow's Required Actions shows the gate as: {body.splitlines()[0]}")
    return operator.wait_for(dag_id, run_id, timeout=1800)


def up() -> int:
    from bascule.synthetic.target_check import check_target
    from bascule.synthetic.writer import Writer

    # Every demo starts fresh: moto keeps nothing across restarts, so an old Azurite
    # (with the previous run's freeze leases) and old Airflow state would not match it.
    if devstack.down(STATE, ("airflow", *devstack.SERVICES)):
        print("Stopped the previous demo.")
    pgclusters.stop_pair(STATE)
    for leftover in ("azurite", "moto-tmp", "airflow", "pg-source", "pg-target"):
        shutil.rmtree(STATE / leftover, ignore_errors=True)
    # The writers append to their logs; the end-of-demo check must judge this run's
    # acknowledged writes only, not a previous demo's against a freshly seeded database.
    for log in ("writes.jsonl", "writes.jsonl.stderr", "blob-writes.jsonl"):
        (STATE / log).unlink(missing_ok=True)
    STATE.mkdir(parents=True, exist_ok=True)
    print("Starting the local stand-ins (Azurite for Azure Blob, moto for Scaleway S3, two PostgreSQL clusters)...")
    devstack.up(STATE, PORTS)
    devstack.write_env_file(STATE / "connections.env", PORTS)
    pg = pgclusters.start_pair(STATE, *PG_PORTS)
    count, size = seed_dataset()
    print(
        f"Seeded {count:,} synthetic SNDS-like objects ({size / 1e6:,.1f} MB) into Azurite container 'snds-extracts'."
    )
    rows = seed_registry(pg[0])
    print(f"Seeded database '{PG_WORKLOAD}' on the source cluster (port {PG_PORTS[0]}): {rows}")
    airflow = stack(pg)
    print("Starting Airflow (standalone, SQLite metadata DB)...")
    airflow.start()
    airflow.airflow("dags", "reserialize")
    operator = airflow.api("operator")
    writer = Writer(
        pg[0].dsn(PG_WORKLOAD, user=APP_ROLE, password=APP_PASSWORD), STATE / "writes.jsonl", seed=1
    )
    writer.start()
    print(f"An application is writing to '{PG_WORKLOAD}' as '{APP_ROLE}' throughout the migration.")
    blobs = object_writer().start()
    print(f"An application is writing objects to '{DEMO_CONTAINER}' through a SAS of policy '{WRITERS_POLICY}'.")
    operator.unpause(CONSUMER_DAG)  # new DAGs start paused; it must be listening before the cutover
    runs = {DEMO_DAG: trigger(operator, DEMO_DAG), PG_DAG: trigger(operator, PG_DAG)}
    try:
        try:
            states = {PG_DAG: approve_and_finish(airflow, operator, PG_WORKLOAD, runs[PG_DAG])}
        finally:
            writer.stop()
        states[DEMO_DAG] = approve_and_finish(airflow, operator, DEMO_WORKLOAD, runs[DEMO_DAG])
    finally:
        blobs.stop()  # after the object cutover: its last writes were refused by the freeze

    for dag_id, run_id in runs.items():
        print()
        print(f"Run {run_id} of {dag_id}: {states[dag_id].upper()}")
        for task, task_state in operator.task_states(dag_id, run_id).items():
            print(f"  {task:<32} {task_state}")
    if states[DEMO_DAG] == "success":
        cutover = operator.xcom(DEMO_DAG, runs[DEMO_DAG], "cutover")
        snapshot = operator.xcom(DEMO_DAG, runs[DEMO_DAG], "snapshot")
        print(
            f"\n{DEMO_WORKLOAD}: live on Scaleway: {cutover['routing']}. Source writes blocked for "
            f"{cutover['freeze_to_switch_seconds']:.0f} s (freezing by {cutover['freeze_method']} "
            f"{cutover['freeze_seconds']:.1f} s, of which {cutover['probe_wait_seconds']:.1f} s waiting for the probe "
            f"write to be refused; then {cutover['frozen_to_switch_seconds']:.0f} s of delta sync, parity and switch "
            f"in {cutover.get('delta_rounds', 1)} delta round(s))"
        )
        print(f"Evidence: s3://{EVIDENCE_BUCKET}/_bascule/{DEMO_WORKLOAD}/snapshots/{snapshot['snapshot_id']}/")
        print(sse_c_proof())
        if not report_object_writes(blobs) or not report_consumer(operator):
            states[DEMO_DAG] = "failed"
    if states[PG_DAG] == "success":
        cutover = operator.xcom(PG_DAG, runs[PG_DAG], "cutover")
        from contextlib import closing

        with closing(pg[1].connect(PG_WORKLOAD)) as conn:
            missing = check_target(conn, STATE / "writes.jsonl")
        print(
            f"\n{PG_WORKLOAD}: live on Scaleway: {cutover['routing']}. Application writes frozen for "
            f"{cutover['freeze_window_seconds']:.1f} s (freeze -> switch). The application's "
            f"{writer.acknowledged():,} acknowledged writes: "
            + ("all on the target." if not missing else f"{len(missing)} MISSING: {missing[:5]}")
        )
        print(f"Evidence: s3://{EVIDENCE_BUCKET}/_bascule/{PG_WORKLOAD}/")
        if missing:
            states[PG_DAG] = "failed"
    for dag_id, run_id in runs.items():
        if states[dag_id] == "success":
            verified = operator.xcom(dag_id, run_id, "verify_evidence")
            print(
                f"{dag_id}: evidence chain verified, {verified['records']} records, digest {verified['digest'][:16]}...;"
                f" auditor's report {verified['report']}"
            )
    print(f"  (S3 endpoint http://127.0.0.1:{PORTS.moto}, e.g. `aws --endpoint-url ... s3 ls --recursive`;")
    print("   re-check a chain with `.venv/bin/python scripts/verify_evidence.py <chain prefix> --endpoint-url ...`)")
    print()
    print(f"Airflow UI: {airflow.url}  (DAGs: {airflow.url}/dags/{DEMO_DAG}, {airflow.url}/dags/{PG_DAG})")
    logins = airflow.passwords()
    print("Logins: " + ", ".join(f"{user} / {logins.get(user, '?')}" for user in logins))
    print(
        f"Stand-ins: Azure Blob {devstack.azurite_url(PORTS.azurite)}, S3 http://127.0.0.1:{PORTS.moto} (fr-par), "
        f"through the SSE-C stand-in at http://127.0.0.1:{PORTS.ssec}"
    )
    print(f"PostgreSQL: source 127.0.0.1:{PG_PORTS[0]}, target 127.0.0.1:{PG_PORTS[1]} (passwords in {STATE}/pg-*/)")
    print(f"Logs and state: {STATE}.  Stop everything with: make down")
    return 0 if all(state == "success" for state in states.values()) else 1


def sse_c_proof() -> str:
    """The demo bucket's SSE-C, as a reader checks it: HEAD without the key must answer 400 (the policy's rule)."""
    import base64

    import boto3

    from bascule.governance.encryption_sample import check_sse_c_sample

    client = boto3.client(
        "s3", endpoint_url=f"http://127.0.0.1:{PORTS.ssec}", region_name=devstack.TARGET_REGION,
        aws_access_key_id=devstack.S3_ACCESS_KEY, aws_secret_access_key=devstack.S3_SECRET_KEY,
    )  # fmt: skip
    result = check_sse_c_sample(client, DEMO_BUCKET, base64.b64decode(devstack.LOCAL_SSE_C_KEY))
    verdict = "PASS" if result.ok else "FAIL"
    return f"SSE-C ({verdict}): key fingerprint (MD5) {result.evidence['sse_c_key_md5']}; {result.detail}"


def down() -> int:
    stopped = devstack.down(STATE, ("airflow", *devstack.SERVICES))
    pgclusters.stop_pair(STATE)
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down"])
    return up() if parser.parse_args().command == "up" else down()


if __name__ == "__main__":
    sys.exit(main())

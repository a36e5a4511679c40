"""`make demo`: migrate the demo workload end to end on local stand-ins.

It starts Azurite and moto, seeds the synthetic SNDS-like dataset into Azurite,
starts Airflow (``airflow standalone``: SQLite, LocalExecutor, UI on 127.0.0.1),
triggers ``migrate_snds_extracts`` as the ``operator`` user through the REST API,
waits for the approval gate, approves as ``approver1`` (a different person), waits
for the cutover, and prints what happened and where the evidence is. The stack
stays up for exploring; ``make down`` stops all of it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

import devstack
from airflow_stack import AirflowStack, Api

STATE = devstack.DEFAULT_STATE_DIR
DEMO_WORKLOAD = "snds_extracts"
DEMO_DAG = f"migrate_{DEMO_WORKLOAD}"
DEMO_BUCKET = "hdh-snds-extracts"
PORTS = devstack.Ports(**devstack.DEMO_PORTS)


def stack() -> AirflowStack:
    return AirflowStack(
        home=STATE / "airflow",
        port=int(os.environ.get("BASCULE_DEMO_API_PORT", "8080")),
        state_dir=STATE,
        extra_env=devstack.local_connections(PORTS),
    )


def seed_dataset() -> tuple[int, int]:
    from azure.storage.blob import BlobServiceClient

    from bascule.synthetic import DEMO, DocumentsSpec, generate_migration_demo, upload_to_azure

    service = BlobServiceClient(
        devstack.azurite_url(PORTS.azurite),
        credential={"account_name": devstack.AZURITE_ACCOUNT, "account_key": devstack.AZURITE_KEY},
    )
    objects = generate_migration_demo(DEMO, DocumentsSpec(documents=10_000, large_files=3, large_size=64 * 2**20))
    summary = upload_to_azure(service.get_container_client("snds-extracts"), objects)
    return summary.count, summary.bytes


def migrate(airflow: AirflowStack) -> tuple[str, str, Api]:
    airflow.airflow("dags", "reserialize")
    operator = airflow.api("operator")
    operator.unpause(DEMO_DAG)
    run_id = operator.trigger(DEMO_DAG, {"dry_run": False, "rollback": False}, note="make demo")
    print(f"Triggered {DEMO_DAG} run {run_id} as 'operator'. Snapshot, transfer, validation, shadow run...")
    gate = operator.wait_for(DEMO_DAG, run_id, task="approve_cutover", states=("awaiting_input",), timeout=1800)
    if gate != "awaiting_input":
        return operator.run_state(DEMO_DAG, run_id), run_id, operator
    # Airflow 3.3.2 fails a HITL task answered within a second or two of parking it; a
    # person takes longer, and so does the demo.
    time.sleep(8)
    approver = airflow.api("approver1")
    print("The approval gate is waiting. Approving as 'approver1' (not the user who triggered the run)...")
    approver.respond(DEMO_DAG, run_id, "approve_cutover", "Approve", "demo: evidence reviewed")
    return operator.wait_for(DEMO_DAG, run_id, timeout=1800), run_id, operator


def up() -> int:
    # Every demo starts fresh: moto keeps nothing across restarts, so an old Azurite
    # (with the previous run's freeze leases) and old Airflow state would not match it.
    if devstack.down(STATE, ("airflow", *devstack.SERVICES)):
        print("Stopped the previous demo.")
    for leftover in ("azurite", "moto-tmp", "airflow"):
        shutil.rmtree(STATE / leftover, ignore_errors=True)
    STATE.mkdir(parents=True, exist_ok=True)
    print("Starting the local stand-ins (Azurite for Azure Blob, moto for Scaleway S3)...")
    devstack.up(STATE, PORTS)
    devstack.write_env_file(STATE / "connections.env", PORTS)
    count, size = seed_dataset()
    print(
        f"Seeded {count:,} synthetic SNDS-like objects ({size / 1e6:,.1f} MB) into Azurite container 'snds-extracts'."
    )
    airflow = stack()
    print("Starting Airflow (standalone, SQLite metadata DB)...")
    airflow.start()
    state, run_id, api = migrate(airflow)

    print()
    print(f"Run {run_id} of {DEMO_DAG}: {state.upper()}")
    for task, task_state in api.task_states(DEMO_DAG, run_id).items():
        print(f"  {task:<32} {task_state}")
    if state == "success":
        cutover = api.xcom(DEMO_DAG, run_id, "cutover")
        snapshot = api.xcom(DEMO_DAG, run_id, "snapshot")
        print(
            f"\nLive on Scaleway: {cutover['routing']}. Source writes blocked for "
            f"{cutover['freeze_to_switch_seconds']:.0f} s (freezing {cutover['freeze_seconds']:.0f} s, "
            f"then {cutover['frozen_to_switch_seconds']:.0f} s of delta sync, parity and switch)"
        )
        print(f"Evidence: s3://{DEMO_BUCKET}/_bascule/{DEMO_WORKLOAD}/snapshots/{snapshot['snapshot_id']}/")
        print(f"  (S3 endpoint http://127.0.0.1:{PORTS.moto}, e.g. `aws --endpoint-url ... s3 ls --recursive`)")
    print()
    print(f"Airflow UI: {airflow.url}  (DAG: {airflow.url}/dags/{DEMO_DAG})")
    logins = airflow.passwords()
    print("Logins: " + ", ".join(f"{user} / {logins.get(user, '?')}" for user in logins))
    print(f"Stand-ins: Azure Blob {devstack.azurite_url(PORTS.azurite)}, S3 http://127.0.0.1:{PORTS.moto} (fr-par)")
    print(f"Logs and state: {STATE}.  Stop everything with: make down")
    return 0 if state == "success" else 1


def down() -> int:
    stopped = devstack.down(STATE, ("airflow", *devstack.SERVICES))
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down"])
    return up() if parser.parse_args().command == "up" else down()


if __name__ == "__main__":
    sys.exit(main())

"""`make demo`: run the demo workload's migration DAG end to end on local stand-ins.

It starts Azurite and moto, seeds the synthetic SNDS-like dataset into Azurite,
starts Airflow (``airflow standalone``: SQLite, LocalExecutor, UI on 127.0.0.1),
unpauses and triggers ``migrate_snds_extracts`` through the REST API as the
operator user, waits for the run, and prints what happened and where to look.
The stack stays up for exploring; ``make down`` stops all of it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import devstack

ROOT = devstack.ROOT
STATE = devstack.DEFAULT_STATE_DIR
AIRFLOW_HOME = STATE / "airflow"
API_PORT = int(os.environ.get("BASCULE_DEMO_API_PORT", "8080"))
API = f"http://127.0.0.1:{API_PORT}"
DEMO_WORKLOAD = "snds_extracts"
DEMO_DAG = f"migrate_{DEMO_WORKLOAD}"
PORTS = devstack.Ports(**devstack.DEMO_PORTS)
# The operator triggers; approvers sign off gates (the governance issue makes them enforce roles).
USERS = {"admin": "admin", "operator": "op", "approver1": "user", "approver2": "user", "viewer": "viewer"}


def airflow_env() -> dict[str, str]:
    return {
        **os.environ,
        **devstack.local_connections(PORTS),
        # standalone starts its components as `airflow ...` found on PATH.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # Standalone forks one worker per slot; 4 keeps the demo under ~1 GB.
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(API_PORT),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in USERS.items()),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
    }


def _airflow(*args: str, timeout: float = 300) -> None:
    binary = Path(sys.executable).parent / "airflow"
    result = subprocess.run([str(binary), *args], env=airflow_env(), capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise SystemExit(f"`airflow {' '.join(args)}` failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


def seed_dataset() -> tuple[int, int]:
    from azure.storage.blob import BlobServiceClient

    from bascule.synthetic import DEMO, generate, upload_to_azure

    service = BlobServiceClient(
        devstack.azurite_url(PORTS.azurite),
        credential={"account_name": devstack.AZURITE_ACCOUNT, "account_key": devstack.AZURITE_KEY},
    )
    summary = upload_to_azure(service.get_container_client("snds-extracts"), generate(DEMO))
    return summary.count, summary.bytes


def start_airflow() -> None:
    AIRFLOW_HOME.mkdir(parents=True, exist_ok=True)
    if _healthy():
        print(f"Airflow already answers on {API}")
        return
    _airflow("db", "migrate")
    binary = Path(sys.executable).parent / "airflow"
    pid = devstack.spawn_background("airflow", [str(binary), "standalone"], STATE, env=airflow_env())
    deadline = time.monotonic() + 180
    while not _healthy():
        if not devstack.is_running(STATE, "airflow"):
            raise SystemExit(f"airflow standalone (pid {pid}) exited; see {STATE / 'airflow.log'}")
        if time.monotonic() > deadline:
            raise SystemExit(f"Airflow did not become healthy in 180 s; see {STATE / 'airflow.log'}")
        time.sleep(2)


def _healthy() -> bool:
    try:
        with urllib.request.urlopen(f"{API}/api/v2/monitor/health", timeout=3) as response:
            body = json.load(response)
    except (OSError, ValueError):
        return False
    return all(body.get(part, {}).get("status") == "healthy" for part in ("metadatabase", "scheduler"))


def passwords() -> dict[str, str]:
    path = AIRFLOW_HOME / "simple_auth_manager_passwords.json.generated"
    return json.loads(path.read_text()) if path.exists() else {}


class Api:
    def __init__(self, user: str):
        password = passwords()[user]
        self.token = self._call("POST", "/auth/token", {"username": user, "password": password}, auth=False)[
            "access_token"
        ]

    def _call(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{API}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if auth:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            raise SystemExit(f"{method} {path}: HTTP {exc.code} {exc.read().decode(errors='replace')[:500]}") from None

    def get(self, path: str) -> Any:
        return self._call("GET", path)

    def post(self, path: str, body: Any) -> Any:
        return self._call("POST", path, body)

    def patch(self, path: str, body: Any) -> Any:
        return self._call("PATCH", path, body)


def run_demo_dag() -> tuple[str, list[dict[str, Any]], Any]:
    _airflow("dags", "reserialize")
    api = Api("operator")
    api.patch(f"/api/v2/dags/{DEMO_DAG}", {"is_paused": False})
    run = api.post(
        f"/api/v2/dags/{DEMO_DAG}/dagRuns",
        {"logical_date": None, "conf": {"dry_run": False}, "note": "make demo"},
    )
    run_id = run["dag_run_id"]
    print(f"Triggered {DEMO_DAG} run {run_id} as user 'operator'; waiting for it to finish...")
    deadline = time.monotonic() + 900
    state = run["state"]
    while state not in ("success", "failed"):
        if time.monotonic() > deadline:
            raise SystemExit(f"run {run_id} still {state} after 15 min; look in the UI at {API}")
        time.sleep(3)
        state = api.get(f"/api/v2/dags/{DEMO_DAG}/dagRuns/{run_id}")["state"]
    tasks = api.get(f"/api/v2/dags/{DEMO_DAG}/dagRuns/{run_id}/taskInstances")["task_instances"]
    preflight = None
    try:
        preflight = api.get(
            f"/api/v2/dags/{DEMO_DAG}/dagRuns/{run_id}/taskInstances/preflight/xcomEntries/return_value"
        )["value"]
    except SystemExit:
        pass
    return state, tasks, (run_id, preflight)


def up() -> int:
    STATE.mkdir(parents=True, exist_ok=True)
    print("Starting the local stand-ins (Azurite for Azure Blob, moto for Scaleway S3)...")
    devstack.up(STATE, PORTS)
    devstack.write_env_file(STATE / "connections.env", PORTS)
    count, size = seed_dataset()
    print(f"Seeded {count} synthetic SNDS-like objects ({size / 1e6:.1f} MB) into Azurite container 'snds-extracts'.")
    print("Starting Airflow (standalone, SQLite metadata DB)...")
    start_airflow()
    state, tasks, (run_id, preflight) = run_demo_dag()

    print()
    print(f"Run {run_id} of {DEMO_DAG}: {state.upper()}")
    for task in sorted(tasks, key=lambda t: t.get("start_date") or ""):
        print(f"  {task['task_id']:<20} {task['state']}")
    if isinstance(preflight, dict):
        for check in preflight.get("checks", []):
            print(f"    {'PASS' if check['ok'] else 'FAIL'} {check['name']}: {check['detail']}")
    print()
    print(f"Airflow UI: {API}  (DAG: {API}/dags/{DEMO_DAG})")
    logins = passwords()
    print("Logins: " + ", ".join(f"{user} / {logins.get(user, '?')} ({role})" for user, role in USERS.items()))
    print(
        f"Stand-ins: Azure Blob {devstack.azurite_url(PORTS.azurite)}, S3 http://127.0.0.1:{PORTS.moto} (region fr-par)"
    )
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

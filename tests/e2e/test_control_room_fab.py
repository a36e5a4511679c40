"""Per-DAG access in the control room, with Airflow's FAB auth manager (the simple one has no per-DAG rules).

Its own AIRFLOW_HOME, and only the API server (the pages read manifests and the DB; no run
is needed): ``outsider`` holds a role that may read ``migrate_snds_extracts`` and nothing
else, so the control room must not show, nor answer for, ``hdh_registry``.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import devstack

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
USERS = {"outsider": ("SndsReader", "outsider-pw-1"), "fabviewer": ("Viewer", "viewer-pw-1")}


class FabApi:
    def __init__(self, home: Path, state: Path, port: int):
        self.home, self.state, self.port = home, state, port
        self.url = f"http://127.0.0.1:{port}"

    def env(self) -> dict[str, str]:
        return {
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__AUTH_MANAGER": "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager",
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__API__BASE_URL": self.url,
            "BASCULE_WORKLOADS_DIR": str(ROOT / "include" / "workloads"),
        }

    def airflow(self, *args: str) -> None:
        import subprocess

        binary = Path(sys.executable).parent / "airflow"
        env = {**os.environ, **self.env()}
        result = subprocess.run([str(binary), *args], env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"airflow {args}: {result.stdout[-2000:]} {result.stderr[-2000:]}"

    def token(self, user: str) -> str:
        body = json.dumps({"username": user, "password": USERS[user][1]}).encode()
        request = urllib.request.Request(f"{self.url}/auth/token", data=body, method="POST")
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=60) as response:
            return str(json.load(response)["access_token"])

    def get(self, path: str, user: str) -> tuple[int, Any]:
        request = urllib.request.Request(self.url + path)
        request.add_header("Authorization", f"Bearer {self.token(user)}")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


@pytest.fixture(scope="module")
def fab(session_dir: Path) -> Iterator[FabApi]:
    api = FabApi(session_dir / "fab-airflow", session_dir / "fab-state", devstack.free_port())
    api.home.mkdir(parents=True, exist_ok=True)
    api.airflow("db", "migrate")
    api.airflow("fab-db", "migrate")
    api.airflow("dags", "reserialize")
    api.airflow("sync-perm", "--include-dags")
    api.airflow("roles", "create", "SndsReader")
    api.airflow("roles", "add-perms", "SndsReader", "-r", "DAG:migrate_snds_extracts", "DAG Runs", "-a", "can_read")
    for user, (role, password) in USERS.items():
        api.airflow("users", "create", "-u", user, "-r", role, "-p", password, "-e", f"{user}@example.org",
                    "-f", user, "-l", "test")  # fmt: skip
    binary = Path(sys.executable).parent / "airflow"
    devstack.spawn_background(
        "api-server", [str(binary), "api-server", "--host", "127.0.0.1", "--port", str(api.port)], api.state,
        env=api.env(),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{api.url}/api/v2/monitor/health", timeout=5).close()
                break
            except OSError:
                assert devstack.is_running(api.state, "api-server"), (api.state / "api-server.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "FAB API server not up"
                time.sleep(2)
        yield api
    finally:
        devstack.stop_process(api.state, "api-server")


def test_a_user_without_access_to_a_dag_sees_nothing_of_it(fab: FabApi) -> None:
    status, answer = fab.get("/bascule/api/workloads", "outsider")
    assert status == 200
    assert [w.get("id") for w in answer["workloads"]] == ["snds_extracts"]
    assert "hdh_registry" not in json.dumps(answer)
    assert fab.get("/bascule/api/workloads/hdh_registry", "outsider")[0] == 404
    assert fab.get("/bascule/api/workloads/snds_extracts", "outsider")[0] == 200


def test_fab_viewer_sees_every_workload_and_may_not_act(fab: FabApi) -> None:
    status, answer = fab.get("/bascule/api/workloads", "fabviewer")
    assert status == 200
    rows = {w["id"]: w for w in answer["workloads"]}
    assert set(rows) == {"snds_extracts", "hdh_registry"}
    assert not any(w["can_respond"] for w in rows.values())

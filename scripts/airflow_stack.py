"""A real Airflow (``airflow standalone``: scheduler, API server, dag-processor, triggerer)
for the demo and the end-to-end tests, and a small REST client to drive it as people do.

Users come from the simple auth manager: an operator who triggers, two approvers,
a viewer and an admin. Each logs in with the password Airflow generated.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import devstack

USERS = {"admin": "admin", "operator": "op", "approver1": "user", "approver2": "user", "viewer": "viewer"}
FINISHED = ("success", "failed")
HITL_SETTLE_SECONDS = 8


class ApiError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, body: str):
        self.status = status
        super().__init__(f"{method} {path}: HTTP {status} {body[:500]}")


@dataclass
class AirflowStack:
    home: Path
    port: int
    state_dir: Path
    extra_env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            # standalone starts its components as `airflow ...` found on PATH.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": self.extra_env.get("AIRFLOW__CORE__DAGS_FOLDER", str(devstack.ROOT / "dags")),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(devstack.ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # standalone forks one worker per slot; 4 keeps it under ~1 GB.
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in USERS.items()),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
            **self.extra_env,
        }

    def airflow(self, *args: str, timeout: float = 300) -> str:
        binary = Path(sys.executable).parent / "airflow"
        result = subprocess.run([str(binary), *args], env=self.env(), capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"`airflow {' '.join(args)}` failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
        return result.stdout

    def start(self, timeout: float = 180) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        if self.healthy():
            return
        self.airflow("db", "migrate")
        binary = Path(sys.executable).parent / "airflow"
        pid = devstack.spawn_background("airflow", [str(binary), "standalone"], self.state_dir, env=self.env())
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if not devstack.is_running(self.state_dir, "airflow"):
                raise RuntimeError(f"airflow standalone (pid {pid}) exited; see {self.state_dir / 'airflow.log'}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"Airflow not healthy after {timeout:.0f} s; see {self.state_dir / 'airflow.log'}")
            time.sleep(2)

    def stop(self) -> bool:
        return devstack.stop_process(self.state_dir, "airflow")

    def healthy(self) -> bool:
        return api_healthy(self.url, ("metadatabase", "scheduler"))

    def passwords(self) -> dict[str, str]:
        path = self.home / "simple_auth_manager_passwords.json.generated"
        return json.loads(path.read_text()) if path.exists() else {}

    def api(self, user: str) -> Api:
        return Api(self.url, user, self.passwords()[user])


class Api:
    """The REST API as one user sees it."""

    def __init__(self, base: str, user: str, password: str):
        self.base = base
        self.user = user
        self.token = self._call("POST", "/auth/token", {"username": user, "password": password}, auth=False)[
            "access_token"
        ]

    def _call(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if auth:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                return json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raise ApiError(method, path, exc.code, exc.read().decode(errors="replace")) from None

    def get(self, path: str, *, attempts: int = 4) -> Any:
        """A read, retried when the API server is too busy to answer in time (seen at load 12 on 2 cores).

        Only reads: they change nothing, so asking again is safe; a write is never repeated.
        """
        for attempt in range(1, attempts + 1):
            try:
                return self._call("GET", path)
            except (TimeoutError, urllib.error.URLError) as exc:
                if attempt == attempts or not _timed_out(exc):
                    raise
                time.sleep(5)

    def post(self, path: str, body: Any) -> Any:
        return self._call("POST", path, body)

    def patch(self, path: str, body: Any) -> Any:
        return self._call("PATCH", path, body)

    # -- what operators and approvers do ---------------------------------------------------

    def unpause(self, dag_id: str) -> None:
        self.patch(f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None, note: str = "") -> str:
        run = self.post(f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}, "note": note})
        return str(run["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.get(f"/api/v2/dags/{dag_id}/dagRuns/{_q(run_id)}")["state"])

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        """Task id (``id[i]`` for mapped tasks) -> state."""
        answer = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances?limit=500")
        states = {}
        for ti in answer["task_instances"]:
            name = ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{ti['map_index']}]"
            states[name] = ti["state"]
        return states

    def wait_for(self, dag_id: str, run_id: str, *, task: str | None = None, states: tuple[str, ...] = FINISHED,
                 timeout: float = 600, poll: float = 2) -> str:  # fmt: skip
        """Wait until the run (or one of its tasks) reaches one of ``states``; return that state."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.task_states(dag_id, run_id).get(task or "") if task else self.run_state(dag_id, run_id)
            if state in states:
                return str(state)
            if task and self.run_state(dag_id, run_id) in FINISHED:
                return f"run finished ({self.run_state(dag_id, run_id)}) with {task} {state}"
            if time.monotonic() > deadline:
                raise TimeoutError(f"{dag_id} {run_id}: {task or 'run'} still {state} after {timeout:.0f} s")
            time.sleep(poll)

    def respond(self, dag_id: str, run_id: str, task_id: str, option: str, reason: str = "") -> Any:
        """Answer a human-in-the-loop task (the approval gate)."""
        return self.patch(
            f"/api/v2/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{task_id}/-1/hitlDetails",
            {"chosen_options": [option], "params_input": {"reason": reason}},
        )

    def reach_gate(self, dag_id: str, run_id: str, *, task: str = "approve_cutover", timeout: float = 600) -> str:
        """Wait until the approval gate asks (``awaiting_input``, no response yet); return the state seen.

        Airflow 3.3.2 fails a HITL task answered within a second or two of parking it (the
        executor's report of the parked process races the resume); people take longer, so
        this waits a few seconds more before returning.
        """
        deadline = time.monotonic() + timeout
        while True:
            state = self.wait_for(dag_id, run_id, task=task, states=("awaiting_input",), timeout=timeout)
            if state != "awaiting_input":
                return state
            if not self.hitl_detail(dag_id, run_id, task).get("response_received"):
                time.sleep(HITL_SETTLE_SECONDS)
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(f"{dag_id} {run_id}: {task} still holds an earlier response")
            time.sleep(1)

    # -- the Migrations page, as its script drives it (plugins/bascule_airflow/control_room/static/page.js) --

    def control_room_workload(self, workload_id: str, run_id: str | None = None) -> dict[str, Any]:
        """What the page's workload view shows this user (its JSON route, under the same checks)."""
        query = f"?run={_q(run_id)}" if run_id else ""
        return dict(self.get(f"/bascule/api/workloads/{workload_id}{query}")["workload"])

    def _gate_summary(self, workload_id: str, run_id: str) -> str | None:
        return ((self.control_room_workload(workload_id, run_id).get("run") or {}).get("gate") or {}).get("summary")

    def answer_from_control_room(self, workload_id: str, run_id: str, option: str = "Approve", reason: str = "",
                                 *, timeout: float = 180) -> tuple[str, str]:  # fmt: skip
        """Press the page's Approve (or Reject) button: the quorum the page showed before, and after.

        As the page: only when it shows this user the button (the gate is open, the user may
        answer and is still awaited), then the same request to Airflow's own HITL endpoint,
        then the page's view until the gate has re-evaluated.
        """
        workload = self.control_room_workload(workload_id, run_id)
        gate = (workload.get("run") or {}).get("gate") or {}
        if not (gate.get("open") and workload.get("can_respond") and self.user in (gate.get("waiting_for") or [])):
            raise RuntimeError(
                f"the Migrations page shows {self.user} no {option} button for {workload_id} run {run_id}: "
                f"gate {gate.get('summary')!r}, open={gate.get('open')}, may respond={workload.get('can_respond')}, "
                f"waiting for {gate.get('waiting_for')}. Runbook: docs/runbooks.md#approve_cutover"
            )
        before = str(gate["summary"])
        self.respond(workload["dag_id"], run_id, "approve_cutover", option, reason)
        deadline = time.monotonic() + timeout
        while (after := self._gate_summary(workload_id, run_id)) in (before, None):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{workload_id}: the gate still shows {before!r} {timeout:.0f} s after {option}")
            time.sleep(2)
        return before, str(after)

    def required_action(self, dag_id: str, run_id: str, task_id: str = "approve_cutover") -> dict[str, Any]:
        """A run's HITL request as Airflow's Required Actions page lists it (``GET .../hitlDetails``)."""
        answer = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{_q(run_id)}/hitlDetails?task_id={_q(task_id)}")
        (detail,) = [d for d in answer["hitl_details"] if d["task_instance"]["task_id"] == task_id]
        return dict(detail)

    def wait_for_required_action(self, dag_id: str, run_id: str, text: str, *, task_id: str = "approve_cutover",
                                 timeout: float = 60) -> dict[str, Any]:  # fmt: skip
        """The request once its body contains ``text``, or as it is after ``timeout`` (the caller judges).

        The gate publishes its quorum for the control room a moment before it re-asks with the new body.
        """
        deadline = time.monotonic() + timeout
        while text not in ((detail := self.required_action(dag_id, run_id, task_id)).get("body") or ""):
            if time.monotonic() > deadline:
                break
            time.sleep(1)
        return detail

    def hitl_detail(self, dag_id: str, run_id: str, task_id: str) -> Any:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{task_id}/-1/hitlDetails")

    def failure_report(self, dag_id: str, run_id: str, tail: int = 3000) -> str:
        """The states of a run's tasks and the end of each failed task's log, for a test's message."""
        states = self.task_states(dag_id, run_id)
        parts = [f"tasks: {states}"]
        for task, state in states.items():
            if state == "failed":
                task_id, _, index = task.partition("[")
                log = self.task_log(dag_id, run_id, task_id, map_index=int(index.rstrip("]")) if index else -1)
                parts.append(f"--- {task} log (end) ---\n{log[-tail:]}")
        return "\n".join(parts)

    def clear(self, dag_id: str, run_id: str, task_ids: list[str], *, downstream: bool = True) -> Any:
        """Clear tasks of a run (and what depends on them), as an engineer does after a fix."""
        return self.post(
            f"/api/v2/dags/{dag_id}/clearTaskInstances",
            {
                "dry_run": False,
                "dag_run_id": run_id,
                "task_ids": task_ids,
                "include_downstream": downstream,
                "only_failed": False,
                "reset_dag_runs": True,
            },
        )

    def set_task_state(self, dag_id: str, run_id: str, task_id: str, state: str) -> Any:
        """Mark a task by hand (UI "Mark as success/failed")."""
        return self.patch(
            f"/api/v2/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{task_id}",
            {"new_state": state, "include_upstream": False, "include_downstream": False},
        )

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{task_id}/xcomEntries/return_value"
        return self.get(f"{path}?map_index={map_index}")["value"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1) -> str:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{task_id}/logs/{try_number}"
        answer = self.get(f"{path}?map_index={map_index}&full_content=true")
        content = answer.get("content", "")
        if not isinstance(content, list):
            return str(content)
        lines = []
        for entry in content:
            if not isinstance(entry, dict):
                lines.append(str(entry))
                continue
            lines.append(str(entry.get("event", "")))
            # A task's exception comes as structured detail beside its "Task failed" line.
            for detail in entry.get("error_detail") or []:
                lines.append(f"{detail.get('exc_type')}: {detail.get('exc_value')}")
        return "\n".join(lines)


def api_healthy(url: str, parts: tuple[str, ...]) -> bool:
    """Whether Airflow at ``url`` answers its health check with each of ``parts`` healthy."""
    try:
        with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=3) as response:
            body = json.load(response)
    except (OSError, ValueError):
        return False
    return all(body.get(part, {}).get("status") == "healthy" for part in parts)


def _timed_out(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None), TimeoutError)


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")

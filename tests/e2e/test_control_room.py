"""The control room against a real Airflow (``airflow standalone``) and, for the page, headless Chromium.

One stack serves the module, with three manifests: ``cr_gate`` (an object workload run up
to its approval gate, which needs 2 of approver1/approver2), ``cr_fail`` (its source
container does not exist, so preflight fails) and one invalid file. approver1 approves
``cr_gate`` first through the page's own routes as ``make demo`` does (no browser), so the
page and Airflow's Required Actions must show "1 of 2"; approver2 then approves from the
page. The permission tests call every route as anonymous, viewer, approver and operator
and scan every answer for the connections' passwords.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from azure.storage.blob import BlobServiceClient

import devstack
from airflow_stack import USERS, AirflowStack, Api
from bascule.synthetic.documents import DocumentsSpec, generate_migration_demo
from bascule.synthetic.snds import SMALL, upload_to_azure

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = yaml.safe_load((ROOT / "include" / "workloads" / "snds_extracts.yaml").read_text())
CANARY = f"canary-{secrets.token_hex(8)}"
ONE_OF_TWO = "1 of 2 approvals: approver1; waiting for one more of: approver2"
NONE_OF_TWO = "0 of 2 approvals: none yet; waiting for two more of: approver1, approver2"


def _manifest(workload: str) -> dict[str, Any]:
    data = json.loads(json.dumps(TEMPLATE))
    data["id"] = workload
    data["source"]["container"] = workload.replace("_", "-") + "-src"
    data["target"]["bucket"] = workload.replace("_", "-") + "-dst"
    # Two shards: with one, `xcom_pull(task_ids="transfer")` returns the dict, not a list (seen in describe_cutover).
    data["transfer"] = {"shards": 2, "concurrency": 4, "part_size_mib": 5}
    data["approvals"] = {"approvers": ["approver1", "approver2"], "required": 2, "timeout_minutes": 60}
    # A container of a few objects and no application writer: leases freeze it in a few requests.
    # The stored-access-policy freeze the demo manifest uses is covered by the object e2e and
    # tests/integration/objects/test_freeze_access_policy.py.
    data["cutover"]["freeze"] = {"method": "leases"}
    return data


@pytest.fixture(scope="module")
def stack(standins: devstack.Ports, session_dir: Path, blob_service: BlobServiceClient) -> Iterator[AirflowStack]:
    workloads = session_dir / "control-room-workloads"
    workloads.mkdir(exist_ok=True)
    for workload in ("cr_gate", "cr_fail"):
        (workloads / f"{workload}.yaml").write_text(yaml.safe_dump(_manifest(workload), sort_keys=False))
    (workloads / "cr_broken.yaml").write_text("id: cr_broken\nkind: object_store\n")
    upload_to_azure(
        blob_service.get_container_client("cr-gate-src"),
        generate_migration_demo(SMALL, DocumentsSpec(documents=10, large_files=0)),
    )
    canary = {"conn_type": "postgres", "host": "127.0.0.1", "login": "u", "password": CANARY}
    # The migrations, plus the example consumer of cr_gate's Asset.
    dags = session_dir / "control-room-dags"
    dags.mkdir(exist_ok=True)
    for source in (ROOT / "dags" / "bascule_workloads.py", ROOT / "include" / "examples" / "bascule_consumers.py"):
        (dags / source.name).write_text(source.read_text())
    airflow = AirflowStack(
        home=session_dir / "cr-airflow",
        port=devstack.free_port(),
        state_dir=session_dir / "cr-airflow-state",
        extra_env={
            **devstack.local_connections(standins),
            "AIRFLOW_CONN_CR_CANARY": json.dumps(canary),
            "BASCULE_WORKLOADS_DIR": str(workloads),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "BASCULE_FOLLOW_WORKLOAD": "cr_gate",
        },
    )
    airflow.start()
    airflow.airflow("dags", "reserialize")
    try:
        yield airflow
    finally:
        airflow.stop()


@pytest.fixture(scope="module")
def runs(stack: AirflowStack) -> dict[str, str]:
    """Both runs triggered by the operator; the gate reached and approved once by approver1."""
    operator = stack.api("operator")
    for dag_id in ("migrate_cr_gate", "migrate_cr_fail", "follow_bascule_workload_cr_gate"):
        operator.unpause(dag_id)
    gate_run = operator.trigger("migrate_cr_gate", {"dry_run": False, "rollback": False})
    fail_run = operator.trigger("migrate_cr_fail", {"dry_run": False, "rollback": False})
    state = _patiently(operator.reach_gate, "migrate_cr_gate", gate_run)
    assert state == "awaiting_input", operator.failure_report("migrate_cr_gate", gate_run)
    # What `make demo` does: the page's Approve button, pressed through the page's own routes (no browser).
    approver1 = stack.api("approver1")
    before, after = approver1.answer_from_control_room("cr_gate", gate_run, "Approve", "first pair of eyes")
    assert (before, after) == (NONE_OF_TWO, ONE_OF_TWO)
    _patiently(_wait_for_summary, operator, ONE_OF_TWO)
    assert _patiently(operator.wait_for, "migrate_cr_fail", fail_run, timeout=300) == "failed"
    return {"gate": gate_run, "fail": fail_run}


def _patiently(call: Any, *args: Any, **kwargs: Any) -> Any:
    """Retry a read-only wait when the API server, busy on a loaded 2-core machine, times out a request."""
    import urllib.error

    for attempt in range(6):
        try:
            return call(*args, **kwargs)
        except (TimeoutError, urllib.error.URLError):
            if attempt == 5:
                raise
            time.sleep(5)


def _wait_for_summary(api: Api, summary: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        row = _row(api.get("/bascule/api/workloads"), "cr_gate")
        gate = (row.get("run") or {}).get("gate") or {}
        if gate.get("summary") == summary and gate.get("open"):
            return row
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate never showed {summary!r}: {gate}")
        time.sleep(2)


def _row(answer: dict[str, Any], workload: str) -> dict[str, Any]:
    return next(w for w in answer["workloads"] if w.get("id") == workload)


ROUTES = ("/bascule/", "/bascule/api/workloads", "/bascule/api/workloads/cr_gate", "/bascule/runbooks",
          "/bascule/static/page.js", "/bascule/workloads/cr_gate")  # fmt: skip


def _raw(stack: AirflowStack, path: str, token: str | None = None) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(stack.url + path)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_anonymous_and_forged_tokens_are_refused_everywhere(stack: AirflowStack) -> None:
    for path in ROUTES:
        assert _raw(stack, path)[0] == 401, path
        assert _raw(stack, path, "not-a-jwt")[0] == 403, path


def test_the_page_is_in_the_airflow_navigation(stack: AirflowStack) -> None:
    plugins = stack.api("viewer").get("/api/v2/plugins")["plugins"]
    (plugin,) = [p for p in plugins if p["name"] == "bascule_control_room"]
    assert plugin["external_views"][0]["name"] == "Migrations"
    assert plugin["fastapi_apps"][0]["url_prefix"] == "/bascule"


def test_every_workload_and_the_invalid_manifest_are_listed(stack: AirflowStack, runs: dict[str, str]) -> None:
    answer = stack.api("viewer").get("/bascule/api/workloads")
    by_file = {w["file"]: w for w in answer["workloads"]}
    assert set(by_file) == {"cr_gate.yaml", "cr_fail.yaml", "cr_broken.yaml"}
    broken = by_file["cr_broken.yaml"]
    assert not broken["valid"] and "field" in broken["error"]
    gate = by_file["cr_gate.yaml"]
    assert gate["kind"] == "object_store" and gate["owner"] == "data-platform"
    assert gate["source"].startswith("Azure Blob cr-gate-src") and "cr-gate-dst" in gate["target"]
    assert (gate["run"]["run_id"], gate["run"]["phase"]) == (runs["gate"], "approve_cutover")
    assert gate["run"]["phase_state"] == "awaiting_input"
    assert gate["run"]["parity"] == "PASS" and gate["run"]["shadow"] == "PASS"
    assert gate["run"]["gate"]["approved_by"] == ["approver1"] and gate["run"]["gate"]["waiting_for"] == ["approver2"]
    assert gate["window"]["timezone"] == "Europe/Paris" and gate["window"]["next_opening_utc"]
    assert gate["routing"]["live"] == "azure"
    failed = by_file["cr_fail.yaml"]["run"]
    assert failed["state"] == "failed" and failed["phase"] == "preflight"
    assert failed["runbook"].endswith("/bascule/runbooks#preflight")


def test_viewer_sees_but_cannot_act_approver_and_operator_can(stack: AirflowStack, runs: dict[str, str]) -> None:
    can = {user: _row(stack.api(user).get("/bascule/api/workloads"), "cr_gate")["can_respond"] for user in USERS}
    assert can == {"admin": True, "operator": True, "approver1": True, "approver2": True, "viewer": False}
    # The page offers nothing the HITL endpoint would not accept: the viewer is refused there too.
    from airflow_stack import ApiError

    with pytest.raises(ApiError) as refused:
        stack.api("viewer").respond("migrate_cr_gate", runs["gate"], "approve_cutover", "Approve")
    assert refused.value.status == 403


def test_gate_body_in_required_actions_shows_quorum_and_evidence(stack: AirflowStack, runs: dict[str, str]) -> None:
    approver2 = stack.api("approver2")
    # As Airflow's Required Actions page lists it: the body the gate re-asked with after approver1,
    # not the opening one Airflow 3.3.2's upsert keeps (control_room/gate_body.py writes it).
    listed = approver2.wait_for_required_action("migrate_cr_gate", runs["gate"], ONE_OF_TWO, timeout=30)
    body = listed["body"]
    assert body.startswith(f"**Quorum: {ONE_OF_TWO}**"), body[:200]
    assert not listed["response_received"] and listed["task_instance"]["state"] == "awaiting_input"
    assert approver2.hitl_detail("migrate_cr_gate", runs["gate"], "approve_cutover")["body"] == body
    as_of = r"_\(as of \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC; the control room shows it live \(\[live state\]\("
    assert re.search(as_of, body), body[:400]
    assert re.search(r"\| evidence digest \| `[0-9a-f]{64}` \|", body)
    assert "| parity verdict | PASS |" in body and "| shadow-run verdict | PASS |" in body
    assert "/bascule/workloads/cr_gate?run=" in body


def test_a_workload_page_drills_into_the_run(stack: AirflowStack, runs: dict[str, str]) -> None:
    detail = stack.api("viewer").get("/bascule/api/workloads/cr_gate")["workload"]
    tasks = {t["task_id"]: t for t in detail["run"]["tasks"]}
    assert tasks["snapshot"]["state"] == "success" and tasks["snapshot"]["duration"] > 0
    assert [r["run_id"] for r in detail["runs"]] == [runs["gate"]]
    assert detail["run"]["evidence"]["chain"] == "not verified yet"
    runbooks = _raw(stack, "/bascule/runbooks", stack.api("viewer").token)[1]
    assert '<h2 id="approve_cutover">' in runbooks and 'id="preflight"' in runbooks


def test_no_secret_in_any_answer(stack: AirflowStack, runs: dict[str, str]) -> None:
    secrets_ = [CANARY, devstack.AZURITE_KEY, devstack.S3_SECRET_KEY, *stack.passwords().values()]
    for user in USERS:
        token = stack.api(user).token
        for path in (
            *ROUTES,
            f"/bascule/api/workloads/cr_gate?run={quote(runs['gate'], safe='')}",
            "/bascule/api/workloads/cr_fail",
        ):
            status, text = _raw(stack, path, token)
            assert status == 200, (user, path, status)
            leaked = [s[:6] + "..." for s in secrets_ if s in text]
            assert not leaked, f"{path} as {user} serves a secret: {leaked}"
            assert token not in text


# -- the page in a real browser ------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def _login(browser: Any, stack: AirflowStack, user: str) -> Any:
    """Sign in through Airflow's own login form, then open Migrations from the navigation."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    # Generous: on a shared 2-core machine the Airflow UI's first load alone has taken over 20 s.
    page.set_default_timeout(60_000)
    page.goto(f"{stack.url}/")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", stack.passwords()[user])
    page.locator("button[type=submit]").click()
    page.get_by_role("link", name="Migrations").click()
    page.wait_for_url(re.compile(r".*/plugin/migrations$"))
    return page


def _shot(page: Any, name: str) -> None:
    """``make screenshots`` sets the folder: docs/screenshots shows what these tests saw."""
    folder = os.environ.get("BASCULE_SCREENSHOTS_DIR")
    if folder:
        page.wait_for_timeout(500)  # let the table settle after its last refresh
        page.screenshot(path=str(Path(folder) / name), full_page=True)


def _control_room(page: Any) -> Any:
    """The page lives in the iframe Airflow renders for the external view."""
    frame = page.frame_locator("iframe")
    frame.locator("[data-workload=cr_gate]").wait_for()
    return frame


@pytest.mark.browser
def test_viewer_sees_the_gate_but_no_approve_button(browser: Any, stack: AirflowStack, runs: dict[str, str]) -> None:
    page = _login(browser, stack, "viewer")
    frame = _control_room(page)
    assert ONE_OF_TWO in frame.locator("[data-gate=cr_gate]").inner_text()
    frame.get_by_role("link", name="cr_gate").click()
    frame.locator("h2", has_text="Approval").wait_for()
    assert ONE_OF_TWO in frame.locator("[data-gate=cr_gate]").inner_text()
    assert frame.locator("#approve").count() == 0 and frame.locator("#reject").count() == 0
    _shot(page, "workload-viewer.png")
    page.close()


@pytest.mark.browser
def test_failed_run_shows_the_runbook_link(browser: Any, stack: AirflowStack, runs: dict[str, str]) -> None:
    page = _login(browser, stack, "viewer")
    frame = _control_room(page)
    link = frame.locator("[data-workload=cr_fail] a[data-runbook]")
    assert link.get_attribute("href").endswith("/bascule/runbooks#preflight")
    link.click()
    frame.locator("h2#preflight").wait_for()
    page.close()


@pytest.mark.browser
def test_approver_approves_from_the_page_and_the_gate_moves(
    browser: Any, stack: AirflowStack, runs: dict[str, str]
) -> None:
    page = _login(browser, stack, "approver2")
    frame = _control_room(page)
    assert ONE_OF_TWO in frame.locator("[data-gate=cr_gate]").inner_text()
    _shot(page, "migrations.png")
    frame.get_by_role("link", name="cr_gate").click()
    frame.locator("#approve").wait_for()
    _shot(page, "workload-approver.png")
    frame.locator("#reason").fill("second pair of eyes")
    frame.locator("#approve").click()
    frame.get_by_text("Approve recorded").wait_for()
    # The gate re-evaluates in its task: the page shows the quorum reached and the run moving on.
    frame.get_by_text("2 of 2 approvals: approver1, approver2").wait_for(timeout=90_000)
    page.close()
    state = _patiently(
        stack.api("operator").wait_for, "migrate_cr_gate", runs["gate"], task="approve_cutover", timeout=120
    )
    assert state == "success"


def test_after_the_cutover_the_page_links_and_asset_say_where_the_workload_lives(
    stack: AirflowStack, runs: dict[str, str]
) -> None:
    operator = stack.api("operator")
    state = _patiently(operator.wait_for, "migrate_cr_gate", runs["gate"], timeout=600)
    assert state == "success", operator.failure_report("migrate_cr_gate", runs["gate"])
    row = _row(operator.get("/bascule/api/workloads"), "cr_gate")
    assert row["routing"]["live"] == "scaleway" and row["routing"]["since"]
    assert row["run"]["gate"]["summary"] == "2 of 2 approvals: approver1, approver2; quorum reached"
    assert row["run"]["evidence"]["chain"] == "verified" and row["run"]["write_block_seconds"] > 0
    # The buttons on a phase task, and the reports they open (served from the workload's evidence).
    links = operator.get(
        f"/api/v2/dags/migrate_cr_gate/dagRuns/{quote(runs['gate'], safe='')}/taskInstances/validate/links"
    )["extra_links"]
    assert links["Runbook"].endswith("/bascule/runbooks#validate")
    assert "/bascule/workloads/cr_gate?run=" in links["Control room"]
    token = stack.api("viewer").token
    for name in ("Evidence report", "Validation report"):
        status, html = _raw(stack, links[name].removeprefix(stack.url), token)
        assert status == 200 and "<html" in html.lower(), (name, status, html[:300])
    events = operator.get("/api/v2/assets/events?source_dag_id=migrate_cr_gate")["asset_events"]
    (event,) = [e for e in events if e["source_task_id"] == "cutover"]
    assert event["extra"]["live"] == "scaleway" and "cr-gate-dst" in event["extra"]["location"]
    assert event["extra"]["summary"].startswith("workload cr_gate live on Scaleway at ")
    # The consumer scheduled on the Asset ran and read the location from the event.
    follow = "follow_bascule_workload_cr_gate"
    deadline = time.monotonic() + 180
    while not (consumer_runs := operator.get(f"/api/v2/dags/{follow}/dagRuns")["dag_runs"]):
        assert time.monotonic() < deadline, f"{follow} never ran"
        time.sleep(3)
    run_id = consumer_runs[0]["dag_run_id"]
    assert _patiently(operator.wait_for, follow, run_id, timeout=180) == "success"
    assert operator.xcom(follow, run_id, "read_location") == {
        "live": "scaleway",
        "location": event["extra"]["location"],
    }

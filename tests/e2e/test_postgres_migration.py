"""PostgreSQL migrations through a real Airflow (scheduler, triggerer, API server) between two
real PostgreSQL clusters, with an application writing to the source throughout.

Each test owns one workload (its own source and target database, slot and evidence
bucket). Approvals are given over the REST API by ``approver1``, never by the
``operator`` who triggered the run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import psycopg2
import pytest
import yaml

import devstack
import pgclusters
from airflow_stack import AirflowStack, Api
from bascule.synthetic import audit_log
from bascule.synthetic import registry as synthetic_pg
from bascule.synthetic.target_check import check_target
from bascule.synthetic.writer import Writer

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = yaml.safe_load((ROOT / "include" / "workloads" / "hdh_registry.yaml").read_text())
WORKLOADS = ("pg_e2e_full", "pg_e2e_reject", "pg_e2e_timeout", "pg_e2e_keyless")
KEYLESS = "pg_e2e_keyless"  # a keyless table, and no validation suite: the built-in gates decide
APP_ROLE, APP_PASSWORD = "hdh_app", "app-password-e2e"
PATIENTS = 3000


def _bucket(workload: str) -> str:
    return workload.replace("_", "-") + "-evidence"


def _manifest(workload: str) -> dict:
    data = json.loads(json.dumps(TEMPLATE))
    data["id"] = workload
    data["source"]["database"] = workload
    data["target"]["database"] = workload
    data["evidence"]["bucket"] = _bucket(workload)
    data["replication"]["max_lag_seconds"] = 5
    # registry.dispensations is about 1.3 MiB at PATIENTS rows: over 1 MiB it is copied in
    # primary-key ranges, one mapped copy_table task each, through the real scheduler.
    data.setdefault("transfer", {})["split_table_above_mib"] = 1
    # Quorum and four-eyes are proven on object workloads; here one approval is enough.
    data["approvals"] = {"approvers": ["approver1", "approver2"], "required": 1, "timeout_minutes": 60}
    if workload == "pg_e2e_timeout":
        data["approvals"]["timeout_minutes"] = 1
    return data


def _variant(workload: str, data: dict) -> dict:
    """The keyless workload's manifest: its audit log on the keyless path, and no suite."""
    if workload == KEYLESS:
        data["source"]["tables_without_primary_key"] = [audit_log.TABLE]
        data["validation"] = {"suites": []}
    return data


@pytest.fixture(scope="module")
def clusters(pg_pair) -> tuple[pgclusters.PgCluster, pgclusters.PgCluster]:
    source, _ = pg_pair
    with closing(source.connect()) as admin, admin.cursor() as cur:
        cur.execute("select 1 from pg_roles where rolname = %s", (APP_ROLE,))
        if cur.fetchone() is None:
            cur.execute(f"create role {APP_ROLE} login password %s", (APP_PASSWORD,))
        for workload in WORKLOADS:
            cur.execute(f"drop database if exists {workload} with (force)")
            cur.execute(f"create database {workload}")
    for workload in WORKLOADS:
        with closing(source.connect(workload)) as conn:
            synthetic_pg.create_schema(conn)
            synthetic_pg.populate(conn, patients=PATIENTS, seed=7)
            if workload == KEYLESS:
                audit_log.create_audit_log(conn)
            synthetic_pg.create_application_role(conn, APP_ROLE, APP_PASSWORD, workload)
    return pg_pair


CARELESS_DAG = """
import logging

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, BaseHook


def careless():
    connection = BaseHook.get_connection("hdh_azure_pg")
    logging.getLogger("airflow.task").info("connecting with password %s", connection.password)
    print(f"dsn=postgresql://postgres:{connection.password}@127.0.0.1/registry")


with DAG("secret_masking_check", schedule=None, tags=["test"]) as dag:
    PythonOperator(task_id="careless_task", python_callable=careless)
"""


@pytest.fixture(scope="module")
def airflow(standins: devstack.Ports, clusters, session_dir: Path) -> Iterator[AirflowStack]:
    workloads = session_dir / "e2e-pg-workloads"
    workloads.mkdir(exist_ok=True)
    for workload in WORKLOADS:
        (workloads / f"{workload}.yaml").write_text(
            yaml.safe_dump(_variant(workload, _manifest(workload)), sort_keys=False)
        )
    # The project's DAG file, and a careless task that logs a connection password.
    dags = session_dir / "e2e-pg-dags"
    dags.mkdir(exist_ok=True)
    shutil.copy(ROOT / "dags" / "bascule_workloads.py", dags / "bascule_workloads.py")
    (dags / "secret_masking_check.py").write_text(CARELESS_DAG)
    source, target = clusters
    stack = AirflowStack(
        home=session_dir / "e2e-pg-airflow",
        port=devstack.free_port(),
        state_dir=session_dir / "e2e-pg-airflow-state",
        extra_env={
            **devstack.local_connections(standins),
            **pgclusters.airflow_connections(source, target),
            "BASCULE_WORKLOADS_DIR": str(workloads),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        },
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


@pytest.fixture(scope="module")
def background_runs(operator: Api) -> dict[str, str]:
    """The reject and timeout runs start first and proceed while the live migration runs."""
    return {
        workload: operator.trigger(f"migrate_{workload}", {"dry_run": False, "rollback": False})
        for workload in ("pg_e2e_reject", "pg_e2e_timeout")
    }


def _reach_gate(operator: Api, dag_id: str, run_id: str) -> None:
    state = operator.reach_gate(dag_id, run_id)
    assert state == "awaiting_input", f"{dag_id}: {state}; {operator.failure_report(dag_id, run_id)}"


def _routing(s3, workload: str) -> dict | None:
    try:
        answer = s3.get_object(Bucket=_bucket(workload), Key=f"_bascule/routing/{workload}.json")
    except s3.exceptions.NoSuchKey:
        return None
    return json.loads(answer["Body"].read())


def _evidence(s3, workload: str, suffix: str) -> list[dict]:
    keys = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=_bucket(workload), Prefix=f"_bascule/{workload}/"
        )
        for item in page.get("Contents", ())
        if item["Key"].endswith(suffix)
    ]
    return [json.loads(s3.get_object(Bucket=_bucket(workload), Key=k)["Body"].read()) for k in sorted(keys)]


def _table_fingerprints(cluster: pgclusters.PgCluster, database: str) -> dict[str, tuple[int, str]]:
    with closing(cluster.connect(database)) as conn, conn.cursor() as cur:
        cur.execute(
            "select format('%I.%I', schemaname, tablename) from pg_tables where schemaname = 'registry' order by 1"
        )
        tables = [row[0] for row in cur.fetchall()]
        found = {}
        for table in tables:
            cur.execute(f"select count(*), md5(coalesce(string_agg(t::text, '|' order by t::text), '')) from {table} t")
            found[table] = tuple(cur.fetchone())
        return found


def _slots(cluster: pgclusters.PgCluster) -> list[str]:
    with closing(cluster.connect()) as conn, conn.cursor() as cur:
        cur.execute("select slot_name from pg_replication_slots")
        return [row[0] for row in cur.fetchall()]


def _app_can_write(cluster: pgclusters.PgCluster, database: str) -> bool:
    try:
        with closing(psycopg2.connect(cluster.dsn(database, user=APP_ROLE, password=APP_PASSWORD))) as conn:
            with conn.cursor() as cur:
                cur.execute("update registry.patients set department = department where patient_id = 1")
            conn.commit()
        return True
    except psycopg2.errors.ReadOnlySqlTransaction:
        return False


def test_live_migration_with_a_writer_then_rollback(
    clusters, s3_client, operator, approver, background_runs, tmp_path
) -> None:
    source, target = clusters
    workload = "pg_e2e_full"
    dag_id = f"migrate_{workload}"
    writes = tmp_path / "writes.jsonl"
    writer = Writer(source.dsn(workload, user=APP_ROLE, password=APP_PASSWORD), writes, seed=11)
    writer.start()
    try:
        run_id = operator.trigger(dag_id, {"dry_run": False, "rollback": False})
        _reach_gate(operator, dag_id, run_id)
        approver.respond(dag_id, run_id, "approve_cutover", "Approve", "diff and shadow reviewed")
        assert operator.wait_for(dag_id, run_id, timeout=600) == "success", operator.failure_report(dag_id, run_id)
    finally:
        writer.stop()

    # plan_copy split the table over the threshold: several mapped copy_table tasks, each a key range.
    units = operator.xcom(dag_id, run_id, "plan_copy")
    ranges = [u for u in units if u["table"] == "registry.dispensations"]
    assert len(ranges) > 1 and all(u.get("range") for u in ranges), units
    copy_tasks = [t for t in operator.task_states(dag_id, run_id) if t.startswith("copy_table[")]
    assert len(copy_tasks) == len(units) > len({u["table"] for u in units}), copy_tasks

    # Every write the application saw acknowledged is on the target; the freeze refused the rest.
    assert writer.acknowledged() > 50, "the writer must have written throughout the migration"
    with closing(target.connect(workload)) as conn:
        assert check_target(conn, writes) == []
    assert writer.refused() > 0, "writes after the freeze must have been refused on the source"
    assert _table_fingerprints(source, workload) == _table_fingerprints(target, workload)

    # Sequences on the target are ahead of every id used on the source.
    with closing(source.connect(workload)) as src, src.cursor() as cur:
        cur.execute("select max(patient_id) from registry.patients")
        max_patient = cur.fetchone()[0]
        cur.execute("select max(dispensation_id) from registry.dispensations")
        max_dispensation = cur.fetchone()[0]
    with closing(target.connect(workload)) as tgt, tgt.cursor() as cur:
        cur.execute("select nextval(pg_get_serial_sequence('registry.patients', 'patient_id'))")
        assert cur.fetchone()[0] > max_patient
        cur.execute("select nextval(pg_get_serial_sequence('registry.dispensations', 'dispensation_id'))")
        assert cur.fetchone()[0] > max_dispensation

    cutover = operator.xcom(dag_id, run_id, "cutover")
    assert cutover["freeze_window_seconds"] > 0
    (record,) = _evidence(s3_client, workload, "cutover-try1.json")
    assert record["final_diff"] and all(d["differences"] == [] for d in record["final_diff"])
    assert _routing(s3_client, workload)["live"] == "scaleway"
    assert f"bascule_{workload}" not in _slots(source), "the slot is dropped after the switch"
    log = operator.task_log(dag_id, run_id, "cutover")
    assert "writes were frozen for" in log, log[-2000:]

    # Written on Scaleway after the cutover, then rolled back: the rollback says so.
    with closing(target.connect(workload)) as conn, conn.cursor() as cur:
        cur.execute("update registry.patients set department = '75' where patient_id = 2")
    time.sleep(1.5)  # table statistics reach pg_stat_user_tables asynchronously
    rollback = operator.trigger(dag_id, {"rollback": True, "rollback_reason": "drill"})
    assert operator.wait_for(dag_id, rollback, timeout=300) == "success", operator.failure_report(dag_id, rollback)
    result = operator.xcom(dag_id, rollback, "rollback_requested")
    assert result["target_writes_since_cutover"].get("registry.patients", 0) >= 1, result
    assert _routing(s3_client, workload)["live"] == "azure"
    assert _app_can_write(source, workload), "rollback makes the application role writable again"
    rollback_log = operator.task_log(dag_id, rollback, "rollback_requested")
    assert "NOT on the source" in rollback_log, rollback_log[-2000:]

    # The run's evidence verifies, and holds no secret.
    verified = operator.xcom(dag_id, run_id, "verify_evidence")
    assert verified["ok"] and verified["records"] > 10
    chain_prefix = verified["report"].rsplit("/", 1)[0] + "/"
    cli = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "verify_evidence.py"), chain_prefix,
         "--endpoint-url", s3_client.meta.endpoint_url],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_DEFAULT_REGION": "fr-par"},
    )  # fmt: skip
    assert cli.returncode == 0, cli.stdout + cli.stderr
    secrets = {source.password, target.password, APP_PASSWORD}
    bucket = _bucket(workload)
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", ()):
            body = s3_client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            for secret in secrets:
                assert secret.encode() not in body, f"a password is in the evidence file {item['Key']}"


def test_reject_fails_the_run_releases_the_slot_and_nothing_cuts_over(
    clusters, s3_client, operator, approver, background_runs
) -> None:
    source, _ = clusters
    workload = "pg_e2e_reject"
    dag_id = f"migrate_{workload}"
    run_id = background_runs[workload]
    _reach_gate(operator, dag_id, run_id)
    approver.respond(dag_id, run_id, "approve_cutover", "Reject", "shadow diff needs review")
    assert operator.wait_for(dag_id, run_id, timeout=300) == "failed"
    states = operator.task_states(dag_id, run_id)
    assert states["approve_cutover"] == "failed"
    assert states["cutover"] in ("upstream_failed", None)
    assert states["release_replication"] == "success"
    assert _routing(s3_client, workload) is None, "nothing was cut over"
    assert f"bascule_{workload}" not in _slots(source), "a rejected run leaves no slot retaining WAL"
    assert _app_can_write(source, workload), "the source was never frozen"


def test_no_response_before_the_deadline_means_no_cutover(clusters, s3_client, operator, background_runs) -> None:
    workload = "pg_e2e_timeout"
    dag_id = f"migrate_{workload}"
    run_id = background_runs[workload]
    assert operator.wait_for(dag_id, run_id, timeout=300) == "failed"
    states = operator.task_states(dag_id, run_id)
    assert states["approve_cutover"] == "failed"
    assert states["cutover"] in ("upstream_failed", None)
    assert _routing(s3_client, workload) is None


def test_a_keyless_table_migrates_under_writes_with_the_builtin_gates(clusters, s3_client, operator, approver) -> None:
    source, target = clusters
    dag_id = f"migrate_{KEYLESS}"
    with audit_log.AuditLogWriter(source.dsn(KEYLESS, user=APP_ROLE, password=APP_PASSWORD), pause_s=0.05) as writer:
        run_id = operator.trigger(dag_id, {"dry_run": False, "rollback": False})
        _reach_gate(operator, dag_id, run_id)
        approver.respond(dag_id, run_id, "approve_cutover", "Approve", "keyless table reviewed")
        assert operator.wait_for(dag_id, run_id, timeout=600) == "success", operator.failure_report(dag_id, run_id)
    assert min(writer.counts[k] for k in ("insert", "update", "delete")) > 10, writer.counts
    validate = operator.xcom(dag_id, run_id, "validate")
    assert validate["gates_summary"].startswith("built-in gates passed"), validate
    (diff,) = _evidence(s3_client, KEYLESS, "validate-try1/table-diff.json")
    (audit,) = [d for d in diff if d["table"].endswith("audit_log")]
    assert audit["method"] == "key_hash" and audit["differences"] == [], audit
    (record,) = _evidence(s3_client, KEYLESS, "cutover-try1.json")
    assert all(d["differences"] == [] for d in record["final_diff"]), record["final_diff"]
    # Frozen at the cutover: the same rows on both sides, including every update and delete.
    with closing(source.connect(KEYLESS)) as src, closing(target.connect(KEYLESS)) as tgt:
        assert audit_log.fingerprint(src) == audit_log.fingerprint(tgt)
    assert _table_fingerprints(source, KEYLESS) == _table_fingerprints(target, KEYLESS)
    assert f"bascule_{KEYLESS}" not in _slots(source)


def test_a_password_a_task_logs_is_masked(clusters, operator) -> None:
    source, _ = clusters
    operator.unpause("secret_masking_check")
    run_id = operator.trigger("secret_masking_check")
    assert operator.wait_for("secret_masking_check", run_id, timeout=300) == "success"
    log = operator.task_log("secret_masking_check", run_id, "careless_task")
    assert "connecting with password ***" in log, log[-2000:]
    assert "postgresql://postgres:***@127.0.0.1/registry" in log, log[-2000:]
    assert source.password not in log

"""The postgres workload's phases, chained as the DAG chains them, on two real clusters (no Airflow).

The DAG-level behaviour (deferral, approvals, retries) is covered end to end in
tests/e2e/test_postgres_migration.py; here each phase's domain function runs in
turn, so a failure points at one phase.
"""

from __future__ import annotations

import json
import time
from contextlib import closing

import psycopg2
import pytest

from bascule.exceptions import PolicyViolation
from bascule.governance.evidence.store import EvidenceStore
from bascule.governance.routing import RoutingRegistry
from bascule.postgres import cutover_phases, validation_phases
from bascule.postgres import phases as pg_phases
from bascule.postgres.client import LibpqParams
from bascule.postgres.sides import PgSides, connect_kwargs
from bascule.synthetic import audit_log
from bascule.synthetic import registry as synthetic_pg
from bascule.synthetic.target_check import check_target
from bascule.synthetic.writer import Writer
from bascule.workload import parse_manifest

pytestmark = pytest.mark.integration

APP_ROLE, APP_PASSWORD = "phases_app", "phases-app-password"


def _manifest(
    workload_id: str, database: str, bucket: str, extra_source: str = "", suites: str = "[hdh_registry_tables]"
) -> str:
    return f"""
id: {workload_id}
kind: postgres
description: Phases test.
owner: data-platform
source:
  conn_id: unused
  database: {database}
  schemas: [registry, clinical]
  application_roles: [{APP_ROLE}]
{extra_source}
target: {{conn_id: unused, database: {database}, region: fr-par}}
evidence: {{conn_id: unused, bucket: {bucket}, region: fr-par}}
validation: {{suites: {suites}}}
shadow_run:
  jobs:
    - {{name: stays_by_icd10_chapter, query: stays_by_icd10_chapter.sql}}
    - {{name: patients_by_department, query: patients_by_department.sql}}
replication: {{max_lag_seconds: 5}}
approvals: {{approvers: [approver1], required: 1}}
cutover:
  window: {{timezone: Europe/Paris, days: [sunday], start: "02:00", end: "05:00"}}
"""


def _sides(source, target, database: str) -> PgSides:
    def params(cluster) -> LibpqParams:
        return LibpqParams("127.0.0.1", cluster.port, "postgres", cluster.password, database)

    src, tgt = params(source), params(target)
    return PgSides(
        source=lambda: psycopg2.connect(**connect_kwargs(src)),
        target=lambda: psycopg2.connect(**connect_kwargs(tgt)),
        source_params=src,
        target_params=tgt,
    )


@pytest.fixture
def registry(pg_pair, s3_client, request):
    """A fresh synthetic registry on the source, an empty database on the target, an evidence bucket."""
    source, target = pg_pair
    database = f"phases_{request.node.name[5:30].lower()}".replace("[", "_").replace("]", "")
    with closing(source.connect()) as admin, admin.cursor() as cur:
        cur.execute("select 1 from pg_roles where rolname = %s", (APP_ROLE,))
        if cur.fetchone() is None:
            cur.execute(f"create role {APP_ROLE} login password %s", (APP_PASSWORD,))
    for cluster in (source, target):
        with closing(cluster.connect()) as admin, admin.cursor() as cur:
            cur.execute(f"drop database if exists {database} with (force)")
            cur.execute(f"create database {database}")
    with closing(source.connect(database)) as conn:
        synthetic_pg.create_schema(conn)
        synthetic_pg.populate(conn, patients=800, seed=3)
        synthetic_pg.create_application_role(conn, APP_ROLE, APP_PASSWORD, database)
    bucket = database.replace("_", "-")
    s3_client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "fr-par"})
    yield database, bucket
    for cluster in (source, target):
        with closing(cluster.connect()) as admin, admin.cursor() as cur:
            cur.execute("select subname from pg_subscription")
            for (name,) in cur.fetchall():
                if name.startswith("bascule_phases"):
                    cur.execute(f"alter subscription {name} disable")
                    cur.execute(f"alter subscription {name} set (slot_name = none)")
                    cur.execute(f"drop subscription {name}")
            cur.execute(
                "select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name like 'bascule_phases%'"
            )
            cur.execute(f"drop database if exists {database} with (force)")


def _wait_ready(workload, sides, end: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = pg_phases.replication_status(workload, sides, end)
        if status["ready"]:
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.5)


def test_phases_migrate_a_live_database(pg_pair, s3_client, registry, tmp_path) -> None:
    source, target = pg_pair
    database, bucket = registry
    workload = parse_manifest("include/workloads/phases.yaml", _manifest("phases_live", database, bucket))
    sides = _sides(source, target, database)
    evidence = EvidenceStore(s3_client, bucket, workload.id)
    run_id = "manual__2026-11-29T00:00:00+00:00"
    log: list[str] = []

    writes = tmp_path / "writes.jsonl"
    writer = Writer(source.dsn(database, user=APP_ROLE, password=APP_PASSWORD), writes, seed=5)
    writer.start()
    try:
        snapshot = pg_phases.take_snapshot(workload, sides, evidence, run_id, fresh_run=True)
        assert snapshot["tables"][0] == "registry.dispensations", "largest first"
        pg_phases.apply_schema_section(workload, sides, evidence, snapshot, "pre-data", run_id, 1)
        copies = [pg_phases.copy_one_table(sides, evidence, snapshot, t, run_id, 1) for t in snapshot["tables"]]
        # A retried copy replaces the table's rows; it never adds a second copy of them.
        copies[-1] = pg_phases.copy_one_table(sides, evidence, snapshot, snapshot["tables"][-1], run_id, 2)
        pg_phases.apply_schema_section(workload, sides, evidence, snapshot, "post-data", run_id, 1)
        pg_phases.start_replication(workload, sides, evidence, snapshot)
        status = _wait_ready(workload, sides, pg_phases.overlap_end(copies))
        assert status["overlap_replayed"]
        pg_phases.finish_catch_up(workload, sides, evidence, snapshot)
        result = validation_phases.validate(workload, sides, evidence, snapshot, run_id, 1, log.append)
        assert result["diff_ok"], result["diff_summary"]
        assert result["gates_ok"], result["gates_summary"]
        shadow = validation_phases.shadow_run(workload, sides, evidence, snapshot, run_id, 1)
        assert shadow["ok"], shadow["diff_report"]

        routing = RoutingRegistry(s3_client, bucket)

        # The policy's last word, right before the switch, can still stop the cutover.
        def refuse() -> None:
            raise PolicyViolation("policy_database_tls: the target stopped offering TLS")

        with pytest.raises(PolicyViolation):
            cutover_phases.cutover(workload, sides, evidence, routing, snapshot, run_id, 1, log.append, refuse)
        assert routing.read(workload.id)[0].live == "azure", "a refused cutover does not switch"
        # An interrupted validation can leave the subscription paused: the retry resumes it.
        with closing(target.connect(database)) as conn, conn.cursor() as cur:
            cur.execute(f"alter subscription {workload.slot_name()} disable")
        record = cutover_phases.cutover(workload, sides, evidence, routing, snapshot, run_id, 2, log.append)
    finally:
        writer.stop()

    assert record["freeze_window_seconds"] > 0
    assert all(not d["differences"] for d in record["final_diff"])
    assert routing.read(workload.id)[0].live == "scaleway"
    assert writer.acknowledged() > 20
    with closing(target.connect(database)) as conn:
        assert check_target(conn, writes) == []
    # The cutover is idempotent: a retry after the switch only finishes detaching.
    again = cutover_phases.cutover(workload, sides, evidence, routing, snapshot, run_id, 3, log.append)
    assert again.get("already_switched") is True
    # Rollback: routing back, the application role writable again on the source.
    back = cutover_phases.rollback(
        workload, sides, evidence, routing, run_id, 1, "drill", record["target_write_baseline"], log.append
    )
    assert back["live"] == "azure" and back["target_writes_since_cutover"] == {}
    with closing(psycopg2.connect(source.dsn(database, user=APP_ROLE, password=APP_PASSWORD))) as conn:
        with conn.cursor() as cur:
            cur.execute("update registry.patients set department = department where patient_id = 1")
        conn.commit()
    assert any("final diff" in line for line in log)


def test_ddl_on_the_source_after_the_snapshot_blocks_the_migration(pg_pair, s3_client, registry) -> None:
    source, target = pg_pair
    database, bucket = registry
    workload = parse_manifest("include/workloads/phases.yaml", _manifest("phases_ddl", database, bucket))
    sides = _sides(source, target, database)
    evidence = EvidenceStore(s3_client, bucket, workload.id)
    snapshot = pg_phases.take_snapshot(workload, sides, evidence, "run_ddl", fresh_run=True)
    pg_phases.apply_schema_section(workload, sides, evidence, snapshot, "pre-data", "run_ddl", 1)
    with closing(source.connect(database)) as conn, conn.cursor() as cur:
        cur.execute("alter table registry.patients add column consent_withdrawn boolean")
    with pytest.raises(pg_phases.SchemaDrift) as error:
        pg_phases.start_replication(workload, sides, evidence, snapshot)
    message = str(error.value)
    assert "registry.patients" in message and "consent_withdrawn" in message
    assert "trigger a new run" in message
    cutover_phases.release_replication(workload, sides, evidence, "cleanup")


def test_a_table_without_primary_key_stops_the_snapshot_naming_it(pg_pair, s3_client, registry) -> None:
    source, target = pg_pair
    database, bucket = registry
    with closing(source.connect(database)) as conn, conn.cursor() as cur:
        cur.execute("create table registry.audit_log (at timestamptz, what text)")
    workload = parse_manifest("include/workloads/phases.yaml", _manifest("phases_nopk", database, bucket))
    sides = _sides(source, target, database)
    evidence = EvidenceStore(s3_client, bucket, workload.id)
    with pytest.raises(pg_phases.MissingPrimaryKey) as error:
        pg_phases.take_snapshot(workload, sides, evidence, "run_nopk", fresh_run=True)
    assert "registry.audit_log" in str(error.value)
    assert "tables_without_primary_key" in str(error.value)
    with closing(source.connect()) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from pg_replication_slots where slot_name = 'bascule_phases_nopk'")
        assert cur.fetchone()[0] == 0, "nothing is set up when the snapshot refuses"

    opted = parse_manifest(
        "include/workloads/phases.yaml",
        _manifest("phases_nopk", database, bucket, "  tables_without_primary_key: [registry.audit_log]"),
    )
    snapshot = pg_phases.take_snapshot(opted, sides, evidence, "run_nopk2", fresh_run=True)
    assert "registry.audit_log" in snapshot["tables"]
    inventory = json.loads(s3_client.get_object(Bucket=bucket, Key=snapshot["inventory_key"])["Body"].read())
    assert any(t["name"] == "audit_log" for t in inventory["tables"])
    cutover_phases.release_replication(opted, sides, evidence, "cleanup")


def test_keyless_table_migrates_under_writes_and_no_suite_means_the_builtin_gates(pg_pair, s3_client, registry) -> None:
    source, target = pg_pair
    database, bucket = registry
    with closing(source.connect(database)) as conn:
        audit_log.create_audit_log(conn)
    workload = parse_manifest(
        "include/workloads/phases.yaml",
        _manifest("phases_keyless", database, bucket, "  tables_without_primary_key: [registry.audit_log]", "[]"),
    )
    assert workload.validation.suites == []
    sides = _sides(source, target, database)
    evidence = EvidenceStore(s3_client, bucket, workload.id)
    run_id, log = "run_keyless", []
    with audit_log.AuditLogWriter(source.dsn(database)) as writer:
        snapshot = pg_phases.take_snapshot(workload, sides, evidence, run_id, fresh_run=True)
        pg_phases.apply_schema_section(workload, sides, evidence, snapshot, "pre-data", run_id, 1)
        copies = [pg_phases.copy_one_table(sides, evidence, snapshot, t, run_id, 1) for t in snapshot["tables"]]
        pg_phases.apply_schema_section(workload, sides, evidence, snapshot, "post-data", run_id, 1)
        # The REPLICA IDENTITY FULL the snapshot set is the expected shape, not drift.
        started = pg_phases.start_replication(workload, sides, evidence, snapshot)
        assert started["synchronised_by_subscription"] == ["registry.audit_log"]
        # A retried start_replication does not empty the table being synchronised.
        again = pg_phases.start_replication(workload, sides, evidence, snapshot)
        assert again["synchronised_by_subscription"] == []
        _wait_ready(workload, sides, pg_phases.overlap_end(copies))
        pg_phases.finish_catch_up(workload, sides, evidence, snapshot)
        time.sleep(1)  # writes go on after the catch-up, through the stream only
        result = validation_phases.validate(workload, sides, evidence, snapshot, run_id, 1, log.append)
    assert min(writer.counts[k] for k in ("insert", "update", "delete")) > 10, writer.counts
    assert result["diff_ok"], result["diff_summary"]
    assert result["gates_ok"], result["gates_summary"]
    # registry.patients, stays, dispensations, audit_log and clinical.Encounter
    assert result["gates_summary"].startswith("built-in gates passed on 5 table(s)"), result["gates_summary"]
    assert validation_phases.failure_message(result) is None
    (audit,) = [d for d in json.loads(_read(s3_client, bucket, result["diff_key"])) if d["table"].endswith("audit_log")]
    assert audit["method"] == "key_hash" and audit["differences"] == [], audit
    # Once the source is still, the rows are the same multiset on both sides.
    validation_phases.wait_until_applied(sides, snapshot["slot"])
    with closing(source.connect(database)) as src, closing(target.connect(database)) as tgt:
        assert audit_log.fingerprint(src) == audit_log.fingerprint(tgt)
    cutover_phases.release_replication(workload, sides, evidence, "cleanup")


def _read(s3_client, bucket: str, key: str) -> bytes:
    return s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()


def _leftovers(source, target, database: str, name: str) -> list[str]:
    """The workload's replication objects still there (and any table synchronisation slot)."""
    found = []
    with closing(source.connect(database)) as conn, conn.cursor() as cur:
        cur.execute("select slot_name from pg_replication_slots where slot_name = %s or slot_name like 'pg\\_%%\\_sync\\_%%'", (name,))
        found += [f"slot {row[0]}" for row in cur.fetchall()]
        cur.execute("select pubname from pg_publication where pubname = %s", (name,))
        found += [f"publication {row[0]}" for row in cur.fetchall()]
    with closing(target.connect(database)) as conn, conn.cursor() as cur:
        cur.execute("select subname from pg_subscription where subname = %s", (name,))
        found += [f"subscription {row[0]}" for row in cur.fetchall()]
    return found


def _ledger(evidence: EvidenceStore, name: str) -> list[str]:
    return [key.rsplit("/", 1)[-1].split("-", 1)[1] for key, _ in sorted(evidence.keys(f"replication/{name}/"))]


def test_a_run_failing_after_the_slot_leaves_a_record_and_release_removes_what_it_created(
    pg_pair, s3_client, registry, monkeypatch
) -> None:
    source, target = pg_pair
    database, bucket = registry
    workload = parse_manifest(
        "include/workloads/phases.yaml",
        _manifest("phases_release", database, bucket, "  tables_without_primary_key: [registry.audit_log]"),
    )
    with closing(source.connect(database)) as conn:
        audit_log.create_audit_log(conn, rows=50)
    name, sides = workload.slot_name(), _sides(source, target, database)
    evidence = EvidenceStore(s3_client, bucket, workload.id)

    # 1. The snapshot fails after creating publication and slot (its evidence write fails).
    real_put = evidence.put_json

    def failing_put(key, document):
        if "inventory-" in key:
            raise RuntimeError("evidence bucket unreachable")
        return real_put(key, document)

    monkeypatch.setattr(evidence, "put_json", failing_put)
    with pytest.raises(RuntimeError):
        pg_phases.take_snapshot(workload, sides, evidence, "run_a", fresh_run=True)
    monkeypatch.setattr(evidence, "put_json", real_put)
    assert _leftovers(source, target, database, name) == [f"slot {name}", f"publication {name}"]
    assert _ledger(evidence, name) == ["created-run_a.json"], "the run recorded what it created"
    released = cutover_phases.release_replication(workload, sides, evidence, "run_a")
    assert released["dropped"] == {"subscription": False, "slot": True, "publication": True}
    assert _leftovers(source, target, database, name) == []
    assert _ledger(evidence, name) == ["created-run_a.json", "released-run_a.json"]

    # 2. start_replication fails after creating the subscription (keyless sync refused).
    snapshot = pg_phases.take_snapshot(workload, sides, evidence, "run_b", fresh_run=True)
    pg_phases.apply_schema_section(workload, sides, evidence, snapshot, "pre-data", "run_b", 1)

    def refuse(*args, **kwargs):
        raise RuntimeError("refresh publication failed")

    monkeypatch.setattr(pg_phases.keyless, "synchronise", refuse)
    with pytest.raises(RuntimeError):
        pg_phases.start_replication(workload, sides, evidence, snapshot)
    monkeypatch.undo()
    assert f"subscription {name}" in _leftovers(source, target, database, name)
    cutover_phases.release_replication(workload, sides, evidence, "run_b")
    assert _leftovers(source, target, database, name) == []

    # 3. validate fails (a target row differs) after the stream and the keyless sync ran.
    snapshot = pg_phases.take_snapshot(workload, sides, evidence, "run_c", fresh_run=True)
    pg_phases.apply_schema_section(workload, sides, evidence, snapshot, "pre-data", "run_c", 1)
    copies = [pg_phases.copy_one_table(sides, evidence, snapshot, t, "run_c", 1) for t in snapshot["tables"]]
    pg_phases.apply_schema_section(workload, sides, evidence, snapshot, "post-data", "run_c", 1)
    pg_phases.start_replication(workload, sides, evidence, snapshot)
    _wait_ready(workload, sides, pg_phases.overlap_end(copies))
    with closing(target.connect(database)) as conn, conn.cursor() as cur:
        cur.execute("update registry.patients set department = '00' where patient_id = 1")
        conn.commit()
    result = validation_phases.validate(workload, sides, evidence, snapshot, "run_c", 1, lambda line: None)
    message = validation_phases.failure_message(result)
    assert message is not None and "registry.patients" in message, message
    cutover_phases.release_replication(workload, sides, evidence, "run_c")
    assert _leftovers(source, target, database, name) == []
    assert _ledger(evidence, name)[-1] == "released-run_c.json"
    # Released twice (a retried task): nothing more to do, and nothing more recorded.
    again = cutover_phases.release_replication(workload, sides, evidence, "run_c")
    assert again["record"] is None and not any(again["dropped"].values())


def test_a_slot_of_the_workloads_name_that_it_did_not_create_is_left_alone(pg_pair, s3_client, registry) -> None:
    from bascule.postgres import cleanup

    source, target = pg_pair
    database, bucket = registry
    workload = parse_manifest("include/workloads/phases.yaml", _manifest("phases_foreign", database, bucket))
    name, sides = workload.slot_name(), _sides(source, target, database)
    evidence = EvidenceStore(s3_client, bucket, workload.id)
    with closing(source.connect(database)) as conn, conn.cursor() as cur:
        cur.execute("select pg_create_logical_replication_slot(%s, 'pgoutput')", (name,))
        conn.commit()
    with closing(source.connect(database)) as conn:
        report = cleanup.slot_report(conn, evidence, name)
    assert not report.ok
    assert f"slot '{name}' exists in database '{database}' (inactive, retains " in report.detail, report.detail
    assert "no ownership record" in report.detail and "docs/runbooks.md#postgres-orphaned-slot" in report.detail
    with pytest.raises(cleanup.NotOurs) as refused:
        pg_phases.take_snapshot(workload, sides, evidence, "run_f", fresh_run=True)
    assert f"slot '{name}' exist(s) (source database '{database}') but no ownership record" in str(refused.value)
    assert f"select pg_drop_replication_slot('{name}')" in str(refused.value)
    left = cutover_phases.release_replication(workload, sides, evidence, "run_f")
    assert left["left_alone"] == ["slot"] and left["dropped"] == {}
    assert _leftovers(source, target, database, name) == [f"slot {name}"], "a foreign slot is never dropped"
    assert _ledger(evidence, name) == [], "nothing was claimed"
    with closing(source.connect(database)) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from pg_publication where pubname = %s", (name,))
        assert cur.fetchone()[0] == 0, "the refusing snapshot created nothing"

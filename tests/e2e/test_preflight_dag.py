"""Preflight through Airflow itself: dag.test() on a migrated metadata DB, real Azurite and moto."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import devstack
from bascule.synthetic.blob_writer import create_writer_policy

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DEMO_MANIFEST = ROOT / "include" / "workloads" / "snds_extracts.yaml"


@pytest.fixture(scope="module")
def source_container(standins: devstack.Ports) -> str:
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient(
        devstack.azurite_url(standins.azurite),
        credential={"account_name": devstack.AZURITE_ACCOUNT, "account_key": devstack.AZURITE_KEY},
    )
    container = service.get_container_client("preflight-src")
    if not container.exists():
        container.create_container()
    container.upload_blob("stays/year=2024/month=01/stays.csv", b"stay_id,patient_id\n1,a\n", overwrite=True)
    # The demo manifest freezes by the writers' stored access policy: the platform's ops create it.
    create_writer_policy(container, yaml.safe_load(DEMO_MANIFEST.read_text())["cutover"]["freeze"]["policy_id"])
    return "preflight-src"


def _manifest(tmp_path: Path, workload_id: str, **changes: dict) -> Path:
    data = yaml.safe_load(DEMO_MANIFEST.read_text())
    data["id"] = workload_id
    for section, values in changes.items():
        data[section] = {**data.get(section, {}), **values}
    path = tmp_path / f"{workload_id}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _preflight_only(dag):
    return dag.partial_subset(task_ids=["preflight"], include_upstream=False, include_downstream=False)


def _run(dag_id: str, workloads: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("BASCULE_WORKLOADS_DIR", str(workloads))
    bag = DagBag(str(ROOT / "dags"))
    assert not bag.import_errors, bag.import_errors
    # Preflight alone: the object-store DAG's later phases have their own end-to-end tests.
    run = _preflight_only(bag.dags[dag_id]).test()
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    out, err = capfd.readouterr()
    return run.state, states, out + err


def test_preflight_passes_and_creates_target_bucket(
    airflow_db, source_container, tmp_path, monkeypatch, capfd, standins, s3_client
):
    _manifest(
        tmp_path, "preflight_ok", source={"container": source_container}, target={"bucket": "preflight-ok-bucket"},
        evidence={"bucket": "preflight-ok-evidence"},
    )  # fmt: skip
    state, tasks, log = _run("migrate_preflight_ok", tmp_path, monkeypatch, capfd)
    assert (state, tasks) == ("success", {"preflight": "success"}), log[-4000:]
    assert "PASS target_bucket_region: bucket 'preflight-ok-bucket' is in region 'fr-par'" in log

    assert s3_client.get_bucket_location(Bucket="preflight-ok-bucket")["LocationConstraint"] == "fr-par"
    # The evidence bucket, created locked; the preflight's record went there, none into the data bucket.
    assert "PASS evidence_object_lock: evidence bucket 'preflight-ok-evidence' has Object Lock" in log
    lock = s3_client.get_object_lock_configuration(Bucket="preflight-ok-evidence")["ObjectLockConfiguration"]
    assert lock["ObjectLockEnabled"] == "Enabled"
    assert s3_client.list_objects_v2(Bucket="preflight-ok-evidence", Prefix="_bascule/preflight_ok/")["KeyCount"] >= 1
    assert s3_client.list_objects_v2(Bucket="preflight-ok-bucket")["KeyCount"] == 0


def test_wrong_account_key_fails_naming_the_credential(
    airflow_db, source_container, tmp_path, monkeypatch, capfd, standins
):
    wrong = json.loads(devstack.local_connections(standins)["AIRFLOW_CONN_HDH_AZURE_BLOB"])
    wrong["password"] = "d3Jvbmcta2V5LW5vdC10aGUtYWNjb3VudC1rZXk="
    monkeypatch.setenv("AIRFLOW_CONN_WRONG_KEY_AZURE", json.dumps(wrong))
    _manifest(tmp_path, "preflight_badkey", source={"conn_id": "wrong_key_azure", "container": source_container})
    state, tasks, log = _run("migrate_preflight_badkey", tmp_path, monkeypatch, capfd)
    assert (state, tasks) == ("failed", {"preflight": "failed"})
    assert "FAIL source_reachable" in log
    assert "authentication failed" in log or "access denied" in log
    assert "check the account key or SAS token in the source connection" in log
    assert wrong["password"] not in log, "the account key leaked into the task log"


def test_missing_container_fails_naming_container_and_field(airflow_db, tmp_path, monkeypatch, capfd, standins):
    _manifest(tmp_path, "preflight_nocontainer", source={"container": "no-such-container"})
    state, tasks, log = _run("migrate_preflight_nocontainer", tmp_path, monkeypatch, capfd)
    assert (state, tasks) == ("failed", {"preflight": "failed"})
    assert "FAIL source_location_exists: Azure container 'no-such-container'" in log
    assert "does not exist; check source.container in" in log


def test_region_outside_allow_list_fails_before_creating_anything(
    airflow_db, source_container, tmp_path, monkeypatch, capfd, standins, s3_client
):
    _manifest(
        tmp_path,
        "preflight_region",
        source={"container": source_container},
        target={"bucket": "preflight-wrong-region", "region": "nl-ams"},
    )
    state, tasks, log = _run("migrate_preflight_region", tmp_path, monkeypatch, capfd)
    assert (state, tasks) == ("failed", {"preflight": "failed"})
    assert "FAIL target_region_allowed: target region 'nl-ams' is not in the allow-list ['fr-par']" in log
    # The connection says fr-par but the manifest says nl-ams: that mismatch is named too.
    assert "FAIL target_connection_region" in log
    names = {b["Name"] for b in s3_client.list_buckets()["Buckets"]}
    assert "preflight-wrong-region" not in names, "a bucket was created although the region is refused"


def test_dry_run_param_reports_instead_of_creating(
    airflow_db, source_container, tmp_path, monkeypatch, capfd, standins, s3_client
):
    from airflow.dag_processing.dagbag import DagBag

    _manifest(tmp_path, "preflight_dry", source={"container": source_container}, target={"bucket": "preflight-dry"})
    monkeypatch.setenv("BASCULE_WORKLOADS_DIR", str(tmp_path))
    run = _preflight_only(DagBag(str(ROOT / "dags")).dags["migrate_preflight_dry"]).test(run_conf={"dry_run": True})
    log = "".join(capfd.readouterr())
    assert run.state == "success", log[-4000:]
    assert "PASS target_location_exists: S3 bucket 'preflight-dry'" in log
    assert "it would be created in 'fr-par' (dry run)" in log
    assert "dry run: nothing was created or changed on the target" in log
    assert "preflight-dry" not in {b["Name"] for b in s3_client.list_buckets()["Buckets"]}


POSTGRES_MANIFEST = """
id: {workload_id}
kind: postgres
description: Project registry catalogue.
owner: data-platform
source: {{conn_id: {source_conn}, database: bascule_pf_source, schemas: [{schema}], application_roles: [pf_app]}}
target: {{conn_id: pf_pg_target, database: bascule_pf_target, region: fr-par, create_if_missing: true}}
evidence: {{conn_id: hdh_scaleway_s3, bucket: pf-dag-evidence, region: fr-par, create_if_missing: true}}
approvals: {{approvers: [approver1], required: 1}}
cutover:
  window: {{timezone: Europe/Paris, days: [sunday], start: "02:00", end: "05:00"}}
"""


@pytest.mark.parametrize(("schema", "expected"), [("catalogue", "success"), ("registre", "failed")])
def test_postgres_preflight_dag(
    airflow_db, standins, pg_preflight_databases, tmp_path, monkeypatch, capfd, schema, expected
):
    workload_id = f"pg_preflight_{expected}"
    (tmp_path / f"{workload_id}.yaml").write_text(
        POSTGRES_MANIFEST.format(workload_id=workload_id, schema=schema, source_conn="pf_pg_source")
    )
    state, tasks, log = _run(f"migrate_{workload_id}", tmp_path, monkeypatch, capfd)
    assert (state, tasks) == (expected, {"preflight": expected}), log[-4000:]
    if expected == "success":
        assert "PASS target_location_exists: created database 'bascule_pf_target'" in log
        assert "PASS source_wal_level: wal_level is 'logical'" in log, log[-4000:]
        assert "PASS evidence_bucket" in log
    else:
        assert "FAIL source_location_exists: schema(s) ['registre'] not found" in log


def test_postgres_preflight_stops_on_a_table_without_primary_key(
    airflow_db, standins, pg_preflight_databases, pg_pair, tmp_path, monkeypatch, capfd
):
    from contextlib import closing

    source, _ = pg_pair
    with closing(source.connect("bascule_pf_source")) as conn, conn.cursor() as cur:
        cur.execute("create table catalogue.import_log (at timestamptz, line text)")
    (tmp_path / "pg_preflight_nopk.yaml").write_text(
        POSTGRES_MANIFEST.format(workload_id="pg_preflight_nopk", schema="catalogue", source_conn="pf_pg_source")
    )
    state, tasks, log = _run("migrate_pg_preflight_nopk", tmp_path, monkeypatch, capfd)
    assert (state, tasks) == ("failed", {"preflight": "failed"}), log[-4000:]
    assert "catalogue.import_log" in log and "tables_without_primary_key" in log


def test_postgres_wrong_password_fails_once_without_retries(
    airflow_db, standins, pg_preflight_databases, tmp_path, monkeypatch, capfd
):
    (tmp_path / "pg_preflight_badpass.yaml").write_text(
        POSTGRES_MANIFEST.format(workload_id="pg_preflight_badpass", schema="catalogue", source_conn="pf_pg_badpass")
    )
    state, tasks, log = _run("migrate_pg_preflight_badpass", tmp_path, monkeypatch, capfd)
    # Failed, not up_for_retry: a wrong password does not heal, and retrying could lock the account.
    assert (state, tasks) == ("failed", {"preflight": "failed"}), log[-4000:]
    assert "password authentication failed" in log
    assert "check the login and password in the connection" in log
    assert "not-the-password" not in log

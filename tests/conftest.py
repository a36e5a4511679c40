"""Shared test set-up: an isolated Airflow home, and real local stand-ins on free ports.

Airflow reads its configuration at import, so the environment is set here, before
any test module imports it. Connections to the stand-ins come from the same
``devstack.local_connections`` the demo uses.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from machine_pg import PF_APP_ROLE, PF_SOURCE_DB, PF_TARGET_DB, admin_connection  # noqa: E402, F401

import devstack  # noqa: E402
import pgclusters  # noqa: E402

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="bascule-tests-"))
PORTS = devstack.Ports(azurite=devstack.free_port(), moto=devstack.free_port(), ssec=devstack.free_port())

os.environ.update(
    {
        "AIRFLOW_HOME": str(_SESSION_DIR / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        **devstack.local_connections(PORTS),
    }
)


@pytest.fixture(scope="session")
def session_dir() -> Path:
    return _SESSION_DIR


@pytest.fixture(scope="session")
def standins(session_dir: Path) -> Iterator[devstack.Ports]:
    """Azurite and moto, started once for the session by the project's own script."""
    state = session_dir / "standins"
    devstack.up(state, PORTS)
    try:
        yield PORTS
    finally:
        devstack.down(state)


@pytest.fixture(scope="session")
def airflow_db(session_dir: Path) -> Path:
    """A migrated Airflow metadata DB (SQLite in the session's AIRFLOW_HOME)."""
    airflow = Path(sys.executable).parent / "airflow"
    result = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"airflow db migrate failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return Path(os.environ["AIRFLOW_HOME"])




@pytest.fixture
def pg_preflight_databases(
    pg_pair: tuple[pgclusters.PgCluster, pgclusters.PgCluster], monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """On the throwaway clusters: a source database with schema ``catalogue`` and the role
    ``pf_app``, no target database, and connections ``pf_pg_source``/``pf_pg_target`` to the
    servers, ``pf_pg_nowhere`` to a closed port, ``pf_pg_badpass`` with a wrong password."""
    source, target = pg_pair
    for cluster in (source, target):
        with closing(cluster.connect()) as admin, admin.cursor() as cur:
            for name in (PF_SOURCE_DB, PF_TARGET_DB):
                cur.execute(f"drop database if exists {name} with (force)")
    with closing(source.connect()) as admin, admin.cursor() as cur:
        cur.execute(f"create database {PF_SOURCE_DB}")
        cur.execute("select 1 from pg_roles where rolname = %s", (PF_APP_ROLE,))
        if cur.fetchone() is None:
            cur.execute(f"create role {PF_APP_ROLE} login")
    with closing(source.connect(PF_SOURCE_DB)) as conn, conn.cursor() as cur:
        cur.execute("create schema catalogue; create table catalogue.projects (id bigint primary key)")
    # The connection names the server; the manifest names the database to migrate.
    monkeypatch.setenv("AIRFLOW_CONN_PF_PG_SOURCE", source.airflow_connection())
    monkeypatch.setenv("AIRFLOW_CONN_PF_PG_TARGET", target.airflow_connection())
    monkeypatch.setenv("AIRFLOW_CONN_PF_PG_BADPASS", source.airflow_connection(password="not-the-password"))
    nowhere = pgclusters.PgCluster("nowhere", source.directory, devstack.free_port())
    monkeypatch.setenv("AIRFLOW_CONN_PF_PG_NOWHERE", nowhere.airflow_connection())
    yield
    for cluster in (source, target):
        with closing(cluster.connect()) as admin, admin.cursor() as cur:
            for name in (PF_SOURCE_DB, PF_TARGET_DB):
                cur.execute(f"drop database if exists {name} with (force)")


@pytest.fixture(scope="session")
def pg_pair(session_dir: Path) -> Iterator[tuple[pgclusters.PgCluster, pgclusters.PgCluster]]:
    """Two throwaway PostgreSQL clusters (wal_level=logical, password auth): the Azure
    source and the Scaleway target. Their Airflow connections ``hdh_azure_pg`` and
    ``hdh_scaleway_pg`` are set in the environment for the session."""
    source, target = pgclusters.start_pair(session_dir / "pg", devstack.free_port(), devstack.free_port())
    os.environ.update(pgclusters.airflow_connections(source, target))
    try:
        yield source, target
    finally:
        source.destroy()
        target.destroy()


@pytest.fixture(scope="session")
def s3_client(standins: devstack.Ports):
    """A boto3 client on the S3 stand-in, region fr-par (any key: moto does not check)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{standins.moto}",
        region_name="fr-par",
        aws_access_key_id="x",
        aws_secret_access_key="y",
    )


@pytest.fixture(scope="session")
def blob_service(standins: devstack.Ports):
    """The Azure SDK's BlobServiceClient on Azurite's development account."""
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient(
        devstack.azurite_url(standins.azurite),
        credential={"account_name": devstack.AZURITE_ACCOUNT, "account_key": devstack.AZURITE_KEY},
    )

"""What the distributed tests share besides fixtures: the workloads, their names, the
independent checks of what landed on the target, and the evidence chain's verification."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = yaml.safe_load((ROOT / "include" / "workloads" / "snds_extracts.yaml").read_text())
PG_TEMPLATE = yaml.safe_load((ROOT / "include" / "workloads" / "hdh_registry.yaml").read_text())
OBJECT_WORKLOAD = "dist_objects"
PG_WORKLOAD = "dist_registry"  # also the name of its database, on both clusters
REDIS_DB = 11


CONTAINER, BUCKET, EVIDENCE_BUCKET = "dist-objects-src", "dist-objects-dst", "dist-objects-evidence"
# The Postgres workload reaches its target through a bandwidth-capped link (wan_link.py, set
# up by conftest.py), as copy workers placed next to the source reach Scaleway.
PG_TARGET_CONN = "dist_scaleway_pg_wan"
WAN_BYTES_PER_SECOND = 384 * 1024
# The replica is "caught up" within this many bytes: far below what the catch-up test
# writes while it holds the apply worker, so the deferral cannot end before it lets go.
PG_MAX_LAG_BYTES = 64 * 1024


def object_manifest() -> dict:
    data = json.loads(json.dumps(TEMPLATE))
    data["id"] = OBJECT_WORKLOAD
    data["source"]["container"], data["target"]["bucket"] = CONTAINER, BUCKET
    data["evidence"]["bucket"] = EVIDENCE_BUCKET
    # Four shards over two workers of two slots; two threads each keep a shard slow enough
    # for a worker to be killed in the middle of it.
    data["transfer"] = {"shards": 4, "concurrency": 2, "part_size_mib": 5}
    # Two distinct approvers: one approval is recorded before the scheduler restart, one after.
    data["approvals"] = {"approvers": ["approver1", "approver2"], "required": 2, "timeout_minutes": 60}
    # A container of a few objects and no application writer: leases freeze it in a few requests.
    # The stored-access-policy freeze the demo manifest uses is covered by the object e2e and
    # tests/integration/objects/test_freeze_access_policy.py.
    data["cutover"]["freeze"] = {"method": "leases"}
    return data


def postgres_manifest() -> dict:
    data = json.loads(json.dumps(PG_TEMPLATE))
    data["id"] = PG_WORKLOAD
    data["source"]["database"] = data["target"]["database"] = PG_WORKLOAD
    data["target"]["conn_id"] = PG_TARGET_CONN
    data["evidence"]["bucket"] = "dist-registry-evidence"
    # registry.dispensations (~3.5 MiB) is copied in two key ranges, the four copy units
    # beside it at once on the two workers' four slots: a worker dies with part of a table.
    data["transfer"] = {"concurrency": 4, "split_table_above_mib": 2}
    data["replication"] = {"max_lag_seconds": 5, "max_lag_bytes": PG_MAX_LAG_BYTES, "catch_up_timeout_minutes": 10}
    # The built-in gates (table diff) decide: the Great Expectations suite costs a worker ~20 s
    # of CI time here and is proven on the same data by tests/e2e/test_postgres_migration.py.
    data["validation"] = {"suites": []}
    # The quorum and the scheduler restart during the approval wait are proven on the object
    # workload (test_worker_loss.py): one approval is enough here.
    data["approvals"] = {"approvers": ["approver1", "approver2"], "required": 1, "timeout_minutes": 60}
    return data


def table_fingerprint(
    conn: Any, table: str, key: tuple[str, ...], where: str = "true", params: tuple = ()
) -> tuple[int, int, int]:
    """``(rows, checksum, rows sharing a key with another)`` of ``table``, all computed by the server.

    The checksum is the sum of every row's md5 read as a 64-bit number: it does not depend
    on the order rows are stored or read in, and a row missing, doubled or with one changed
    byte changes it. ``where`` (with ``params``) restricts it to some rows, e.g. a key range.
    """
    from psycopg2 import sql

    from bascule.synthetic import registry

    statement = sql.SQL(
        "select count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint), 0), "
        "count(*) - count(distinct ({keys})) from {table} t where {where}"
    ).format(keys=sql.SQL(", ").join(sql.Identifier(k) for k in key), table=registry.ident(table), where=sql.SQL(where))
    with conn.cursor() as cur:
        # The row's text form holds its timestamptz values: one time zone on both sides.
        cur.execute("set timezone = 'UTC'")
        cur.execute(statement, params)
        rows, checksum, duplicated = cur.fetchone()
    return int(rows), int(checksum), int(duplicated)


def assert_evidence_chain_verifies(api: Any, dag_id: str, run_id: str, endpoint_url: str) -> None:
    """The run's own verification passed, and the chain verifies again from outside Airflow."""
    verified = api.xcom(dag_id, run_id, "verify_evidence")
    assert verified["ok"], verified
    chain_prefix = verified["report"].rsplit("/", 1)[0] + "/"
    cli = subprocess.run(
        [sys.executable, "scripts/verify_evidence.py", chain_prefix, "--endpoint-url", endpoint_url],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_DEFAULT_REGION": "fr-par"},
    )  # fmt: skip
    assert cli.returncode == 0, cli.stdout + cli.stderr

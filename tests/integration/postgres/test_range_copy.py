"""Tables over ``transfer.split_table_above_mib`` copied in primary-key ranges, on two real clusters.

The threshold is set to 1 MiB so that the synthetic registry's larger tables (a few MB)
are split: ``dispensations`` on its bigint key, ``stays`` on the first column of its
composite key. Each range is a mapped ``copy_table`` task of its own; here the phase
functions run as the DAG runs them (ranges at the same time, in threads), with the
application writing to the source throughout.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing

import psycopg2
import pytest

from bascule.governance.evidence.store import EvidenceStore
from bascule.postgres import copy_plan, cutover_phases, validation_phases
from bascule.postgres import phases as pg_phases
from bascule.postgres.client import LibpqParams, PgCopyError
from bascule.postgres.sides import PgSides, connect_kwargs
from bascule.synthetic import registry as synthetic_pg
from bascule.synthetic.target_check import check_target
from bascule.synthetic.writer import Writer
from bascule.workload import parse_manifest

pytestmark = pytest.mark.integration

APP_ROLE, APP_PASSWORD = "ranges_app", "ranges-app-password"
DISPENSATIONS = "registry.dispensations"
STAYS = "registry.stays"


def _manifest(workload_id: str, database: str, bucket: str) -> str:
    return f"""
id: {workload_id}
kind: postgres
description: Range copy test.
owner: data-platform
source:
  conn_id: unused
  database: {database}
  schemas: [registry, clinical]
  application_roles: [{APP_ROLE}]
target: {{conn_id: unused, database: {database}, region: fr-par}}
evidence: {{conn_id: unused, bucket: {bucket}, region: fr-par}}
transfer: {{split_table_above_mib: 1}}
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
    """A synthetic registry of a few MB on the source, an empty database on the target, an evidence bucket."""
    source, target = pg_pair
    database = f"ranges_{request.node.name[5:28].lower().rstrip('_')}"
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
        synthetic_pg.populate(conn, patients=6000, seed=11)
        synthetic_pg.create_application_role(conn, APP_ROLE, APP_PASSWORD, database)
        with conn.cursor() as cur:
            cur.execute("analyze")  # the histogram the plan cuts at
        conn.commit()
    bucket = database.replace("_", "-")
    s3_client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "fr-par"})
    yield database, bucket
    for cluster in (source, target):
        with closing(cluster.connect()) as admin, admin.cursor() as cur:
            cur.execute("select subname from pg_subscription")
            for (name,) in cur.fetchall():
                if name.startswith("bascule_ranges"):
                    cur.execute(f"alter subscription {name} disable")
                    cur.execute(f"alter subscription {name} set (slot_name = none)")
                    cur.execute(f"drop subscription {name}")
            cur.execute(
                "select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name like 'bascule_ranges%'"
            )
            cur.execute(f"drop database if exists {database} with (force)")


def _setup(pg_pair, s3_client, registry, workload_id: str):
    source, target = pg_pair
    database, bucket = registry
    workload = parse_manifest("include/workloads/ranges.yaml", _manifest(workload_id, database, bucket))
    sides = _sides(source, target, database)
    evidence = EvidenceStore(s3_client, bucket, workload.id)
    return workload, sides, evidence


def _lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def _versions(conn, where: str) -> str:
    """The row versions (xmin) in ``where``: unchanged means no statement rewrote or re-inserted them."""
    with conn.cursor() as cur:
        cur.execute(f"select md5(string_agg(xmin::text, ',' order by dispensation_id)) from {DISPENSATIONS} where {where}")
        (digest,) = cur.fetchone()
    conn.commit()
    return str(digest)


def _ranges_of(units: list[dict], table: str) -> list[dict]:
    return [u for u in units if u["table"] == table]


def _rows(conn, table: str, where: str = "true") -> tuple[int, str]:
    """Count and digest of the rows matching ``where``, in key order."""
    key = ", ".join(f"t.{k}" for k in synthetic_pg.PRIMARY_KEYS[table])
    with conn.cursor() as cur:
        cur.execute(f"select count(*), md5(string_agg(t::text, '|' order by {key})) from {table} t where {where}")
        count, digest = cur.fetchone()
    conn.commit()
    return int(count), str(digest)


def test_split_tables_migrate_under_live_writes(pg_pair, s3_client, registry, tmp_path) -> None:
    source, target = pg_pair
    database, _ = registry
    workload, sides, evidence = _setup(pg_pair, s3_client, registry, "ranges_live")
    run_id = "manual__2026-12-01T00:00:00+00:00"
    writes = tmp_path / "writes.jsonl"
    writer = Writer(source.dsn(database, user=APP_ROLE, password=APP_PASSWORD), writes, seed=7)
    writer.start()
    try:
        snapshot = pg_phases.take_snapshot(workload, sides, evidence, run_id, fresh_run=True)
        pg_phases.apply_schema_section(workload, sides, evidence, snapshot, "pre-data", run_id, 1)
        plan = pg_phases.plan_copy(workload, sides, evidence, snapshot, run_id, 1)
        units = plan["units"]
        dispensations, stays = _ranges_of(units, DISPENSATIONS), _ranges_of(units, STAYS)
        assert len(dispensations) >= 2 and len(stays) >= 2, plan["notes"]
        assert {u["range"]["column"] for u in stays} == {"patient_id"}, "composite key: split on its first column"
        assert any("registry.stays" in note and "ranges of patient_id" in note for note in plan["notes"])
        for split in (dispensations, stays):  # in key order, half-open, the ends unbounded: every key is covered
            bounds = [(u["range"]["lo"], u["range"]["hi"]) for u in split]
            assert bounds[0][0] is None and bounds[-1][1] is None
            assert all(bounds[i][1] == bounds[i + 1][0] for i in range(len(bounds) - 1))
        assert max(len(json.dumps(u)) for u in units) < 200, "the plan is small for XCom: bounds, not rows"

        # The ranges run at once, as mapped tasks do, each on its own connections and snapshot.
        with ThreadPoolExecutor(max_workers=3) as pool:
            copies = list(
                pool.map(lambda u: pg_phases.copy_one_table(sides, evidence, snapshot, u, run_id, 1), units)
            )
        # A retried range (the writer still running) replaces its rows and adds no second copy.
        copies.append(pg_phases.copy_one_table(sides, evidence, snapshot, dispensations[1], run_id, 2))
        assert sum(1 for c in copies if c.get("range")) == len(dispensations) + len(stays) + 1
        pg_phases.apply_schema_section(workload, sides, evidence, snapshot, "post-data", run_id, 1)
        pg_phases.start_replication(workload, sides, evidence, snapshot)
        end = pg_phases.overlap_end(copies)
        assert end == max((c["source_lsn_after"] for c in copies), key=_lsn)
        validation_phases.wait_until_applied(sides, workload.slot_name())
        assert pg_phases.replication_status(workload, sides, end)["overlap_replayed"]
        pg_phases.finish_catch_up(workload, sides, evidence, snapshot)
    finally:
        writer.stop()

    assert writer.acknowledged() > 20
    validation_phases.wait_until_applied(sides, workload.slot_name())
    inventory = pg_phases.load_inventory(evidence, snapshot)
    diffs = validation_phases.diff_tables(sides, inventory, slot=workload.slot_name(), live=False)
    assert all(not d.differences for d in diffs), validation_phases.describe_differences(diffs)
    with closing(target.connect(database)) as conn:
        assert check_target(conn, writes) == []
    plan_record = evidence.read_json(plan["plan_key"])
    assert plan_record["units"] == units
    keys = [key for key, _ in evidence.keys(pg_phases.run_prefix(run_id) + "copy/")]
    assert any("registry.dispensations-range-002of" in k and k.endswith("-try2.json") for k in keys)
    cutover_phases.release_replication(workload, sides, evidence, "cleanup")


def _copied_ranges(pg_pair, s3_client, registry, workload_id: str, run_id: str):
    """Snapshot, pre-data, plan, and every unit copied once (no writer)."""
    workload, sides, evidence = _setup(pg_pair, s3_client, registry, workload_id)
    snapshot = pg_phases.take_snapshot(workload, sides, evidence, run_id, fresh_run=True)
    pg_phases.apply_schema_section(workload, sides, evidence, snapshot, "pre-data", run_id, 1)
    units = pg_phases.plan_copy(workload, sides, evidence, snapshot, run_id, 1)["units"]
    for unit in units:
        pg_phases.copy_one_table(sides, evidence, snapshot, unit, run_id, 1)
    return workload, sides, evidence, snapshot, _ranges_of(units, DISPENSATIONS)


def _where(unit: dict) -> str:
    """The unit's range as SQL text, written here rather than by the code under test."""
    key_range = copy_plan.CopyUnit.from_item(unit).range
    bounds = [f"{key_range.column} >= {key_range.lo}"] if key_range.lo is not None else []
    bounds += [f"{key_range.column} < {key_range.hi}"] if key_range.hi is not None else []
    return " and ".join(bounds) or "true"


def test_a_retried_range_replaces_only_its_own_rows(pg_pair, s3_client, registry) -> None:
    source, target = pg_pair
    database, _ = registry
    workload, sides, evidence, snapshot, ranges = _copied_ranges(pg_pair, s3_client, registry, "ranges_retry", "r1")
    second, others = ranges[1], [r for i, r in enumerate(ranges) if i != 1]
    with closing(target.connect(database)) as conn:
        before_others = [_rows(conn, DISPENSATIONS, _where(r)) for r in others]
        versions_others = [_versions(conn, _where(r)) for r in others]
    with closing(source.connect(database)) as conn, conn.cursor() as cur:
        cur.execute(f"update {DISPENSATIONS} set quantity = quantity + 1 where {_where(second)}")
        cur.execute(f"update {DISPENSATIONS} set quantity = quantity + 1 where {_where(ranges[0])}")
        conn.commit()

    for attempt in (2, 3):  # the retry, and a retry of the retry
        record = pg_phases.copy_one_table(sides, evidence, snapshot, second, "r1", attempt)

    with closing(source.connect(database)) as src, closing(target.connect(database)) as tgt:
        assert _rows(tgt, DISPENSATIONS, _where(second)) == _rows(src, DISPENSATIONS, _where(second))
        assert record["rows"] == _rows(src, DISPENSATIONS, _where(second))[0]
        # The other ranges are as their own copies left them: the change to range 1 is not there yet.
        assert [_rows(tgt, DISPENSATIONS, _where(r)) for r in others] == before_others
        assert _rows(tgt, DISPENSATIONS, _where(ranges[0])) != _rows(src, DISPENSATIONS, _where(ranges[0]))
        with tgt.cursor() as cur:
            cur.execute(f"select count(*) - count(distinct dispensation_id) from {DISPENSATIONS}")
            assert cur.fetchone()[0] == 0
        tgt.commit()
    # A split table is never truncated: the other ranges' rows are the very row versions their
    # own copies wrote, so a retried range cannot wipe a range that is copying meanwhile.
    with closing(target.connect(database)) as conn:
        assert [_versions(conn, _where(r)) for r in others] == versions_others
    cutover_phases.release_replication(workload, sides, evidence, "cleanup")


def test_a_range_that_fails_mid_copy_leaves_the_target_range_as_before(pg_pair, s3_client, registry) -> None:
    source, target = pg_pair
    database, _ = registry
    workload, sides, evidence, snapshot, ranges = _copied_ranges(pg_pair, s3_client, registry, "ranges_fail", "r2")
    second = ranges[1]
    with closing(source.connect(database)) as conn, conn.cursor() as cur:
        cur.execute(f"select min(dispensation_id), max(dispensation_id) from {DISPENSATIONS} where {_where(second)}")
        low, high = cur.fetchone()
        cur.execute(f"update {DISPENSATIONS} set quantity = quantity + 1 where {_where(second)}")
        conn.commit()
    middle = (low + high) // 2
    with closing(target.connect(database)) as conn:
        before = _rows(conn, DISPENSATIONS, _where(second))
        total_before = _rows(conn, DISPENSATIONS)
        with conn.cursor() as cur:  # rows past the middle of the range are refused, midway through the stream
            cur.execute(f"alter table {DISPENSATIONS} add constraint stop_midway check (dispensation_id <= {middle}) not valid")
        conn.commit()

    with pytest.raises(PgCopyError) as failure:
        pg_phases.copy_one_table(sides, evidence, snapshot, second, "r2", 2)

    message = str(failure.value)
    assert failure.value.side == "target" and failure.value.table == DISPENSATIONS
    assert f"copy of table {DISPENSATIONS} range 2/{second['range']['count']} of dispensation_id" in message
    assert 'violates check constraint "stop_midway"' in message
    with closing(target.connect(database)) as conn:
        assert _rows(conn, DISPENSATIONS, _where(second)) == before, "the range's delete was rolled back with it"
        assert _rows(conn, DISPENSATIONS) == total_before
        with conn.cursor() as cur:
            cur.execute(f"alter table {DISPENSATIONS} drop constraint stop_midway")
        conn.commit()
    # Once the cause is gone, the retry completes the range.
    pg_phases.copy_one_table(sides, evidence, snapshot, second, "r2", 3)
    with closing(source.connect(database)) as src, closing(target.connect(database)) as tgt:
        assert _rows(tgt, DISPENSATIONS, _where(second)) == _rows(src, DISPENSATIONS, _where(second))
    cutover_phases.release_replication(workload, sides, evidence, "cleanup")


def test_a_table_over_the_threshold_without_an_integer_key_is_copied_whole(pg_pair, s3_client, registry) -> None:
    source, _ = pg_pair
    database, _ = registry
    with closing(source.connect(database)) as conn, conn.cursor() as cur:
        cur.execute(
            "create table registry.documents (ref text primary key, body text not null);"
            "insert into registry.documents select 'doc-' || i, repeat(md5(i::text), 40) from generate_series(1, 2000) i;"
        )
        conn.commit()
    workload, sides, evidence = _setup(pg_pair, s3_client, registry, "ranges_text")
    snapshot = pg_phases.take_snapshot(workload, sides, evidence, "r3", fresh_run=True)
    plan = pg_phases.plan_copy(workload, sides, evidence, snapshot, "r3", 1)
    documents = _ranges_of(plan["units"], "registry.documents")
    assert documents == [{"table": "registry.documents", "bytes": documents[0]["bytes"]}]
    assert documents[0]["bytes"] > copy_plan.MIB
    assert any(
        "registry.documents" in note and "copied whole" in note and "ref is of type text" in note
        for note in plan["notes"]
    ), plan["notes"]
    # The small table stays one unit, copied whole with its TRUNCATE.
    assert _ranges_of(plan["units"], "registry.patients") == [
        {"table": "registry.patients", "bytes": _ranges_of(plan["units"], "registry.patients")[0]["bytes"]}
    ]
    cutover_phases.release_replication(workload, sides, evidence, "cleanup")

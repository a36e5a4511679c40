"""A Postgres migration on the CeleryExecutor stack through two faults of a distributed
deployment, in ONE DAG run (``RUN`` below; the tests run in file order, the second
starting where the first left the run):

1. a Celery worker killed (``kill -9`` of its whole process tree) while its ``copy_table``
   task streams a key range of ``registry.dispensations`` into the target;
2. the scheduler killed while ``catch_up`` is deferred to the triggerer, waiting for the
   replica; the replica catches up while no scheduler runs, and the restarted scheduler
   resumes the task.

What a retried ``copy_table`` does: it does **not** resume. Its unit (a whole table, or a
key range of one) is copied again from a new source snapshot, in one target transaction
that first removes what the unit may hold: ``TRUNCATE`` for a whole table, ``DELETE`` of
its own key range for a range (the other ranges of the table are left alone). The killed
try never committed (its connection died with the worker, and the target rolled its
transaction back), so nothing of it was visible; the retry's rows replace it, once.

Rows are checked independently of Bascule's own diff: per table (and per killed range)
the row count, an order-independent checksum and the primary key's uniqueness, computed
by SQL on the source and on the target (``dist_support.table_fingerprint``).
"""

from __future__ import annotations

import itertools
import time
from contextlib import closing
from typing import Any

import psycopg2
import pytest

from airflow_stack import ApiError
from bascule.synthetic import registry
from celery_stack import who_ran_what
from dist_support import PG_MAX_LAG_BYTES, PG_WORKLOAD, assert_evidence_chain_verifies, table_fingerprint

pytestmark = pytest.mark.distributed

DAG = f"migrate_{PG_WORKLOAD}"
BIG = registry.DISPENSATIONS
# ~40,000 dispensations (~3.5 MiB): two key ranges of ~1.8 MB, each ~5 s behind the
# 384 KiB/s link (dist_support.WAN_BYTES_PER_SECOND); generated in a few seconds.
PATIENTS = 8000
APP_ROLE, APP_PASSWORD = "hdh_app", "app-password-distributed"
# The row the catch-up test holds locked on the target, so that the apply worker waits.
HELD_ROW = 1
RUN: dict[str, Any] = {}


@pytest.fixture(scope="module")
def registry_db(celery_stack):
    """The synthetic registry in database ``dist_registry`` on the stack's source cluster."""
    source, target = celery_stack.pg_pair()
    with closing(source.connect()) as admin, admin.cursor() as cur:
        cur.execute(f"drop database if exists {PG_WORKLOAD} with (force)")
        cur.execute(f"create database {PG_WORKLOAD}")
    with closing(source.connect(PG_WORKLOAD)) as conn:
        registry.create_schema(conn)
        counts = registry.populate(conn, patients=PATIENTS, seed=14)
        registry.create_application_role(conn, APP_ROLE, APP_PASSWORD, PG_WORKLOAD)
    print(f"\nseeded {PG_WORKLOAD}: {counts}")
    return source, target


def _wait_until_parsed(api, timeout: float = 120) -> None:
    """The stack may have just started: its DAG processor parses the workloads within seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            api.get(f"/api/v2/dags/{DAG}")
            return
        except ApiError as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
        time.sleep(2)


def _range_where(unit: dict) -> tuple[str, tuple]:
    """The rows of a plan unit, as SQL of the test's own (a whole table: every row)."""
    bounds = unit.get("range")
    if not bounds:
        return "true", ()
    column = bounds["column"]
    assert column.isidentifier(), column
    return f"({column} >= %s or %s::bigint is null) and ({column} < %s or %s::bigint is null)", (
        bounds["lo"], bounds["lo"], bounds["hi"], bounds["hi"],
    )  # fmt: skip


def _fingerprint(conn, unit: dict) -> tuple[int, int, int]:
    where, params = _range_where(unit)
    return table_fingerprint(conn, unit["table"], registry.PRIMARY_KEYS[unit["table"]], where, params)


def _copy_tis(api) -> list[dict]:
    answer = api.get(f"/api/v2/dags/{DAG}/dagRuns/{RUN['run_id']}/taskInstances?task_id=copy_table&limit=50")
    return [ti for ti in answer["task_instances"] if ti["task_id"] == "copy_table"]


def _copies_streaming_into(conn, table: str) -> list[dict]:
    """The COPY FROM STDIN statements in progress into ``table`` on this server, with their bytes so far."""
    with conn.cursor() as cur:
        cur.execute(
            "select pid, bytes_processed, tuples_processed from pg_stat_progress_copy "
            "where command = 'COPY FROM' and relid = %s::regclass",
            (table,),
        )
        return [{"pid": pid, "bytes": int(b), "rows": int(r)} for pid, b, r in cur.fetchall()]


def _wait_for_a_range_mid_stream(api, watch, ranges: dict[int, dict]) -> tuple[str, list[int], list[dict]]:
    """The worker to kill, the copy units it runs, and the COPYs into BIG then in progress.

    Chosen once a copy of a range of BIG has streamed some of its rows and at most three
    quarters (the kill lands before that copy ends). The target's progress view does not
    say which worker a COPY comes from (each comes through the link), so a worker is chosen
    only when it is certain that one of its copies is streaming: every running range copy
    is streaming, or all of them run on that one worker.
    """
    deadline = time.monotonic() + 240
    for poll in itertools.count():
        tis = _copy_tis(api)
        running = [ti for ti in tis if ti["state"] == "running" and ti["map_index"] in ranges]
        copies = _copies_streaming_into(watch, BIG)
        least = min((ranges[ti["map_index"]]["bytes"] for ti in running), default=0)
        mid_stream = copies and all(64 * 1024 < c["bytes"] < least * 3 // 4 for c in copies)
        if running and mid_stream and (len(copies) >= len(running) or len({ti["hostname"] for ti in running}) == 1):
            victim = running[0]["hostname"]
            return (
                victim,
                sorted(ti["map_index"] for ti in tis if ti["state"] == "running" and ti["hostname"] == victim),
                copies,
            )
        if poll % 10 == 9:
            assert api.run_state(DAG, RUN["run_id"]) in ("queued", "running"), api.failure_report(DAG, RUN["run_id"])
        assert time.monotonic() < deadline, (
            f"no range of {BIG} seen mid-stream: {api.failure_report(DAG, RUN['run_id'])}"
        )
        time.sleep(0.2)
    raise AssertionError("not reached")  # itertools.count() never ends


def test_a_worker_killed_mid_copy_table_loses_doubles_and_corrupts_no_row(celery_stack, stack_operator, registry_db):
    source, target = registry_db
    _wait_until_parsed(stack_operator)
    stack_operator.unpause(DAG)
    RUN["run_id"] = run_id = stack_operator.trigger(DAG, {"dry_run": False, "rollback": False})
    started = time.monotonic()
    state = stack_operator.wait_for(DAG, run_id, task="plan_copy", states=("success",), timeout=300, poll=1)
    assert state == "success", stack_operator.failure_report(DAG, run_id)
    units = stack_operator.xcom(DAG, run_id, "plan_copy")
    ranges = {index: unit for index, unit in enumerate(units) if unit["table"] == BIG and unit.get("range")}
    assert len(ranges) >= 2, f"{BIG} must be copied in key ranges: {units}"

    with closing(target.connect(PG_WORKLOAD)) as watch:
        victim, killed, streaming = _wait_for_a_range_mid_stream(stack_operator, watch, ranges)
        tree = celery_stack.kill(victim)
        print(f"\nkill -9 of {victim} ({len(tree)} processes) {time.monotonic() - started:.0f} s into the run, "
              f"while it copied units {killed}; COPYs into {BIG} on the target then: {streaming}")  # fmt: skip
        celery_stack.restart(victim)  # two workers again; the lost tasks come back by the heartbeat timeout
        killed_at = time.monotonic()
        assert set(killed) & set(ranges), f"the victim ran no range of {BIG}: {killed}"

        # Once the survivors' copies are done (the retries come ~a minute later): each range
        # holds none of its rows or all of them, never part (the killed copies rolled back).
        while _copies_streaming_into(watch, BIG) and time.monotonic() < killed_at + 30:
            time.sleep(0.5)
        seen = {}
        for index, unit in ranges.items():
            on_target, on_source = _fingerprint(watch, unit), _fingerprint_source(source, unit)
            assert on_target in ((0, 0, 0), on_source), f"{unit}: {on_target} on the target, {on_source} on the source"
            seen[index] = "empty" if on_target[0] == 0 else "complete"
        print(f"after the kill, the ranges of {BIG} on the target: {seen}")
        assert any(seen.get(index) == "empty" for index in killed), (
            "the range killed mid-stream must have been rolled back"
        )

    # The copies are done once schema_post_data starts.
    state = stack_operator.wait_for(
        DAG, run_id, task="schema_post_data", states=("queued", "running", "success"), timeout=360, poll=1
    )
    assert state in ("queued", "running", "success"), stack_operator.failure_report(DAG, run_id)
    print(f"all copies done {time.monotonic() - killed_at:.0f} s after the kill")
    tries = {ti["map_index"]: ti for ti in who_ran_what(stack_operator, DAG, run_id) if ti["task_id"] == "copy_table"}
    assert {i for i, ti in tries.items() if ti["try_number"] > 1} == set(killed), tries
    assert {ti["hostname"] for ti in tries.values()} | {victim} == {"worker1", "worker2"}

    with closing(target.connect(PG_WORKLOAD)) as tgt, closing(source.connect(PG_WORKLOAD)) as src:
        for index in killed:
            unit = units[index]
            record = stack_operator.xcom(DAG, run_id, "copy_table", index)
            # Redone, not resumed: the retry copied every row of its unit, and they are there once.
            expected = _fingerprint(src, unit)
            assert record["attempt"] == tries[index]["try_number"] and record["rows"] == expected[0], record
            assert _fingerprint(tgt, unit) == expected, unit
        for table, key in registry.PRIMARY_KEYS.items():
            rows, checksum, duplicated = table_fingerprint(tgt, table, key)
            assert (rows, checksum, duplicated) == table_fingerprint(src, table, key), table
            assert duplicated == 0 and rows > 0, table
    print(f"retried units {killed}: each recopied whole; every table equal on both sides (count, checksum, keys)")


def _fingerprint_source(source, unit: dict) -> tuple[int, int, int]:
    with closing(source.connect(PG_WORKLOAD)) as conn:
        return _fingerprint(conn, unit)


def _apply_worker_waiting_on_a_lock(target) -> bool:
    with closing(target.connect(PG_WORKLOAD)) as conn, conn.cursor() as cur:
        cur.execute(
            "select count(*) from pg_stat_activity where backend_type like 'logical replication%%' "
            "and wait_event_type = 'Lock' and datname = %s",
            (PG_WORKLOAD,),
        )
        return cur.fetchone()[0] > 0


def _hold_the_apply_worker(source, target) -> Any:
    """A session on the target locks one row; the application then updates that row on the
    source and writes more: the apply worker waits for the lock, with the lag growing behind
    it. What it stands for: a long report or a stuck session on the new database. Returns
    the open session; rolling it back lets the replica catch up."""
    held = target.connect(PG_WORKLOAD, autocommit=False)
    with held.cursor() as cur:
        cur.execute(f"select 1 from {BIG} where dispensation_id = %s for update", (HELD_ROW,))
        assert cur.fetchone(), "the held row was copied"
    with closing(psycopg2.connect(source.dsn(PG_WORKLOAD, user=APP_ROLE, password=APP_PASSWORD))) as app:
        app.autocommit = True
        with app.cursor() as cur:
            cur.execute("select pg_current_wal_lsn()::text")
            (before,) = cur.fetchone()
            cur.execute(f"update {BIG} set quantity = quantity + 1 where dispensation_id = %s", (HELD_ROW,))
            cur.execute(
                f"update {BIG} set quantity = quantity + 0.01 where dispensation_id between %s and %s",
                (HELD_ROW + 1, HELD_ROW + 4000),
            )
            cur.execute("select pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", (before,))
            (written,) = cur.fetchone()
    assert written > 4 * PG_MAX_LAG_BYTES, f"the writes behind the held row are {written} bytes of WAL only"
    return held


def test_a_scheduler_killed_during_the_catch_up_deferral_and_the_run_completes(
    celery_stack, stack_operator, stack_s3, registry_db
):
    source, target = registry_db
    run_id = RUN["run_id"]
    # The row is held as soon as post-data's DDL (which locks whole tables) is through: the
    # apply worker meets it long before catch_up first looks at the lag (two tasks later).
    state = stack_operator.wait_for(DAG, run_id, task="schema_post_data", states=("success",), timeout=240, poll=0.3)
    assert state == "success", stack_operator.failure_report(DAG, run_id)
    held = _hold_the_apply_worker(source, target)
    states = stack_operator.task_states(DAG, run_id)
    assert states.get("catch_up") in (None, "scheduled", "queued"), f"too late to hold the replica: {states}"
    try:
        state = stack_operator.wait_for(DAG, run_id, task="catch_up", states=("deferred",), timeout=240, poll=0.5)
        assert state == "deferred", stack_operator.failure_report(DAG, run_id)
        deadline = time.monotonic() + 60
        while not _apply_worker_waiting_on_a_lock(target):
            assert time.monotonic() < deadline, "the apply worker never waited on the held row"
            time.sleep(0.5)

        tree = celery_stack.kill("scheduler")
        killed_at = time.monotonic()
        print(f"\nkill -9 of the scheduler ({len(tree)} processes) while catch_up was deferred")
    finally:
        held.rollback()  # the replica catches up now, with no scheduler running
        held.close()
    # The triggerer, still running, sees the replica caught up and hands the task back
    # ('scheduled'); with no scheduler, nothing queues it yet.
    state = stack_operator.wait_for(DAG, run_id, task="catch_up", states=("scheduled", "queued"), timeout=120, poll=1)
    assert state == "scheduled", stack_operator.failure_report(DAG, run_id)
    celery_stack.restart("scheduler")
    print(f"scheduler restarted {time.monotonic() - killed_at:.0f} s after the kill; catch_up was {state}")
    state = stack_operator.wait_for(DAG, run_id, task="catch_up", states=("success",), timeout=180)
    assert state == "success", stack_operator.failure_report(DAG, run_id)
    catch_up = next(ti for ti in who_ran_what(stack_operator, DAG, run_id) if ti["task_id"] == "catch_up")
    assert catch_up["try_number"] == 1, "the deferred task resumed; it was not failed and retried"

    assert stack_operator.reach_gate(DAG, run_id, timeout=300) == "awaiting_input", stack_operator.failure_report(
        DAG, run_id
    )
    celery_stack.api("approver1").respond(DAG, run_id, "approve_cutover", "Approve", "diff reviewed (approver1)")
    state = stack_operator.wait_for(DAG, run_id, timeout=420)
    assert state == "success", stack_operator.failure_report(DAG, run_id)

    # Frozen at the cutover: both sides hold the same rows, the application's writes included.
    with closing(target.connect(PG_WORKLOAD)) as tgt, closing(source.connect(PG_WORKLOAD)) as src:
        for table, key in registry.PRIMARY_KEYS.items():
            on_target = table_fingerprint(tgt, table, key)
            assert on_target == table_fingerprint(src, table, key) and on_target[2] == 0, table
        with tgt.cursor() as cur, src.cursor() as scur:
            cur.execute(f"select quantity from {BIG} where dispensation_id = %s", (HELD_ROW,))
            scur.execute(f"select quantity from {BIG} where dispensation_id = %s", (HELD_ROW,))
            assert cur.fetchone() == scur.fetchone()
    assert_evidence_chain_verifies(stack_operator, DAG, run_id, stack_s3.meta.endpoint_url)

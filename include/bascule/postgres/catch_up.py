"""How far the replica of a postgres workload is behind its source, and whether the
change stream still flows: the subscription's apply worker on the target, the slot on
the source, and the waits for the replica to reach a source position.

``ReplicationBroken`` means waiting cannot help; ``CatchUpTimeout`` only that the
replica was slow.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from psycopg2 import sql

from bascule.exceptions import BasculeError
from bascule.postgres.replication import find_subscription
from bascule.postgres.statements import fetch_one, server_version

_TARGET_LOG_HINT = (
    "the reason is in the target server's log (lines from the 'logical replication' worker, "
    "e.g. 'duplicate key value violates unique constraint')"
)


class ReplicationBroken(BasculeError):
    """The change stream stopped: slot or subscription gone, or the apply worker keeps failing.

    Waiting cannot help; an engineer must read the target's log and repair, or start a new run.
    """


class CatchUpTimeout(BasculeError):
    """The replica did not reach the wanted source position in time; the stream may still be healthy."""


@dataclass(frozen=True)
class ReplicationLag:
    """How far the target is behind the source.

    ``lag_bytes``: source WAL not yet confirmed by the subscriber (exact; gate on it).
    ``lag_seconds``: 0 when ``lag_bytes`` is 0; otherwise how long ago the source last
    told the target "you have everything up to here" (the walsender's last keepalive,
    ``latest_end_time``, both clocks the source's). Read it as "the target has not been
    known to be current for N s": it keeps growing while a backlog drains and stays near
    0 while the stream keeps up. ``None``: the target has not been current once since
    its apply worker started (a backlog is draining), gate on bytes.
    """

    lag_bytes: int
    lag_seconds: float | None
    source_lsn: str
    confirmed_lsn: str | None
    subscription_state: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ApplyWorkerState:
    """One look at a subscription's apply worker (``pid`` None: none running)."""

    pid: int | None
    errors: int
    worker_age_s: float | None
    latest_end_time: datetime | None


def _apply_sample(target_conn: Any, subscription_oid: int) -> ApplyWorkerState:
    with target_conn.cursor() as cur:
        cur.execute("select pg_stat_clear_snapshot()")  # cumulative stats are cached per transaction
        # The leader apply worker: no table (not a table-sync worker), no leader (PG16+:
        # not a parallel apply worker).
        leader_only = sql.SQL("and s.leader_pid is null" if server_version(target_conn) >= 160000 else "")
        cur.execute(
            sql.SQL(
                """
                select s.pid, extract(epoch from clock_timestamp() - a.backend_start)::float8, s.latest_end_time
                from pg_stat_subscription s left join pg_stat_activity a on a.pid = s.pid
                where s.subid = %s and s.relid is null {}
                """
            ).format(leader_only),
            (subscription_oid,),
        )
        row = cur.fetchone()
        errors = 0
        if server_version(target_conn) >= 150000:
            cur.execute(
                "select apply_error_count + sync_error_count from pg_stat_subscription_stats where subid = %s",
                (subscription_oid,),
            )
            counted = cur.fetchone()
            errors = int(counted[0]) if counted else 0
    if row is None:
        return ApplyWorkerState(None, errors, None, None)
    return ApplyWorkerState(row[0], errors, row[1], row[2])


def _wal_retry_interval_s(target_conn: Any) -> float:
    row = fetch_one(target_conn, "select setting::float8 / 1000 from pg_settings where name = 'wal_retrieve_retry_interval'")
    return float(row[0]) if row else 5.0


def check_subscription(
    target_conn: Any, name: str, *, observe_s: float | None = None, poll_s: float = 0.5
) -> ApplyWorkerState:
    """Raise ``ReplicationBroken`` unless subscription ``name`` has a working apply worker.

    A failing worker exits and is restarted every ``wal_retrieve_retry_interval``, so
    the view flickers. Healthy at once: a worker runs and no apply error was ever
    counted, or the running worker is older than the observation window (the errors
    are from before it). Otherwise the state is watched for ``observe_s`` (default
    2 x the retry interval + 1 s): a new error, or no worker at the end, is broken.
    A worker that takes longer than the window to fail again can pass one check; the
    lag then stops falling, which the catch-up timeout catches.
    """
    subscription = find_subscription(target_conn, name)
    if subscription is None:
        raise ReplicationBroken(f"subscription '{name}' does not exist in the target database")
    oid, enabled, _, _ = subscription
    if not enabled:
        raise ReplicationBroken(
            f"subscription '{name}' is disabled on the target (by an operator, or by disable_on_error after "
            f"an apply error: {_TARGET_LOG_HINT}); enable it with ALTER SUBSCRIPTION {name} ENABLE once repaired"
        )
    window = observe_s if observe_s is not None else 2 * _wal_retry_interval_s(target_conn) + 1.0
    first = sample = _apply_sample(target_conn, oid)
    deadline = time.monotonic() + window
    while True:
        if sample.errors > first.errors:
            raise ReplicationBroken(
                f"the apply worker of subscription '{name}' keeps failing ({sample.errors} error(s) counted, "
                f"a new one within {window:.0f} s): {_TARGET_LOG_HINT}"
            )
        if sample.pid is not None and (
            sample.errors == 0 or (sample.worker_age_s is not None and sample.worker_age_s > window)
        ):
            return sample
        if time.monotonic() >= deadline:
            break
        time.sleep(poll_s)
        sample = _apply_sample(target_conn, oid)
    if sample.pid is None:
        raise ReplicationBroken(
            f"subscription '{name}' has had no running apply worker for {window:.0f} s "
            f"({sample.errors} apply error(s) counted): {_TARGET_LOG_HINT}"
        )
    return sample  # restarted after an old error, nothing new failed meanwhile


def _slot_state(source_conn: Any, slot: str) -> tuple[str, str | None, int, str | None, datetime]:
    row = fetch_one(
        source_conn,
        """
        select pg_current_wal_lsn()::text, confirmed_flush_lsn::text,
               pg_wal_lsn_diff(pg_current_wal_lsn(), coalesce(confirmed_flush_lsn, restart_lsn))::bigint,
               wal_status, clock_timestamp()
        from pg_replication_slots where slot_name = %s
        """,
        (slot,),
    )
    if row is None:
        raise ReplicationBroken(f"replication slot '{slot}' does not exist on the source: the stream is gone")
    current, confirmed, lag, wal_status, now = row
    if wal_status == "lost":
        raise ReplicationBroken(
            f"replication slot '{slot}' was invalidated on the source (the WAL it needed was removed, "
            "max_slot_wal_keep_size): the stream cannot resume; start a new run"
        )
    return str(current), confirmed, max(0, int(lag or 0)), wal_status, now


def replication_lag(source_conn: Any, target_conn: Any, name: str, *, observe_s: float | None = None) -> ReplicationLag:
    """Lag of subscription/slot ``name``; raises ``ReplicationBroken`` if the stream stopped.

    On a healthy stream this returns at once; after apply errors it may watch the
    worker for up to ``observe_s`` (see ``check_subscription``).
    """
    sample = check_subscription(target_conn, name, observe_s=observe_s)
    current, confirmed, lag_bytes, _, source_now = _slot_state(source_conn, name)
    if lag_bytes == 0:
        seconds: float | None = 0.0
    elif sample.latest_end_time is not None:
        seconds = max(0.0, (source_now - sample.latest_end_time).total_seconds())
    else:
        seconds = None
    state = (
        "streaming" if sample.errors == 0 else f"streaming (worker restarted; {sample.errors} earlier apply error(s))"
    )
    return ReplicationLag(lag_bytes, seconds, current, confirmed, state)


def passed_lsn(source_conn: Any, slot: str, lsn: str) -> bool:
    """Whether the subscriber confirmed everything up to ``lsn`` (slot's confirmed_flush_lsn >= lsn)."""
    row = fetch_one(
        source_conn,
        "select confirmed_flush_lsn >= %s::pg_lsn from pg_replication_slots where slot_name = %s",
        (lsn, slot),
    )
    if row is None:
        raise ReplicationBroken(f"replication slot '{slot}' does not exist on the source: the stream is gone")
    return bool(row[0])


def flush_point(source_conn: Any) -> str:
    """A source WAL position after every write committed so far (after a freeze: all of them).

    It is the end of a small logical-decoding message written for the purpose, not
    ``pg_current_wal_lsn()``: that is the WAL *write* position, which an asynchronous
    commit (``synchronous_commit = off``) that already returned can still be past. The
    message also wakes the sender, so an idle stream confirms it promptly.
    """
    return str(fetch_one(source_conn, "select pg_logical_emit_message(false, 'bascule', 'flush point')::text")[0])


def wait_caught_up(source_conn: Any, slot: str, lsn: str, timeout_s: float, poll_s: float) -> float:
    """Block until the slot's subscriber confirmed ``lsn``; return the seconds waited.

    An idle stream still advances: the source asks for a confirmation whenever the
    subscriber is behind its WAL end, which takes well under a second.
    """
    started = time.monotonic()
    while True:
        if passed_lsn(source_conn, slot, lsn):
            return time.monotonic() - started
        waited = time.monotonic() - started
        if waited >= timeout_s:
            row = fetch_one(
                source_conn,
                """
                select confirmed_flush_lsn::text, pg_wal_lsn_diff(%s::pg_lsn, confirmed_flush_lsn)::bigint, active
                from pg_replication_slots where slot_name = %s
                """,
                (lsn, slot),
            )
            confirmed, behind, active = row if row else (None, None, None)
            raise CatchUpTimeout(
                f"the replica of slot '{slot}' did not reach source position {lsn} within {timeout_s:.0f} s: "
                f"confirmed {confirmed}, {behind} byte(s) short, slot {'in use' if active else 'NOT in use'} by "
                "the subscriber. replication_lag() tells a slow stream from a broken one"
            )
        time.sleep(min(poll_s, max(0.0, timeout_s - waited)))

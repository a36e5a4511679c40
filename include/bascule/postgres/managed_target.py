"""Scaleway Managed PostgreSQL as it is: the limits of the managed service, checked on the target at preflight.

What Scaleway's managed service really limits (its documentation; facts.md):

- **Version.** A managed instance can *subscribe* to logical replication from
  PostgreSQL 16, and *publish* from 17. The migration needs the first; a rehearsed
  rollback that replicates back to Azure (a reverse publication on the target) needs the
  second, so a workload asking for a reverse sync needs 17.
- **Subscriptions.** Each subscription's apply worker takes a logical replication worker;
  the node type fixes how many there are (2 on the smallest DEV nodes, more on
  general-purpose ones). The limit is read, not assumed: ``max_logical_replication_workers``
  and ``max_worker_processes``, minus the subscriptions that already exist.
- **TLS.** ``sslmode=verify-full`` with the provider's CA certificate (``sslrootcert``):
  ``require`` encrypts but does not check who answers.

The route from the target back to the source (the subscription connects *from* Scaleway
*to* Azure) leaves from the managed instance's egress IP, which can change on failover:
the allow-list step is in docs/runbooks.md#postgres-managed-target.
"""

from __future__ import annotations

from typing import Any

from bascule.governance.policy import CheckResult
from bascule.postgres.catalog import read_only_cursor

MIN_SUBSCRIBER_MAJOR = 16
MIN_PUBLISHER_MAJOR = 17
RUNBOOK = "docs/runbooks.md#postgres-managed-target"


def check_managed_version(version_num: int, *, reverse_sync: bool = False) -> CheckResult:
    major = version_num // 10000
    facts = {"server_version_num": version_num, "reverse_sync": reverse_sync}
    need, why = MIN_SUBSCRIBER_MAJOR, "to subscribe to the source's publication"
    if reverse_sync:
        need, why = MIN_PUBLISHER_MAJOR, "to publish the reverse sync a rehearsed rollback uses (and to subscribe)"
    if major >= need:
        return CheckResult("managed_target_version", True, f"target runs PostgreSQL {major}: enough {why}", facts)
    return CheckResult(
        "managed_target_version",
        False,
        f"target runs PostgreSQL {major}; Scaleway Managed PostgreSQL needs {need} or later {why}. Fix: create the "
        f"instance with PostgreSQL {need}+ (or upgrade it) before the migration ({RUNBOOK})",
        facts,
    )


def check_subscription_capacity(cur: Any, *, needed: int = 1) -> CheckResult:
    """Room for ``needed`` more subscriptions on this node: its configured workers minus existing subscriptions."""
    cur.execute(
        "select current_setting('max_logical_replication_workers')::int, current_setting('max_worker_processes')::int,"
        " (select count(*) from pg_subscription)::int"
    )
    workers, processes, existing = cur.fetchone()
    # Apply workers come out of the general worker pool too: the smaller bound holds.
    limit = min(workers, processes)
    free = limit - existing
    facts = {"max_logical_replication_workers": workers, "max_worker_processes": processes,
             "existing_subscriptions": existing, "needed": needed}  # fmt: skip
    if free >= needed:
        return CheckResult(
            "managed_target_subscriptions", True, f"target has room for {free} more subscription(s) ({limit} workers)", facts
        )
    return CheckResult(
        "managed_target_subscriptions",
        False,
        f"target allows {limit} logical replication worker(s) (max_logical_replication_workers={workers}, "
        f"max_worker_processes={processes}) and already has {existing} subscription(s): no room for {needed} more. "
        f"Fix: a larger node type (the smallest DEV nodes allow 2), or drop subscriptions no longer used ({RUNBOOK})",
        facts,
    )


def check_verify_full(sslmode: str | None, sslrootcert: str | None, conn_id: str) -> CheckResult:
    facts = {"sslmode": sslmode, "sslrootcert": bool(sslrootcert)}
    if sslmode == "verify-full" and sslrootcert:
        return CheckResult(
            "managed_target_tls", True, "target connection uses sslmode=verify-full with a CA certificate", facts
        )
    return CheckResult(
        "managed_target_tls",
        False,
        f"connection '{conn_id}' uses sslmode={sslmode or 'unset'}{'' if sslrootcert else ' without sslrootcert'}: "
        "the server's identity is not checked. Fix: in the connection's extra set \"sslmode\": \"verify-full\" and "
        f"\"sslrootcert\": the path of the CA certificate Scaleway gives for the instance ({RUNBOOK})",
        facts,
    )


def check_managed_target(
    conn: Any, *, sslmode: str | None, sslrootcert: str | None, conn_id: str, reverse_sync: bool = False
) -> list[CheckResult]:
    """Every Managed PostgreSQL limit on the target server ``conn`` (psycopg2, autocommit or not)."""
    with read_only_cursor(conn) as cur:
        cur.execute("select current_setting('server_version_num')::int")
        (version_num,) = cur.fetchone()
        return [
            check_managed_version(version_num, reverse_sync=reverse_sync),
            check_subscription_capacity(cur),
            check_verify_full(sslmode, sslrootcert, conn_id),
        ]

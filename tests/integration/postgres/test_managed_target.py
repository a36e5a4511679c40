"""Scaleway Managed PostgreSQL's limits on a throwaway cluster: each trap configured and refused clearly.

The cluster here is PostgreSQL 15 (Debian's), older than the 16 a managed subscriber needs,
so the version refusal is real; the passing versions are checked from the number alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing

import pytest

import devstack
import pgclusters
from bascule.postgres.catalog import read_only_cursor
from bascule.postgres.managed_target import check_managed_target, check_managed_version, check_subscription_capacity

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def small_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pgclusters.PgCluster]:
    """A node configured like the smallest DEV instances would be, tighter: one logical replication worker."""
    cluster = pgclusters.PgCluster("managed", tmp_path_factory.mktemp("managed-pg") / "node", devstack.free_port())
    cluster.create()
    cluster.start()
    try:
        with closing(cluster.connect()) as conn, conn.cursor() as cur:
            cur.execute("alter system set max_logical_replication_workers = 1")
        cluster.stop()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


def test_each_managed_limit_is_refused_with_its_fix(small_node: pgclusters.PgCluster) -> None:
    with closing(small_node.connect()) as conn:
        with conn.cursor() as cur:
            # A subscription left by an earlier migration (never connected: no slot, no worker yet).
            cur.execute(
                "create subscription leftover connection 'host=127.0.0.1 port=1 dbname=x' "
                "publication p with (connect = false)"
            )
        try:
            checks = {c.name: c for c in check_managed_target(conn, sslmode="require", sslrootcert=None, conn_id="hdh_scaleway_pg")}
        finally:
            with conn.cursor() as cur:
                cur.execute("alter subscription leftover set (slot_name = none)")
                cur.execute("drop subscription leftover")
        with read_only_cursor(conn) as cur:
            freed = check_subscription_capacity(cur)
    version = checks["managed_target_version"]
    assert not version.ok and "target runs PostgreSQL 15; Scaleway Managed PostgreSQL needs 16 or later" in version.detail
    capacity = checks["managed_target_subscriptions"]
    assert not capacity.ok and "max_logical_replication_workers=1" in capacity.detail
    assert "already has 1 subscription(s): no room for 1 more" in capacity.detail
    assert "docs/runbooks.md#postgres-managed-target" in capacity.detail
    tls = checks["managed_target_tls"]
    assert not tls.ok and "connection 'hdh_scaleway_pg' uses sslmode=require without sslrootcert" in tls.detail
    # The leftover dropped, the one worker is free again.
    assert freed.ok and freed.evidence["existing_subscriptions"] == 0, freed.detail


def test_versions_and_tls_that_pass() -> None:
    assert check_managed_version(160004).ok
    reverse = check_managed_version(160004, reverse_sync=True)
    assert not reverse.ok and "needs 17 or later to publish the reverse sync" in reverse.detail
    assert check_managed_version(170002, reverse_sync=True).ok
    from bascule.postgres.managed_target import check_verify_full

    assert check_verify_full("verify-full", "/etc/ssl/scaleway-rdb-ca.pem", "c").ok
    assert not check_verify_full("verify-full", None, "c").ok

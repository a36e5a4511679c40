"""Preflight rules: can this source publish, this target subscribe, these tables replicate.

Each ``check_*`` function reads what it needs from a server (in a read-only
transaction of its own) or from the source inventory, and returns a ``CheckResult``
that names the server, table or setting at fault and the fix: on Azure Database for
PostgreSQL the server parameter or role to change, elsewhere the SQL or
postgresql.conf line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bascule.governance.policy import CheckResult
from bascule.postgres.catalog import PgInventory, quote_ident, read_only_cursor

MIN_SOURCE_VERSION_NUM = 100000  # PostgreSQL 10: the first with logical replication built in


def _server(cur: Any, role: str) -> tuple[int, str, str, str]:
    """server_version_num, server_version, current_user, and the server as messages name it."""
    cur.execute(
        "select current_setting('server_version_num')::int, current_setting('server_version'), current_user, "
        "host(inet_server_addr()), inet_server_port()"
    )
    version_num, version, user, host, port = cur.fetchone()
    return version_num, version, user, f"{role} server {host or 'local socket'}:{port or ''}".rstrip(":")


def _settings(cur: Any, *names: str) -> dict[str, str]:
    cur.execute("select name, setting from pg_settings where name = any(%s)", (list(names),))
    return dict(cur.fetchall())


def _major(version_num: int) -> str:
    return str(version_num // 10000) if version_num >= 100000 else f"{version_num // 10000}.{version_num // 100 % 100}"


def check_source_server(conn: Any) -> list[CheckResult]:
    """The source can publish: version, wal_level, a role allowed to replicate, a free slot and sender."""
    results: list[CheckResult] = []
    with read_only_cursor(conn) as cur:
        version_num, version, user, where = _server(cur, "source")
        results.append(
            CheckResult("source_server_version", True, f"{where} runs PostgreSQL {version}")
            if version_num >= MIN_SOURCE_VERSION_NUM
            else CheckResult(
                "source_server_version",
                False,
                f"{where} runs PostgreSQL {version}; logical replication needs PostgreSQL 10 or later: "
                "upgrade the source server first",
            )
        )
        settings = _settings(cur, "wal_level", "max_replication_slots", "max_wal_senders")
        wal_level = settings.get("wal_level", "unknown")
        results.append(
            CheckResult("source_wal_level", True, f"wal_level is 'logical' on the {where}")
            if wal_level == "logical"
            else CheckResult(
                "source_wal_level",
                False,
                f"wal_level is '{wal_level}' on the {where}; logical replication needs 'logical'. "
                "On Azure Database for PostgreSQL (flexible server) set the server parameter wal_level=logical "
                "(portal: Server parameters, or `az postgres flexible-server parameter set --name wal_level "
                "--value logical`) and restart the server; elsewhere set wal_level = logical in postgresql.conf "
                "and restart",
            )
        )
        results.append(_replication_role(cur, user, where))
        results.append(_free_capacity(cur, settings, where))
    return results


def _replication_role(cur: Any, user: str, where: str) -> CheckResult:
    cur.execute(
        "select rolsuper, rolreplication, "
        "exists (select 1 from pg_roles where rolname = 'azure_pg_admin') "
        "and pg_has_role(current_user, 'azure_pg_admin', 'member') "
        "from pg_roles where rolname = current_user"
    )
    superuser, replication, azure_admin = cur.fetchone()
    if superuser or replication:
        how = "is superuser" if superuser else "has the REPLICATION attribute"
        return CheckResult("source_role_can_replicate", True, f"role '{user}' {how} on the {where}")
    admin = " It is a member of azure_pg_admin, which" if azure_admin else " Membership of azure_pg_admin or"
    return CheckResult(
        "source_role_can_replicate",
        False,
        f"role '{user}' on the {where} can neither create a replication slot nor stream changes: it is not "
        f"superuser and lacks the REPLICATION attribute.{admin} pg_read_all_data is not enough. As the server "
        f"admin run: ALTER ROLE {quote_ident(user)} WITH REPLICATION;",
    )


def _free_capacity(cur: Any, settings: dict[str, str], where: str) -> CheckResult:
    max_slots = int(settings.get("max_replication_slots", "0"))
    max_senders = int(settings.get("max_wal_senders", "0"))
    cur.execute("select slot_name from pg_replication_slots order by slot_name")
    slots = [r[0] for r in cur.fetchall()]
    cur.execute("select count(*) from pg_stat_replication")
    senders = cur.fetchone()[0]
    problems = []
    if len(slots) >= max_slots:
        in_use = f" (in use: {', '.join(slots)})" if slots else ""
        problems.append(
            f"no free replication slot: max_replication_slots = {max_slots} and {len(slots)} in use{in_use}; "
            "drop an unused one with SELECT pg_drop_replication_slot('<name>') or raise the server parameter "
            "max_replication_slots and restart"
        )
    if senders >= max_senders:
        problems.append(
            f"no free WAL sender: max_wal_senders = {max_senders} and {senders} streaming; raise the server "
            "parameter max_wal_senders and restart"
        )
    if problems:
        return CheckResult("source_replication_capacity", False, f"on the {where}: " + "; ".join(problems))
    return CheckResult(
        "source_replication_capacity",
        True,
        f"{max_slots - len(slots)} of {max_slots} replication slots and {max_senders - senders} of {max_senders} "
        f"WAL senders free on the {where}",
    )


def check_target_server(conn: Any, source_version_num: int | None = None) -> list[CheckResult]:
    """The target runs the source's major version or later, and its role may create a subscription.

    ``source_version_num`` is the source's server_version_num (``PgInventory.server_version_num``);
    without it the version is reported, not compared.
    """
    with read_only_cursor(conn) as cur:
        version_num, version, user, where = _server(cur, "target")
        return [_target_version(where, version, version_num, source_version_num), _subscription_role(cur, user, where)]


def _target_version(where: str, version: str, version_num: int, source_version_num: int | None) -> CheckResult:
    target_major = _major(version_num)
    if source_version_num is None:
        return CheckResult(
            "target_server_version",
            True,
            f"{where} runs PostgreSQL {version}; not compared with the source (no source version given)",
        )
    if version_num // 10000 >= source_version_num // 10000:
        return CheckResult(
            "target_server_version",
            True,
            f"{where} runs PostgreSQL {version} (major {target_major}), not older than the source's "
            f"{_major(source_version_num)}",
        )
    source_major = _major(source_version_num)
    return CheckResult(
        "target_server_version",
        False,
        f"{where} runs PostgreSQL {target_major}, older than the source's PostgreSQL {source_major}; "
        f"a migration only goes to the same or a newer major version: create the target with "
        f"PostgreSQL {source_major} or later",
    )


def _subscription_role(cur: Any, user: str, where: str) -> CheckResult:
    cur.execute(
        "select rolsuper, exists (select 1 from pg_roles where rolname = 'pg_create_subscription') "
        "and pg_has_role(current_user, 'pg_create_subscription', 'member') "
        "from pg_roles where rolname = current_user"
    )
    superuser, may_subscribe = cur.fetchone()
    if superuser or may_subscribe:
        how = "is superuser" if superuser else "is a member of pg_create_subscription"
        return CheckResult("target_role_can_subscribe", True, f"role '{user}' {how} on the {where}")
    return CheckResult(
        "target_role_can_subscribe",
        False,
        f"role '{user}' on the {where} cannot create a subscription: it needs superuser or, from "
        "PostgreSQL 16, membership of pg_create_subscription (GRANT pg_create_subscription TO "
        f"{quote_ident(user)}; plus CREATE on the database)",
    )


def check_primary_keys(inventory: PgInventory, opted_in: Sequence[str], manifest_path: str) -> CheckResult:
    """Every table can be replicated row by row: a primary key, a replica identity index, or an opt-in."""
    listed = set(opted_in)
    missing = [t for t in inventory.tables if not t.has_replica_key and t.manifest_name not in listed]
    nothing = [t for t in inventory.tables if t.replica_identity == "n"]
    problems = []
    if missing:
        names = ", ".join(t.qualified for t in missing)
        problems.append(
            f"table(s) {names} have no primary key (nor a REPLICA IDENTITY USING INDEX): add a primary key, "
            f"or list them under source.tables_without_primary_key in {manifest_path} to replicate them with "
            "REPLICA IDENTITY FULL (slower)"
        )
    if nothing:
        names = ", ".join(t.qualified for t in nothing)
        problems.append(
            f"table(s) {names} have REPLICA IDENTITY NOTHING: once published, their UPDATEs and DELETEs fail on "
            "the source; run ALTER TABLE ... REPLICA IDENTITY DEFAULT on each"
        )
    if problems:
        return CheckResult("source_primary_keys", False, "; ".join(problems))
    full = [t.qualified for t in inventory.tables if not t.has_replica_key]
    detail = (
        f"{len(inventory.tables) - len(full)} of {len(inventory.tables)} tables have a primary key or replica index"
    )
    if full:
        detail += f"; opted in to REPLICA IDENTITY FULL: {', '.join(full)}"
    return CheckResult("source_primary_keys", True, detail)


def extensions_result(required: dict[str, str | None], available: set[str], database: str) -> CheckResult:
    """``required``: extension -> version installed on the source (None if unknown)."""
    missing = sorted(name for name in required if name not in available)
    if missing:
        named = ", ".join(f"{n} ({required[n]})" if required[n] else n for n in missing)
        return CheckResult(
            "target_extensions",
            False,
            f"extension(s) {named} installed in source database '{database}' are not available on the target "
            "server (pg_available_extensions): ask the target provider to enable them, or drop them from the "
            "source if nothing uses them",
        )
    present = ", ".join(sorted(required)) or "none besides plpgsql"
    return CheckResult("target_extensions", True, f"source extensions available on the target: {present}")


def check_extensions(source_conn: Any, target_conn: Any, inventory: PgInventory) -> CheckResult:
    """Each extension the source database uses (plpgsql aside) can be created on the target."""
    with read_only_cursor(source_conn) as cur:
        cur.execute("select extname, extversion from pg_extension")
        versions = dict(cur.fetchall())
    required = {name: versions.get(name) for name in inventory.extensions if name != "plpgsql"}
    with read_only_cursor(target_conn) as cur:
        cur.execute("select name from pg_available_extensions")
        available = {r[0] for r in cur.fetchall()}
    return extensions_result(required, available, inventory.database)

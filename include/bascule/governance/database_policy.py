"""The policy on a PostgreSQL target: ``policy_database_tls``, on an open connection to it."""

from __future__ import annotations

from typing import Any

from bascule.governance import policy
from bascule.governance.policy import CheckResult, Deployment, PolicyReport

DATABASE_SSLMODES_WITHOUT_FALLBACK = frozenset({"require", "verify-ca", "verify-full"})


def _sslmode(conn: Any) -> str | None:
    """The connection's effective libpq sslmode (psycopg2, or psycopg 3)."""
    if hasattr(conn, "get_dsn_parameters"):  # psycopg2
        return conn.get_dsn_parameters().get("sslmode")
    info = getattr(conn, "info", None)
    if info is not None and hasattr(info, "get_parameters"):  # psycopg 3 lists non-default values only
        return info.get_parameters().get("sslmode", "prefer")
    return None


def check_database_tls(conn: Any, *, host: str, deployment: Deployment) -> CheckResult:
    """``policy_database_tls``: this session is encrypted (``pg_stat_ssl``) and its sslmode
    cannot fall back to plain text. A plain session to a local stand-in host passes only
    when the deployment is declared local development, flagged ``local_development``."""
    deployment = policy.checked_deployment(deployment)
    name = "policy_database_tls"
    cur = conn.cursor()
    try:
        cur.execute(
            "select s.ssl, s.version, s.cipher, current_setting('ssl') "
            "from pg_stat_ssl s where s.pid = pg_backend_pid()"
        )
        row = cur.fetchone()
    finally:
        cur.close()
    in_use, version, cipher, server_ssl = (bool(row[0]), row[1], row[2], row[3]) if row else (False, None, None, "?")
    sslmode = _sslmode(conn)
    facts: dict[str, Any] = {
        "host": host,
        "ssl": in_use,
        "tls_version": version,
        "cipher": cipher,
        "server_ssl": server_ssl,
        "sslmode": sslmode,
        "deployment": deployment,
    }
    server = f"PostgreSQL server '{host}'"
    if in_use and sslmode in DATABASE_SSLMODES_WITHOUT_FALLBACK:
        note = (
            ""
            if sslmode == "verify-full"
            else f"; the server's certificate is not checked (sslmode={sslmode}): prefer sslmode=verify-full "
            "with the provider's CA as sslrootcert"
        )
        return CheckResult(name, True, f"the session to {server} is encrypted ({version}, {cipher}){note}", facts)
    if not in_use and policy.plain_text_allowed(deployment, host):
        what = f"the session to {server} is NOT encrypted (server ssl={server_ssl}, sslmode={sslmode})"
        return policy.local_development_pass(name, what, "the server", facts)
    if in_use:
        problem = (
            f"the session to {server} is encrypted, but sslmode={sslmode} lets a later connection fall back to "
            "plain text"
        )
    elif server_ssl != "on":
        problem = f"{server} does not offer TLS (ssl={server_ssl}); the session is in clear"
    else:
        problem = f"the session to {server} is not encrypted (sslmode={sslmode}) although the server offers TLS"
    return CheckResult(
        name,
        False,
        f"{problem}. Fix: set sslmode=verify-full (and the provider's CA as sslrootcert) in the target "
        "connection's extra" + ("" if server_ssl == "on" else ", and turn TLS on at the server"),
        facts,
    )


def evaluate_postgres_target_policy(conn: Any, *, host: str, deployment: Deployment) -> list[CheckResult]:
    """Every database-target rule on an open connection to the target server."""
    return [check_database_tls(conn, host=host, deployment=deployment)]


def enforce_postgres_target_policy(conn: Any, *, host: str, deployment: Deployment) -> PolicyReport:
    """Evaluate and refuse (raises PolicyViolation); the returned report is the evidence record."""
    checks = evaluate_postgres_target_policy(conn, host=host, deployment=deployment)
    report = PolicyReport(f"PostgreSQL server '{host}'", deployment, tuple(checks))
    report.raise_for_violations()
    return report

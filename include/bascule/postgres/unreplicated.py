"""What logical replication does not carry, found at preflight (and again at the snapshot),
each with one decision (docs/workloads.md#what-logical-replication-does-not-carry):

| object | decision |
|---|---|
| large objects (``pg_largeobject``) | refused: the stream never carries them; copy them by hand in the freeze (message) |
| unlogged tables | refused: their changes are not in the WAL, so not in the stream |
| materialized views in the schemas | created by the schema copy, refreshed on the target at cutover, row counts compared (``matviews``) |
| tables with ``REPLICA IDENTITY NOTHING`` | refused by ``replication_checks.check_primary_keys`` (the source would reject their UPDATE and DELETE once published) |
| triggers ``ENABLE ALWAYS`` / ``ENABLE REPLICA`` | refused: they would fire on the target for every replicated change |
| row-level security policies | copied by the schema copy; refused while a role they name is missing on the target |
| ordinary triggers and rules | copied by the schema copy; they do not fire for the apply (``session_replication_role = replica``) |
| generated columns | never copied as values: the target computes them |
| sequences not owned by a column | carried at cutover like the others (``sequences.sync_sequences``) |

The refused ones are named, each with what to do, in one :class:`CheckResult`; the
copied ones are listed in its detail, so the on-call engineer sees both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bascule.governance.policy import CheckResult
from bascule.identifiers import qualified_name
from bascule.postgres.catalog import qualify
from bascule.postgres.dependencies import SCOPE_CTE, scope_params
from bascule.postgres.matviews import MATVIEWS_SQL

RUNBOOK = "docs/runbooks.md#postgres-not-carried-by-logical-replication"


def _per_table(columns: str, catalog: str, relid: str, where: str = "true", group: str = "") -> str:
    """``schema, table, <columns>`` of the rows of ``catalog`` (e.g. ``pg_trigger t``) on tables in scope."""
    return (
        SCOPE_CTE
        + f"""
select n.nspname, c.relname, {columns}
from {catalog} join scope s on s.oid = {relid}
join pg_class c on c.oid = {relid} join pg_namespace n on n.oid = c.relnamespace
where {where} {group} order by 1, 2, 3
"""
    )


_TABLES_SQL = _per_table("c.relpersistence", "pg_class t", "t.oid")
# Bascule's own overlap triggers are ENABLE REPLICA on purpose (``overlap``): not the application's.
_TRIGGERS_SQL = _per_table(
    "t.tgname, t.tgenabled", "pg_trigger t", "t.tgrelid", "not t.tgisinternal and t.tgname not like 'bascule\\_%%'"
)
_RULES_SQL = _per_table("r.rulename", "pg_rewrite r", "r.ev_class", "r.rulename <> '_RETURN'")
_POLICIES_SQL = _per_table(
    "p.polname, coalesce(array_agg(r.rolname order by r.rolname) filter (where r.rolname is not null), '{}')",
    "pg_policy p left join pg_roles r on r.oid = any(p.polroles)",
    "p.polrelid",
    group="group by 1, 2, 3",
)
_GENERATED_SQL = _per_table(
    "a.attname", "pg_attribute a", "a.attrelid", "a.attgenerated <> '' and a.attnum > 0 and not a.attisdropped"
)

_UNOWNED_SEQUENCES_SQL = """
select n.nspname, s.relname from pg_class s join pg_namespace n on n.oid = s.relnamespace
where s.relkind = 'S' and n.nspname = any(%(schemas)s::text[])
  and not exists (select 1 from pg_depend d where d.classid = 'pg_class'::regclass and d.objid = s.oid
                  and d.refclassid = 'pg_class'::regclass and d.deptype in ('a', 'i'))
order by 1, 2
"""


def _rows(cur: Any, query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    cur.execute(query, params)
    return [tuple(row) for row in cur.fetchall()]


def _missing_roles(target: Any | None, roles: set[str]) -> list[str] | None:
    """The roles of ``roles`` the target lacks (None: no target to ask, as in a dry run)."""
    if target is None:
        return None
    with target.cursor() as cur:
        cur.execute("select rolname from pg_roles where rolname = any(%s)", (sorted(roles),))
        present = {row[0] for row in cur.fetchall()}
    return sorted(roles - present)


def _refused(cur: Any, params: dict[str, Any], target: Any | None) -> list[str]:
    """One line per object the migration cannot carry, with what to do about it."""
    refused: list[str] = []
    cur.execute("select count(*) from pg_largeobject_metadata")
    large_objects = int(cur.fetchone()[0])
    if large_objects:
        refused.append(
            f"the source database holds {large_objects} large object(s) (pg_largeobject), which logical replication "
            "does not carry: move them into bytea columns before the migration, or copy them by hand during the "
            "cutover's freeze keeping their OIDs (on the target, for each oid of pg_largeobject_metadata: "
            "select lo_from_bytea(<oid>, <lo_get(oid) read on the source>)) and compare their md5(lo_get(oid))"
        )
    for schema, table, persistence in _rows(cur, _TABLES_SQL, params):
        name = qualify(schema, table)  # as SQL needs it in the statements suggested
        if persistence == "u":
            refused.append(
                f"table {name} is UNLOGGED: its changes are not in the WAL, so not in the stream; "
                f"alter table {name} set logged on the source, or remove it from the scope"
            )
    for schema, table, trigger, enabled in _rows(cur, _TRIGGERS_SQL, params):
        if enabled in ("A", "R"):
            mode = "ALWAYS" if enabled == "A" else "REPLICA"
            refused.append(
                f"trigger {trigger} on {qualify(schema, table)} is ENABLE {mode}: it would also fire on the target for "
                f"every replicated change; alter table {qualify(schema, table)} enable trigger {trigger} (an ordinary trigger) "
                "for the migration"
            )
    policy_roles = {role for *_, roles in _rows(cur, _POLICIES_SQL, params) for role in roles if role != "public"}
    missing = _missing_roles(target, policy_roles) if policy_roles else []
    if missing:
        refused.append(
            f"row-level security policies name role(s) {missing} that do not exist on the target: the schema copy "
            "would fail creating the policies; create the role(s) on the target first"
        )
    return refused


def _carried(cur: Any, params: dict[str, Any]) -> list[str]:
    """What is copied or carried, and how, for the record."""
    notes: list[str] = []
    triggers = [f"{s}.{t}:{g}" for s, t, g, enabled in _rows(cur, _TRIGGERS_SQL, params) if enabled == "O"]
    if triggers:
        notes.append(f"triggers {triggers} are copied and do not fire for replicated changes (apply runs as replica)")
    rules = [f"{s}.{t}:{r}" for s, t, r in _rows(cur, _RULES_SQL, params)]
    if rules:
        notes.append(f"rules {rules} are copied; the apply does not rewrite replicated changes through them")
    policies = [f"{s}.{t}:{p}" for s, t, p, _ in _rows(cur, _POLICIES_SQL, params)]
    if policies:
        notes.append(f"row-level security policies {policies} are copied by the schema copy")
    generated = [f"{s}.{t}.{c}" for s, t, c in _rows(cur, _GENERATED_SQL, params)]
    if generated:
        notes.append(f"generated columns {generated} are computed by the target, never copied")
    views = [qualified_name(s, v) for s, v, _ in _rows(cur, MATVIEWS_SQL, params)]
    if views:
        notes.append(
            f"materialized views {views} are created by the schema copy and refreshed on the target at cutover, "
            "their row counts compared"
        )
    unowned = [f"{s}.{n}" for s, n in _rows(cur, _UNOWNED_SEQUENCES_SQL, params)]
    if unowned:
        notes.append(f"sequences {unowned} (owned by no column) are carried at cutover like the others")
    return notes


def check(
    source: Any,
    target: Any | None,
    schemas: Sequence[str],
    tables: Sequence[tuple[str, str]],
    manifest_path: str,
) -> CheckResult:
    """Preflight's verdict on what logical replication does not carry (``target`` None: roles not checked)."""
    params = scope_params(schemas, tables)
    with source.cursor() as cur:
        refused = _refused(cur, params, target)
        carried = _carried(cur, params)
    facts = {"refused": refused, "carried": carried}
    also = f" Carried: {'; '.join(carried)}." if carried else ""
    if refused:
        return CheckResult(
            "not_replicated",
            False,
            f"{len(refused)} object(s) in scope cannot be carried by logical replication: {'; '.join(refused)}. "
            f"Fix the source (or {manifest_path}) as named, then run again; nothing was created. "
            f"Runbook: {RUNBOOK}.{also}",
            facts,
        )
    return CheckResult("not_replicated", True, f"nothing in scope that logical replication cannot carry.{also}", facts)

"""What the migrated tables need from outside ``source.schemas``, found before anything is created.

The schema copy (``pg_dump --schema``) and the publication only carry what is inside the
listed schemas. A table whose column has an enum or domain type of another schema, whose
default calls a function or a sequence elsewhere, whose check constraint or trigger uses
such a function, whose column uses a collation of another schema, or whose foreign key
points at a table that is not migrated, would create the slot and then fail on the target
(``type "public.care_level" does not exist``). So preflight and the snapshot read
``pg_depend`` for every table in scope and its defaults, constraints, triggers, policies
and rules, and each object referenced outside the listed schemas is:

- **included automatically** when it belongs to an extension (``pg_depend`` deptype
  ``e``): the extension is created on the target by the schema copy, and preflight's
  ``extensions`` check requires it to be available there;
- **refused** otherwise, named with what uses it and the manifest change that fixes it
  (``add schema public to source.schemas``; for a foreign key to a table of a listed
  schema that ``source.tables`` leaves out, add that table).

Objects of ``pg_catalog`` and ``information_schema`` exist on every server and are not
dependencies. docs/workloads.md#dependencies lists the rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bascule.governance.policy import CheckResult
from bascule.identifiers import format_name, parse_name, qualified_name

RUNBOOK = "docs/runbooks.md#postgres-dependency-outside-the-schemas"

# What can depend on something: the table (its columns' types and collations), its
# defaults and generated expressions, its constraints (checks, foreign keys), triggers,
# row-level security policies and rules. Each part yields (table oid, classid, objid, objsubid).
# The tables in scope, by the names the catalog stores (``scope_params``).
SCOPE_CTE = """
with scope(oid) as (
    select c.oid from pg_class c
    join pg_namespace n on n.oid = c.relnamespace
    join unnest(%(table_schemas)s::text[], %(names)s::text[]) as s(nsp, rel) on s.nsp = n.nspname and s.rel = c.relname
)
"""

_DEPENDENCIES_SQL = (
    SCOPE_CTE
    + """,
users(tbl, classid, objid, objsubid) as (
    select s.oid, 'pg_class'::regclass, s.oid, null::int from scope s
    union all
    select ad.adrelid, 'pg_attrdef'::regclass, ad.oid, null from pg_attrdef ad join scope s on s.oid = ad.adrelid
    union all
    select con.conrelid, 'pg_constraint'::regclass, con.oid, null from pg_constraint con join scope s on s.oid = con.conrelid
    union all
    select tg.tgrelid, 'pg_trigger'::regclass, tg.oid, null from pg_trigger tg join scope s on s.oid = tg.tgrelid
    where not tg.tgisinternal
    union all
    select po.polrelid, 'pg_policy'::regclass, po.oid, null from pg_policy po join scope s on s.oid = po.polrelid
    union all
    select ru.ev_class, 'pg_rewrite'::regclass, ru.oid, null from pg_rewrite ru join scope s on s.oid = ru.ev_class
)
select distinct tn.nspname, tc.relname,
       pg_describe_object(d.classid, d.objid, d.objsubid),
       ref.type, ref.schema, ref.identity,
       (select e.extname from pg_depend x join pg_extension e on e.oid = x.refobjid
        where x.classid = d.refclassid and x.objid = d.refobjid and x.deptype = 'e' limit 1),
       d.refclassid = 'pg_class'::regclass and rc.relkind in ('r', 'p') and d.refobjid not in (select oid from scope)
from users u
join pg_depend d on d.classid = u.classid and d.objid = u.objid and (u.objsubid is null or d.objsubid = u.objsubid)
join pg_class tc on tc.oid = u.tbl
join pg_namespace tn on tn.oid = tc.relnamespace
cross join lateral pg_identify_object(d.refclassid, d.refobjid, 0) as ref
left join pg_class rc on d.refclassid = 'pg_class'::regclass and rc.oid = d.refobjid
where d.deptype in ('n', 'a')
  and ref.schema is not null
  and ref.schema not in ('pg_catalog', 'information_schema', 'pg_toast')
  -- pg_identify_object quotes its schema as SQL would ("ClinicalData"), so compare it quoted.
  and (ref.schema <> all(select quote_ident(x) from unnest(%(schemas)s::text[]) as x)
       or (d.refclassid = 'pg_class'::regclass and rc.relkind in ('r', 'p') and d.refobjid not in (select oid from scope)))
  and not (d.refclassid = 'pg_class'::regclass and d.refobjid = u.tbl)
  and coalesce(rc.relkind, '') <> 'i'  -- a foreign key's unique index: its table is named already
order by 1, 2, 3, 6
"""
)


@dataclass(frozen=True)
class Dependency:
    """One object outside the migrated scope that a table in scope uses."""

    table: str  # schema.table in the text form of bascule.identifiers
    used_by: str  # pg_describe_object: "column care of table registry.patients", "default value for column ..."
    kind: str  # pg_identify_object type: "type", "function", "sequence", "collation", "table", ...
    schema: str  # as the catalog stores it (unquoted)
    identity: str  # pg_identify_object identity, qualified and quoted as PostgreSQL shows it
    extension: str | None  # the extension the object belongs to (included automatically)
    unlisted_table: bool  # a foreign key's table that is not migrated

    def fix(self, schemas: Sequence[str]) -> str:
        if self.unlisted_table and self.schema in schemas:
            return f"add table {self.identity} to source.tables (or drop the foreign key on the source)"
        return f"add schema {format_name(self.schema)} to source.schemas"

    def describe(self, schemas: Sequence[str]) -> str:
        return f"{self.used_by} uses {self.kind} {self.identity}: {self.fix(schemas)}"


def scope_params(schemas: Sequence[str], tables: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The query parameters of :data:`SCOPE_CTE` and the listed schemas."""
    return {"schemas": list(schemas), "table_schemas": [s for s, _ in tables], "names": [t for _, t in tables]}


def find(conn: Any, schemas: Sequence[str], tables: Sequence[tuple[str, str]]) -> list[Dependency]:
    """Every object outside ``schemas`` (or a table outside ``tables``) that a table of ``tables`` uses."""
    with conn.cursor() as cur:
        cur.execute(_DEPENDENCIES_SQL, scope_params(schemas, tables))
        rows = cur.fetchall()
    return [
        Dependency(qualified_name(schema, table), used_by, kind, parse_name(ref_schema), identity, extension, bool(unlisted))
        for schema, table, used_by, kind, ref_schema, identity, extension, unlisted in rows
    ]


def check(conn: Any, schemas: Sequence[str], tables: Sequence[tuple[str, str]], manifest_path: str) -> CheckResult:
    """Preflight's verdict: refused dependencies named with their fix; extension objects listed as included."""
    found = find(conn, schemas, tables)
    refused = [d for d in found if d.extension is None]
    included = sorted({f"{d.kind} {d.identity} (extension {d.extension})" for d in found if d.extension})
    facts = {"refused": [d.describe(schemas) for d in refused], "included": included}
    also = (
        f" Included automatically (extension objects, created with the extension): {', '.join(included)}."
        if included
        else ""
    )
    if refused:
        lines = "; ".join(d.describe(schemas) for d in refused)
        return CheckResult(
            "dependencies",
            False,
            f"the tables in scope depend on {len(refused)} object(s) outside source.schemas {list(schemas)}, which "
            f"the schema copy would not create on the target: {lines}. Change {manifest_path} as named, then run "
            f"again; nothing was created. Runbook: {RUNBOOK}.{also}",
            facts,
        )
    return CheckResult("dependencies", True, f"no dependency outside source.schemas {list(schemas)}.{also}", facts)

"""The preflight checks of what a workload's tables need and what the stream cannot carry,
run again by the snapshot before it creates anything (``dependencies``, ``unreplicated``).

Both read the source's catalogue for the tables of the inventory; the role check of
row-level security policies also reads the target (skipped when there is none yet, in a
dry run). The snapshot refuses with the same text preflight shows, so a run started
without preflight (or after the source changed) still creates nothing.
"""

from __future__ import annotations

from typing import Any

from bascule.exceptions import BasculeError
from bascule.governance.policy import CheckResult
from bascule.postgres import dependencies, unreplicated
from bascule.postgres.catalog import PgInventory
from bascule.workload import PostgresWorkload


class OutOfScope(BasculeError):
    """The tables in scope need something outside it, or hold what logical replication does not carry."""


def scope_checks(
    source: Any, target: Any | None, workload: PostgresWorkload, inventory: PgInventory, manifest_path: str
) -> list[CheckResult]:
    tables = [(t.schema, t.name) for t in inventory.tables]
    schemas = list(workload.source.schemas)
    return [
        dependencies.check(source, schemas, tables, manifest_path),
        unreplicated.check(source, target, schemas, tables, manifest_path),
    ]


def refuse_out_of_scope(
    source: Any, target: Any | None, workload: PostgresWorkload, inventory: PgInventory, manifest_path: str
) -> None:
    """Raise :class:`OutOfScope` with every refusal's text, before anything is created."""
    failed = [c for c in scope_checks(source, target, workload, inventory, manifest_path) if not c.ok]
    if failed:
        raise OutOfScope(" | ".join(f"{c.name}: {c.detail}" for c in failed))

"""Whether someone ran DDL on the source mid-migration, which logical replication does not carry.

The inventory taken at snapshot time is kept as JSON; reading it again later and
comparing tells what changed: ``schema_fingerprint`` hashes each table's shape
(columns, keys, indexes, constraints, partitions: not sizes or row counts), and
``schema_changes`` names every difference in one readable line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any

from bascule.postgres.catalog import PgInventory, TableInfo, quote_ident

_REPLICA_IDENTITY = {"d": "default", "f": "full", "i": "using index", "n": "nothing"}


def _table_shape(table: TableInfo) -> dict[str, Any]:
    """What DDL changes: not sizes or row counts."""
    return {
        "columns": [asdict(c) for c in table.columns],
        "primary_key": table.primary_key,
        "replica_identity": table.replica_identity,
        "indexes": table.indexes,
        "constraints": table.constraints,
        "foreign_keys": table.foreign_keys,
        "kind": table.kind,
        "partitions": table.partitions,
    }


def schema_fingerprint(inventory: PgInventory) -> dict[str, str]:
    """Qualified table name -> SHA-256 of its shape: equal fingerprints, same DDL."""
    return {
        t.qualified: hashlib.sha256(json.dumps(_table_shape(t), sort_keys=True).encode()).hexdigest()
        for t in inventory.tables
    }


def schema_changes(before: PgInventory, after: PgInventory) -> list[str]:
    """One readable line per DDL difference between two inventories (empty: no change)."""
    changes: list[str] = []
    old = {t.qualified: t for t in before.tables}
    new = {t.qualified: t for t in after.tables}
    for name in sorted(old.keys() - new.keys()):
        changes.append(f"table {name} dropped")
    for name in sorted(new.keys() - old.keys()):
        changes.append(f"new table {name} in schema {quote_ident(new[name].schema)}")
    fingerprints_before, fingerprints_after = schema_fingerprint(before), schema_fingerprint(after)
    for name in sorted(old.keys() & new.keys()):
        if fingerprints_before[name] != fingerprints_after[name]:
            changes.extend(f"table {name}: {line}" for line in _table_changes(old[name], new[name]))
    old_sequences = {s.qualified for s in before.sequences}
    new_sequences = {s.qualified for s in after.sequences}
    changes.extend(f"sequence {s} dropped" for s in sorted(old_sequences - new_sequences))
    changes.extend(f"new sequence {s}" for s in sorted(new_sequences - old_sequences))
    changes.extend(f"extension '{e}' removed" for e in sorted(set(before.extensions) - set(after.extensions)))
    changes.extend(f"extension '{e}' installed" for e in sorted(set(after.extensions) - set(before.extensions)))
    return changes


def _table_changes(old: TableInfo, new: TableInfo) -> list[str]:
    lines = _column_changes(old, new)
    if old.primary_key != new.primary_key:
        lines.append(f"primary key changed from {old.primary_key or 'none'} to {new.primary_key or 'none'}")
    if old.replica_identity != new.replica_identity:
        lines.append(
            f"replica identity changed from {_REPLICA_IDENTITY.get(old.replica_identity, old.replica_identity)} "
            f"to {_REPLICA_IDENTITY.get(new.replica_identity, new.replica_identity)}"
        )
    lines.extend(f"index dropped: {i}" for i in old.indexes if i not in new.indexes)
    lines.extend(f"index added: {i}" for i in new.indexes if i not in old.indexes)
    lines.extend(_named_changes("constraint", old.constraints, new.constraints))
    lines.extend(_named_changes("foreign key", old.foreign_keys, new.foreign_keys))
    if old.partitions != new.partitions:
        added = [p for p in new.partitions if p not in old.partitions]
        dropped = [p for p in old.partitions if p not in new.partitions]
        lines.append(f"partitions changed (added {added}, dropped {dropped})")
    return lines


def _column_changes(old: TableInfo, new: TableInfo) -> list[str]:
    lines: list[str] = []
    old_columns = {c.name: c for c in old.columns}
    new_columns = {c.name: c for c in new.columns}
    for name, column in new_columns.items():
        if name not in old_columns:
            lines.append(f"column '{column.name} {column.type}' added")
    for name in old_columns:
        if name not in new_columns:
            lines.append(f"column '{name}' dropped")
    for name in [n for n in old_columns if n in new_columns]:
        before, after = old_columns[name], new_columns[name]
        if before.type != after.type:
            lines.append(f"column '{name}' type changed from {before.type} to {after.type}")
        if before.not_null != after.not_null:
            lines.append(f"column '{name}' {'set NOT NULL' if after.not_null else 'dropped NOT NULL'}")
        if before.identity != after.identity or before.generated != after.generated:
            lines.append(f"column '{name}' identity/generation changed")
    if [c.name for c in old.columns if c.name in new_columns] != [c.name for c in new.columns if c.name in old_columns]:
        lines.append("column order changed")
    return lines


def _named_changes(kind: str, was_items: list[dict[str, Any]], now_items: list[dict[str, Any]]) -> list[str]:
    """Constraints or foreign keys, matched by name."""
    was = {item["name"]: item for item in was_items}
    now = {item["name"]: item for item in now_items}
    lines = [f"{kind} '{n}' dropped" for n in sorted(was.keys() - now.keys())]
    lines.extend(f"{kind} '{n}' added: {now[n]['definition']}" for n in sorted(now.keys() - was.keys()))
    lines.extend(
        f"{kind} '{n}' changed from {was[n]['definition']} to {now[n]['definition']}"
        for n in sorted(was.keys() & now.keys())
        if was[n] != now[n]
    )
    return lines

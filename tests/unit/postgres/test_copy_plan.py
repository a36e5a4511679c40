"""The copy plan's pure parts: cut points and the reasons a table is not split (no server)."""

from __future__ import annotations

import dataclasses

from psycopg2 import sql

from bascule.postgres import copy_plan
from bascule.postgres.catalog import ColumnInfo, TableInfo


def test_cut_points_cover_the_keys_without_gaps() -> None:
    assert copy_plan.cut_points([], 1, 100, 4) == ([26, 51, 76], "equal widths between min and max")
    bounds = [1, 2, 3, 4, 10, 20, 30, 40, 100]
    assert copy_plan.cut_points(bounds, 1, 100, 4) == ([3, 10, 30], "histogram quantiles")
    # A histogram from before the table grew spans too little of the keys: equal widths instead.
    assert copy_plan.cut_points(bounds, 1, 1000, 4)[1] == "equal widths between min and max"
    assert copy_plan.cut_points([], 5, 6, 8) == ([6], "equal widths between min and max")
    assert copy_plan.cut_points([], 7, 7, 3)[0] == []


def test_split_refusal_names_the_reason() -> None:
    base = TableInfo("s", "t", [ColumnInfo("id", "bigint", True)], ["id"], "d", 0, 0)
    assert copy_plan.split_refusal(base) is None
    assert "no primary key" in str(copy_plan.split_refusal(dataclasses.replace(base, primary_key=[])))
    uuid = dataclasses.replace(base, columns=[ColumnInfo("id", "uuid", True)])
    assert "id is of type uuid" in str(copy_plan.split_refusal(uuid))


def test_a_range_is_half_open_and_round_trips_through_xcom() -> None:
    unit = copy_plan.CopyUnit("registry.t", 10, copy_plan.KeyRange("id", 100, 200, 2, 3))
    assert unit.range is not None and unit.range.predicate() == sql.SQL(" and ").join(
        [
            sql.SQL("{} >= {}").format(sql.Identifier("id"), sql.Literal(100)),
            sql.SQL("{} < {}").format(sql.Identifier("id"), sql.Literal(200)),
        ]
    )
    assert copy_plan.KeyRange("id", None, 5, 1, 3).predicate() == sql.SQL(" and ").join(
        [sql.SQL("{} < {}").format(sql.Identifier("id"), sql.Literal(5))]
    )
    # The column is an identifier, never text pasted into the condition.
    assert copy_plan.KeyRange("Key", 5, None, 3, 3).predicate() == sql.SQL(" and ").join(
        [sql.SQL("{} >= {}").format(sql.Identifier("Key"), sql.Literal(5))]
    )
    assert copy_plan.KeyRange("id", None, None, 1, 1).predicate() == sql.Composed([sql.SQL("true")])
    assert copy_plan.CopyUnit.from_item(unit.to_dict()) == unit
    assert copy_plan.CopyUnit.from_item("registry.t") == copy_plan.CopyUnit("registry.t", 0)
    assert unit.evidence_name == "registry.t-range-002of003"
    # Any table name makes a key an object store takes, one level deep, and still unique.
    odd = copy_plan.CopyUnit('"my/sch\nema".Enc ounter', 1)
    assert odd.evidence_name == "%22my%2Fsch%0Aema%22.Enc%20ounter"

"""The table diff's pure parts: range splitting, segment sizing, leaf comparison, reports."""

from __future__ import annotations

import json
import random
from datetime import date
from decimal import Decimal

import pytest

from bascule.postgres.tablediff_records import RowDifference, TableDiff, compare_leaf
from bascule.postgres.tablediff_segments import (
    MAX_SEGMENTS,
    MIN_SEGMENTS,
    adaptive_segments,
    segment_of,
    split_range,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("lo", "hi", "parts"),
    [(1, 1_000_000, 256), (-5, 5, 3), (0, 0, 16), (7, 9, 16), (-(2**63), 2**63 - 1, 65_536), (10, 25, 16)],
)
def test_split_range_covers_every_key_once_in_at_most_parts_ranges(lo: int, hi: int, parts: int) -> None:
    width, ranges = split_range(lo, hi, parts)
    assert 1 <= len(ranges) <= parts
    assert ranges[0][0] == lo and ranges[-1][1] == hi
    for (_, end), (start, _) in zip(ranges, ranges[1:], strict=False):
        assert start == end + 1  # contiguous, no overlap
    assert all(end - start + 1 <= width for start, end in ranges)
    rng = random.Random(lo ^ hi ^ parts)
    for key in [lo, hi, *(rng.randint(lo, hi) for _ in range(1_000))]:
        index = segment_of(key, lo, width)  # what SQL computes as (key - lo) / width
        start, end = ranges[index]
        assert start <= key <= end


def test_split_range_refuses_empty_ranges_and_zero_parts() -> None:
    with pytest.raises(ValueError, match="empty range"):
        split_range(5, 4, 2)
    with pytest.raises(ValueError, match="parts"):
        split_range(1, 4, 0)


def test_adaptive_segments_grow_with_rows_within_bounds() -> None:
    assert adaptive_segments(0, 1_000) == MIN_SEGMENTS
    assert adaptive_segments(-1, 1_000) == MIN_SEGMENTS  # reltuples of a never-analyzed table
    assert adaptive_segments(1_000_000, 1_000) == 2_000  # ~500 rows a segment: a mismatch is already a leaf
    assert adaptive_segments(10**10, 1_000) == MAX_SEGMENTS


def test_compare_leaf_reports_each_kind_sorted_by_key() -> None:
    source = [((1,), 11), ((2,), 22), ((4,), 44), ((None,), 5)]
    target = [((4,), 44), ((2,), 99), ((3,), 33), ((None,), 6)]
    assert compare_leaf(source, target) == [
        RowDifference((1,), "missing_on_target"),
        RowDifference((2,), "changed"),
        RowDifference((3,), "extra_on_target"),
        RowDifference((None,), "changed"),  # NULL keys sort last, and still compare
    ]
    assert compare_leaf(source, list(reversed(source))) == []


def test_compare_leaf_counts_repeated_rows_of_keys_without_a_unique_index() -> None:
    # Same key, same hash, but twice on one side: the row count of that key differs.
    assert compare_leaf([(("a",), 1), (("a",), 1)], [(("a",), 1)]) == [RowDifference(("a",), "changed")]


def _diff(differences: list[RowDifference], *, truncated: bool = False) -> TableDiff:
    return TableDiff(
        table="care.stays",
        source_rows=1_000_000,
        target_rows=999_999,
        differences=differences,
        segments=2000,
        segments_bisected=3,
        seconds=0.4321,
        truncated=truncated,
        key_columns=["region", "id"],
    )


def test_summary_is_one_line_with_counts_and_the_first_keys() -> None:
    differences = [RowDifference(("R1", k), "changed" if k % 2 else "missing_on_target") for k in range(8)]
    line = _diff(differences).summary()
    assert line == (
        "care.stays: source 1,000,000 rows, target 999,999 rows: 8 differences (4 changed, 4 missing_on_target): "
        "region='R1',id=0 missing_on_target; region='R1',id=1 changed; region='R1',id=2 missing_on_target; "
        "region='R1',id=3 changed; region='R1',id=4 missing_on_target, ... "
        "[key_range, 2000 segments, 3 bisected, 0.43 s]"
    )
    assert "8 or more (truncated) differences" in _diff(differences, truncated=True).summary()


def test_summary_of_equal_tables() -> None:
    equal = TableDiff("care.stays", 5, 5, [], 256, 0, 0.01, False, ["id"])
    assert equal.equal
    assert (
        equal.summary()
        == "care.stays: source 5 rows, target 5 rows: equal [key_range, 256 segments, 0 bisected, 0.01 s]"
    )
    assert not TableDiff("care.stays", 5, 4, [], 256, 0, 0.01, False, ["id"]).equal


def test_to_json_names_key_columns_and_renders_any_value() -> None:
    diff = _diff(
        [RowDifference(("R1", Decimal("1.50")), "changed"), RowDifference(("R2", date(2025, 1, 2)), "extra_on_target")]
    )
    data = json.loads(diff.to_json())
    assert data["differences"] == [
        {"key": {"region": "R1", "id": "1.50"}, "kind": "changed"},
        {"key": {"region": "R2", "id": "2025-01-02"}, "kind": "extra_on_target"},
    ]
    assert data["counts_by_kind"] == {"changed": 1, "extra_on_target": 1}
    assert (data["table"], data["source_rows"], data["truncated"]) == ("care.stays", 1_000_000, False)

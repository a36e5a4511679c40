"""Comparing SQL results and checking shadow query texts, without a server."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from bascule.validation.query_diff import QueryResult, compare_results
from bascule.validation.table_shadow import ShadowQueryError, single_statement

pytestmark = pytest.mark.unit

COLUMNS = ["chapter", "year", "stays", "mean"]


def _result(*rows: tuple) -> QueryResult:
    return QueryResult(list(COLUMNS), list(rows))


def test_multisets_match_in_any_order_and_name_rows_by_their_non_numeric_values() -> None:
    source = _result(("I", 2021, 10, Decimal("3.50")), ("II", 2021, 4, Decimal("1.00")), ("II", 2022, 4, None))
    target = _result(("II", 2022, 4, None), ("I", 2021, 10, Decimal("3.50")), ("II", 2021, 5, Decimal("1.00")))
    comparison = compare_results("j", source, source, target, False, 0.0, 0.0)
    assert not comparison.ok
    (diff,) = comparison.row_differences
    # year is an integer, hence numeric: the row is named by its text column; the nearest
    # numbers pair it with its counterpart, so it is one changed row, not a missing and an extra.
    assert diff.kind == "changed" and diff.label == "(chapter='II')" and diff.columns == ("stays",)
    assert diff.source == {"chapter": "II", "year": 2021, "stays": 4, "mean": "1.00"}
    assert comparison.differences[0].path == "(chapter='II').stays"
    assert (comparison.differences[0].source, comparison.differences[0].target) == (4, 5)


def test_tolerance_applies_to_numbers_only() -> None:
    source = QueryResult(["k", "v", "on"], [("a", 0.1 + 0.2, date(2024, 1, 1)), ("b", 1.0, date(2024, 1, 2))])
    target = QueryResult(["k", "v", "on"], [("a", 0.3, date(2024, 1, 1)), ("b", 1.0, date(2024, 1, 2))])
    assert not compare_results("j", source, source, target, False, 0.0, 0.0).ok
    assert compare_results("j", source, source, target, False, 1e-9, 0.0).ok
    shifted = QueryResult(["k", "v", "on"], [("a", 0.3, date(2024, 1, 2)), ("b", 1.0, date(2024, 1, 1))])
    assert not compare_results("j", source, source, shifted, False, 1e9, 1e9).ok
    strings = QueryResult(["k"], [("1.0",)])
    assert not compare_results("j", strings, strings, QueryResult(["k"], [("1.00",)]), False, 0.5, 0.5).ok


def test_missing_and_extra_rows_and_row_counts() -> None:
    source = _result(("I", 2021, 1, None), ("I", 2021, 1, None), ("X", 2020, 2, None))
    target = _result(("I", 2021, 1, None), ("Y", 2020, 2, None))
    comparison = compare_results("j", source, source, target, False, 0.0, 0.0)
    assert sorted((d.kind, d.label) for d in comparison.row_differences) == [
        ("extra", "(chapter='Y')"),
        ("missing", "(chapter='I')"),
        ("missing", "(chapter='X')"),
    ]
    assert (comparison.source_rows, comparison.target_rows, comparison.row_differences_total) == (3, 2, 3)
    assert "3 differing row(s); source 3 row(s), target 2 row(s)" in comparison.headline()


def test_columns_differing_between_source_runs_are_excluded_and_listed() -> None:
    first = QueryResult(["k", "at"], [("a", "10:00"), ("b", "10:00")])
    again = QueryResult(["k", "at"], [("a", "10:01"), ("b", "10:01")])
    target = QueryResult(["k", "at"], [("b", "11:00"), ("a", "11:00")])
    comparison = compare_results("j", first, again, target, False, 0.0, 0.0)
    assert comparison.ok and comparison.non_deterministic == ["at"] and comparison.fields_compared == 2
    only_noise = compare_results(
        "j", QueryResult(["at"], [("1",)]), QueryResult(["at"], [("2",)]), QueryResult(["at"], [("3",)]), False, 0, 0
    )
    assert only_noise.ok and "nothing compared" in only_noise.headline()


def test_source_runs_that_disagree_on_rows_are_an_error() -> None:
    first = QueryResult(["k"], [("a",), ("b",)])
    comparison = compare_results("j", first, QueryResult(["k"], [("a",)]), first, False, 0.0, 0.0)
    assert not comparison.ok and comparison.failed_run == "source_again"
    assert "returned 2 and 1 rows" in comparison.error
    renamed = compare_results("j", first, first, QueryResult(["key"], [("a",), ("b",)]), False, 0.0, 0.0)
    assert renamed.failed_run == "target" and "columns ['key']" in renamed.error


def test_ordered_comparison_is_by_position() -> None:
    source = QueryResult(["k"], [("a",), ("b",)])
    target = QueryResult(["k"], [("b",), ("a",), ("c",)])
    comparison = compare_results("j", source, source, target, True, 0.0, 0.0)
    assert [(d.kind, d.label) for d in comparison.row_differences] == [
        ("changed", "row 1"),
        ("changed", "row 2"),
        ("extra", "row 3"),
    ]
    assert compare_results("j", source, source, target, False, 0.0, 0.0).row_differences[0].kind == "extra"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SELECT 1", "SELECT 1"),
        ("SELECT 1;\n", "SELECT 1"),
        ("SELECT ';' -- ; not a second one\n;", "SELECT ';'"),
        ('SELECT $q$;$q$, "a;b" FROM t /* ; */', 'SELECT $q$;$q$, "a;b" FROM t'),
    ],
)
def test_single_statement_accepts_one_statement(text: str, expected: str) -> None:
    assert single_statement(text) == expected


@pytest.mark.parametrize("text", ["", "  -- only a comment\n", "SELECT 1; SELECT 2", "COMMIT; DELETE FROM t"])
def test_single_statement_refuses_none_or_several(text: str) -> None:
    with pytest.raises(ShadowQueryError):
        single_statement(text)

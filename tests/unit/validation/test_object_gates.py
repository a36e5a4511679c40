"""Great Expectations gates: parity, content suites as data, the offline HTML report."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from bascule.synthetic import snds as synthetic
from bascule.validation import object_gates as gates
from bascule.validation.object_gates import (
    PARITY_EXPECTATIONS,
    ContentSuite,
    count_csv_rows,
    load_content_suite,
    parity_frame,
    run_content_suite,
    run_suite,
)
from bascule.validation.outcomes import MAX_LISTED, SuiteOutcome
from bascule.validation.report import render_report_html
from bascule.validation.suites import SuiteConfigError

pytestmark = pytest.mark.unit

SUITE_PATH = Path(__file__).resolve().parents[3] / "include" / "expectations" / "snds_extracts_content.yaml"


def row(key: str, **over: Any) -> dict[str, Any]:
    base = {
        "key": key,
        "in_source": True,
        "in_target": True,
        "source_size": 100,
        "target_size": 100,
        "source_md5": "rL0Y20zC+Fzt72VPzMSk2A==",
        "target_md5": "rL0Y20zC+Fzt72VPzMSk2A==",
        "verified": True,
    }
    base.update(over)
    return base


# --- parity ------------------------------------------------------------------


def test_parity_all_equal_passes() -> None:
    rows = [row(f"data/file-{i:03d}.csv") for i in range(50)]
    rows.append(row("data/multipart.bin", source_md5=None, target_md5=None))  # no MD5 anywhere: verified decides
    outcome = run_suite("parity", parity_frame(rows), PARITY_EXPECTATIONS)
    assert outcome.success, outcome.failure_summary()
    assert (outcome.evaluated, outcome.failed, outcome.rows) == (len(PARITY_EXPECTATIONS), 0, 51)
    assert outcome.failure_summary() == ""


def test_parity_failures_name_exactly_the_offending_keys() -> None:
    bad = {
        "missing": row("a/missing.csv", in_target=False, target_size=None, target_md5=None, verified=False),
        "extra": row("a/extra.csv", in_source=False, source_size=None, source_md5=None, verified=False),
        "size": row("a/size.csv", target_size=99, verified=False),
        "hash": row("a/hash.csv", target_md5="AAAAAAAAAAAAAAAAAAAAAA==", verified=False),
        "unverified": row("a/unverified.csv", verified=False),
    }
    good = [row(f"a/good-{i}.csv") for i in range(20)]
    outcome = gates.run_parity([*good[:10], *bad.values(), *good[10:]])
    assert not outcome.success
    summary = outcome.failure_summary()
    named = set(re.findall(r"a/[\w-]+\.csv", summary))
    assert named == {r["key"] for r in bad.values()}, summary

    by_column = {(r.kwargs.get("column") or r.kwargs.get("column_A")): r for r in outcome.results if not r.success}
    assert by_column["in_target"].unexpected_ids == ["a/missing.csv"]
    assert by_column["in_source"].unexpected_ids == ["a/extra.csv"]
    assert by_column["source_size"].unexpected_ids == ["a/size.csv"]
    assert by_column["source_size"].unexpected_values == [[100, 99]]
    assert by_column["source_md5"].unexpected_ids == ["a/hash.csv"]
    # A missing/extra object is not also reported as unverified: each key under its own reason.
    assert sorted(by_column["verified"].unexpected_ids) == ["a/hash.csv", "a/size.csv", "a/unverified.csv"]
    for line in summary.splitlines():
        assert line.startswith("parity: FAILED ")
    assert "missing on target" in summary and "key: a/missing.csv" in summary


def test_parity_frame_refuses_a_key_twice() -> None:
    with pytest.raises(ValueError, match="twice.*a/x.csv"):
        parity_frame([row("a/x.csv"), row("a/x.csv")])


def test_parity_lists_at_most_twenty_keys_and_counts_the_rest() -> None:
    rows = [row(f"b/{i:03d}.csv", verified=False) for i in range(30)]
    outcome = gates.run_parity(rows)
    verified = next(r for r in outcome.results if r.kwargs.get("column") == "verified")
    assert verified.unexpected_count == 30 and len(verified.unexpected_ids) == MAX_LISTED
    assert "(+10 more)" in outcome.failure_summary()


# --- content suites ------------------------------------------------------------


@pytest.fixture(scope="module")
def small() -> dict[str, bytes]:
    return {obj.key: obj.body for obj in synthetic.generate(synthetic.SMALL)}


@pytest.fixture(scope="module")
def suite() -> ContentSuite:
    return load_content_suite(SUITE_PATH)


def by_table(outcomes: list[SuiteOutcome]) -> dict[str, SuiteOutcome]:
    return {o.table or "": o for o in outcomes}


def test_suite_file_mirrors_the_synthetic_constants(suite: ContentSuite) -> None:
    tables = {t.name: t for t in suite.tables}
    assert set(tables) == {"patients", "stays", "dispensations"}
    columns = {"patients": synthetic.PATIENT_COLUMNS, "stays": synthetic.STAY_COLUMNS}
    columns["dispensations"] = synthetic.DISPENSATION_COLUMNS
    regexes: dict[str, set[str]] = {}
    for name, table in tables.items():
        assert table.row_count == "source"
        ordered = [e for e in table.expectations if e["expectation"] == "expect_table_columns_to_match_ordered_list"]
        assert ordered and ordered[0]["kwargs"]["column_list"] == list(columns[name])
        regexes[name] = {
            e["kwargs"]["regex"]
            for e in table.expectations
            if e["expectation"] == "expect_column_values_to_match_regex"
        }
    assert synthetic.PATIENT_ID_PATTERN in regexes["patients"] & regexes["stays"] & regexes["dispensations"]
    assert synthetic.DEPARTMENT_PATTERN in regexes["patients"]
    assert synthetic.ICD10_PATTERN in regexes["stays"]
    assert {synthetic.ATC5_PATTERN, synthetic.CIP13_PATTERN} <= regexes["dispensations"]
    assert tables["stays"].matches("stays/year=2024/month=01/stays.csv")
    assert not tables["patients"].matches("stays/year=2024/month=01/stays.csv")


def test_content_suite_passes_on_an_identical_copy(small: dict[str, bytes], suite: ContentSuite) -> None:
    outcomes = run_content_suite(suite, small.__getitem__, small.__getitem__, list(small))
    assert [o.table for o in outcomes] == ["patients", "stays", "dispensations"]
    for o in outcomes:
        assert o.success, o.failure_summary()
    tables = by_table(outcomes)
    spec = synthetic.SMALL
    assert tables["patients"].rows == spec.patients
    assert tables["stays"].rows == len(spec.months) * spec.stays_per_month
    assert tables["dispensations"].rows == len(spec.months) * 3 * 20
    row_count = [r for r in tables["stays"].results if r.expectation == "expect_table_row_count_to_equal"]
    assert row_count[0].kwargs == {"value": tables["stays"].rows} and row_count[0].observed == tables["stays"].rows


def corrupt(objects: dict[str, bytes], key: str, edit: Callable[[list[list[str]]], None]) -> None:
    rows = [line.split(",") for line in objects[key].decode().splitlines()]
    edit(rows)
    objects[key] = ("\n".join(",".join(r) for r in rows) + "\n").encode()


def test_content_suite_names_the_column_values_and_rows_that_fail(small: dict[str, bytes], suite: ContentSuite) -> None:
    target = dict(small)
    stays_key = synthetic.stays_key(2024, 3)
    disp_key = synthetic.dispensations_key(2024, 5, 1)

    def bad_icd10(rows: list[list[str]]) -> None:
        rows[4][synthetic.STAY_COLUMNS.index("main_diagnosis")] = "XX99"

    def null_patient(rows: list[list[str]]) -> None:
        rows[7][synthetic.DISPENSATION_COLUMNS.index("patient_id")] = ""

    corrupt(target, stays_key, bad_icd10)
    corrupt(target, disp_key, null_patient)
    corrupt(target, synthetic.PATIENTS_KEY, lambda rows: rows.pop())  # a row lost on the target

    outcomes = by_table(run_content_suite(suite, small.__getitem__, target.__getitem__, list(small)))
    assert {t for t, o in outcomes.items() if not o.success} == {"patients", "stays", "dispensations"}

    stays = outcomes["stays"]
    assert stays.failed == 1, stays.failure_summary()
    assert "column='main_diagnosis'" in stays.failure_summary()
    assert "'XX99'" in stays.failure_summary()
    assert f"{stays_key}:5" in stays.failure_summary()  # header is line 1, rows[4] is line 5

    disp = outcomes["dispensations"]
    assert disp.failed == 1, disp.failure_summary()
    (failure,) = [r for r in disp.results if not r.success]
    assert failure.expectation == "expect_column_values_to_not_be_null" and failure.kwargs == {"column": "patient_id"}
    assert failure.unexpected_ids == [f"{disp_key}:8"]
    assert "column='patient_id'" in disp.failure_summary()

    patients = outcomes["patients"]
    assert patients.failed == 1, patients.failure_summary()
    (failure,) = [r for r in patients.results if not r.success]
    assert failure.expectation == "expect_table_row_count_to_equal"
    assert failure.kwargs == {"value": synthetic.SMALL.patients} and failure.observed == synthetic.SMALL.patients - 1
    assert f"observed {synthetic.SMALL.patients - 1}" in patients.failure_summary()


def test_unparseable_typed_values_are_named(small: dict[str, bytes], suite: ContentSuite) -> None:
    target = dict(small)
    key = synthetic.dispensations_key(2024, 2, 0)

    def bad(rows: list[list[str]]) -> None:
        rows[1][synthetic.DISPENSATION_COLUMNS.index("dispensation_date")] = "2024-02-31"
        rows[2][synthetic.DISPENSATION_COLUMNS.index("quantity")] = "11"

    corrupt(target, key, bad)
    disp = by_table(run_content_suite(suite, small.__getitem__, target.__getitem__, list(small)))["dispensations"]
    failures = {(r.expectation, r.kwargs.get("column")): r for r in disp.results if not r.success}
    assert set(failures) == {
        ("bascule_column_values_parse_as_type", "dispensation_date"),
        ("expect_column_values_to_not_be_null", "dispensation_date"),  # what did not parse is null after
        ("expect_column_values_to_be_between", "quantity"),
    }
    parse = failures[("bascule_column_values_parse_as_type", "dispensation_date")]
    assert parse.unexpected_values == ["2024-02-31"] and parse.unexpected_ids == [f"{key}:2"]
    assert failures[("expect_column_values_to_be_between", "quantity")].unexpected_values == [11]


def test_unknown_expectation_is_refused_naming_suite_and_name(small: dict[str, bytes]) -> None:
    import pandas as pd

    frame = pd.DataFrame({"a": ["1"]})
    with pytest.raises(SuiteConfigError, match=r"suite 'demo'.*unknown expectation 'expect_column_to_be_lovely'"):
        run_suite("demo", frame, [{"expectation": "expect_column_to_be_lovely", "kwargs": {"column": "a"}}])
    with pytest.raises(SuiteConfigError, match=r"suite 'demo'.*expect_column_values_to_not_be_null.*invalid kwargs"):
        run_suite("demo", frame, [{"expectation": "expect_column_values_to_not_be_null", "kwargs": {"columnn": "a"}}])
    # A content suite is checked before any object is read.
    reads: list[str] = []

    def read(key: str) -> bytes:
        reads.append(key)
        return small[key]

    bad = ContentSuite(
        name="broken",
        tables=[gates.TableSpec(name="stays", keys="stays/**", expectations=[{"expectation": "expect_nothing"}])],
    )
    with pytest.raises(SuiteConfigError, match=r"suite 'broken/stays'.*'expect_nothing'"):
        run_content_suite(bad, read, read, list(small))
    assert reads == []


def test_missing_column_is_a_failure_not_a_crash() -> None:
    import pandas as pd

    outcome = run_suite(
        "demo",
        pd.DataFrame({"a": ["1"]}),
        [{"expectation": "expect_column_values_to_not_be_null", "kwargs": {"column": "b"}}],
    )
    assert not outcome.success and outcome.results[0].error
    assert "column='b'" in outcome.failure_summary()


def test_load_content_suite_reports_file_and_fields(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "suite": "bad",
                "tables": [
                    {
                        "name": "t",
                        "keys": "t/*.csv",
                        "format": "parquet",
                        "row_count": "target",
                        "types": {"x": "uuid"},
                    },
                    {"keys": "u/*.csv", "expectations": [{"kwargs": {}}]},
                ],
            }
        )
    )
    with pytest.raises(SuiteConfigError) as info:
        load_content_suite(path)
    text = str(info.value)
    assert str(path) in text
    for fragment in ("tables[0] (t).format", "row_count", "types.x", "tables[1] (?).name", "expectations[0]"):
        assert fragment in text


def test_glob_and_row_count_helpers() -> None:
    spec = gates.TableSpec(name="t", keys="stays/**/*.csv", expectations=[])
    assert spec.matches("stays/year=2024/month=01/stays.csv")
    assert spec.matches("stays/top.csv")
    assert not spec.matches("stays/year=2024/notes.txt")
    assert not gates.TableSpec(name="t", keys="patients/*.csv", expectations=[]).matches("patients/x/y.csv")
    assert gates.TableSpec(name="t", keys="d/part-[0-9]???.csv", expectations=[]).matches("d/part-0001.csv")
    assert count_csv_rows(b'a,b\n1,2\n\n3,"x\ny"\n') == 2
    assert count_csv_rows(b"a,b\n") == 0
    assert count_csv_rows(b"") == 0


# --- report and JSON -------------------------------------------------------------


def test_report_is_self_contained_escaped_and_names_the_failing_key() -> None:
    outcome = gates.run_parity([row("ok.csv"), row("dir/<evil>&.csv", target_size=1, verified=False)])
    html = render_report_html("Validation <report>", [outcome], {"workload": "snds_extracts", "run_id": "manual__2026"})
    assert "FAILED" in html
    assert "dir/&lt;evil&gt;&amp;.csv" in html and "<evil>" not in html
    assert "Validation &lt;report&gt;" in html
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html.lower() and "<link" not in html.lower() and "@import" not in html
    assert "manual__2026" in html


def test_report_of_passing_suites_says_passed(small: dict[str, bytes], suite: ContentSuite) -> None:
    outcomes = run_content_suite(suite, small.__getitem__, small.__getitem__, list(small))
    html = render_report_html("Content", outcomes, {})
    assert "PASSED" in html and "FAILED" not in html
    assert html.count("<h2>") == 3


def test_to_json_round_trips(small: dict[str, bytes], suite: ContentSuite) -> None:
    target = dict(small)
    corrupt(target, synthetic.stays_key(2024, 1), lambda rows: rows[1].__setitem__(4, "bad code"))
    outcomes = [
        gates.run_parity([row("a.csv"), row("b.csv", in_target=False, target_size=None, target_md5=None)]),
        *run_content_suite(suite, small.__getitem__, target.__getitem__, list(small)),
    ]
    for o in outcomes:
        data = o.to_json()
        assert json.loads(json.dumps(data, allow_nan=False)) == data
        assert len(json.dumps(data)) < 20_000

"""Shadow run: flattening, A/A calibration, tolerances, job failures, and the SNDS jobs."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from bascule.shadow_jobs import snds
from bascule.synthetic.snds import SMALL, dispensations_key, generate, stays_key
from bascule.validation.object_shadow import (
    DatasetReader,
    MappingReader,
    ShadowJobSpecError,
    compare_runs,
    flatten,
    resolve_job,
    run_shadow,
)
from bascule.validation.shadow import FieldDiff

pytestmark = pytest.mark.unit

DETERMINISTIC_JOBS: list[tuple[str, Callable[[DatasetReader], Any]]] = [
    ("stays_by_icd10_chapter", snds.stays_by_icd10_chapter),
    ("dispensations_by_atc_group", snds.dispensations_by_atc_group),
    ("patients_profile", snds.patients_profile),
]


@pytest.fixture(scope="module")
def dataset() -> dict[str, bytes]:
    return {obj.key: obj.body for obj in generate(SMALL)}


def read_csv(body: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body.decode("utf-8"), newline="")))


def write_csv(rows: list[dict[str, str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


# --- the SNDS jobs end to end ------------------------------------------------------


def test_identical_copies_pass_every_job(dataset: dict[str, bytes]) -> None:
    report = run_shadow(DETERMINISTIC_JOBS, MappingReader(dataset), MappingReader(dataset))

    assert report.ok, "\n".join(report.summary())
    for comparison in report.comparisons:
        assert comparison.differences == []
        assert comparison.non_deterministic == []
        assert comparison.fields_compared > 0
    assert [c.job for c in report.comparisons] == [name for name, _ in DETERMINISTIC_JOBS]
    json.dumps(report.to_json())  # evidence must serialise as is


def test_job_results_have_the_expected_shape(dataset: dict[str, bytes]) -> None:
    reader = MappingReader(dataset)
    stays = flatten(snds.stays_by_icd10_chapter(reader))
    assert stays["total_stays"] == len(SMALL.months) * SMALL.stays_per_month
    counts = [v for p, v in stays.items() if p.endswith(".count")]
    assert sum(counts) == stays["total_stays"]  # type: ignore[arg-type]

    profile = snds.patients_profile(reader)
    assert profile["patients"] == SMALL.patients == sum(profile["by_department"].values())
    assert set(profile["by_sex"]) <= {"1", "2"}

    dispensations = snds.dispensations_by_atc_group(reader)
    per_month = SMALL.dispensation_files_per_month * SMALL.dispensations_per_file
    assert dispensations["dispensations"] == len(SMALL.months) * per_month
    assert set(dispensations["quantity_by_atc_group"]) <= set("ABCDGHJLMNPRSV")


def test_non_deterministic_fields_are_calibrated_away(dataset: dict[str, bytes]) -> None:
    jobs = [("extract_with_run_timestamp", snds.extract_with_run_timestamp)]
    report = run_shadow(jobs, MappingReader(dataset), MappingReader(dataset))

    (comparison,) = report.comparisons
    assert report.ok and comparison.ok
    assert comparison.non_deterministic == ["generated_at", "run_id"]
    assert comparison.fields_compared == 3  # the row counts are still checked
    assert "generated_at, run_id" in comparison.diff_report()


def test_non_deterministic_job_still_catches_a_real_difference(dataset: dict[str, bytes]) -> None:
    target = dict(dataset)
    del target[dispensations_key(2024, 2, 1)]
    jobs = [("extract_with_run_timestamp", snds.extract_with_run_timestamp)]

    (comparison,) = run_shadow(jobs, MappingReader(dataset), MappingReader(target)).comparisons

    assert not comparison.ok
    assert comparison.differences == [
        FieldDiff(
            "rows.dispensations",
            len(SMALL.months) * SMALL.dispensation_files_per_month * SMALL.dispensations_per_file,
            (len(SMALL.months) * SMALL.dispensation_files_per_month - 1) * SMALL.dispensations_per_file,
        )
    ]


def test_changed_diagnosis_chapter_names_the_exact_path(dataset: dict[str, bytes]) -> None:
    key = stays_key(2024, 3)
    rows = read_csv(dataset[key])
    old = rows[0]["main_diagnosis"]
    new = "Z51.1" if not old.startswith("Z") else "I10"
    month, old_chapter = rows[0]["admission_date"][:7], old[:1]
    before = sum(1 for r in rows if r["admission_date"][:7] == month and r["main_diagnosis"][:1] == old_chapter)
    rows[0]["main_diagnosis"] = new
    target = {**dataset, key: write_csv(rows)}

    report = run_shadow(DETERMINISTIC_JOBS, MappingReader(dataset), MappingReader(target))

    assert not report.ok
    assert [c.job for c in report.failed] == ["stays_by_icd10_chapter"]
    comparison = report.failed[0]
    path = f"by_month_chapter[month={month},chapter={old_chapter}].count"
    assert FieldDiff(path, before, before - 1) in comparison.differences
    assert all(d.path.startswith(f"by_month_chapter[month={month},") for d in comparison.differences)
    text = comparison.diff_report()
    assert f"{path}: source={before} target={before - 1}" in text
    assert "FAILED" in text
    assert any(path in line for line in report.summary())


def test_dropped_target_file_is_a_difference(dataset: dict[str, bytes]) -> None:
    target = dict(dataset)
    del target[stays_key(2024, 6)]

    report = run_shadow(DETERMINISTIC_JOBS, MappingReader(dataset), MappingReader(target))

    (comparison,) = report.failed
    assert comparison.job == "stays_by_icd10_chapter"
    missing = [d for d in comparison.differences if d.kind == "missing"]
    assert missing and all(d.path.startswith("by_month_chapter[month=2024-06,") for d in missing)
    assert all(d.target is None for d in missing)
    assert "total_stays" in {d.path for d in comparison.differences}
    assert "target=<missing>" in comparison.diff_report()


def test_extra_target_field_is_a_difference() -> None:
    comparison = compare_runs("j", {"a": 1}, {"a": 1}, {"a": 1, "b": 2})
    assert comparison.differences == [FieldDiff("b", None, 2, "extra")]
    assert comparison.fields_compared == 2
    assert "b: source=<missing> target=2" in comparison.diff_report()


# --- comparison rules ------------------------------------------------------------


def test_numeric_tolerance() -> None:
    source, target = {"x": 1.0}, {"x": 1.0 + 1e-9}
    assert compare_runs("j", source, source, target, rel_tol=1e-6).ok
    strict = compare_runs("j", source, source, target)
    assert not strict.ok
    assert strict.differences == [FieldDiff("x", 1.0, 1.0 + 1e-9)]
    assert compare_runs("j", {"x": 0.0}, {"x": 0.0}, {"x": 1e-12}, abs_tol=1e-9).ok
    assert not compare_runs("j", {"x": 0.0}, {"x": 0.0}, {"x": 1e-12}, rel_tol=1e-6).ok


def test_types_must_agree_outside_numbers() -> None:
    assert compare_runs("j", {"x": 3}, {"x": 3}, {"x": 3.0}).ok
    assert not compare_runs("j", {"x": 3}, {"x": 3}, {"x": "3"}).ok
    assert not compare_runs("j", {"x": 1}, {"x": 1}, {"x": True}).ok
    assert not compare_runs("j", {"x": None}, {"x": None}, {"x": 0}).ok
    nan = float("nan")
    assert compare_runs("j", {"x": nan}, {"x": nan}, {"x": nan}).ok


def test_fields_differing_between_source_runs_are_excluded() -> None:
    comparison = compare_runs("j", {"a": 1, "t": 1, "only_a": 0}, {"a": 1, "t": 2}, {"a": 1, "t": 99})
    assert comparison.ok
    assert comparison.non_deterministic == ["only_a", "t"]
    assert comparison.fields_compared == 1


def test_only_noise_passes_but_says_nothing_was_compared() -> None:
    comparison = compare_runs("j", {"t": 1}, {"t": 2}, {"t": 3})
    assert comparison.ok and comparison.fields_compared == 0
    assert "nothing compared" in comparison.diff_report()


def test_keyed_records_ignore_order_positional_lists_do_not() -> None:
    rows = [{"month": "2024-01", "n": 1}, {"month": "2024-02", "n": 2}, {"month": "2024-03", "n": 3}]
    keyed = {"by_month": {"__key__": "month", "rows": rows}}
    reordered = {"by_month": {"__key__": "month", "rows": list(reversed(rows))}}
    assert compare_runs("j", keyed, keyed, reordered).ok

    positional = compare_runs("j", {"rows": rows}, {"rows": rows}, {"rows": list(reversed(rows))})
    assert not positional.ok
    assert FieldDiff("rows[0].month", "2024-01", "2024-03") in positional.differences


def test_flatten_paths() -> None:
    result = {
        "stays_by_chapter": {"I": {"count": 4}},
        "rows": [{"value": 1}, {"value": 2}],
        "codes": {"I21.9": 2},
        "by": {"__key__": ["month", "sex"], "rows": [{"month": "2024-01", "sex": "1", "n": 5, "x": {"y": True}}]},
        "empty": [],
    }
    assert flatten(result) == {
        "stays_by_chapter.I.count": 4,
        "rows[0].value": 1,
        "rows[1].value": 2,
        'codes["I21.9"]': 2,
        'by[month=2024-01,sex="1"].n': 5,
        'by[month=2024-01,sex="1"].x.y': True,
    }
    assert flatten(42) == {"(result)": 42}
    assert flatten([{"__key__": "id", "rows": [{"id": 7, "v": None}]}]) == {"[0][id=7].v": None}


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ({"k": {"__key__": "id", "rows": [{"id": 1}, {"id": 1}]}}, "k: duplicate key [id=1]"),
        ({"k": {"__key__": "id", "rows": [{"v": 1}]}}, "k.rows[0]: record has no key field 'id'"),
        ({"k": {"__key__": "id", "rows": [], "total": 3}}, "k: a keyed collection holds only"),
        ({"k": {"__key__": [], "rows": []}}, "k: '__key__' must name a field"),
    ],
)
def test_malformed_keyed_collections_name_the_path(result: Any, message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        flatten(result)


def test_non_json_values_name_the_path() -> None:
    with pytest.raises(TypeError, match=r"^a\.b\[1\]: set is not JSON-able"):
        flatten({"a": {"b": [1, {2}]}})


# --- failures ----------------------------------------------------------------------


def test_raising_job_fails_alone(dataset: dict[str, bytes]) -> None:
    def broken(reader: DatasetReader) -> dict[str, int]:
        raise RuntimeError("the analysis crashed")

    jobs = [("broken", broken), *DETERMINISTIC_JOBS]
    report = run_shadow(jobs, MappingReader(dataset), MappingReader(dataset))

    assert not report.ok
    broken_result, *others = report.comparisons
    assert broken_result.job == "broken" and not broken_result.ok
    assert broken_result.error == "RuntimeError: the analysis crashed"
    assert broken_result.failed_run == "source"
    assert broken_result.error_location is not None and "in broken" in broken_result.error_location
    assert all(c.ok for c in others) and len(others) == len(DETERMINISTIC_JOBS)
    assert report.to_json()["failed_jobs"] == ["broken"]
    assert "ERROR on the source run — RuntimeError: the analysis crashed" in report.summary()[1]
    json.dumps(report.to_json())


def test_job_failing_only_on_target_is_charged_to_target(dataset: dict[str, bytes]) -> None:
    target = {k: v for k, v in dataset.items() if not k.startswith("patients/")}
    jobs = [("patients_profile", snds.patients_profile)]

    (comparison,) = run_shadow(jobs, MappingReader(dataset), MappingReader(target)).comparisons

    assert comparison.failed_run == "target"
    assert comparison.error is not None and comparison.error.startswith("KeyError:")
    assert "patients/patients.csv" in comparison.error
    assert set(comparison.durations_s) == {"source", "source_again", "target"}


def test_unflattenable_result_is_a_job_failure(dataset: dict[str, bytes]) -> None:
    def returns_a_set(reader: DatasetReader) -> Any:
        return {"codes": {"A", "B"}}

    (comparison,) = run_shadow([("sets", returns_a_set)], MappingReader(dataset), MappingReader(dataset)).comparisons
    assert comparison.error == "TypeError: codes: set is not JSON-able; " + (
        "return str, int, float, bool, None, lists and dicts (e.g. a date as .isoformat())"
    )


def test_propagated_exceptions_are_not_swallowed(dataset: dict[str, bytes]) -> None:
    class Timeout(Exception):
        pass

    def slow(reader: DatasetReader) -> int:
        raise Timeout("task timed out")

    with pytest.raises(Timeout):
        run_shadow([("slow", slow)], MappingReader(dataset), MappingReader(dataset), propagate=(Timeout,))


def test_duplicate_job_names_are_refused(dataset: dict[str, bytes]) -> None:
    reader = MappingReader(dataset)
    with pytest.raises(ValueError, match="patients_profile"):
        run_shadow([("patients_profile", snds.patients_profile)] * 2, reader, reader)


def test_no_jobs_is_ok_and_says_so(dataset: dict[str, bytes]) -> None:
    report = run_shadow([], MappingReader(dataset), MappingReader(dataset))
    assert report.ok and report.summary() == ["shadow run: no shadow jobs declared, nothing compared"]


def test_diff_report_caps_the_listing() -> None:
    source = {f"f{i:03d}": i for i in range(60)}
    target = {k: v + 1 for k, v in source.items()}
    text = compare_runs("j", source, source, target).diff_report()
    assert "60 difference(s) among 60 field(s)" in text
    assert "f049: source=49 target=50" in text and "f050:" not in text
    assert "... and 10 more difference(s)" in text


# --- resolve_job ---------------------------------------------------------------------


def test_resolve_job_imports_the_callable() -> None:
    assert resolve_job("bascule.shadow_jobs.snds:stays_by_icd10_chapter") is snds.stays_by_icd10_chapter


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("bascule.no_such_module:job", "no module named 'bascule.no_such_module'"),
        ("bascule.shadow_jobs.snds:no_such_job", "has no 'no_such_job'"),
        ("bascule.shadow_jobs.snds:STAYS_PREFIX", "'STAYS_PREFIX' is a str, not a callable"),
        ("not a spec", "expected 'package.module:function'"),
    ],
)
def test_resolve_job_errors_name_the_spec(spec: str, reason: str) -> None:
    with pytest.raises(ShadowJobSpecError) as info:
        resolve_job(spec)
    assert repr(spec) in str(info.value)
    assert reason in str(info.value)

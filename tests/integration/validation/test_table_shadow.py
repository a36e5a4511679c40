"""SQL shadow runs on a real source and target database (``pg_pair``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import psycopg2
import pytest

from bascule.exceptions import StoreAccessError
from bascule.synthetic import registry as sp
from bascule.validation import table_shadow as pg_shadow

pytestmark = pytest.mark.integration

SOURCE_DB = "shadow_source"
TARGET_DB = "shadow_target"
PATIENTS = 1000
SEED = 3
DEMO_QUERIES = ("stays_by_icd10_chapter.sql", "dispensations_by_atc_group.sql", "patients_by_department.sql")


def _recreate(cluster, name: str) -> None:
    with closing(cluster.connect()) as admin, admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        cur.execute(f"CREATE DATABASE {name}")


@pytest.fixture(scope="module")
def databases(pg_pair) -> Iterator[None]:
    """The same registry on both sides, plus two small tables that differ on purpose."""
    source, target = pg_pair
    for cluster, name in ((source, SOURCE_DB), (target, TARGET_DB)):
        _recreate(cluster, name)
        with closing(cluster.connect(name)) as conn:
            sp.create_schema(conn)
            sp.populate(conn, PATIENTS, SEED)
            with conn.cursor() as cur:
                cur.execute("CREATE TABLE public.measures (k text, v double precision)")
                cur.execute("CREATE TABLE public.queue (k text, position int)")
    with closing(source.connect(SOURCE_DB)) as conn, conn.cursor() as cur:
        # 0.1 + 0.2 on one side, 0.3 on the other: the last bit of a float sum added in another order.
        cur.execute("INSERT INTO public.measures VALUES ('a', 0.1::float8 + 0.2::float8), ('b', 1.0)")
        cur.execute("INSERT INTO public.queue VALUES ('x', 1), ('y', 2), ('z', 3)")
    with closing(target.connect(TARGET_DB)) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO public.measures VALUES ('a', 0.3), ('b', 1.0)")
        cur.execute("INSERT INTO public.queue VALUES ('x', 3), ('y', 2), ('z', 1)")
    yield
    for cluster, name in ((source, SOURCE_DB), (target, TARGET_DB)):
        with closing(cluster.connect()) as admin, admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def conns(pg_pair, databases) -> Iterator[tuple[object, object]]:
    source, target = pg_pair
    with closing(source.connect(SOURCE_DB)) as s, closing(target.connect(TARGET_DB)) as t:
        yield s, t


def test_the_demo_queries_agree_on_an_identical_copy(conns) -> None:
    source, target = conns
    jobs = [(name.removesuffix(".sql"), pg_shadow.load_query(name), False) for name in DEMO_QUERIES]
    report = pg_shadow.run_sql_shadow_jobs(source, target, jobs, 1e-6, 0.0)
    assert report.ok, report.diff_report()
    assert [c.job for c in report.comparisons] == [
        "stays_by_icd10_chapter",
        "dispensations_by_atc_group",
        "patients_by_department",
    ]
    for comparison in report.comparisons:
        assert comparison.source_rows == comparison.target_rows > 10
        assert comparison.fields_compared == comparison.source_rows * len(comparison.columns)
        assert comparison.non_deterministic == []
        assert set(comparison.durations_s) == {"source", "source_again", "target"}
    assert report.comparisons[0].columns == [
        "icd10_chapter", "admission_year", "stays", "patients", "mean_length_of_stay_days",
    ]  # fmt: skip


def test_a_changed_value_fails_with_both_rows_and_the_counts(pg_pair, conns) -> None:
    source, target = conns
    with target.cursor() as cur:
        cur.execute("SELECT department, sex FROM registry.patients WHERE patient_id = 1")
        department, sex = cur.fetchone()
        cur.execute("UPDATE registry.patients SET sex = %s WHERE patient_id = 1", ("9" if sex != "9" else "1",))
    try:
        jobs = [("patients_by_department", pg_shadow.load_query("patients_by_department.sql"), False)]
        report = pg_shadow.run_sql_shadow_jobs(source, target, jobs)
    finally:
        with target.cursor() as cur:
            cur.execute("UPDATE registry.patients SET sex = %s WHERE patient_id = 1", (sex,))
    assert not report.ok
    (comparison,) = report.comparisons
    # The patient left one (department, sex) group and joined another: two groups changed,
    # or one changed and one appeared if nobody else in the department had that sex.
    kinds = sorted(d.kind for d in comparison.row_differences)
    assert kinds in (["changed", "changed"], ["changed", "extra"])
    moved_out = next(d for d in comparison.row_differences if d.label == f"(department='{department}', sex='{sex}')")
    assert moved_out.kind == "changed" and "patients" in moved_out.columns
    assert moved_out.target["patients"] == moved_out.source["patients"] - 1
    text = report.diff_report()
    assert text.startswith("shadow job 'patients_by_department': FAILED — 2 differing row(s); source ")
    assert f"(department='{department}', sex='{sex}'): patients" in text
    assert f'source {{"department": "{department}", "sex": "{sex}", "patients": {moved_out.source["patients"]}' in text
    summary = report.summary()
    assert summary[0] == "shadow run: 0/1 job(s) ok"
    assert "first: (department=" in summary[1]


def test_tolerance_absorbs_float_rounding_but_not_more(conns) -> None:
    source, target = conns
    jobs = [("measures", "SELECT k, v FROM public.measures", False)]
    exact = pg_shadow.run_sql_shadow_jobs(source, target, jobs)
    assert not exact.ok
    (diff,) = exact.comparisons[0].row_differences
    assert diff.label == "(k='a')" and diff.columns == ("v",)
    assert diff.source == {"k": "a", "v": 0.30000000000000004} and diff.target == {"k": "a", "v": 0.3}
    assert pg_shadow.run_sql_shadow_jobs(source, target, jobs, relative_tolerance=1e-9).ok
    assert pg_shadow.run_sql_shadow_jobs(source, target, jobs, absolute_tolerance=1e-12).ok
    # A real difference is not absorbed: 'b' compared with a changed value.
    scaled = [
        (
            "measures",
            "SELECT k, v * CASE WHEN current_database() = 'shadow_target' THEN 1.001 ELSE 1 END AS v FROM public.measures",
            False,
        )
    ]
    report = pg_shadow.run_sql_shadow_jobs(source, target, scaled, relative_tolerance=1e-6)
    assert [d.label for d in report.comparisons[0].row_differences] == ["(k='a')", "(k='b')"]


def test_columns_that_change_between_two_source_runs_are_set_aside(conns) -> None:
    source, target = conns
    jobs = [
        (
            "with_clock",
            "SELECT department, now() AS asked_at, random() AS draw, count(*) AS patients"
            " FROM registry.patients GROUP BY department",
            False,
        )
    ]
    report = pg_shadow.run_sql_shadow_jobs(source, target, jobs)
    assert report.ok, report.diff_report()
    (comparison,) = report.comparisons
    assert comparison.non_deterministic == ["asked_at", "draw"]
    assert comparison.fields_compared == comparison.source_rows * 2
    assert "2 non-deterministic column(s) excluded (asked_at, draw)" in comparison.headline()

    # Excluded columns do not hide a real difference in the others.
    with target.cursor() as cur:
        cur.execute("SELECT department FROM registry.patients WHERE patient_id = 2")
        original = cur.fetchone()[0]
        moved = "2B" if original == "2A" else "2A"
        cur.execute("UPDATE registry.patients SET department = %s WHERE patient_id = 2", (moved,))
    try:
        failing = pg_shadow.run_sql_shadow_jobs(source, target, jobs)
    finally:
        with target.cursor() as cur:
            cur.execute("UPDATE registry.patients SET department = %s WHERE patient_id = 2", (original,))
    (comparison,) = failing.comparisons
    assert not comparison.ok and comparison.non_deterministic == ["asked_at", "draw"]
    left = next(d for d in comparison.row_differences if d.label == f"(department='{original}')")
    assert left.kind == "changed" and left.columns == ("patients",)
    assert left.target == {"department": original, "patients": left.source["patients"] - 1}


def test_rows_in_a_random_order_are_refused_when_order_matters(conns) -> None:
    source, target = conns
    shuffled = "SELECT department FROM registry.patients GROUP BY department ORDER BY random()"
    report = pg_shadow.run_sql_shadow_jobs(source, target, [("shuffled", shuffled, True)])
    (comparison,) = report.comparisons
    assert not comparison.ok and comparison.failed_run == "source_again"
    assert "the two source runs differ" in comparison.error and "ORDER BY" in comparison.error
    # As a multiset, the same rows in any order are the same answer.
    assert pg_shadow.run_sql_shadow_jobs(source, target, [("shuffled", shuffled, False)]).ok


def test_ordered_jobs_compare_positions_and_unordered_jobs_compare_multisets(conns) -> None:
    source, target = conns
    query = "SELECT k FROM public.queue ORDER BY position"
    as_set = pg_shadow.run_sql_shadow_jobs(source, target, [("queue", query, False)])
    assert as_set.ok
    as_list = pg_shadow.run_sql_shadow_jobs(source, target, [("queue", query, True)])
    assert not as_list.ok
    diffs = as_list.comparisons[0].row_differences
    assert [(d.label, d.source, d.target) for d in diffs] == [
        ("row 1", {"k": "x"}, {"k": "z"}),
        ("row 3", {"k": "z"}, {"k": "x"}),
    ]
    assert "ordered rows" in as_list.comparisons[0].headline()
    # Duplicates count: a multiset, not a set.
    doubled = "SELECT k FROM public.queue CROSS JOIN generate_series(1, CASE WHEN current_database() = 'shadow_target' THEN 2 ELSE 1 END)"
    report = pg_shadow.run_sql_shadow_jobs(source, target, [("doubled", doubled, False)])
    assert sorted((d.kind, d.label) for d in report.comparisons[0].row_differences) == [
        ("extra", "(k='x')"), ("extra", "(k='y')"), ("extra", "(k='z')"),
    ]  # fmt: skip


def test_queries_run_read_only_with_a_timeout(conns) -> None:
    source, target = conns
    with source.cursor() as cur:
        cur.execute("SELECT last_value FROM registry.dispensations_dispensation_id_seq")
        before = cur.fetchone()[0]
    jobs = [
        ("writes", "SELECT nextval('registry.dispensations_dispensation_id_seq')", False),
        ("sleeps", "SELECT pg_sleep(5)", False),
        ("fine", "SELECT count(*) AS n FROM registry.stays;  -- trailing comment", False),
    ]
    report = pg_shadow.run_sql_shadow_jobs(source, target, jobs, statement_timeout_s=0.3)
    writes, sleeps, fine = report.comparisons
    assert writes.failed_run == "source" and "read-only transaction" in writes.error
    assert sleeps.failed_run == "source" and "statement timeout" in sleeps.error and sleeps.durations_s["source"] < 3
    assert fine.ok  # the others still ran
    with source.cursor() as cur:
        cur.execute("SELECT last_value FROM registry.dispensations_dispensation_id_seq")
        assert cur.fetchone()[0] == before
    with pytest.raises(pg_shadow.ShadowQueryError, match="several statements"):
        pg_shadow.run_sql_shadow_jobs(source, target, [("sneaky", "SELECT 1; DELETE FROM registry.stays", False)])


def test_connections_are_left_as_they_were_found(pg_pair, databases) -> None:
    source, target = pg_pair
    with closing(source.connect(SOURCE_DB, autocommit=False)) as s, closing(target.connect(TARGET_DB)) as t:
        report = pg_shadow.run_sql_shadow_jobs(s, t, [("n", "SELECT count(*) FROM registry.patients", False)])
        assert report.ok
        assert s.autocommit is False and t.autocommit is True
        assert s.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE
        with s.cursor() as cur:
            cur.execute("SELECT 1")  # a transaction of the caller's own
        with pytest.raises(ValueError, match="has a transaction open"):
            pg_shadow.run_sql_shadow_jobs(s, t, [("n", "SELECT 1", False)])
        s.rollback()


def test_a_lost_connection_stops_the_run(pg_pair, databases) -> None:
    source, target = pg_pair
    with closing(source.connect(SOURCE_DB)) as s, closing(target.connect(TARGET_DB)) as t:
        with t.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            pid = cur.fetchone()[0]
        with closing(target.connect()) as admin, admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(StoreAccessError, match="shadow target: connection lost") as lost:
            pg_shadow.run_sql_shadow_jobs(s, t, [("n", "SELECT 1", False)])
        assert lost.value.retryable


def test_load_query_stays_inside_the_sql_directory(tmp_path: Path) -> None:
    for name in DEMO_QUERIES:
        assert "registry." in pg_shadow.load_query(name)
    (tmp_path / "sql").mkdir()
    (tmp_path / "secret.sql").write_text("SELECT 'outside'")
    (tmp_path / "sql" / "two.sql").write_text("SELECT 1; SELECT 2;")
    (tmp_path / "sql" / "ok.sql").write_text("-- a; comment\nSELECT ';' AS semicolon, $$;$$ AS dollar;\n")
    directory = tmp_path / "sql"
    for name, message in (
        ("../secret.sql", "must be a file inside"),
        (str(tmp_path / "secret.sql"), "must be a file inside"),
        ("missing.sql", "no such file"),
        ("notes.txt", "expected a .sql file"),
        ("two.sql", "several statements"),
    ):
        with pytest.raises(pg_shadow.ShadowQueryError, match=message):
            pg_shadow.load_query(name, directory)
    assert pg_shadow.load_query("ok.sql", directory).startswith("-- a; comment")

"""Great Expectations table gates on a real target database (``pg_pair``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import closing
from urllib.parse import quote

import pytest
from psycopg2 import sql

from bascule.exceptions import StoreAccessError
from bascule.synthetic import registry as sp
from bascule.validation import table_gates as pg_gates
from bascule.validation import table_suites
from bascule.validation.suites import SuiteConfigError

pytestmark = pytest.mark.integration

SOURCE_DB = "gates_source"
SAME_DB = "gates_same"  # an exact copy
FAULTY_DB = "gates_faulty"  # a copy without some constraints, then damaged
PATIENTS = 800
SEED = 11
SUITE = "hdh_registry_tables"


def _recreate(cluster, name: str) -> None:
    with closing(cluster.connect()) as admin, admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        cur.execute(f"CREATE DATABASE {name}")


def _url(cluster, database: str, password: str | None = None) -> str:
    secret = quote(cluster.password if password is None else password, safe="")
    return f"postgresql://postgres:{secret}@127.0.0.1:{cluster.port}/{database}"


@pytest.fixture(scope="module")
def registry(pg_pair) -> Iterator[dict]:
    """Source, identical copy and damaged copy; yields the source's row counts and foreign keys."""
    source, target = pg_pair
    for cluster, name in ((source, SOURCE_DB), (target, SAME_DB), (target, FAULTY_DB)):
        _recreate(cluster, name)
        with closing(cluster.connect(name)) as conn:
            sp.create_schema(conn)
            sp.populate(conn, PATIENTS, SEED)
    with closing(target.connect(FAULTY_DB)) as conn, conn.cursor() as cur:
        # The target lost constraints (a schema step failed half-way), so bad rows got in.
        cur.execute("ALTER TABLE registry.dispensations DROP CONSTRAINT dispensations_patient_fk")
        cur.execute("ALTER TABLE registry.patients ALTER COLUMN department DROP NOT NULL")
        cur.execute("ALTER TABLE registry.patients DROP CONSTRAINT patients_sex_code")
        cur.execute(
            "DELETE FROM registry.stays WHERE (patient_id, stay_no) = (SELECT patient_id, stay_no FROM registry.stays ORDER BY 1, 2 LIMIT 1)"
        )
        cur.execute("UPDATE registry.patients SET department = NULL WHERE patient_id = 5")
        cur.execute("UPDATE registry.patients SET sex = '3' WHERE patient_id = 7")
        # One orphan replaces one deleted row: the dispensations' row count still matches.
        cur.execute("DELETE FROM registry.dispensations WHERE dispensation_id = 1")
        cur.execute(
            "INSERT INTO registry.dispensations (dispensation_id, patient_id, atc_code, cip13, quantity, dispensed_on)"
            " VALUES (1, 999999, 'N02BE01', '3400930000001', 1.00, DATE '2024-01-01')"
        )
    with closing(source.connect(SOURCE_DB)) as conn, conn.cursor() as cur:
        counts = {}
        for table in sp.TABLES:
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sp.ident(table)))
            counts[table] = cur.fetchone()[0]
        foreign_keys = pg_gates.read_foreign_keys(conn, list(sp.SCHEMAS))
    yield {"counts": counts, "foreign_keys": foreign_keys}
    for cluster, name in ((source, SOURCE_DB), (target, SAME_DB), (target, FAULTY_DB)):
        with closing(cluster.connect()) as admin, admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_foreign_keys_are_read_from_the_source(registry) -> None:
    assert registry["foreign_keys"] == {
        "clinical.Encounter": [  # named as the database shows it, referencing across schemas
            {
                "name": "FK_Encounter_patients_PatientId",
                "columns": ["PatientId"],
                "ref_table": "registry.patients",
                "ref_columns": ["patient_id"],
            }
        ],
        "registry.dispensations": [
            {
                "name": "dispensations_patient_fk",
                "columns": ["patient_id"],
                "ref_table": "registry.patients",
                "ref_columns": ["patient_id"],
            }
        ],
        "registry.stays": [
            {
                "name": "stays_patient_fk",
                "columns": ["patient_id"],
                "ref_table": "registry.patients",
                "ref_columns": ["patient_id"],
            }
        ],
    }


def test_an_identical_copy_passes_every_gate(pg_pair, registry) -> None:
    _, target = pg_pair
    suite = table_suites.load_table_suite(SUITE)
    result = pg_gates.run_table_suites(_url(target, SAME_DB), [suite], registry["counts"], registry["foreign_keys"])
    assert result.success, result.failure_summary()
    assert [o.table for o in result.outcomes] == [
        "registry.patients",
        "registry.stays",
        "registry.dispensations",
        "clinical.Encounter",
    ]
    expectations = {(o.table, r.expectation) for o in result.outcomes for r in o.results}
    assert ("registry.stays", "expect_table_row_count_to_equal") in expectations
    assert ("registry.stays", "expect_compound_columns_to_be_unique") in expectations
    assert ("registry.stays", pg_gates.FK_EXPECTATION) in expectations
    assert ("registry.dispensations", pg_gates.FK_EXPECTATION) in expectations
    # The PascalCase table: GX reads it quoted, its orphan query joins across schemas.
    assert ("clinical.Encounter", "expect_column_values_to_be_in_set") in expectations
    assert ("clinical.Encounter", pg_gates.FK_EXPECTATION) in expectations
    assert result.outcomes[3].rows == registry["counts"][sp.ENCOUNTERS] and result.outcomes[3].id_name == "Id"
    patients = result.outcomes[0]
    assert patients.rows == PATIENTS and patients.id_name == "patient_id"
    assert result.target == f"postgresql://postgres:***@127.0.0.1:{target.port}/{SAME_DB}"
    evidence = json.dumps(result.to_json()) + result.render_html() + "\n".join(result.summary())
    assert target.password not in evidence
    assert "PASSED" in result.render_html()


def test_a_damaged_copy_fails_naming_table_expectation_and_rows(pg_pair, registry) -> None:
    _, target = pg_pair
    suite = table_suites.load_table_suite(SUITE)
    result = pg_gates.run_table_suites(_url(target, FAULTY_DB), [suite], registry["counts"], registry["foreign_keys"])
    assert not result.success
    failed = {
        (o.table, r.expectation, json.dumps(r.kwargs)): r for o in result.outcomes for r in o.results if not r.success
    }
    assert len(failed) == 4, result.failure_summary()

    # A missing row: the stays' count is one short of the source's.
    count = failed[
        ("registry.stays", "expect_table_row_count_to_equal", json.dumps({"value": registry["counts"][sp.STAYS]}))
    ]
    assert count.observed == registry["counts"][sp.STAYS] - 1
    # A NULL in a NOT NULL column, named by its primary key.
    null = failed[("registry.patients", "expect_column_values_to_not_be_null", json.dumps({"column": "department"}))]
    assert null.unexpected_count == 1 and null.unexpected_ids == ["5"]
    # A value outside the value set.
    code = next(r for k, r in failed.items() if k[:2] == ("registry.patients", "expect_column_values_to_be_in_set"))
    assert code.unexpected_count == 1 and code.unexpected_values == ["3"] and code.unexpected_ids == ["7"]
    # An orphan, found although the target has no FK constraint any more.
    orphan = next(r for k, r in failed.items() if k[:2] == ("registry.dispensations", pg_gates.FK_EXPECTATION))
    assert orphan.unexpected_count == 1
    assert orphan.unexpected_values == [{"patient_id": 999999}]
    assert orphan.unexpected_ids == ["1"]
    assert orphan.kwargs["constraint"] == "dispensations_patient_fk"

    # Everything else still passed: the dispensations' count matches, stays have no orphans.
    dispensations = next(o for o in result.outcomes if o.table == "registry.dispensations")
    assert next(r for r in dispensations.results if r.expectation == "expect_table_row_count_to_equal").success
    summary = result.failure_summary()
    for line in (
        "hdh_registry_tables/registry.stays: FAILED expect_table_row_count_to_equal(value=",
        "hdh_registry_tables/registry.patients: FAILED expect_column_values_to_not_be_null(column='department')",
        "1 of 800 rows unexpected; values null; patient_id: 5",
        "hdh_registry_tables/registry.patients: FAILED expect_column_values_to_be_in_set(column='sex'",
        "hdh_registry_tables/registry.dispensations: FAILED unexpected_rows_expectation(constraint='dispensations_patient_fk'",
        "no orphan rows: registry.dispensations(patient_id) -> registry.patients(patient_id)",
        '1 rows unexpected; values {"patient_id": 999999}; dispensation_id: 1',
    ):
        assert line in summary, summary
    assert "FAILED" in result.render_html() and target.password not in result.render_html()
    assert [line.split(":")[0].strip() for line in result.summary()[1:] if "FAILED" in line] == [
        "hdh_registry_tables/registry.patients",
        "hdh_registry_tables/registry.stays",
        "hdh_registry_tables/registry.dispensations",
    ]


def test_missing_table_and_missing_source_count_fail_rather_than_pass(pg_pair, registry) -> None:
    _, target = pg_pair
    suite = {
        "kind": "postgres_tables",
        "suite": "gates_edge",
        "tables": {"registry.nowhere": {"not_null": ["id"]}, "registry.patients": {"row_count": "source"}},
    }
    result = pg_gates.run_table_suites(_url(target, SAME_DB), [suite], {}, {})
    assert not result.success
    nowhere, patients = result.outcomes
    assert nowhere.table == "registry.nowhere" and nowhere.results[0].expectation == "bascule_table_exists"
    assert not patients.success
    assert patients.results[0].error == "no source row count was given for registry.patients"


def test_fk_checks_cover_tables_the_suite_does_not_list(pg_pair, registry) -> None:
    _, target = pg_pair
    suite = {"kind": "postgres_tables", "suite": "gates_fk_only", "foreign_keys": "auto", "tables": {}}
    result = pg_gates.run_table_suites(_url(target, FAULTY_DB), [suite], {}, registry["foreign_keys"])
    assert [(o.table, o.success) for o in result.outcomes] == [
        ("clinical.Encounter", True),  # the PascalCase table's foreign key, across schemas
        ("registry.dispensations", False),
        ("registry.stays", True),
    ]


def test_connection_problems_never_reveal_the_password(pg_pair, registry) -> None:
    _, target = pg_pair
    suite = table_suites.load_table_suite(SUITE)
    wrong = "N0t-the-Passw0rd!"
    with pytest.raises(StoreAccessError) as refused:
        pg_gates.run_table_suites(_url(target, SAME_DB, wrong), [suite], registry["counts"], {})
    assert not refused.value.retryable
    assert "password authentication failed" in str(refused.value)
    assert wrong not in str(refused.value) and quote(wrong, safe="") not in str(refused.value)
    assert refused.value.__cause__ is None and refused.value.__suppress_context__

    closed = f"postgresql://postgres:{quote(target.password, safe='')}@127.0.0.1:1/{SAME_DB}"
    with pytest.raises(StoreAccessError) as unreachable:
        pg_gates.run_table_suites(closed, [suite], registry["counts"], {})
    assert unreachable.value.retryable
    assert target.password not in str(unreachable.value)
    assert "postgresql://postgres:***@127.0.0.1:1/gates_same" in str(unreachable.value)


def test_a_bad_suite_is_refused_before_any_query() -> None:
    suite = {
        "kind": "postgres_tables",
        "suite": "gates_bad",
        "tables": {"registry.patients": {"expectations": [{"expectation": "expect_column_values_to_be_purple"}]}},
    }
    # Port 1: nothing listens; the suite error must come first.
    with pytest.raises(SuiteConfigError, match="unknown expectation 'expect_column_values_to_be_purple'"):
        pg_gates.run_table_suites("postgresql://u:p@127.0.0.1:1/x", [suite], {}, {})


def _builtin_suite() -> dict:
    return table_suites.builtin_table_suite(
        {sp.PATIENTS: ["patient_id"], sp.STAYS: ["patient_id", "stay_no"], sp.DISPENSATIONS: ["dispensation_id"]}
    )


def test_without_a_suite_the_builtin_gates_pass_an_identical_copy(pg_pair, registry) -> None:
    _, target = pg_pair
    result = pg_gates.run_table_suites(
        _url(target, SAME_DB), [_builtin_suite()], registry["counts"], registry["foreign_keys"]
    )
    assert result.success, result.failure_summary()
    expectations = {(o.table, r.expectation) for o in result.outcomes for r in o.results}
    assert (sp.PATIENTS, "expect_table_row_count_to_equal") in expectations
    assert (sp.PATIENTS, "expect_column_values_to_be_unique") in expectations
    assert (sp.STAYS, "expect_compound_columns_to_be_unique") in expectations
    assert (sp.DISPENSATIONS, pg_gates.FK_EXPECTATION) in expectations


def test_a_builtin_gate_failure_names_table_expectation_and_observed_value_in_the_exception_text(
    pg_pair, registry
) -> None:
    from bascule.postgres.validation_phases import failure_message

    _, target = pg_pair
    gates = pg_gates.run_table_suites(
        _url(target, FAULTY_DB), [_builtin_suite()], registry["counts"], registry["foreign_keys"]
    )
    assert not gates.success
    result = {
        "diff_ok": True,
        "gates_ok": gates.success,
        "gates_summary": gates.failure_summary(),
        "gates_uri": "s3://x",
    }
    message = failure_message(result)
    assert message is not None
    stays = registry["counts"][sp.STAYS]
    assert (
        f"{table_suites.BUILTIN_SUITE}/registry.stays: FAILED expect_table_row_count_to_equal(value={stays})"
        f" [row count equals the source's ({stays})]: observed {stays - 1}"
    ) in message, message
    assert f"{table_suites.BUILTIN_SUITE}/registry.dispensations: FAILED {pg_gates.FK_EXPECTATION}(" in message
    assert "999999" in message, message


def test_a_gate_with_nothing_in_scope_passes_and_says_so(pg_pair) -> None:
    _, target = pg_pair
    result = pg_gates.run_table_suites(_url(target, SAME_DB), [table_suites.builtin_table_suite({})], {}, {})
    assert result.success and result.nothing_in_scope and result.outcomes == []
    assert "Nothing in scope to check" in result.render_html()
    # A suite that was meant to check something and checked nothing still fails, and says why.
    empty = pg_gates.GateResult([], "postgresql://postgres:***@127.0.0.1:1/x")
    assert not empty.success
    assert "no table was checked" in empty.failure_summary()

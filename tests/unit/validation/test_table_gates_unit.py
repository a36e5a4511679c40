"""Table suite files and their checks, without a server (nor GX)."""

from __future__ import annotations

import pytest

from bascule.validation import table_gates as pg_gates
from bascule.validation import table_suites
from bascule.validation.suites import SuiteConfigError

pytestmark = pytest.mark.unit


def test_the_demo_suite_loads_and_expands_to_gx_expectations() -> None:
    data = table_suites.load_table_suite("hdh_registry_tables")
    suite = table_suites.parse_table_suite(data)
    assert suite.foreign_keys == "auto"
    assert [t.table for t in suite.tables] == [
        "registry.patients",
        "registry.stays",
        "registry.dispensations",
        "clinical.Encounter",
    ]
    stays = suite.tables[1]
    specs = stays.specs(source_rows=42)
    assert specs[0] == {
        "expectation": "expect_table_row_count_to_equal",
        "kwargs": {"value": 42},
        "description": "row count equals the source's (42)",
    }
    assert {"expectation": "expect_compound_columns_to_be_unique", "kwargs": {"column_list": ["patient_id", "stay_no"]},
            "description": "(patient_id, stay_no) is unique"} in specs  # fmt: skip
    assert specs[-1]["expectation"] == "expect_column_pair_values_a_to_be_greater_than_b"
    # Without a source count, no row count expectation is made up (the run reports it as failed).
    assert all(s["expectation"] != "expect_table_row_count_to_equal" for s in stays.specs(source_rows=None))


def test_a_suite_names_tables_in_the_manifest_syntax() -> None:
    data = {"kind": "postgres_tables", "suite": "x", "tables": {'"public"."t"': {}, '"my.schema"."A ""b"""': {}}}
    assert [t.table for t in table_suites.parse_table_suite(data).tables] == ["public.t", '"my.schema"."A ""b"""']
    with pytest.raises(SuiteConfigError, match="use schema.table"):
        table_suites.parse_table_suite({"kind": "postgres_tables", "suite": "x", "tables": {'"open.t': {}}})


def test_suite_problems_are_all_named() -> None:
    with pytest.raises(SuiteConfigError) as raised:
        table_suites.parse_table_suite(
            {
                "kind": "postgres_tables",
                "suite": "x",
                "foreign_keys": "sometimes",
                "tables": {
                    "patients": {},
                    "registry.stays": {"row_count": "target", "unique": [["one"]], "colour": "red"},
                    "registry.dispensations": {"regex": {"cip13": "("}, "value_sets": {"atc": []}},
                },
            },
            where="test suite",
        )
    message = str(raised.value)
    for fragment in (
        "'foreign_keys' must be 'auto' or 'none'",
        "tables.patients: use schema.table",
        "tables.registry.stays.row_count must be 'source'",
        "tables.registry.stays: unknown field(s) ['colour']",
        "tables.registry.stays.unique: ['one'] is not a column or column list",
        "tables.registry.dispensations.regex.cip13",
        "tables.registry.dispensations.value_sets must map columns to non-empty lists",
    ):
        assert fragment in message, message


def test_suite_names_cannot_point_outside_the_expectations_directory() -> None:
    with pytest.raises(SuiteConfigError, match="must match"):
        table_suites.load_table_suite("../secrets")
    with pytest.raises(SuiteConfigError, match="cannot read"):
        table_suites.load_table_suite("no_such_suite")


def test_orphan_query_anti_joins_on_every_fk_column() -> None:
    query = pg_gates._orphan_query({"columns": ["a", "b"], "ref_table": "s.parent", "ref_columns": ["x", "y"]}, ["id"])
    assert query == (
        'SELECT c."id", c."a", c."b" FROM {batch} AS c LEFT JOIN "s"."parent" AS p '
        'ON p."x" = c."a" AND p."y" = c."b" WHERE c."a" IS NOT NULL AND c."b" IS NOT NULL AND p."x" IS NULL'
    )


def test_the_target_url_is_shown_without_its_password() -> None:
    url, shown, secrets = pg_gates._target_url("postgresql://app:p%40ss%2Fw0rd@db.example:5432/registry")
    assert url == "postgresql+psycopg2://app:p%40ss%2Fw0rd@db.example:5432/registry"
    assert shown == "postgresql://app:***@db.example:5432/registry"
    assert pg_gates._scrub("failed for p@ss/w0rd and p%40ss%2Fw0rd", secrets) == "failed for *** and ***"
    with pytest.raises(pg_gates.PgGateError, match="must be postgresql"):
        pg_gates._target_url("mysql://u:p@h/db")


def test_foreign_keys_are_taken_in_the_inventory_shape_or_spelled_out() -> None:
    inventory = {
        "registry.stays": [
            {
                "name": "stays_patient_fk",
                "columns": ["patient_id"],
                "ref_table": "registry.patients",
                "ref_columns": ["patient_id"],
                "definition": "FOREIGN KEY (patient_id) REFERENCES registry.patients(patient_id)",
            }
        ],
        "registry.dispensations": [
            {"columns": ["patient_id"], "referenced_table": "registry.patients", "referenced_columns": ["patient_id"]}
        ],
    }
    assert pg_gates.normalise_foreign_keys(inventory) == {
        "registry.stays": [
            {"name": "stays_patient_fk", "columns": ["patient_id"], "ref_table": "registry.patients",
             "ref_columns": ["patient_id"]}
        ],
        "registry.dispensations": [
            {"name": None, "columns": ["patient_id"], "ref_table": "registry.patients", "ref_columns": ["patient_id"]}
        ],
    }  # fmt: skip
    with pytest.raises(pg_gates.PgGateError, match="needs 'columns', 'ref_table'"):
        pg_gates.normalise_foreign_keys({"t.c": [{"columns": ["a", "b"], "ref_table": "t.p", "ref_columns": ["x"]}]})

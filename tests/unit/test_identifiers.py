"""The one text form of PostgreSQL names (bascule.identifiers): every legal form, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bascule.exceptions import ManifestError
from bascule.identifiers import (
    IdentifierError,
    format_name,
    parse_name,
    qualified_name,
    split_columns,
    split_qualified,
)
from bascule.workload import parse_manifest


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("public.patients", ("public", "patients")),
        ("clinical.Encounter", ("clinical", "Encounter")),  # as the database shows it: no case folding
        ("ClinicalData.Encounter", ("ClinicalData", "Encounter")),
        ("Clinical Data.Patient Visits", ("Clinical Data", "Patient Visits")),
        ("données.séjour_été", ("données", "séjour_été")),
        ("select.from", ("select", "from")),  # reserved words are names like any other
        ("a$b.$c", ("a$b", "$c")),
        ('"my.schema"."Encounter ""v2"""', ("my.schema", 'Encounter "v2"')),
        ('"public"."patients"', ("public", "patients")),  # quoting a part that needs none is allowed
        ('"my.schema".plain', ("my.schema", "plain")),
        ('"  padded  ".t', ("  padded  ", "t")),
        ('"".""""', None),
    ],
)
def test_every_legal_form_reads_as_the_database_stores_it(text: str, parts: tuple[str, str] | None) -> None:
    if parts is None:
        with pytest.raises(IdentifierError, match="empty part"):
            split_qualified(text)
        return
    assert split_qualified(text) == parts
    assert split_qualified(qualified_name(*parts)) == parts


def test_the_written_form_quotes_only_what_needs_it() -> None:
    assert qualified_name("clinical", "Encounter") == "clinical.Encounter"
    assert qualified_name("Clinical Data", "select") == "Clinical Data.select"
    assert qualified_name("my.schema", 'Encounter "v2"') == '"my.schema"."Encounter ""v2"""'
    assert format_name(" lead") == '" lead"'
    assert format_name('"') == '""""'


def test_one_name_and_columns_for_catalogue_lookups() -> None:
    assert parse_name("Clinical Data") == "Clinical Data"
    assert parse_name('"my.schema"') == "my.schema"
    with pytest.raises(IdentifierError, match="2 dot-separated parts where one name is expected"):
        parse_name("my.schema")
    assert split_columns(["a.b", '"c.d".E']) == (["a", "c.d"], ["b", "E"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('"clinical.Encounter', "unbalanced double quote"),
        ('clinical."Encounter', "unbalanced double quote"),
        ('"clinical"x.t', "a quoted part must end at a dot"),
        ('clin"ical.t', "a double quote inside an unquoted part"),
        ("clinical..Encounter", "empty part"),
        (".Encounter", "empty part"),
        ("clinical.", "empty part"),
        ("", "empty part"),
        ("a.b.c", "has 3 parts: a table is written schema.table"),
        ("patients", "table 'patients' must be schema-qualified, e.g. public.patients"),
        ("clinical. Encounter", "begins or ends with white space"),
        ("x" * 64 + ".t", "is 64 bytes in UTF-8, over PostgreSQL's 63"),
        ("é" * 32 + ".t", "is 64 bytes in UTF-8, over PostgreSQL's 63"),  # bytes, not characters
        ('"a\x00b".t', "NUL"),
    ],
)
def test_a_malformed_name_is_refused_with_the_fix(text: str, message: str) -> None:
    with pytest.raises(IdentifierError, match=message) as caught:
        split_qualified(text)
    if "63" not in message and "NUL" not in message:
        assert "docs/workloads.md#identifiers" in str(caught.value)


def test_63_bytes_is_the_limit_not_63_characters() -> None:
    assert split_qualified("é" * 31 + "x." + "t") == ("é" * 31 + "x", "t")  # 63 bytes


_PART = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), min_size=1, max_size=20)


@given(_PART, _PART)
def test_any_pair_of_names_survives_the_round_trip(schema: str, table: str) -> None:
    assert split_qualified(qualified_name(schema, table)) == (schema, table)


_DOTTED = '"my.schema"."Encounter ""v2"""'


def _manifest(tables: str, schemas: str = "[registry]") -> str:
    return f"""
id: ident_test
kind: postgres
description: d
owner: o
source: {{conn_id: c, database: db, schemas: {schemas}, application_roles: [app], tables: {tables}}}
target: {{conn_id: c, database: db, region: fr-par}}
evidence: {{conn_id: c, bucket: evidence-bucket, region: fr-par}}
approvals: {{approvers: [a], required: 1}}
cutover:
  window: {{timezone: Europe/Paris, days: [sunday], start: "02:00", end: "05:00"}}
"""


def test_the_manifest_takes_every_form_and_keeps_one_spelling() -> None:
    workload = parse_manifest(
        Path("w.yaml"),
        _manifest(
            "['clinical.Encounter', '\"public\".\"patients\"', '" + _DOTTED + "']",
            """[ClinicalData, 'Clinical Data', '"my.schema"']""",
        ),
    )
    assert workload.source.schemas == ["ClinicalData", "Clinical Data", "my.schema"]  # type: ignore[union-attr]
    assert workload.source.tables == [  # type: ignore[union-attr]
        "clinical.Encounter",
        "public.patients",
        _DOTTED,
    ]


def test_a_malformed_manifest_name_names_the_file_the_field_and_the_fix() -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(Path("include/workloads/w.yaml"), _manifest("""['clinical."Encounter']"""))
    text = str(caught.value)
    assert "include/workloads/w.yaml" in text
    assert "field 'source.tables'" in text
    assert "unbalanced double quote" in text and "docs/workloads.md#identifiers" in text
    with pytest.raises(ManifestError, match=r"field 'source.schemas'.*over PostgreSQL's 63"):
        parse_manifest(Path("w.yaml"), _manifest("[]", f"[{'s' * 64}]"))


def test_slot_names_stay_valid_and_distinct_for_long_workload_ids() -> None:
    prefix = "registry_of_every_hospital_stay_in_the_region_of_paris_and_"  # 59: over 63 with bascule_
    names = set()
    for suffix in ("a", "b"):
        text = _manifest("[]").replace("id: ident_test", f"id: {prefix}{suffix}")
        workload = parse_manifest(Path("w.yaml"), text)
        name = workload.slot_name()  # type: ignore[union-attr]
        # Slots allow [a-z0-9_] and 63 bytes; publication and subscription share the name.
        assert len(name) <= 63 and all(c.islower() or c.isdigit() or c == "_" for c in name), name
        assert name == workload.slot_name()  # type: ignore[union-attr]  # deterministic
        names.add(name)
    assert len(names) == 2
    short = parse_manifest(Path("w.yaml"), _manifest("[]"))
    assert short.slot_name() == "bascule_ident_test"  # type: ignore[union-attr]

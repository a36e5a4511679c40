"""Workload manifests: what loads, what is refused, and what the refusal says.

Every refusal must name the manifest FILE and the FIELD (dotted, as in the YAML)
and say what was expected, because the message is all an operator sees in the
``bascule_invalid_manifest_<stem>`` DAG.
"""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pendulum
import pytest

from bascule.exceptions import ManifestError
from bascule.window_schedule import next_window_opening
from bascule.workload import (
    MaintenanceWindow,
    ObjectStoreWorkload,
    PostgresWorkload,
    load_manifests,
    parse_manifest,
)

pytestmark = pytest.mark.unit

WORKLOADS_DIR = Path(__file__).resolve().parents[2] / "include" / "workloads"

# Self-contained copies (not the shipped files) so these tests do not move when a
# shipped manifest is edited.
OBJECT_STORE = """\
id: demo_extracts
kind: object_store
description: Synthetic extracts for the manifest tests.
owner: data-platform
source:
  conn_id: hdh_azure_blob
  container: demo-extracts
  prefix: ""
target:
  conn_id: hdh_scaleway_s3
  bucket: hdh-demo-extracts
  prefix: ""
  region: fr-par
  create_if_missing: true
evidence: {conn_id: hdh_scaleway_evidence, bucket: hdh-demo-evidence, region: fr-par}
validation:
  suites: [demo_extracts_content]
approvals:
  approvers: [approver1, approver2]
  required: 1
cutover:
  routing: routing_registry
  window:
    timezone: Europe/Paris
    days: [saturday, sunday]
    start: "02:00"
    end: "05:00"
policy:
  allowed_regions: [fr-par]
"""

POSTGRES = """\
id: registry_catalogue
kind: postgres
description: Registry catalogue tables.
owner: data-platform
source:
  conn_id: hdh_azure_postgres
  database: registry
  schemas: [catalogue]
  tables: [catalogue.datasets]
  application_roles: [registry_app]
target:
  conn_id: hdh_scaleway_postgres
  database: registry
  region: fr-par
evidence:
  conn_id: hdh_scaleway_s3
  bucket: hdh-migration-evidence
  region: fr-par
approvals:
  approvers: [approver1]
cutover:
  window:
    timezone: Europe/Paris
    days: [sunday]
    start: "02:00"
    end: "05:00"
"""


def _edit(base: str, old: str, new: str) -> str:
    """Replace one exact, unique fragment, so a case cannot silently test nothing."""
    assert base.count(old) == 1, f"fragment {old!r} must occur exactly once in the base manifest"
    return base.replace(old, new)


def os_edit(old: str, new: str) -> str:
    return _edit(OBJECT_STORE, old, new)


def pg_edit(old: str, new: str) -> str:
    return _edit(POSTGRES, old, new)


# (id, manifest text, substrings the error must contain). Each list names the field
# (``field '<dotted.path>'``) and what was expected; the file path is checked for all.
MALFORMED: list[tuple[str, str, list[str]]] = [
    # --- missing required fields
    ("missing_id", os_edit("id: demo_extracts\n", ""), ["field 'id': required field is missing"]),
    (
        "missing_kind",
        os_edit("kind: object_store\n", ""),
        ["field 'kind': required field is missing", "expected 'object_store' or 'postgres'"],
    ),
    (
        "missing_source",
        os_edit('source:\n  conn_id: hdh_azure_blob\n  container: demo-extracts\n  prefix: ""\n', ""),
        ["field 'source': required field is missing"],
    ),
    (
        "missing_target_bucket",
        os_edit("  bucket: hdh-demo-extracts\n", ""),
        ["field 'target.bucket': required field is missing"],
    ),
    (
        "missing_target_region",
        os_edit("  region: fr-par\n", ""),
        ["field 'target.region': required field is missing"],
    ),
    (
        "missing_approvals",
        os_edit("approvals:\n  approvers: [approver1, approver2]\n  required: 1\n", ""),
        ["field 'approvals': required field is missing"],
    ),
    (
        "missing_cutover",
        os_edit(
            "cutover:\n  routing: routing_registry\n  window:\n    timezone: Europe/Paris\n"
            '    days: [saturday, sunday]\n    start: "02:00"\n    end: "05:00"\n',
            "",
        ),
        ["field 'cutover': required field is missing"],
    ),
    (
        "missing_window_start",
        os_edit('    start: "02:00"\n', ""),
        ["field 'cutover.window.start': required field is missing"],
    ),
    # --- wrong types
    (
        "approvals_required_as_word",
        os_edit("required: 1", "required: two"),
        ["field 'approvals.required'", "valid integer", "'two'"],
    ),
    (
        "approvals_required_zero",
        os_edit("required: 1", "required: 0"),
        ["field 'approvals.required'", "greater than or equal to 1", "got 0"],
    ),
    (
        "create_if_missing_as_list",
        os_edit("create_if_missing: true", "create_if_missing: [true]"),
        ["field 'target.create_if_missing'", "valid boolean", "[True]"],
    ),
    # --- kind and unknown fields
    (
        "unknown_kind",
        os_edit("kind: object_store", "kind: blob_storage"),
        ["field 'kind': expected 'object_store' or 'postgres', got 'blob_storage'"],
    ),
    (
        "typo_tagret",
        os_edit("target:\n", "tagret:\n"),
        [
            "field 'tagret': unknown field (check its spelling in docs/workloads.md)",
            "field 'target': required field is missing",
        ],
    ),
    (
        "typo_nested_timezone",
        os_edit("    timezone: Europe/Paris", "    timezone: Europe/Paris\n    time_zone: UTC"),
        ["field 'cutover.window.time_zone': unknown field"],
    ),
    # --- region
    (
        "region_not_scaleway",
        os_edit("  region: fr-par", "  region: eu-west-1"),
        ["field 'target.region': expected 'fr-par', 'nl-ams' or 'pl-waw', got 'eu-west-1'"],
    ),
    (
        "allowed_region_not_scaleway",
        os_edit("allowed_regions: [fr-par]", "allowed_regions: [fr-par, francecentral]"),
        ["field 'policy.allowed_regions[1]'", "'fr-par', 'nl-ams' or 'pl-waw'", "got 'francecentral'"],
    ),
    # --- the file is not a manifest at all
    (
        "yaml_unclosed_bracket",
        "id: demo\nvalidation:\n  suites: [a, b\nowner: me\n",
        ["not valid YAML at line 4, column 6", "did not find expected ',' or ']'"],
    ),
    (
        "yaml_bad_indentation",
        "id: demo\n  kind: object_store\nowner: me\n",
        ["not valid YAML at line 2, column 7", "mapping values are not allowed"],
    ),
    (
        "top_level_list",
        "- id: demo_extracts\n- kind: object_store\n",
        ["expected a mapping of fields at the top level, got list"],
    ),
    ("empty_file", "", ["expected a mapping of fields at the top level, got NoneType"]),
    # --- identifiers and names
    (
        "conn_id_with_spaces",
        os_edit("conn_id: hdh_azure_blob", "conn_id: hdh azure blob"),
        ["field 'source.conn_id': expected an Airflow connection id", "got 'hdh azure blob'"],
    ),
    (
        "conn_id_with_slash",
        os_edit("conn_id: hdh_scaleway_s3", "conn_id: hdh/scaleway"),
        ["field 'target.conn_id': expected an Airflow connection id", "got 'hdh/scaleway'"],
    ),
    (
        "workload_id_uppercase",
        os_edit("id: demo_extracts", "id: Demo_Extracts"),
        ["field 'id': expected a workload id of lowercase letters", "got 'Demo_Extracts'"],
    ),
    (
        "workload_id_starts_with_digit",
        os_edit("id: demo_extracts", "id: 2026_extracts"),
        ["field 'id': expected a workload id", "starting with a letter", "got '2026_extracts'"],
    ),
    (
        "container_uppercase",
        os_edit("container: demo-extracts", "container: Demo-Extracts"),
        ["field 'source.container': expected an Azure container name", "got 'Demo-Extracts'"],
    ),
    (
        "container_double_dash",
        os_edit("container: demo-extracts", "container: demo--extracts"),
        ["field 'source.container': expected an Azure container name", "single '-'", "got 'demo--extracts'"],
    ),
    (
        "bucket_underscore",
        os_edit("bucket: hdh-demo-extracts", "bucket: hdh_demo_extracts"),
        ["field 'target.bucket': expected an S3 bucket name", "got 'hdh_demo_extracts'"],
    ),
    (
        "bucket_double_dot",
        os_edit("bucket: hdh-demo-extracts", "bucket: hdh..extracts"),
        ["field 'target.bucket': expected an S3 bucket name", "got 'hdh..extracts'"],
    ),
    (
        "validation_suite_name",
        os_edit("suites: [demo_extracts_content]", "suites: [Demo-Suite]"),
        ["field 'validation.suites[0]': expected a suite name", "got 'Demo-Suite'"],
    ),
    # --- prefixes
    (
        "source_prefix_leading_slash",
        os_edit('  prefix: ""\ntarget:', '  prefix: "/2026/"\ntarget:'),
        ["field 'source.prefix'", "remove the leading '/'", "got '/2026/'"],
    ),
    (
        "target_prefix_no_trailing_slash",
        os_edit('  prefix: ""\n  region', '  prefix: "snds"\n  region'),
        ["field 'target.prefix'", "must end with '/'", "got 'snds'"],
    ),
    # --- maintenance window
    (
        "unknown_timezone",
        os_edit("timezone: Europe/Paris", "timezone: Europe/Pariss"),
        ["field 'cutover.window.timezone'", "unknown IANA timezone 'Europe/Pariss'"],
    ),
    (
        "unquoted_time_sexagesimal",
        # YAML 1.1 reads unquoted 2:00 as the base-60 integer 120.
        os_edit('start: "02:00"', "start: 2:00"),
        ["field 'cutover.window.start'", 'write times quoted as "HH:MM"', "got 120"],
    ),
    (
        "unquoted_time_evening",
        os_edit('end: "05:00"', "end: 23:00"),
        ["field 'cutover.window.end'", 'write times quoted as "HH:MM"', "got 1380"],
    ),
    (
        "time_out_of_range",
        os_edit('end: "05:00"', 'end: "24:00"'),
        ["field 'cutover.window.end'", "valid time format", "got '24:00'"],
    ),
    (
        "window_start_equals_end",
        os_edit('end: "05:00"', 'end: "02:00"'),
        ["field 'cutover.window'", "start and end are equal: the window would be empty"],
    ),
    (
        "window_no_days",
        os_edit("days: [saturday, sunday]", "days: []"),
        ["field 'cutover.window.days'", "at least 1 item", "got []"],
    ),
    (
        "window_unknown_weekday",
        os_edit("days: [saturday, sunday]", "days: [saturday, sundy]"),
        ["field 'cutover.window.days[1]'", "'monday'", "'sunday'", "got 'sundy'"],
    ),
    (
        "window_weekday_capitalised",
        os_edit("days: [saturday, sunday]", "days: [Sunday]"),
        ["field 'cutover.window.days[0]'", "got 'Sunday'"],
    ),
    (
        "unknown_routing",
        os_edit("routing: routing_registry", "routing: dns"),
        ["field 'cutover.routing': expected 'routing_registry', got 'dns'"],
    ),
    # --- approvals
    (
        "approvals_unreachable_quorum",
        os_edit("required: 1", "required: 3"),
        ["field 'approvals.required'", "required=3 approvals can never be reached with 2 approver(s)"],
    ),
    (
        "approvals_duplicate_approver",
        os_edit("approvers: [approver1, approver2]", "approvers: [approver1, approver1]"),
        ["field 'approvals.approvers'", "approvers must be listed once each"],
    ),
    (
        "approvals_no_approver",
        os_edit("approvers: [approver1, approver2]", "approvers: []"),
        ["field 'approvals.approvers'", "at least 1 item"],
    ),
    # --- policy
    (
        "widened_regions_without_justification",
        os_edit("allowed_regions: [fr-par]", "allowed_regions: [fr-par, nl-ams]"),
        ["field 'policy'", "allowing region(s) ['nl-ams'] beyond the HDS default ['fr-par'] needs a 'justification'"],
    ),
    (
        "widened_regions_blank_justification",
        os_edit("allowed_regions: [fr-par]", 'allowed_regions: [pl-waw]\n  justification: "   "'),
        ["field 'policy'", "['pl-waw']", "needs a 'justification'"],
    ),
    # --- shadow run
    (
        "shadow_job_callable_and_query",
        OBJECT_STORE
        + "shadow_run:\n  jobs:\n    - name: counts\n      callable: jobs.counts:run\n      query: sql/counts.sql\n",
        ["field 'shadow_run.jobs[0]'", "exactly one of 'callable' or 'query'"],
    ),
    (
        "shadow_job_neither",
        OBJECT_STORE + "shadow_run:\n  jobs:\n    - name: counts\n",
        ["field 'shadow_run.jobs[0]'", "exactly one of 'callable' or 'query'"],
    ),
    (
        "shadow_job_bad_callable",
        OBJECT_STORE + "shadow_run:\n  jobs:\n    - name: counts\n      callable: jobs/counts.py\n",
        ["field 'shadow_run.jobs[0].callable'", "a callable path 'package.module:function'"],
    ),
    # --- postgres
    (
        "postgres_table_not_schema_qualified",
        pg_edit("tables: [catalogue.datasets]", "tables: [catalogue.datasets, datasets]"),
        ["field 'source.tables'", "table 'datasets' must be schema-qualified"],
    ),
    (
        "postgres_with_container",
        pg_edit("  database: registry\n  schemas", "  database: registry\n  container: registry\n  schemas"),
        ["field 'source.container': unknown field"],
    ),
    (
        "postgres_with_bucket",
        pg_edit(
            "  database: registry\n  region: fr-par", "  database: registry\n  region: fr-par\n  bucket: hdh-registry"
        ),
        ["field 'target.bucket': unknown field"],
    ),
    (
        "postgres_empty_schemas",
        pg_edit("schemas: [catalogue]", "schemas: []"),
        ["field 'source.schemas'", "at least 1 item"],
    ),
    (
        "postgres_bad_database",
        pg_edit("  database: registry\n  schemas", "  database: my-registry\n  schemas"),
        ["field 'source.database': expected a PostgreSQL identifier", "got 'my-registry'"],
    ),
    (
        "object_store_with_postgres_fields",
        os_edit("  container: demo-extracts", "  container: demo-extracts\n  database: registry"),
        ["field 'source.database': unknown field"],
    ),
    # --- text
    (
        "empty_description",
        os_edit("description: Synthetic extracts for the manifest tests.", 'description: ""'),
        ["field 'description'", "at least 1 character"],
    ),
    (
        "blank_description",
        os_edit("description: Synthetic extracts for the manifest tests.", 'description: "   "'),
        ["field 'description'", "at least 1 character"],
    ),
    (
        "null_owner",
        os_edit("owner: data-platform", "owner:"),
        ["field 'owner'", "valid string", "got None"],
    ),
]


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_table_covers_enough_cases() -> None:
    assert len(MALFORMED) >= 24
    assert len({case_id for case_id, _, _ in MALFORMED}) == len(MALFORMED)


# ---------------------------------------------------------------- good manifests


def test_shipped_manifests_all_load() -> None:
    loaded = load_manifests(WORKLOADS_DIR)
    assert loaded, f"no manifest found in {WORKLOADS_DIR}"
    errors = [str(item.error) for item in loaded if item.error is not None]
    assert errors == []
    assert all(item.workload is not None for item in loaded)


def test_shipped_snds_extracts_reads_as_written() -> None:
    path = WORKLOADS_DIR / "snds_extracts.yaml"
    workload = parse_manifest(path, path.read_text(encoding="utf-8"))
    assert isinstance(workload, ObjectStoreWorkload)
    assert workload.id == "snds_extracts"
    assert workload.target.region == "fr-par"
    assert workload.target.bucket == "hdh-snds-extracts"
    assert workload.source.container == "snds-extracts"
    assert workload.cutover.window.start == time(0, 0)
    assert workload.cutover.window.end == time(23, 59)
    assert len(workload.cutover.window.days) == 7, "the demo cuts over whenever it runs"
    assert workload.policy.allowed_regions == ["fr-par"]
    assert [job.name for job in workload.shadow_run.jobs] == [
        "stays_by_icd10_chapter",
        "dispensations_by_atc_group",
        "patients_profile",
    ]
    assert workload.validation.suites == ["snds_extracts_content"]


def test_postgres_manifest_and_its_defaults(tmp_path: Path) -> None:
    minimal = pg_edit("  schemas: [catalogue]\n  tables: [catalogue.datasets]\n", "")
    workload = parse_manifest(tmp_path / "registry.yaml", minimal)
    assert isinstance(workload, PostgresWorkload)
    assert workload.source.schemas == ["public"]
    assert workload.source.tables == []
    assert workload.target.create_if_missing is False
    assert workload.approvals.required == 1
    assert workload.cutover.routing == "routing_registry"
    assert workload.policy.allowed_regions == ["fr-par"]
    assert workload.policy.justification is None
    assert workload.validation.suites == []
    assert workload.shadow_run.jobs == []
    assert workload.source.tables_without_primary_key == []
    assert workload.transfer.concurrency == 4
    assert workload.replication.max_lag_seconds == 30.0
    assert workload.slot_name() == "bascule_registry_catalogue"


def test_object_store_manifest_without_evidence_names_the_field_and_the_fix(tmp_path: Path) -> None:
    text = os_edit("evidence: {conn_id: hdh_scaleway_evidence, bucket: hdh-demo-evidence, region: fr-par}\n", "")
    with pytest.raises(ManifestError) as error:
        parse_manifest(tmp_path / "extracts.yaml", text)
    message = str(error.value)
    assert "extracts.yaml" in message
    assert "field 'evidence': required field is missing" in message
    assert "never the data bucket" in message and "docs/workloads.md#evidence" in message


def test_object_store_evidence_bucket_cannot_be_the_data_bucket(tmp_path: Path) -> None:
    text = os_edit("bucket: hdh-demo-evidence,", "bucket: hdh-demo-extracts,")
    with pytest.raises(ManifestError) as error:
        parse_manifest(tmp_path / "extracts.yaml", text)
    assert "evidence.bucket 'hdh-demo-extracts' is the data bucket (target.bucket)" in str(error.value)


def test_object_store_evidence_is_locked_by_default_or_justified(tmp_path: Path) -> None:
    workload = parse_manifest(tmp_path / "extracts.yaml", OBJECT_STORE)
    assert (workload.evidence.bucket, workload.evidence.object_lock) == ("hdh-demo-evidence", True)
    assert (workload.evidence.lock_mode, workload.evidence.retention_days) == ("COMPLIANCE", 2190)
    unjustified = os_edit("region: fr-par}", "region: fr-par, object_lock: false}")
    with pytest.raises(ManifestError) as error:
        parse_manifest(tmp_path / "extracts.yaml", unjustified)
    assert "evidence.object_lock: false needs an evidence.justification" in str(error.value)


def test_postgres_manifest_needs_application_roles_and_evidence(tmp_path: Path) -> None:
    text = pg_edit("  application_roles: [registry_app]\n", "")
    text = _edit(
        text, "evidence:\n  conn_id: hdh_scaleway_s3\n  bucket: hdh-migration-evidence\n  region: fr-par\n", ""
    )
    with pytest.raises(ManifestError) as error:
        parse_manifest(tmp_path / "registry.yaml", text)
    message = str(error.value)
    assert "field 'source.application_roles': required field is missing" in message
    assert "field 'evidence': required field is missing" in message


def test_postgres_shadow_jobs_are_sql_files(tmp_path: Path) -> None:
    text = (
        POSTGRES
        + "shadow_run:\n  jobs:\n    - {name: by_year, callable: 'bascule.shadow_jobs.snds:patients_profile'}\n"
    )
    with pytest.raises(ManifestError, match="postgres workloads run SQL files from include/sql/"):
        parse_manifest(tmp_path / "registry.yaml", text)
    ok = POSTGRES + "shadow_run:\n  jobs:\n    - {name: by_year, query: by_year.sql, ordered: true}\n"
    assert parse_manifest(tmp_path / "registry.yaml", ok).shadow_run.jobs[0].ordered is True


def test_tables_without_primary_key_must_be_qualified(tmp_path: Path) -> None:
    text = pg_edit(
        "  application_roles: [registry_app]\n",
        "  application_roles: [registry_app]\n  tables_without_primary_key: [audit_log]\n",
    )
    with pytest.raises(ManifestError, match="tables_without_primary_key.*must be schema-qualified"):
        parse_manifest(tmp_path / "registry.yaml", text)


def test_object_store_defaults(tmp_path: Path) -> None:
    text = os_edit('  prefix: ""\ntarget:', "target:")
    text = _edit(text, "  create_if_missing: true\n", "")
    workload = parse_manifest(tmp_path / "m.yaml", text)
    assert isinstance(workload, ObjectStoreWorkload)
    assert workload.source.prefix == ""
    assert workload.target.create_if_missing is False


def test_widened_regions_with_justification_are_accepted(tmp_path: Path) -> None:
    text = os_edit(
        "allowed_regions: [fr-par]",
        "allowed_regions: [fr-par, nl-ams]\n  justification: non-health reference data, DPO ticket 42",
    )
    workload = parse_manifest(tmp_path / "m.yaml", text)
    assert workload.policy.allowed_regions == ["fr-par", "nl-ams"]


def test_shadow_jobs_and_folder_prefixes_are_accepted(tmp_path: Path) -> None:
    text = os_edit('  prefix: ""\ntarget:', '  prefix: "2026/01/"\ntarget:')
    text += "shadow_run:\n  jobs:\n    - name: counts\n      callable: jobs.counts:run\n    - name: totals\n      callable: jobs.counts:totals\n"
    workload = parse_manifest(tmp_path / "m.yaml", text)
    assert workload.source.prefix == "2026/01/"
    assert [job.name for job in workload.shadow_run.jobs] == ["counts", "totals"]


def test_object_store_shadow_jobs_are_callables_not_sql(tmp_path: Path) -> None:
    text = OBJECT_STORE + "shadow_run:\n  jobs:\n    - name: totals\n      query: sql/totals.sql\n"
    with pytest.raises(ManifestError) as caught:
        parse_manifest(tmp_path / "m.yaml", text)
    assert "field 'shadow_run'" in str(caught.value)
    assert "shadow job 'totals': object_store workloads run Python callables" in str(caught.value)


# ---------------------------------------------------------------- malformed manifests


@pytest.mark.parametrize(("text", "expected"), [pytest.param(t, e, id=i) for i, t, e in MALFORMED])
def test_malformed_manifest_names_file_and_field(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = _write(tmp_path, "broken_manifest.yaml", text)
    with pytest.raises(ManifestError) as caught:
        parse_manifest(path, path.read_text(encoding="utf-8"))
    error = caught.value
    message = str(error)
    assert error.path == str(path)
    assert message.startswith(f"invalid workload manifest {path}:\n  - ")
    assert error.problems, "a refusal must list at least one problem"
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
        assert any(fragment in problem for problem in error.problems), f"{fragment!r} not in {error.problems}"

    # load_manifests reports the same refusal instead of raising.
    [loaded] = load_manifests(tmp_path)
    assert loaded.workload is None
    assert loaded.error is not None
    assert loaded.error.problems == error.problems


def test_every_problem_is_reported_not_only_the_first(tmp_path: Path) -> None:
    text = os_edit("id: demo_extracts", "id: Demo")
    text = _edit(text, "  region: fr-par", "  region: eu-west-1")
    text = _edit(text, "approvals:\n  approvers: [approver1, approver2]\n  required: 1\n", "")
    with pytest.raises(ManifestError) as caught:
        parse_manifest(tmp_path / "m.yaml", text)
    problems = caught.value.problems
    assert len(problems) == 3, problems
    assert any(p.startswith("field 'id': ") for p in problems)
    assert any(p.startswith("field 'target.region': ") for p in problems)
    assert "field 'approvals': required field is missing" in problems


def test_error_message_as_shown_to_operators(tmp_path: Path) -> None:
    # The exact text quoted in docs/workloads.md.
    path = tmp_path / "snds_extracts.yaml"
    text = os_edit("  region: fr-par", "  region: eu-west-1")
    text = _edit(text, 'start: "02:00"', "start: 2:00")
    with pytest.raises(ManifestError) as caught:
        parse_manifest(path, text)
    assert str(caught.value) == (
        f"invalid workload manifest {path}:\n"
        '  - field \'cutover.window.start\': write times quoted as "HH:MM", e.g. "02:00" (got 120)\n'
        "  - field 'target.region': expected 'fr-par', 'nl-ams' or 'pl-waw', got 'eu-west-1'"
    )


def test_duplicate_yaml_key_is_refused(tmp_path: Path) -> None:
    text = os_edit("  bucket: hdh-demo-extracts\n", "  bucket: hdh-demo-extracts\n  bucket: hdh-other-bucket\n")
    with pytest.raises(ManifestError) as caught:
        parse_manifest(tmp_path / "m.yaml", text)
    assert str(tmp_path / "m.yaml") in str(caught.value)
    assert "duplicate key 'bucket'" in str(caught.value)
    assert "not valid YAML at line" in str(caught.value)


# ---------------------------------------------------------------- load_manifests


def test_duplicate_id_refuses_both_files_and_names_the_other(tmp_path: Path) -> None:
    first = _write(tmp_path, "a_extracts.yaml", OBJECT_STORE)
    second = _write(tmp_path, "b_extracts.yml", os_edit("container: demo-extracts", "container: other-extracts"))
    other = _write(tmp_path, "registry.yaml", POSTGRES)

    loaded = {item.path.name: item for item in load_manifests(tmp_path)}
    assert sorted(loaded) == ["a_extracts.yaml", "b_extracts.yml", "registry.yaml"]

    for this, that in ((first, second), (second, first)):
        item = loaded[this.name]
        assert item.workload is None
        assert item.error is not None
        assert item.error.path == str(this)
        assert item.error.problems == [
            f"field 'id': workload id 'demo_extracts' is also declared in {that}; ids must be unique"
        ]
        assert str(this) in str(item.error)

    assert loaded[other.name].error is None
    assert loaded[other.name].workload is not None
    assert loaded[other.name].workload.id == "registry_catalogue"


def test_a_bad_manifest_never_hides_good_ones(tmp_path: Path) -> None:
    _write(tmp_path, "a_good.yaml", OBJECT_STORE)
    bad = _write(
        tmp_path,
        "b_bad.yaml",
        _edit(os_edit("id: demo_extracts", "id: other_extracts"), "  region: fr-par", "  region: eu-west-1"),
    )
    _write(tmp_path, "c_good.yml", POSTGRES)
    _write(tmp_path, "notes.md", "not a manifest")
    _write(tmp_path, "d_ignored.txt", "- not: read")

    loaded = load_manifests(tmp_path)
    assert [item.path.name for item in loaded] == ["a_good.yaml", "b_bad.yaml", "c_good.yml"]
    workloads = [item.workload for item in loaded if item.workload is not None]
    errors = [item.error for item in loaded if item.error is not None]
    assert [w.id for w in workloads] == ["demo_extracts", "registry_catalogue"]
    assert len(errors) == 1
    assert errors[0].path == str(bad)
    assert "field 'target.region'" in str(errors[0])


def test_unreadable_manifest_is_reported_not_raised(tmp_path: Path) -> None:
    _write(tmp_path, "a_good.yaml", OBJECT_STORE)
    latin1 = tmp_path / "b_latin1.yaml"
    latin1.write_bytes("description: donn\xe9es\n".encode("latin-1"))
    loaded = load_manifests(tmp_path)
    assert loaded[0].workload is not None
    assert loaded[1].workload is None
    assert loaded[1].error is not None
    assert loaded[1].error.path == str(latin1)
    assert "cannot read file" in str(loaded[1].error)


# ---------------------------------------------------------------- next_window_opening


def _window(days: list[str], start: time, end: time, tz: str = "Europe/Paris") -> MaintenanceWindow:
    return MaintenanceWindow(timezone=tz, days=days, start=start, end=end)


SUNDAY_NIGHT = _window(["sunday"], time(2, 0), time(5, 0))
SATURDAY_TO_SUNDAY = _window(["saturday"], time(23, 0), time(2, 0))


def utc(text: str) -> pendulum.DateTime:
    parsed = pendulum.parse(text)
    assert isinstance(parsed, pendulum.DateTime)
    return parsed.in_timezone("UTC")


def test_inside_the_window_returns_after_unchanged() -> None:
    # Sunday 2026-01-11 03:30 in Paris (CET, UTC+1), given in Paris time.
    after = pendulum.datetime(2026, 1, 11, 3, 30, tz="Europe/Paris")
    result = next_window_opening(SUNDAY_NIGHT, after)
    assert result == after
    assert result.isoformat() == "2026-01-11T03:30:00+01:00"


def test_at_the_opening_minute_the_window_is_open() -> None:
    after = utc("2026-01-11T01:00:00Z")  # 02:00 CET
    assert next_window_opening(SUNDAY_NIGHT, after) == after


def test_before_the_window_in_winter_opens_at_0100_utc() -> None:
    opening = next_window_opening(SUNDAY_NIGHT, utc("2026-01-07T12:00:00Z"))  # a Wednesday
    assert opening.isoformat() == "2026-01-11T01:00:00+00:00"  # Sunday 02:00 CET
    assert opening.in_timezone("Europe/Paris").isoformat() == "2026-01-11T02:00:00+01:00"


def test_before_the_window_in_summer_opens_at_0000_utc() -> None:
    opening = next_window_opening(SUNDAY_NIGHT, utc("2026-07-08T12:00:00Z"))  # a Wednesday
    assert opening.isoformat() == "2026-07-12T00:00:00+00:00"  # Sunday 02:00 CEST
    assert opening.in_timezone("Europe/Paris").isoformat() == "2026-07-12T02:00:00+02:00"


def test_at_the_closing_minute_waits_a_week() -> None:
    # 05:00 CET: the end is exclusive, so the next opening is the following Sunday.
    opening = next_window_opening(SUNDAY_NIGHT, utc("2026-01-11T04:00:00Z"))
    assert opening.isoformat() == "2026-01-18T01:00:00+00:00"


def test_several_days_pick_the_nearest() -> None:
    window = _window(["tuesday", "friday"], time(22, 0), time(23, 30))
    opening = next_window_opening(window, utc("2026-01-07T12:00:00Z"))  # Wednesday
    assert opening.isoformat() == "2026-01-09T21:00:00+00:00"  # Friday 22:00 CET


def test_window_in_another_timezone() -> None:
    window = _window(["sunday"], time(2, 0), time(5, 0), tz="America/New_York")
    opening = next_window_opening(window, utc("2026-01-07T12:00:00Z"))
    assert opening.isoformat() == "2026-01-11T07:00:00+00:00"  # 02:00 EST = UTC-5


def test_window_crossing_midnight_is_open_after_midnight() -> None:
    # Sunday 01:00 Paris belongs to Saturday's 23:00-02:00 window.
    after = pendulum.datetime(2026, 1, 11, 1, 0, tz="Europe/Paris")
    assert next_window_opening(SATURDAY_TO_SUNDAY, after) == after
    late = pendulum.datetime(2026, 1, 11, 1, 59, tz="Europe/Paris")
    assert next_window_opening(SATURDAY_TO_SUNDAY, late) == late


def test_window_crossing_midnight_opens_on_its_first_day() -> None:
    opening = next_window_opening(SATURDAY_TO_SUNDAY, utc("2026-01-07T12:00:00Z"))
    assert opening.isoformat() == "2026-01-10T22:00:00+00:00"  # Saturday 23:00 CET
    summer = next_window_opening(SATURDAY_TO_SUNDAY, utc("2026-07-08T12:00:00Z"))
    assert summer.isoformat() == "2026-07-11T21:00:00+00:00"  # Saturday 23:00 CEST


def test_window_crossing_midnight_closed_after_its_end() -> None:
    # Sunday 02:00 Paris: the window has closed; the next one is the following Saturday.
    opening = next_window_opening(SATURDAY_TO_SUNDAY, pendulum.datetime(2026, 1, 11, 2, 0, tz="Europe/Paris"))
    assert opening.isoformat() == "2026-01-17T22:00:00+00:00"


def test_window_crossing_midnight_belongs_to_the_day_it_opens() -> None:
    # A crossing window belongs to the day it opens: Sunday 23:00-02:00 is closed
    # at Sunday 01:00 (that hour belongs to Saturday night, not listed).
    window = _window(["sunday"], time(23, 0), time(2, 0))
    opening = next_window_opening(window, pendulum.datetime(2026, 1, 11, 1, 0, tz="Europe/Paris"))
    assert opening.isoformat() == "2026-01-11T22:00:00+00:00"


def test_spring_forward_does_not_open_before_the_local_start() -> None:
    # 2026-03-29 00:30 UTC is 01:30 CET: the local clock has not reached 02:00.
    after = utc("2026-03-29T00:30:00Z")
    opening = next_window_opening(SUNDAY_NIGHT, after)
    # The first instant at which the Paris clock reads 02:00 or later is 03:00 CEST;
    # the same function, asked from the Saturday before, already answers that.
    assert next_window_opening(SUNDAY_NIGHT, utc("2026-03-28T12:00:00Z")).isoformat() == "2026-03-29T01:00:00+00:00"
    assert opening.isoformat() == "2026-03-29T01:00:00+00:00"


def test_fall_back_opening_is_the_first_0200() -> None:
    assert next_window_opening(SUNDAY_NIGHT, utc("2026-10-25T00:30:00Z")) == utc("2026-10-25T00:30:00Z")
    opening = next_window_opening(SUNDAY_NIGHT, utc("2026-10-24T12:00:00Z"))
    assert opening.isoformat() == "2026-10-25T00:00:00+00:00"  # the first 02:00 (CEST)

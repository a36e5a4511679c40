"""``cutover.freeze``: its defaults, what it accepts, and the exact refusal an operator reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from bascule.exceptions import ManifestError
from bascule.workload import Freeze, ObjectStoreWorkload, PostgresWorkload, parse_manifest

pytestmark = pytest.mark.unit

WORKLOADS_DIR = Path(__file__).resolve().parents[2] / "include" / "workloads"

OBJECT_STORE = """\
id: demo_extracts
kind: object_store
description: Synthetic extracts.
owner: data-platform
source: {conn_id: hdh_azure_blob, container: demo-extracts}
target: {conn_id: hdh_scaleway_s3, bucket: hdh-demo-extracts, region: fr-par}
evidence: {conn_id: hdh_scaleway_s3, bucket: hdh-migration-evidence, region: fr-par}
approvals: {approvers: [approver1]}
cutover:
  window: {timezone: Europe/Paris, days: [sunday], start: "02:00", end: "05:00"}
"""

POSTGRES = """\
id: registry
kind: postgres
description: Registry.
owner: data-platform
source: {conn_id: hdh_azure_postgres, database: registry, application_roles: [registry_app]}
target: {conn_id: hdh_scaleway_postgres, database: registry, region: fr-par}
evidence: {conn_id: hdh_scaleway_s3, bucket: hdh-migration-evidence, region: fr-par}
approvals: {approvers: [approver1]}
cutover:
  window: {timezone: Europe/Paris, days: [sunday], start: "02:00", end: "05:00"}
"""


def _with_freeze(base: str, freeze: str) -> str:
    return base + "  freeze: " + freeze + "\n"


def _problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "m.yaml"
    with pytest.raises(ManifestError) as caught:
        parse_manifest(path, text)
    assert caught.value.path == str(path)
    return caught.value.problems


def test_without_the_field_existing_manifests_keep_leases_with_the_cap(tmp_path: Path) -> None:
    workload = parse_manifest(tmp_path / "m.yaml", OBJECT_STORE)
    assert isinstance(workload, ObjectStoreWorkload)
    assert workload.cutover.freeze == Freeze(
        method="leases", policy_id=None, probe_timeout_seconds=60.0, max_objects=50_000, delta_rounds=3
    )


def test_stored_access_policy_with_its_fields(tmp_path: Path) -> None:
    text = _with_freeze(
        OBJECT_STORE,
        "{method: stored_access_policy, policy_id: writers-2026, probe_timeout_seconds: 45, max_objects: 1000}",
    )
    freeze = parse_manifest(tmp_path / "m.yaml", text).cutover.freeze  # type: ignore[union-attr]
    assert (freeze.method, freeze.policy_id, freeze.probe_timeout_seconds, freeze.max_objects) == (
        "stored_access_policy",
        "writers-2026",
        45.0,
        1000,
    )


def test_stored_access_policy_needs_the_policy_id(tmp_path: Path) -> None:
    problems = _problems(tmp_path, _with_freeze(OBJECT_STORE, "{method: stored_access_policy}"))
    assert problems == [
        "field 'cutover.freeze': method stored_access_policy needs 'policy_id': the stored access policy on the "
        "source container that the writers' SAS tokens are bound to (their 'si=' parameter) "
        "(got {'method': 'stored_access_policy'})"
    ]


def test_a_policy_id_with_leases_is_refused_not_ignored(tmp_path: Path) -> None:
    problems = _problems(tmp_path, _with_freeze(OBJECT_STORE, "{method: leases, policy_id: writers}"))
    assert problems == [
        "field 'cutover.freeze': policy_id 'writers' is only used by method stored_access_policy; set "
        "method: stored_access_policy, or remove policy_id (got {'method': 'leases', 'policy_id': 'writers'})"
    ]


@pytest.mark.parametrize(
    ("freeze", "field", "fragment"),
    [
        ("{method: revoke_keys}", "cutover.freeze.method", "'stored_access_policy' or 'leases'"),
        ("{method: stored_access_policy, policy_id: 'has space'}", "cutover.freeze.policy_id", "expected a value matching"),
        ("{method: stored_access_policy, policy_id: " + "p" * 65 + "}", "cutover.freeze.policy_id", "expected a value matching"),
        ("{probe_timeout_seconds: 0}", "cutover.freeze.probe_timeout_seconds", "greater than 0"),
        ("{probe_timeout_seconds: 601}", "cutover.freeze.probe_timeout_seconds", "less than or equal to 600"),
        ("{max_objects: 0}", "cutover.freeze.max_objects", "greater than or equal to 1"),
        ("{delta_rounds: 0}", "cutover.freeze.delta_rounds", "greater than or equal to 1"),
        ("{delta_rounds: 10}", "cutover.freeze.delta_rounds", "less than or equal to 9"),
        ("{leases: true}", "cutover.freeze.leases", "unknown field"),
    ],
)
def test_bad_freeze_fields_name_the_field(tmp_path: Path, freeze: str, field: str, fragment: str) -> None:
    problems = _problems(tmp_path, _with_freeze(OBJECT_STORE, freeze))
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"field '{field}': "), problems
    assert fragment in problems[0], problems


def test_postgres_workloads_refuse_the_object_freeze(tmp_path: Path) -> None:
    assert isinstance(parse_manifest(tmp_path / "m.yaml", POSTGRES), PostgresWorkload)
    problems = _problems(tmp_path, _with_freeze(POSTGRES, "{method: leases}"))
    assert problems == [
        "field 'cutover.freeze': a postgres workload freezes writes by making source.application_roles "
        "read-only at cutover; cutover.freeze is for object_store workloads: remove it (got {'method': 'leases'})"
    ]


def test_the_shipped_demo_manifest_names_its_freeze() -> None:
    path = WORKLOADS_DIR / "snds_extracts.yaml"
    workload = parse_manifest(path, path.read_text(encoding="utf-8"))
    assert isinstance(workload, ObjectStoreWorkload)
    # The demo's object writer holds a SAS of the policy 'app-writers' (scripts/demo.py creates it).
    freeze = workload.cutover.freeze
    assert (freeze.method, freeze.policy_id, freeze.delta_rounds) == ("stored_access_policy", "app-writers", 3)

"""DAG integrity: what the DAG processor sees when it parses ``dags/``.

One ``migrate_<id>`` DAG per shipped manifest, with the settings a migration needs;
a refused manifest becomes a ``bascule_invalid_manifest_<stem>`` DAG instead of an
import error; and parsing makes no connection lookup, no network call and no heavy
import (those belong inside tasks).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from bascule_airflow.dag_factory import invalid_manifest_dag_id

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DAGS_DIR = ROOT / "dags"
SHIPPED_DIR = ROOT / "include" / "workloads"
TEMPLATE = SHIPPED_DIR / "snds_extracts.yaml"

SHIPPED = sorted(p for p in SHIPPED_DIR.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())

HEAVY_MODULES = (
    "great_expectations",
    "pandas",
    "boto3",
    "botocore",
    "azure.storage.blob",
    "psycopg2",
    "bascule.storage",
    "bascule.preflight",
)


def _fill(workloads: Path | None, monkeypatch: pytest.MonkeyPatch, *, follow: str | None = None):
    from airflow.dag_processing.dagbag import DagBag

    if workloads is None:
        monkeypatch.delenv("BASCULE_WORKLOADS_DIR", raising=False)
    else:
        monkeypatch.setenv("BASCULE_WORKLOADS_DIR", str(workloads))
    # The demo's consumer DAG (dags/bascule_demo_consumers.py) loads only when told what to follow.
    if follow is None:
        monkeypatch.delenv("BASCULE_FOLLOW_WORKLOAD", raising=False)
    else:
        monkeypatch.setenv("BASCULE_FOLLOW_WORKLOAD", follow)
    return DagBag(str(DAGS_DIR))


def _is_invalid_manifest_task(task: Any) -> bool:
    from bascule_airflow.invalid_manifest import ManifestInvalidOperator

    return isinstance(task, ManifestInvalidOperator)


def _manifest(directory: Path, file_name: str, workload_id: str, *, region: str = "fr-par") -> Path:
    """A copy of the shipped demo manifest, text-edited so its shape (quoted times...) is kept."""
    text = TEMPLATE.read_text(encoding="utf-8")
    text, ids = re.subn(r"(?m)^id: .*$", f"id: {workload_id}", text)
    # The target's region (the first); the evidence bucket's stays fr-par.
    text, regions = re.subn(r"(?m)^(\s+region:) .*$", rf"\1 {region}", text, count=1)
    assert (ids, regions, text.count("  region: ")) == (1, 1, 2), "the demo manifest changed shape: update this helper"
    path = directory / file_name
    path.write_text(text, encoding="utf-8")
    return path


# --- the shipped manifests ----------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped_bag():
    with pytest.MonkeyPatch.context() as mp:
        yield _fill(None, mp)


def test_shipped_manifests_exist():
    assert SHIPPED, f"no manifest in {SHIPPED_DIR}"


def test_shipped_dags_import_without_errors(shipped_bag):
    assert shipped_bag.import_errors == {}


def test_one_dag_per_shipped_manifest(shipped_bag):
    expected = {f"migrate_{yaml.safe_load(p.read_text(encoding='utf-8'))['id']}" for p in SHIPPED}
    assert set(shipped_bag.dags) == expected
    assert len(shipped_bag.dags) == len(SHIPPED)


def test_the_demo_adds_exactly_one_consumer_of_the_workload_it_follows(monkeypatch):
    """``make demo`` sets BASCULE_FOLLOW_WORKLOAD: dags/ then holds the migrations and the example
    consumer from include/examples, scheduled on that workload's Asset, and nothing else."""
    bag = _fill(None, monkeypatch, follow="snds_extracts")
    assert bag.import_errors == {}
    migrations = {f"migrate_{yaml.safe_load(p.read_text(encoding='utf-8'))['id']}" for p in SHIPPED}
    consumer = "follow_bascule_workload_snds_extracts"
    assert set(bag.dags) == migrations | {consumer}
    dag = bag.dags[consumer]
    assert [a.name for a in dag.timetable.asset_condition.objects] == ["bascule_workload_snds_extracts"]
    assert set(dag.task_dict) == {"read_location"}


@pytest.mark.parametrize("manifest", SHIPPED, ids=lambda p: p.name)
def test_shipped_dag_settings(shipped_bag, manifest: Path):
    data = yaml.safe_load(manifest.read_text(encoding="utf-8"))
    dag = shipped_bag.dags[f"migrate_{data['id']}"]

    assert {"bascule", data["kind"]} <= set(dag.tags)
    assert dag.max_active_runs == 1
    assert dag.schedule is None
    assert dag.catchup is False
    assert f"include/workloads/{manifest.name}" in (dag.doc_md or "")

    dry_run = dag.params.get_param("dry_run")
    assert dry_run.value is False
    assert dry_run.schema.get("type") == "boolean"


# Tasks that touch no network (branching on Params), and the approval gate, whose
# "retry" would re-ask people and could turn a timeout into a second chance. plan_copy
# is not one of them: it reads the source's table sizes and key bounds, so it retries.
NO_NETWORK_TASKS = {"choose_mode", "stop_if_dry_run"}
GATES = {"approve_cutover"}


def _network_task(task: Any) -> bool:
    return not _is_invalid_manifest_task(task) and task.task_id not in NO_NETWORK_TASKS | GATES


def test_network_tasks_retry_with_a_delay(shipped_bag):
    checked = 0
    for dag in shipped_bag.dags.values():
        for task in dag.tasks:
            if not _network_task(task):
                continue
            checked += 1
            assert task.retries >= 2, f"{dag.dag_id}.{task.task_id}: retries={task.retries}"
            assert task.retry_delay, f"{dag.dag_id}.{task.task_id}: no retry_delay"
    assert checked, "no task checked"
    assert all("preflight" in dag.task_dict for dag in shipped_bag.dags.values())


def test_gates_never_retry(shipped_bag):
    gates = [dag.task_dict[g] for dag in shipped_bag.dags.values() for g in GATES if g in dag.task_dict]
    assert gates, "the object-store DAG has an approval gate"
    assert all(gate.retries == 0 for gate in gates)


POSTGRES_MANIFEST = """\
id: registry_catalogue
kind: postgres
description: Catalogue of the health data registry.
owner: data-platform
source:
  conn_id: hdh_azure_postgres
  database: registry
  schemas: [catalogue]
  tables: [catalogue.datasets, catalogue.variables]
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
  approvers: [dba.lead, data.protection.officer]
  required: 2
cutover:
  window:
    timezone: Europe/Paris
    days: [saturday]
    start: "23:00"
    end: "02:00"
"""


# --- parsing stays off the network ------------------------------------------------------


CONNECTION_LOOKUPS = (
    "airflow.sdk.definitions.connection.Connection.get",
    "airflow.sdk.bases.hook.BaseHook.get_connection",
    "airflow.models.connection.Connection.get_connection_from_secrets",
    "airflow.sdk.execution_time.context._get_connection",
)


def test_parsing_looks_up_no_connection_and_opens_no_socket(monkeypatch, tmp_path):
    calls: list[str] = []

    def refuse(name: str):
        def lookup(*args: Any, **kwargs: Any):
            calls.append(f"{name}{args}")
            raise AssertionError(f"{name} called while parsing DAGs")

        return lookup

    def record(name: str, real: Any):
        def connect(*args: Any, **kwargs: Any):
            calls.append(f"{name}{args[1:] if name.endswith('.connect') else args}")
            return real(*args, **kwargs)

        return connect

    for target in CONNECTION_LOOKUPS:
        monkeypatch.setattr(target, refuse(target))  # raises if the path no longer exists
    monkeypatch.setattr("socket.create_connection", record("socket.create_connection", socket.create_connection))
    monkeypatch.setattr("socket.socket.connect", record("socket.socket.connect", socket.socket.connect))

    # The shipped manifests and both kinds, so the postgres path is parsed too.
    _manifest(tmp_path, "objects.yaml", "objects_one")
    (tmp_path / "catalogue.yaml").write_text(POSTGRES_MANIFEST, encoding="utf-8")
    for bag in (_fill(None, monkeypatch), _fill(tmp_path, monkeypatch)):
        assert bag.import_errors == {}
        assert bag.dags
    assert {"migrate_objects_one", "migrate_registry_catalogue"} <= set(bag.dags)
    assert calls == []


def test_parsing_imports_no_heavy_module():
    """A fresh interpreter, so modules other tests imported do not hide an import."""
    code = textwrap.dedent(
        f"""
        import json, sys
        import airflow
        from airflow.dag_processing.dagbag import DagBag
        before = set(sys.modules)
        bag = DagBag({str(DAGS_DIR)!r})
        new = set(sys.modules) - before
        heavy = {list(HEAVY_MODULES)!r}
        print(json.dumps({{
            "dags": sorted(bag.dags),
            "errors": {{k: str(v) for k, v in bag.import_errors.items()}},
            "heavy": sorted(m for m in new if any(m == h or m.startswith(h + ".") for h in heavy)),
            "bascule_loaded": "bascule_airflow.dag_factory" in new,
        }}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "BASCULE_WORKLOADS_DIR"}
    env["BASCULE_FOLLOW_WORKLOAD"] = "snds_extracts"  # the demo's consumer is parsed too
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "include"), str(ROOT / "plugins"), *filter(None, [env.get("PYTHONPATH")])]
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["errors"] == {}
    assert report["dags"], "the subprocess parsed no DAG"
    assert "follow_bascule_workload_snds_extracts" in report["dags"], "the demo's consumer was not parsed"
    assert report["bascule_loaded"], "the DAG factory was imported before the parse: the check proves nothing"
    assert report["heavy"] == []


# --- refused manifests --------------------------------------------------------------------


def test_bad_manifest_becomes_an_invalid_manifest_dag(tmp_path, monkeypatch):
    _manifest(tmp_path, "first.yaml", "first_workload")
    _manifest(tmp_path, "second.yaml", "second_workload")
    _manifest(tmp_path, "bad_region.yaml", "bad_region_workload", region="eu-west-1")

    bag = _fill(tmp_path, monkeypatch)

    assert bag.import_errors == {}
    bad = invalid_manifest_dag_id(tmp_path / "bad_region.yaml")
    assert bad.startswith("bascule_invalid_manifest_bad_region_")
    assert set(bag.dags) == {"migrate_first_workload", "migrate_second_workload", bad}
    invalid = bag.dags[bad]
    assert "invalid-manifest" in invalid.tags
    assert "bad_region.yaml" in invalid.doc_md
    assert "target.region" in invalid.doc_md
    assert "eu-west-1" in invalid.doc_md
    assert [t.task_id for t in invalid.tasks] == ["manifest_invalid"]
    assert _is_invalid_manifest_task(invalid.tasks[0])
    for dag_id in ("migrate_first_workload", "migrate_second_workload"):
        assert all(t.retries >= 2 and t.retry_delay for t in bag.dags[dag_id].tasks if _network_task(t))


def test_invalid_yaml_becomes_an_invalid_manifest_dag(tmp_path, monkeypatch):
    _manifest(tmp_path, "good.yaml", "good_workload")
    (tmp_path / "broken.yaml").write_text("id: broken\nkind: object_store\napprovals:\n  approvers: [a, b\n")

    bag = _fill(tmp_path, monkeypatch)

    assert bag.import_errors == {}
    broken = invalid_manifest_dag_id(tmp_path / "broken.yaml")
    assert set(bag.dags) == {"migrate_good_workload", broken}
    invalid = bag.dags[broken]
    assert "invalid-manifest" in invalid.tags
    assert "broken.yaml" in invalid.doc_md
    assert "not valid YAML at line" in invalid.doc_md
    assert [t.task_id for t in invalid.tasks] == ["manifest_invalid"]


def test_duplicate_ids_are_both_refused(tmp_path, monkeypatch):
    _manifest(tmp_path, "dup_a.yaml", "same_workload")
    _manifest(tmp_path, "dup_b.yaml", "same_workload")
    _manifest(tmp_path, "other.yaml", "other_workload")

    bag = _fill(tmp_path, monkeypatch)

    assert bag.import_errors == {}
    assert set(bag.dags) == {
        "migrate_other_workload",
        invalid_manifest_dag_id(tmp_path / "dup_a.yaml"),
        invalid_manifest_dag_id(tmp_path / "dup_b.yaml"),
    }
    for mine, other in (("dup_a", "dup_b"), ("dup_b", "dup_a")):
        doc = bag.dags[invalid_manifest_dag_id(tmp_path / f"{mine}.yaml")].doc_md
        assert f"{mine}.yaml" in doc
        assert "field 'id'" in doc
        assert f"{other}.yaml" in doc, "each refusal names the other file"
        assert "same_workload" in doc


def test_invalid_manifest_dag_ids_never_collide(tmp_path, monkeypatch):
    long_stem = "x" * 240
    names = ["a-b.yaml", "a_b.yaml", "c.yml", "c.yaml", f"{long_stem}.yaml"]
    for name in names:
        (tmp_path / name).write_text("id: [unclosed\n")
    _manifest(tmp_path, "fine.yaml", "fine_workload")

    bag = _fill(tmp_path, monkeypatch)

    assert bag.import_errors == {}
    ids = {invalid_manifest_dag_id(tmp_path / name) for name in names}
    assert len(ids) == len(names), "two bad manifests must never share a DAG id"
    assert all(len(dag_id) <= 250 for dag_id in ids)
    assert set(bag.dags) == ids | {"migrate_fine_workload"}


def test_postgres_dag_runs_the_phases_in_order(shipped_bag):
    dag = shipped_bag.dags["migrate_hdh_registry"]
    chain = [
        "preflight", "stop_if_dry_run", "snapshot", "schema_pre_data", "plan_copy", "copy_table",
        "schema_post_data", "start_replication", "catch_up", "validate", "shadow_run", "approve_cutover",
        "wait_for_window", "cutover", "complete", "verify_evidence",
    ]  # fmt: skip
    for upstream, downstream in zip(chain, chain[1:], strict=False):
        assert downstream in dag.task_dict[upstream].downstream_task_ids, f"{upstream} -> {downstream}"
    release = dag.task_dict["release_replication"]
    assert release.trigger_rule == "one_failed"
    assert {"start_replication", "catch_up", "validate", "approve_cutover"} <= release.upstream_task_ids
    assert dag.task_dict["rollback_after_failed_cutover"].trigger_rule == "one_failed"
    copy = dag.task_dict["copy_table"]
    assert copy.max_active_tis_per_dagrun == 3


def test_gates_have_no_default_and_dags_no_bypass_param(shipped_bag):
    """No silent path: no default option on a gate, no Param that skips one."""
    for dag in shipped_bag.dags.values():
        if "approve_cutover" not in dag.task_dict:
            continue
        gate = dag.task_dict["approve_cutover"]
        assert not gate.defaults, f"{dag.dag_id}: the gate must have no default option"
        assert set(dag.params.keys()) == {"dry_run", "rollback", "rollback_reason"}, dag.params.keys()


RUN_PARAMS = {"dry_run", "rollback", "rollback_reason"}


def test_every_task_but_the_gate_carries_the_run_params_in_objects_of_its_own(shipped_bag):
    """The factory hands each task its own copy of the DAG's Params (docs/benchmarks.md#parse), as
    Airflow's deep copy did: the trigger form, the serialized tasks and a run's ``context["params"]``
    see them, and a run's values resolved into one task's Params never reach another's or the DAG's."""
    from airflow.serialization.serialized_objects import DagSerialization

    for dag in shipped_bag.dags.values():
        dag_params = {name: dag.params.get_param(name) for name in dag.params}
        assert set(dag_params) == RUN_PARAMS and {p.source for p in dag_params.values()} == {None}
        seen = {id(p) for p in dag_params.values()}
        for task in dag.tasks:
            if task.task_id in GATES:  # the approver's form asks only the gate's own question
                assert set(task.params) == {"reason"}, f"{dag.dag_id}.{task.task_id}"
                continue
            params = {name: task.params.get_param(name) for name in task.params}
            assert set(params) == RUN_PARAMS, f"{dag.dag_id}.{task.task_id}: {set(params)}"
            for name, param in params.items():
                assert param.source == "dag", f"{dag.dag_id}.{task.task_id}.{name}"
                assert (param.value, param.schema, param.description) == (
                    dag_params[name].value, dag_params[name].schema, dag_params[name].description,
                ), f"{dag.dag_id}.{task.task_id}.{name}"  # fmt: skip
                assert id(param) not in seen, f"{dag.dag_id}.{task.task_id}.{name} shares a Param object"
                seen.add(id(param))
        serialized = DagSerialization.to_dict(dag)["dag"]
        assert [name for name, _ in serialized["params"]] == list(dag_params)
        for task in serialized["tasks"]:
            names = {name for name, _ in task["__var"]["params"]}
            assert names == ({"reason"} if task["__var"]["task_id"] in GATES else RUN_PARAMS), task["__var"]["task_id"]


def test_a_task_runner_parse_builds_only_its_own_dag(tmp_path, monkeypatch):
    """A task's runner names its DAG in Airflow's parsing context: only that DAG is built; every
    manifest is still validated (a duplicate id elsewhere still refuses both)."""
    for n in range(3):
        _manifest(tmp_path, f"w{n}.yaml", f"workload_{n}")
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "migrate_workload_1")
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", "preflight")
    bag = _fill(tmp_path, monkeypatch)
    assert bag.import_errors == {}
    assert set(bag.dags) == {"migrate_workload_1"}
    monkeypatch.delenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID")
    full = _fill(tmp_path, monkeypatch)  # no context: every DAG, as the DAG processor parses
    assert set(full.dags) == {"migrate_workload_0", "migrate_workload_1", "migrate_workload_2"}

    _manifest(tmp_path, "w9.yaml", "workload_1")
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "migrate_workload_1")
    refused = _fill(tmp_path, monkeypatch)
    assert refused.dags == {}, "a duplicate id must refuse the DAG in a task's parse too"


def test_gate_code_reads_no_environment_variable():
    """No environment variable can bypass a gate: the gate and quorum code never read one."""
    gate_code = (
        ROOT / "plugins" / "bascule_airflow" / "approval.py",
        ROOT / "plugins" / "bascule_airflow" / "quorum.py",
        ROOT / "include" / "bascule" / "governance" / "approvals.py",
    )
    for path in gate_code:
        text = path.read_text()
        for needle in ("os.environ", "getenv", "Variable.get"):
            assert needle not in text, f"{path.name} reads {needle}"

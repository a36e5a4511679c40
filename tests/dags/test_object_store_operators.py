"""Object-store operators in the DAG: the migration's shape, and its approval gate."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = yaml.safe_load((ROOT / "include" / "workloads" / "snds_extracts.yaml").read_text())


def test_object_store_dag_shape() -> None:
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(str(ROOT / "dags")).dags["migrate_snds_extracts"]
    downstream = {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks}
    assert downstream["choose_mode"] == ["preflight", "rollback_requested"]
    assert downstream["preflight"] == ["stop_if_dry_run"]
    assert downstream["transfer"] == ["validate"]
    assert downstream["validate"] == ["shadow_run"]
    assert downstream["shadow_run"] == ["approve_cutover"]
    assert downstream["approve_cutover"] == ["wait_for_window"]
    assert downstream["cutover"] == ["complete", "rollback_after_failed_cutover"]
    approve = dag.task_dict["approve_cutover"]
    assert approve.defaults is None, "a gate must never have a default answer"
    assert approve.retries == 0
    assert [u["id"] for u in approve.assigned_users] == TEMPLATE["approvals"]["approvers"]
    assert set(dag.params) >= {"dry_run", "rollback", "rollback_reason"}
    assert dag.task_dict["rollback_after_failed_cutover"].trigger_rule == "one_failed"

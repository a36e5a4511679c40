"""A refused manifest's DAG, run through Airflow: it fails, and its log says what to fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "include" / "workloads" / "snds_extracts.yaml"


def test_invalid_manifest_dag_fails_with_file_field_and_advice(airflow_db, tmp_path, monkeypatch, capfd):
    from airflow.dag_processing.dagbag import DagBag

    from bascule_airflow.dag_factory import invalid_manifest_dag_id

    text = re.sub(r"(?m)^id: .*$", "id: wrong_region", TEMPLATE.read_text(encoding="utf-8"))
    text = re.sub(r"(?m)^(\s+region:) fr-par$", r"\1 eu-west-1", text)
    manifest = tmp_path / "wrong_region.yaml"
    manifest.write_text(text, encoding="utf-8")

    monkeypatch.setenv("BASCULE_WORKLOADS_DIR", str(tmp_path))
    bag = DagBag(str(ROOT / "dags"))
    assert bag.import_errors == {}
    dag = bag.dags[invalid_manifest_dag_id(manifest)]

    capfd.readouterr()
    run = dag.test()
    log = "".join(capfd.readouterr())

    assert run.state == "failed", log[-4000:]
    assert {ti.task_id: ti.state for ti in run.get_task_instances()} == {"manifest_invalid": "failed"}
    assert str(manifest) in log, log[-4000:]
    assert "field 'target.region'" in log
    assert "eu-west-1" in log
    assert "Fix the manifest" in log

"""The demo's downstream pipeline: an Airflow DAG scheduled on a workload's Asset.

The consumer itself is an example (include/examples/bascule_consumers.py), not a migration,
so it is loaded from there, and only when ``BASCULE_FOLLOW_WORKLOAD`` names the workload to
follow (``make demo`` sets it): a deployment that does not set it parses the migrations only.
"""

import importlib.util
import os
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "include" / "examples" / "bascule_consumers.py"

if os.environ.get("BASCULE_FOLLOW_WORKLOAD"):
    spec = importlib.util.spec_from_file_location("bascule_example_consumers", EXAMPLE)
    assert spec is not None and spec.loader is not None, f"cannot load {EXAMPLE}"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.dag

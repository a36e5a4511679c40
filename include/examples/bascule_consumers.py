"""An example downstream pipeline: scheduled on a workload's Asset, it reads where the data now lives.

Copy it into a DAG folder (the control room's end-to-end test does) and set
``BASCULE_FOLLOW_WORKLOAD``: the cutover's event says "live on Scaleway at <location>", a
rollback's says Azure (bascule_airflow.assets). It is not in dags/, whose DAGs are the
migrations only (tests/dags/test_dag_integrity.py); the demo loads it through
dags/bascule_demo_consumers.py.
"""

import os

from bascule_airflow.assets import workload_asset
from bascule_airflow.consumers import follow_workload

dag = follow_workload(workload_asset(os.environ.get("BASCULE_FOLLOW_WORKLOAD", "snds_extracts")))

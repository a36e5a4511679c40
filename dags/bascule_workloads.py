"""One Airflow DAG per workload manifest in include/workloads/ (dag_id ``migrate_<id>``)."""

from bascule_airflow.dag_factory import build_workload_dags

globals().update(build_workload_dags())

"""One Airflow DAG per workload manifest in include/workloads/ (dag_id ``migrate_<id>``)."""

from airflow.sdk import get_parsing_context

from bascule_airflow.dag_factory import build_workload_dags

# A task's runner needs only its own DAG (Airflow names it in the parsing context); the DAG
# processor builds them all. Either keeps them to the end of its process (docs/benchmarks.md#parse).
globals().update(build_workload_dags(only_dag_id=get_parsing_context().dag_id, freeze=True))

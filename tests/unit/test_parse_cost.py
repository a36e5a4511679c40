"""One manifest's DAG must stay cheap to build: a ratio to a trivial DAG of as many tasks, same run.

The DAG processor builds every workload's DAG on each parse of ``dags/``, and each task
start parses it again (docs/benchmarks.md#parse). An absolute time would fail on a loaded
CI machine and pass a regression on a fast one, so this compares two costs measured in
the same process, interleaved: building ``migrate_hdh_registry`` (the larger kind) and
building a DAG of the same number of chained ``EmptyOperator``s, which is what Airflow
alone charges for that many tasks. The minimum of several rounds of each is compared, the
figure least disturbed by other processes.

Both are timed in this thread's CPU time, not wall time: on a loaded machine the ~5 ms
build is preempted within a round far more often than the ~2 ms one, which made the
wall-clock ratio swing from 2.4 to 7.8 with the load alone (four busy loops on 2 cores
moved it from 2.4 to 3.9-4.6; in CPU time it stayed at 2.4-2.6).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "include" / "workloads" / "hdh_registry.yaml"
ROUNDS = 25
# Measured on 2026-12-06 after the Params change (docs/benchmarks.md#parse), in CPU time:
# 2.28-2.64 in eleven processes, idle and with four busy loops on 2 cores (median 2.4).
# The issue (#12) allows twice the current figure.
CURRENT_RATIO = 2.4
LIMIT = 2 * CURRENT_RATIO


def _fastest(build: Callable[[], object], rounds: int = ROUNDS) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.thread_time()
        build()
        best = min(best, time.thread_time() - started)
    return best


def _trivial_dag(task_count: int) -> None:
    import pendulum
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    with DAG(dag_id="trivial", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        previous = None
        for n in range(task_count):
            task = EmptyOperator(task_id=f"t{n}")
            if previous is not None:
                previous >> task
            previous = task


def measure(directory: Path) -> tuple[float, float, int]:
    """(fastest manifest DAG build, fastest trivial DAG build, tasks): interleaved in rounds."""
    from bascule_airflow.dag_factory import build_workload_dags

    (dag,) = build_workload_dags(directory).values()  # warms imports and caches for both sides
    tasks = len(dag.tasks)
    _trivial_dag(tasks)
    manifest_best = trivial_best = float("inf")
    for _ in range(ROUNDS):
        manifest_best = min(manifest_best, _fastest(lambda: build_workload_dags(directory), 1))
        trivial_best = min(trivial_best, _fastest(lambda: _trivial_dag(tasks), 1))
    return manifest_best, trivial_best, tasks


@pytest.mark.timeout(120)
def test_one_manifest_dag_costs_at_most_twice_todays_ratio_to_airflows_own(tmp_path: Path) -> None:
    shutil.copy(MANIFEST, tmp_path / MANIFEST.name)
    manifest_s, trivial_s, tasks = measure(tmp_path)
    ratio = manifest_s / trivial_s
    assert ratio <= LIMIT, (
        f"building migrate_hdh_registry ({tasks} tasks) took {1000 * manifest_s:.2f} ms, "
        f"{ratio:.2f}x a DAG of {tasks} EmptyOperators ({1000 * trivial_s:.2f} ms); the limit is "
        f"{LIMIT:.1f}x (twice the {CURRENT_RATIO}x measured when it was set). Profile the factory "
        "and the operators' __init__ (docs/benchmarks.md#parse)."
    )

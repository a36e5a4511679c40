"""Parse benchmark: how long the DAG processor takes to parse ``dags/`` over 500 manifests.

Generates 500 valid manifests (both kinds) in a temp folder, then, in a FRESH
interpreter per run (so module caches do not flatter the result), fills a DagBag
of ``dags/`` with ``BASCULE_WORKLOADS_DIR`` pointing there. Reports medians of 5
runs of: the whole process, the in-process DagBag fill, and, to show the split,
``load_manifests`` alone and ``build_workload_dags`` alone (each also in a fresh
interpreter). Goal: a DagBag fill under 2 s for 500 DAGs. The verdict is
informational; the exit code is non-zero only if the parse has import errors.

Run: ``.venv/bin/python bench/parse.py`` (or ``make bench``).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DAGS_DIR = ROOT / "dags"
TEMPLATE = ROOT / "include" / "workloads" / "snds_extracts.yaml"
MANIFESTS = 500
RUNS = 5
GOAL_SECONDS = 2.0

# The shipped postgres manifest (include/workloads/hdh_registry.yaml), id and databases varied.
POSTGRES_TEMPLATE = (
    (Path(__file__).resolve().parents[1] / "include" / "workloads" / "hdh_registry.yaml")
    .read_text()
    .replace("id: hdh_registry", "id: {id}")
    .replace("database: hdh_registry", "database: registry_{n}")
)

# The split runs time the import of the code under test, then one call of it on the manifests.
_TIMED_CALL = """
import json, sys, time
from pathlib import Path
{prelude}t0 = time.perf_counter()
from {module} import {function}
imported = time.perf_counter() - t0
t0 = time.perf_counter()
result = {function}(Path(sys.argv[2]))
seconds = time.perf_counter() - t0
print(json.dumps({{"seconds": seconds, "import": imported, {summary}}}))
"""

# Code run in each fresh interpreter. Timers start after ``import airflow`` (paid by
# every Airflow component once, before it parses anything); the process total includes it.
CHILD = {
    "dagbag": """
import json, sys, time
import airflow
from airflow.dag_processing.dagbag import DagBag
t0, c0 = time.perf_counter(), time.process_time()
bag = DagBag(sys.argv[1])
fill, cpu = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps({"seconds": fill, "cpu": cpu, "dags": len(bag.dags), "import_errors": len(bag.import_errors),
                  "errors": {k: str(v)[-2000:] for k, v in bag.import_errors.items()}}))
""",
    "validate": _TIMED_CALL.format(
        prelude="",
        module="bascule.workload",
        function="load_manifests",
        summary='"valid": sum(m.workload is not None for m in result)',
    ),
    "build": _TIMED_CALL.format(
        prelude="import airflow\n",
        module="bascule_airflow.dag_factory",
        function="build_workload_dags",
        summary='"dags": len(result)',
    ),
}


def write_manifests(directory: Path, count: int) -> None:
    object_store = TEMPLATE.read_text(encoding="utf-8")
    for n in range(count):
        if n % 2 == 0:
            text = re.sub(r"(?m)^id: .*$", f"id: objects_{n:04d}", object_store)
            text = re.sub(r"(?m)^(\s+container:) .*$", rf"\1 extracts-{n:04d}", text)
            text = re.sub(r"(?m)^(\s+bucket:) .*$", rf"\1 hdh-extracts-{n:04d}", text)
            (directory / f"objects_{n:04d}.yaml").write_text(text, encoding="utf-8")
        else:
            text = POSTGRES_TEMPLATE.format(id=f"registry_{n:04d}", n=n)
            (directory / f"registry_{n:04d}.yaml").write_text(text, encoding="utf-8")


def child_env(airflow_home: Path, workloads: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "BASCULE_WORKLOADS_DIR": str(workloads),
            "PYTHONPATH": os.pathsep.join(
                [str(ROOT / "include"), str(ROOT / "plugins"), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
        }
    )
    return env


def run_child(mode: str, env: dict[str, str], workloads: Path) -> dict:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", CHILD[mode], str(DAGS_DIR), str(workloads)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    total = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{mode} run failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    report["process"] = total
    return report


def median(reports: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in reports)


def spread(reports: list[dict], key: str) -> str:
    values = [r[key] for r in reports]
    return f"min {min(values):.2f}, max {max(values):.2f}"


def _load(load: tuple[float, float, float]) -> str:
    return ", ".join(f"{x:.2f}" for x in load)


def main() -> int:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bascule-bench-parse-") as tmp:
        workloads = Path(tmp) / "workloads"
        workloads.mkdir()
        airflow_home = Path(tmp) / "airflow"
        airflow_home.mkdir()
        write_manifests(workloads, MANIFESTS)
        env = child_env(airflow_home, workloads)

        # Interleave the modes so machine noise spreads over all of them.
        runs: dict[str, list[dict]] = {mode: [] for mode in CHILD}
        for i in range(RUNS):
            for mode in CHILD:
                runs[mode].append(run_child(mode, env, workloads))
            print(f"run {i + 1}/{RUNS}: DagBag fill {runs['dagbag'][-1]['seconds']:.2f} s", file=sys.stderr)

    bag = runs["dagbag"]
    dags = bag[0]["dags"]
    errors = max(r["import_errors"] for r in bag)
    fill = median(bag, "seconds")
    validate = median(runs["validate"], "seconds")
    build = median(runs["build"], "seconds")

    rows = [
        ("manifests", f"{MANIFESTS} ({MANIFESTS - MANIFESTS // 2} object_store, {MANIFESTS // 2} postgres)"),
        ("DAGs loaded", f"{dags}"),
        ("import errors", f"{errors}"),
        (
            "DagBag fill (in process)",
            f"{fill:.2f} s  ({1000 * fill / max(dags, 1):.2f} ms per DAG; {spread(bag, 'seconds')})",
        ),
        # The fill is one thread doing no I/O to speak of: its CPU time is what a quiet machine's
        # wall time would be, and far less disturbed than wall time when others share the cores.
        ("DagBag fill, CPU time of that process", f"{median(bag, 'cpu'):.2f} s  ({spread(bag, 'cpu')})"),
        ("whole process (import airflow + fill)", f"{median(bag, 'process'):.2f} s  ({spread(bag, 'process')})"),
        ("load_manifests alone (validation)", f"{validate:.2f} s  ({1000 * validate / MANIFESTS:.2f} ms per manifest)"),
        ("build_workload_dags (validation + DAGs)", f"{build:.2f} s  ({1000 * build / MANIFESTS:.2f} ms per manifest)"),
        ("  of which DAG and operator objects", f"{build - validate:.2f} s"),
        ("import bascule.workload (bare interpreter)", f"{median(runs['validate'], 'import'):.2f} s"),
        ("import dag_factory (after import airflow)", f"{median(runs['build'], 'import'):.2f} s"),
        ("goal: DagBag fill < 2 s for 500 DAGs", "PASS" if fill < GOAL_SECONDS else "MISS"),
        ("  (same goal on the fill's CPU time)", "PASS" if median(bag, "cpu") < GOAL_SECONDS else "MISS"),
    ]
    print(f"Parse benchmark: DagBag of dags/ over generated manifests, median of {RUNS} fresh processes")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPU(s)")
    # The machine is shared: the load says how far to trust the absolute figures.
    load_after = os.getloadavg()
    print(f"load average (1, 5, 15 min): before {_load(load_before)}; after {_load(load_after)}")
    for label, value in rows:
        print(f"  {label:<44} {value}")
    if errors:
        for path, error in bag[0]["errors"].items():
            print(f"\nimport error in {path}:\n{error}", file=sys.stderr)
        return 1
    if dags != MANIFESTS:
        print(f"expected {MANIFESTS} DAGs, got {dags}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

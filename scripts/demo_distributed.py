"""`make demo-distributed`: the demo's two workloads, end to end, on the CeleryExecutor stack.

Same data, manifests, connections and people as `make demo` (scripts/demo.py), but on
scripts/celery_stack.py: metadata in the machine's PostgreSQL, Redis as the broker, FAB
users with the project's roles, two Celery workers. At the end it prints, per task, which
worker ran it, and fails unless the transfer shards and the table copies ran on both.
The stack stays up for exploring; stop it with `make down-distributed`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import demo
import devstack
from celery_stack import (
    DEFAULT_STATE_DIR,
    USERS,
    WORKERS,
    CeleryStack,
    StackConfig,
    config_from_args,
    start_or_explain,
    who_ran_what,
)

STATE = DEFAULT_STATE_DIR
SPREAD_TASKS = {demo.DEMO_DAG: "transfer", demo.PG_DAG: "copy_table"}


def run(stack: CeleryStack) -> int:
    from bascule.synthetic.writer import Writer

    c = stack.config
    count, size = demo.seed_dataset(devstack.Ports(c.azurite_port, c.moto_port))
    print(f"Seeded {count:,} synthetic SNDS-like objects ({size / 1e6:,.1f} MB) into Azurite.")
    source, _ = stack.pg_pair()
    print(f"Seeded database '{demo.PG_WORKLOAD}' on the source cluster: {demo.seed_registry(source)}")
    operator = stack.api("operator")
    # The writer appends; the end-of-demo check must judge this run's acknowledged writes only.
    (c.state_dir / "writes.jsonl").unlink(missing_ok=True)
    writer = Writer(
        source.dsn(demo.PG_WORKLOAD, user=demo.APP_ROLE, password=demo.APP_PASSWORD),
        c.state_dir / "writes.jsonl",
        seed=1,
    )
    writer.start()
    runs = {dag_id: demo.trigger(operator, dag_id) for dag_id in (demo.DEMO_DAG, demo.PG_DAG)}
    try:
        states = {demo.PG_DAG: demo.approve_and_finish(stack, operator, demo.PG_WORKLOAD, runs[demo.PG_DAG])}
    finally:
        writer.stop()
    states[demo.DEMO_DAG] = demo.approve_and_finish(stack, operator, demo.DEMO_WORKLOAD, runs[demo.DEMO_DAG])

    spread_ok = True
    for dag_id, run_id in runs.items():
        rows = who_ran_what(operator, dag_id, run_id)
        task = SPREAD_TASKS[dag_id]
        hosts = sorted({ti["hostname"] for ti in rows if ti["task_id"] == task and ti.get("hostname")})
        print(f"{dag_id}: {states[dag_id].upper()}; {task} ran on {', '.join(hosts) or 'no worker'}")
        spread_ok = spread_ok and set(hosts) == set(WORKERS)
    print(f"\nAirflow UI: {stack.url}  (logins: {', '.join(USERS)}; passwords BASCULE_<USER>_PASSWORD in {c.env_file})")
    print(f"Logs and state: {c.state_dir}.  Stop everything with: make down-distributed")
    if not spread_ok:
        print("the transfer shards or the table copies did not run on both workers", file=sys.stderr)
    return 0 if spread_ok and all(state == "success" for state in states.values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state-dir", type=Path, default=STATE)
    parser.add_argument("--api-port", type=int, default=int(os.environ.get("BASCULE_DISTRIBUTED_API_PORT", "8091")))
    args = parser.parse_args(argv)
    # A fresh stack every time, as `make demo` does: moto keeps nothing across restarts.
    previous = argparse.Namespace(command="down", state_dir=args.state_dir)
    if (args.state_dir / "stack.json").exists():
        CeleryStack(config_from_args(previous)).stop()
    stack = CeleryStack(StackConfig(state_dir=args.state_dir, api_port=args.api_port).resolved())
    print("Starting the distributed stack (CeleryExecutor, Redis, PostgreSQL metadata DB, FAB, two workers)...")
    if not start_or_explain(stack, "demo-distributed"):
        return 2
    print(f"Airflow at {stack.url}: {', '.join(name for name, up in stack.status().items() if up)}")
    return run(stack)


if __name__ == "__main__":
    sys.exit(main())

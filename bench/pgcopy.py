"""PostgreSQL copy benchmark: Bascule's schema + data copy against pg_dump | pg_restore.

One run starts its own pair of throwaway clusters (``scripts/pgclusters.start_pair``,
the same settings the tests use: fsync off, wal_level=logical) in a temp folder,
generates a health-data table in the source once, and then copies it, alternating
the tools, each time into a fresh target database:

- ``bascule``      -- ``schema_copy.dump_schema``/``apply_schema`` (pre-data), ``read_inventory``,
  ``copy_table`` (COPY TO STDOUT -> pipe -> COPY FROM STDIN, binary format, one target
  transaction), then post-data (primary key, index), as the DAG's tasks do, in this process;
- ``pg_dump -Fc``  -- ``pg_dump -Fc src | pg_restore -d tgt`` (piped, default compression);
- ``pg_dump -Z0``  -- the same, uncompressed (the fairer peer: Bascule compresses nothing).

Table: ``health.stays``, N rows (default 1,000,000): id bigint primary key, patient_id,
admission/discharge dates, an ICD-10 diagnosis code, a CCAM act code, a ward, a cost
numeric(10,2) and a free-text note (~60 chars); plus an index on patient_id.

Each run prints the client-side CPU (Bascule's process, or pg_dump + pg_restore) and the
1-minute load average: on a shared machine the figures move with the neighbours' load.

Every copy is checked afterwards: row count and an order-independent hash of all rows
equal to the source's. Reported per tool (median of the repeats): seconds, rows/s, MB/s
(of the source table's on-disk size, pg_table_size, the same for every tool) and the
ratio (peer seconds / Bascule seconds); Bascule's time is also split into its phases.

Run: ``.venv/bin/python bench/pgcopy.py [--rows N] [--repeats N] [--keep]``
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import uptime

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT / "scripts")]

import devstack  # noqa: E402
import pgclusters  # noqa: E402
from bascule.postgres.bulk_copy import copy_table  # noqa: E402
from bascule.postgres.catalog import read_inventory  # noqa: E402
from bascule.postgres.client import LibpqParams  # noqa: E402
from bascule.postgres.schema_copy import apply_schema, dump_schema  # noqa: E402

SOURCE_DB = "bench_src"
TOOLS = ("bascule", "pg_dump -Fc", "pg_dump -Z0")
MB = 1e6

GENERATE = """
create schema health;
create table health.stays (
    id bigint primary key,
    patient_id bigint not null,
    admitted date not null,
    discharged date,
    diagnosis_code text not null,
    act_code text,
    ward smallint not null,
    cost numeric(10, 2),
    note text
);
insert into health.stays
select i,
       1 + (i::bigint * 7919) % 250000,
       date '2015-01-01' + (i * 13) % 3650,
       case when i % 12 = 0 then null else date '2015-01-01' + (i * 13) % 3650 + i % 21 end,
       chr(65 + i % 26) || lpad((i % 100)::text, 2, '0') || '.' || (i % 10),
       case when i % 4 = 0 then null else chr(65 + i % 26) || chr(65 + i % 17) || chr(65 + i % 11) || 'A'
            || lpad((i % 999)::text, 3, '0') end,
       1 + i % 40,
       round(((i::bigint * 37) % 1000000) / 100.0, 2),
       case when i % 5 = 0 then null else 'sortie ' || md5(i::text) || ' suivi J' || (i % 30) end
from generate_series(1, %(rows)s) i;
create index stays_patient_idx on health.stays (patient_id);
"""
CHECKSUM = "select count(*), sum(('x' || substr(md5(t::text), 1, 15))::bit(60)::bigint)::text from health.stays t"


@dataclass
class Run:
    tool: str
    repeat: int
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    correct: bool = False
    detail: str = ""
    cpu_s: float = 0.0  # client CPU: this process and its children (pg_dump, pg_restore) over the run
    loadavg: float = 0.0


def _checksum(cluster: pgclusters.PgCluster, database: str) -> tuple[Any, ...]:
    with closing(cluster.connect(database)) as conn, conn.cursor() as cur:
        cur.execute(CHECKSUM)
        return tuple(cur.fetchone())


def _fresh_database(cluster: pgclusters.PgCluster, name: str) -> None:
    with closing(cluster.connect()) as conn, conn.cursor() as cur:
        cur.execute(f"drop database if exists {name} with (force)")
        cur.execute(f"create database {name}")
        cur.execute("checkpoint")  # every run starts from a clean, flushed server


def _drop_database(cluster: pgclusters.PgCluster, name: str) -> None:
    with closing(cluster.connect()) as conn, conn.cursor() as cur:
        cur.execute(f"drop database if exists {name} with (force)")


def run_bascule(source: pgclusters.PgCluster, target: pgclusters.PgCluster, database: str) -> dict[str, float]:
    phases: dict[str, float] = {}
    params = LibpqParams("127.0.0.1", source.port, "postgres", source.password, SOURCE_DB)
    with (
        closing(source.connect(SOURCE_DB, autocommit=False)) as src,
        closing(target.connect(database, autocommit=False)) as tgt,
    ):
        t0 = time.monotonic()
        inventory = read_inventory(src, ["health"], [])
        phases["inventory"] = time.monotonic() - t0
        t = time.monotonic()
        apply_schema(tgt, dump_schema(params, "pre-data", ["health"], []), if_absent=True)
        phases["pre-data"] = time.monotonic() - t
        t = time.monotonic()
        for table in inventory.tables:
            report = copy_table(src, tgt, table)
        phases["copy"] = time.monotonic() - t
        phases["copy_bytes"] = report.bytes
        t = time.monotonic()
        apply_schema(tgt, dump_schema(params, "post-data", ["health"], []), if_absent=True)
        phases["post-data"] = time.monotonic() - t
    return phases


def run_pg_dump(source: pgclusters.PgCluster, target: pgclusters.PgCluster, database: str, compress: bool) -> None:
    bindir = Path(shutil.which("pg_dump") or "pg_dump").parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    dump_env = {**env, "PGHOST": "127.0.0.1", "PGPORT": str(source.port), "PGUSER": "postgres"}
    dump_env["PGPASSWORD"] = source.password
    restore_env = {**env, "PGHOST": "127.0.0.1", "PGPORT": str(target.port), "PGUSER": "postgres"}
    restore_env["PGPASSWORD"] = target.password
    dump_cmd = [str(bindir / "pg_dump"), "-Fc", "--no-owner", "--no-privileges", "-n", "health", "-d", SOURCE_DB]
    if not compress:
        dump_cmd.insert(2, "-Z0")
    dump = subprocess.Popen(dump_cmd, stdout=subprocess.PIPE, env=dump_env)
    restore = subprocess.run(
        [str(bindir / "pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error", "-d", database],
        stdin=dump.stdout,
        env=restore_env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert dump.stdout is not None
    dump.stdout.close()
    if dump.wait() != 0 or restore.returncode != 0:
        raise RuntimeError(f"pg_dump | pg_restore failed: {restore.stderr.strip()[-500:]}")


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (server logs)")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="bascule-bench-pgcopy-"))
    started = time.monotonic()
    print(f"pgcopy benchmark: {args.rows:,} rows, {args.repeats} repeat(s), tools {', '.join(TOOLS)}")
    print(f"before: {uptime()}")
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}", flush=True)
    runs: list[Run] = []
    try:
        source, target = pgclusters.start_pair(workdir, devstack.free_port(), devstack.free_port())
        print(f"clusters: source :{source.port}, target :{target.port} (PostgreSQL, fsync off, wal_level logical)")
        with closing(source.connect()) as conn, conn.cursor() as cur:
            cur.execute(f"create database {SOURCE_DB}")
        t = time.monotonic()
        with closing(source.connect(SOURCE_DB)) as conn, conn.cursor() as cur:
            cur.execute(GENERATE.replace("%(rows)s", str(int(args.rows))))
            cur.execute("vacuum analyze health.stays")
            cur.execute("select pg_table_size('health.stays'), pg_indexes_size('health.stays')")
            table_bytes, index_bytes = cur.fetchone()
        expected = _checksum(source, SOURCE_DB)
        print(
            f"source table health.stays: {args.rows:,} rows, {table_bytes / MB:,.0f} MB on disk "
            f"(+ {index_bytes / MB:,.0f} MB of indexes), generated in {time.monotonic() - t:.1f} s",
            flush=True,
        )
        for repeat in range(args.repeats):
            order = TOOLS[repeat % len(TOOLS) :] + TOOLS[: repeat % len(TOOLS)]  # rotate: no tool always first
            for tool in order:
                database = "bench_tgt"
                _fresh_database(target, database)
                record = Run(tool, repeat)
                cpu, children, t = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN), time.monotonic()
                if tool == "bascule":
                    record.phases = run_bascule(source, target, database)
                else:
                    run_pg_dump(source, target, database, compress=tool == "pg_dump -Fc")
                record.cpu_s = _cpu(resource.RUSAGE_SELF) - cpu + _cpu(resource.RUSAGE_CHILDREN) - children
                record.seconds = time.monotonic() - t
                record.loadavg = os.getloadavg()[0]
                got = _checksum(target, database)
                record.correct = got == expected
                record.detail = "correct" if record.correct else f"INCORRECT: {got} != {expected}"
                _drop_database(target, database)
                runs.append(record)
                split = ""
                if record.phases:
                    split = "  [" + ", ".join(f"{k} {v:.2f} s" for k, v in record.phases.items() if k != "copy_bytes")
                    split += f"; streamed {record.phases['copy_bytes'] / MB:,.0f} MB]"
                print(
                    f"  #{repeat + 1} {tool:<12} {record.seconds:7.2f} s  client CPU {record.cpu_s:5.2f} s  "
                    f"load {record.loadavg:4.1f}  {record.detail}{split}",
                    flush=True,
                )
    finally:
        pgclusters.stop_pair(workdir)
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nmedian of {args.repeats} run(s), {args.rows:,} rows, {table_bytes / MB:,.0f} MB table:")
    print(f"  {'tool':<12} {'s':>7} {'rows/s':>10} {'MB/s':>7} {'vs bascule':>10}")
    medians = {
        tool: statistics.median([r.seconds for r in runs if r.tool == tool and r.correct] or [float("nan")])
        for tool in TOOLS
    }
    for tool in TOOLS:
        seconds = medians[tool]
        ratio = seconds / medians["bascule"]
        print(
            f"  {tool:<12} {seconds:7.2f} {args.rows / seconds:>10,.0f} {table_bytes / MB / seconds:>7.1f} "
            f"{ratio:>9.2f}x"
        )
    bascule_runs = [r for r in runs if r.tool == "bascule"]
    for phase in ("inventory", "pre-data", "copy", "post-data"):
        value = statistics.median([r.phases[phase] for r in bascule_runs])
        print(f"  bascule {phase:<10} {value:6.2f} s (median)")
    copy_s = statistics.median([r.phases["copy"] for r in bascule_runs])
    print(f"  bascule copy_table alone: {args.rows / copy_s:,.0f} rows/s, {table_bytes / MB / copy_s:.1f} MB/s")
    print("\n'vs bascule' = tool seconds / Bascule seconds (above 1: Bascule is faster).")
    print("client CPU = Bascule's own process (pg_dump subprocess included) or pg_dump + pg_restore; servers excluded.")
    print(f"after: {uptime()}")
    print(f"total bench time: {time.monotonic() - started:.0f} s")
    return 0 if all(r.correct for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())

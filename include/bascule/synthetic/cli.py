"""The synthetic registry's command line: ``python -m bascule.synthetic.cli create|write``.

``create`` builds and populates the registry database; ``write`` is the child process
:class:`bascule.synthetic.writer.Writer` starts. Both read the DSN from
``$BASCULE_SYNTHETIC_PG_DSN``: it holds a password, so never a command line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from contextlib import closing

from bascule.synthetic.registry import DEMO_PATIENTS, DEMO_SEED, DSN_ENV, SCHEMA, create_schema, populate
from bascule.synthetic.writer import write_loop


def _dsn_from_env() -> str:
    dsn = os.environ.get(DSN_ENV)
    if not dsn:
        raise SystemExit(f"set {DSN_ENV} to the libpq DSN (it is not read from the command line)")
    return dsn


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bascule.synthetic.cli", description="Synthetic health registry in PostgreSQL, and its writer."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help=f"create schema {SCHEMA} and populate it (DSN in ${DSN_ENV})")
    create.add_argument("--patients", type=int, default=DEMO_PATIENTS)
    create.add_argument("--seed", type=int, default=DEMO_SEED)
    write = commands.add_parser("write", help=f"write like the application until SIGTERM (DSN in ${DSN_ENV})")
    write.add_argument("--log", required=True)
    write.add_argument("--seed", type=int, default=0)
    write.add_argument("--interval", type=float, default=0.02)
    write.add_argument("--refused-interval", type=float, default=0.5)
    write.add_argument("--max-seconds", type=float, default=3600.0)
    args = parser.parse_args(argv)

    if args.command == "create":
        import psycopg2

        with closing(psycopg2.connect(_dsn_from_env())) as conn:
            conn.autocommit = True
            started = time.perf_counter()
            create_schema(conn)
            counts = populate(conn, args.patients, args.seed)
        print(json.dumps({"rows": counts, "seconds": round(time.perf_counter() - started, 2)}))
        return 0

    stopping = False
    parent = os.getppid()

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    stats = write_loop(
        _dsn_from_env(),
        args.log,
        seed=args.seed,
        interval=args.interval,
        refused_interval=args.refused_interval,
        max_seconds=args.max_seconds,
        should_stop=lambda: stopping or os.getppid() != parent,  # orphaned: the test or task died
    )
    print(json.dumps(stats.to_json()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``make test``: the distributed tests beside all the others, as two pytest processes.

Why two: tests/distributed spends its minutes waiting on a Celery stack (heartbeat
timeouts, task retries, a restarted scheduler), the other tiers mostly wait on airflow
standalone and the stand-ins. Side by side on 2 cores they take less wall time than one
after the other, which keeps CI under its 40-minute budget. They share nothing: every
server takes a free port, the Celery stack has its own metadata database and Redis db,
and its workers and triggerer serve no logs (no 8793/8794 clash with airflow standalone).

The distributed run's output goes to .bascule/test-distributed.log and is printed when
both are done. Exit status: 0 only if both runs passed; "no test collected" (pytest's 5)
counts as a failure, as in .ci/run, unless arguments narrowed the selection to one side.

Usage: python scripts/run_tests.py [pytest args for both runs, e.g. -x or -k name]
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTED_LOG = ROOT / ".bascule" / "test-distributed.log"
# Slowest tests printed by both runs: where the next CI minute is to be won.
DURATIONS = "--durations=20"
NOTHING_COLLECTED = 5


def main(extra: list[str]) -> int:
    DISTRIBUTED_LOG.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with DISTRIBUTED_LOG.open("w") as log:
        distributed = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-m", "distributed", DURATIONS, *extra],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            others = subprocess.call(
                [sys.executable, "-m", "pytest", "-m", "not distributed", DURATIONS, *extra], cwd=ROOT
            )
        except BaseException:
            # An interrupted run (Ctrl-C, CI timeout) must not leave the Celery stack's tests behind:
            # pytest tears the stack down on SIGTERM's KeyboardInterrupt-like exit.
            distributed.terminate()
            raise
        distributed_status = distributed.wait()
    print(f"\n===== tests/distributed (-m distributed), from {DISTRIBUTED_LOG.relative_to(ROOT)} =====", flush=True)
    sys.stdout.write(DISTRIBUTED_LOG.read_text(errors="replace"))
    minutes = (time.monotonic() - started) / 60
    print(
        f"\n===== make test: others exit {others}, distributed exit {distributed_status}, {minutes:.1f} min wall =====",
        flush=True,
    )
    return verdict(others, distributed_status, narrowed=bool(extra))


def verdict(others: int, distributed: int, *, narrowed: bool) -> int:
    """0 when both passed. With a narrowing argument (a path, -k), one side may select nothing (5)."""
    statuses = (others, distributed)
    if narrowed and NOTHING_COLLECTED in statuses and statuses != (NOTHING_COLLECTED, NOTHING_COLLECTED):
        return 0 if all(s in (0, NOTHING_COLLECTED) for s in statuses) else 1
    return 0 if statuses == (0, 0) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

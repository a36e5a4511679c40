"""Table diff benchmark: Bascule's segmented-checksum diff against count(*) and a naive diff.

One run starts its own pair of throwaway PostgreSQL clusters
(``scripts/pgclusters.start_pair``, free ports, a temp folder it removes; both
stopped by PID whatever happens), and creates the same 1,000,000-row table in both
with one deterministic ``generate_series`` INSERT (a hospital-stay row: bigint key,
int, date, text, numeric(12,2), nullable text, timestamptz; about 100 MB), then
``VACUUM ANALYZE``. Every query is run once to warm the caches before timing.

Timed, interleaved, median of ``--repeats``:

- ``count seq``   -- ``count(*)`` on the source, then on the target (the sum);
- ``count conc``  -- both ``count(*)`` at once, one thread per connection;
- ``bascule``     -- ``bascule.postgres.tablediff.diff_table`` on the equal tables;
- ``naive``       -- fetch every row of both sides ordered by key through server-side
  cursors (REPEATABLE READ, 20,000 rows a round trip) and merge-compare in Python
  (fewer repeats: it is slow).

Then 10 seeded differences are written to the target (changed, deleted and inserted
rows, the minimum and maximum keys among them) and ``diff_table`` is timed again;
its answer must be exactly those 10 keys with their kinds.

Targets: equal diff <= 2x the two sequential count(*)s; >= 10x faster than naive;
all 10 differences found.

``one side alone``: the diff's top-level checksum query (captured from a diff run)
timed on the source while the target is idle, next to one ``count(*)`` there: the
ratio when the two databases have their own servers, as in production.

``--sweep`` also times the equal diff over segment counts and with parallel query
off (``max_parallel_workers_per_gather=0``), the tuning knobs.

Both clusters share this machine's cores: a diff runs both sides at once, so on a
2-core machine each side has about one core, while a lone count(*) has both.

Exit status: 0 whatever the figures; 1 if a Bascule diff was wrong.

Run: ``.venv/bin/python bench/tablediff.py [--rows N] [--repeats N] [--sweep]``
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT / "scripts")]

import psycopg2  # noqa: E402

import devstack  # noqa: E402
import pgclusters  # noqa: E402
from bascule.postgres.tablediff import diff_table  # noqa: E402
from bascule.postgres.tablediff_records import TableDiff, TableSpec  # noqa: E402
from bascule.postgres.tablediff_sessions import Session  # noqa: E402

DATABASE = "bench_tablediff"
COLUMNS = ["id", "patient_id", "admitted", "code", "amount", "note", "updated_at"]
SPEC = TableSpec("public", "stays", ["id"], COLUMNS)
TARGET_VS_COUNT = 2.0
TARGET_VS_NAIVE = 10.0

CREATE = """
CREATE TABLE stays (
    id bigint PRIMARY KEY, patient_id int NOT NULL, admitted date NOT NULL, code text NOT NULL,
    amount numeric(12,2), note text, updated_at timestamptz NOT NULL);
INSERT INTO stays
SELECT g, (g::bigint * 7919) % 100000, date '2020-01-01' + g % 1500, 'C' || g % 977,
       (g % 100000)::numeric / 100,
       CASE WHEN g % 10 = 0 THEN NULL ELSE 'note ' || md5(g::text) END,
       timestamptz '2024-01-01 00:00+00' + g * interval '1 second'
FROM generate_series(1, {rows}) g;
"""


def connect(cluster: pgclusters.PgCluster, *, parallel: bool = True, autocommit: bool = True) -> Any:
    options = "" if parallel else "-c max_parallel_workers_per_gather=0"
    conn = psycopg2.connect(cluster.dsn(DATABASE), options=options)
    conn.autocommit = autocommit
    return conn


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def count_rows(conn: Any) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM stays")
        return int(cur.fetchone()[0])


def naive_diff(source: Any, target: Any) -> int:
    """Every row of both sides, in key order, compared in Python: the differing keys."""

    def rows(conn: Any, name: str) -> Iterator[tuple[Any, ...]]:
        with conn.cursor(name=name) as cur:
            cur.itersize = 20_000
            cur.execute(f"SELECT {', '.join(COLUMNS)} FROM stays ORDER BY id")
            yield from cur

    for conn in (source, target):
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
    try:
        left, right = rows(source, "naive_source"), rows(target, "naive_target")
        a, b = next(left, None), next(right, None)
        differing = 0
        while a is not None or b is not None:
            if b is None or (a is not None and a[0] < b[0]):
                differing += 1
                a = next(left, None)
            elif a is None or b[0] < a[0]:
                differing += 1
                b = next(right, None)
            else:
                differing += a != b
                a, b = next(left, None), next(right, None)
        return differing
    finally:
        for conn in (source, target):
            conn.rollback()


def damage(target: Any, rows: int) -> dict[tuple[int], str]:
    """Ten seeded differences on the target, the minimum and maximum keys among them."""
    rng = random.Random(1_000_003)
    inner = rng.sample(range(2, rows), 6)
    changed = [1, rows, inner[0], inner[1]]
    missing = [inner[2], inner[3], inner[4]]
    extra = [rows + 1, rows + 500, rows * 2]
    with target.cursor() as cur:
        cur.execute("UPDATE stays SET amount = amount + 0.01 WHERE id = %s", (changed[0],))
        cur.execute("UPDATE stays SET note = coalesce(note, '') || '.' WHERE id = %s", (changed[1],))
        cur.execute("UPDATE stays SET updated_at = updated_at + interval '1 microsecond' WHERE id = %s", (changed[2],))
        cur.execute("UPDATE stays SET note = NULL WHERE id = %s AND note IS NOT NULL", (changed[3],))
        if cur.rowcount == 0:  # it was NULL: '' must differ from it
            cur.execute("UPDATE stays SET note = '' WHERE id = %s", (changed[3],))
        cur.execute("DELETE FROM stays WHERE id = ANY(%s)", (missing,))
        for key in extra:
            cur.execute("INSERT INTO stays VALUES (%s, 1, '2020-01-01', 'X', 0, NULL, '2024-01-01')", (key,))
    expected = {(k,): "changed" for k in changed}
    expected |= {(k,): "missing_on_target" for k in missing}
    expected |= {(k,): "extra_on_target" for k in extra}
    assert len(expected) == 10
    return expected


class Bench:
    def __init__(self, workdir: Path, rows: int, repeats: int):
        self.workdir = workdir
        self.rows = rows
        self.repeats = repeats
        self.source: pgclusters.PgCluster | None = None
        self.target: pgclusters.PgCluster | None = None
        self.wrong = False

    def start(self) -> None:
        self.source, self.target = pgclusters.start_pair(self.workdir, devstack.free_port(), devstack.free_port())

    def stop(self) -> None:
        pgclusters.stop_pair(self.workdir)

    def clusters(self) -> tuple[pgclusters.PgCluster, pgclusters.PgCluster]:
        assert self.source is not None and self.target is not None
        return self.source, self.target

    def load(self) -> None:
        started = time.monotonic()

        def build(cluster: pgclusters.PgCluster) -> None:
            with closing(cluster.connect()) as admin, admin.cursor() as cur:
                cur.execute(f"CREATE DATABASE {DATABASE}")
            with closing(connect(cluster)) as conn, conn.cursor() as cur:
                cur.execute(CREATE.format(rows=self.rows))
                cur.execute("VACUUM ANALYZE stays")

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(build, self.clusters()))
        print(f"  loaded {self.rows:,} rows into both clusters in {time.monotonic() - started:.1f} s", flush=True)

    def timed(self, work: Callable[[], Any]) -> tuple[float, Any]:
        started = time.perf_counter()
        result = work()
        return time.perf_counter() - started, result

    def run_equal(self, sweep: bool) -> dict[str, Any]:
        source_cluster, target_cluster = self.clusters()
        source, target = connect(source_cluster), connect(target_cluster)
        pool = ThreadPoolExecutor(2)
        samples: dict[str, list[float]] = {"count_seq": [], "count_conc": [], "bascule": [], "naive": []}
        diffs: list[TableDiff] = []

        def count_seq() -> int:
            return count_rows(source) + count_rows(target)

        def count_conc() -> int:
            return sum(pool.map(count_rows, (source, target)))

        def bascule() -> TableDiff:
            return diff_table(source, target, SPEC)

        def naive() -> int:
            with (
                closing(connect(source_cluster, autocommit=False)) as s,
                closing(connect(target_cluster, autocommit=False)) as t,
            ):
                return naive_diff(s, t)

        for work in (count_seq, count_conc, bascule):  # warm caches and plans
            work()
        naive_repeats = max(1, min(2, self.repeats))
        for repeat in range(self.repeats):
            order = [("count_seq", count_seq), ("count_conc", count_conc), ("bascule", bascule)]
            if repeat < naive_repeats:
                order.append(("naive", naive))
            order = order[repeat % len(order) :] + order[: repeat % len(order)]  # rotate: nobody always first
            for name, work in order:
                seconds, result = self.timed(work)
                samples[name].append(seconds)
                if name == "bascule":
                    diffs.append(result)
                    if not result.equal or result.source_rows != self.rows:
                        print(f"  WRONG: equal tables, Bascule says: {result.summary()}")
                        self.wrong = True
                elif name == "naive" and result != 0:
                    print(f"  WRONG: equal tables, naive diff found {result} differing keys")
                elif name.startswith("count") and result != 2 * self.rows:
                    print(f"  WRONG: count(*) total {result}")
        out: dict[str, Any] = {name: median_ms(values) for name, values in samples.items()}
        out["runs"] = samples
        out["segments"] = diffs[-1].segments
        out["one_side"] = self.one_side(source, target)
        if sweep:
            out["sweep"] = self.sweep(source, target)
        pool.shutdown()
        source.close()
        target.close()
        return out

    def one_side(self, source: Any, target: Any) -> tuple[float, float]:
        """Median ms of the source's checksum query alone, and of count(*) alone there."""
        captured: list[Any] = []
        original = Session.query

        def capture(session: Any, statement: Any, params: Any = None, *, fetch: bool = True) -> Any:
            if session.side == "source" and "GROUP BY" in str(statement) and not captured:
                captured.append(statement)
            return original(session, statement, params, fetch=fetch)

        Session.query = capture  # type: ignore[method-assign]  # bench instrumentation only
        try:
            diff_table(source, target, SPEC)
        finally:
            Session.query = original  # type: ignore[method-assign]
        session = Session(source, "source", SPEC.qualified_name)
        session.begin()  # the diff's own transaction and settings
        try:
            checksum = [self.timed(lambda: session.query(captured[0]))[0] for _ in range(self.repeats + 1)][1:]
        finally:
            session.end()
        count = [self.timed(lambda: count_rows(source))[0] for _ in range(self.repeats + 1)][1:]
        return median_ms(checksum), median_ms(count)

    def sweep(self, source: Any, target: Any) -> list[tuple[str, float]]:
        source_cluster, target_cluster = self.clusters()
        serial = (connect(source_cluster, parallel=False), connect(target_cluster, parallel=False))
        results = []
        variants: list[tuple[str, tuple[Any, Any], int | None]] = [
            ("parallel on, adaptive segments", (source, target), None),
            ("parallel on, 256 segments", (source, target), 256),
            ("parallel on, 16384 segments", (source, target), 16384),
            ("parallel off, adaptive segments", serial, None),
            ("parallel off, 256 segments", serial, 256),
        ]
        for label, (s, t), segments in variants:
            diff_table(s, t, SPEC, segments=segments)  # warm
            times = [
                self.timed(lambda s=s, t=t, n=segments: diff_table(s, t, SPEC, segments=n))[0]
                for _ in range(self.repeats)
            ]
            results.append((label, median_ms(times)))
            print(f"  sweep: {label:34s} {median_ms(times):7.0f} ms", flush=True)
        for conn in serial:
            conn.close()
        return results

    def run_damaged(self) -> dict[str, Any]:
        source_cluster, target_cluster = self.clusters()
        source, target = connect(source_cluster), connect(target_cluster)
        expected = damage(target, self.rows)
        with target.cursor() as cur:
            cur.execute("ANALYZE stays")
        diff_table(source, target, SPEC)  # warm
        times, diff = [], None
        for _ in range(self.repeats):
            seconds, diff = self.timed(lambda: diff_table(source, target, SPEC))
            times.append(seconds)
        assert diff is not None
        got = {d.key: d.kind for d in diff.differences}
        correct = got == expected and not diff.truncated
        if not correct:
            self.wrong = True
            print(f"  WRONG: expected {sorted(expected.items())}\n         got      {sorted(got.items())}")
        source.close()
        target.close()
        return {
            "bascule": median_ms(times),
            "runs": times,
            "diff": diff,
            "correct": correct,
            "found": len(set(got) & set(expected)),
        }


def report(equal: dict[str, Any], damaged: dict[str, Any], rows: int, repeats: int) -> None:
    def runs(values: list[float]) -> str:
        return ", ".join(f"{v * 1000:.0f}" for v in values)

    vs_count = equal["bascule"] / equal["count_seq"]
    vs_count_conc = equal["bascule"] / equal["count_conc"]
    vs_naive = equal["naive"] / equal["bascule"]
    print()
    print(f"Equal tables, {rows:,} rows each (median of {repeats}; naive: of {len(equal['runs']['naive'])})")
    print()
    print("| method | ms | x count(*) seq | runs (ms) |")
    print("|---|---|---|---|")
    for name, label in (
        ("count_seq", "count(*) source + target, sequential"),
        ("count_conc", "count(*) both at once"),
        ("bascule", f"**Bascule diff** ({equal['segments']} segments)"),
        ("naive", "naive fetch-and-compare"),
    ):
        print(f"| {label} | {equal[name]:.0f} | {equal[name] / equal['count_seq']:.2f} | {runs(equal['runs'][name])} |")
    checksum_ms, count_ms = equal["one_side"]
    print()
    print(
        f"One side alone (source; target idle): checksum query {checksum_ms:.0f} ms, count(*) {count_ms:.0f} ms:"
        f" {checksum_ms / count_ms:.2f}x one count(*), {checksum_ms / (2 * count_ms):.2f}x two"
    )
    print()
    diff: TableDiff = damaged["diff"]
    print(f"10 differences: {damaged['bascule']:.0f} ms (runs {runs(damaged['runs'])}), found {damaged['found']}/10")
    print(f"  {diff.summary()}")
    print()
    verdict = {True: "PASS", False: "MISS"}
    print("| target | measured | verdict |")
    print("|---|---|---|")
    print(
        f"| equal diff <= {TARGET_VS_COUNT:.0f}x the two count(*)s | {vs_count:.2f}x (vs concurrent counts {vs_count_conc:.2f}x) | {verdict[vs_count <= TARGET_VS_COUNT]} |"
    )
    print(f"| >= {TARGET_VS_NAIVE:.0f}x faster than naive | {vs_naive:.1f}x | {verdict[vs_naive >= TARGET_VS_NAIVE]} |")
    print(
        f"| all 10 differences found, nothing else | {damaged['found']}/10, exact: {damaged['correct']} | {verdict[damaged['correct']]} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sweep", action="store_true", help="also time segment counts and parallel query off")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bascule-bench-tablediff-"))
    bench = Bench(workdir, args.rows, args.repeats)
    print(
        f"tablediff bench: {args.rows:,} rows, {args.repeats} repeats, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}"
    )
    try:
        bench.start()
        bench.load()
        equal = bench.run_equal(args.sweep)
        damaged = bench.run_damaged()
        report(equal, damaged, args.rows, args.repeats)
        print(f"\nload average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    finally:
        bench.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if bench.wrong else 0


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())

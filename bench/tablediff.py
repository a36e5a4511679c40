"""Table diff benchmark: Bascule's segmented-checksum diff against count(*) and a naive diff.

One run starts its own pair of throwaway PostgreSQL clusters
(``scripts/pgclusters.start_pair``, free ports, a temp folder it removes; both
stopped by PID whatever happens), and creates the same 1,000,000-row table in both
with one deterministic ``generate_series`` INSERT (a hospital-stay row: bigint key,
int, date, text, numeric(12,2), nullable text, timestamptz; about 100 MB), then
``VACUUM ANALYZE``. Every query is run once to warm the caches before timing.

Timed in pairs, ``--repeats`` times, each pair in alternating order (so neither
always runs first on a warm or a cold moment of this shared machine):

- ``count conc``  -- both ``count(*)`` at once, one thread per connection (the
  target's yardstick: the two sides' cheapest full read, in parallel like the diff);
- ``bascule``     -- ``bascule.postgres.tablediff.diff_table`` on the equal tables
  (the whole-table fingerprints, one parallel aggregate per side, settle it);

the ratio of each pair is taken and the median of those ratios reported (paired
medians: both numbers of a pair saw the same load). ``count seq`` (source, then
target) is timed too, for the record. ``naive`` -- fetch every row of both sides
ordered by key through server-side cursors (REPEATABLE READ, 20,000 rows a round
trip) and merge-compare in Python -- is timed fewer times (it is slow), each run
paired with a diff run next to it.

Then 10 seeded differences are written to the target (changed, deleted and inserted
rows, the minimum and maximum keys among them) and ``diff_table`` is timed again,
paired with the equal-table time of the same repetition on the untouched source
(both sides' copies): its answer must be exactly those 10 keys with their kinds; the
extra time over an equal diff is reported.

Targets (PASS/MISS printed for each): equal diff <= 2x the two concurrent
count(*)s; >= 10x faster than naive; all 10 differences found, nothing else; the
client's peak memory does not grow with the rows (compare a 1M and a 10M run).

``one side alone``: the diff's fingerprint query (captured from a diff run) timed on
the source while the target is idle, next to one ``count(*)`` there: the ratio when
the two databases have their own servers, as in production; and its plan (it must
be a Parallel Seq Scan under a Partial Aggregate, as count(*)'s is).

``--sweep`` also times the equal diff with parallel query off
(``max_parallel_workers_per_gather=0``) on both sides, next to count(*) likewise.

Both clusters share this machine's cores: a diff runs both sides at once, so on a
2-core machine each side has about one core, and so do the concurrent counts.
``/proc/loadavg`` is printed at the start and the end: other work on the machine
moves the figures; the ratios of pairs are what to compare.

Exit status: 0 whatever the figures; 1 if a Bascule diff was wrong.

Run: ``.venv/bin/python bench/tablediff.py [--rows N | --large] [--repeats N] [--sweep]``
(``make bench-tablediff``; ``make bench-large`` is ``--large``: 10,000,000 rows,
about 1.3 GB per side, ~15 min here; not CI).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
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
from psycopg2 import sql  # noqa: E402

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
LARGE_ROWS = 10_000_000

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
        pairs: dict[str, list[float]] = {"vs_count": [], "naive_vs": []}
        diffs: list[TableDiff] = []

        def count_seq() -> int:
            return count_rows(source) + count_rows(target)

        def count_conc() -> int:
            return sum(pool.map(count_rows, (source, target)))

        def naive() -> int:
            with (
                closing(connect(source_cluster, autocommit=False)) as s,
                closing(connect(target_cluster, autocommit=False)) as t,
            ):
                return naive_diff(s, t)

        def bascule() -> float:
            seconds, diff = self.timed(lambda: diff_table(source, target, SPEC))
            diffs.append(diff)
            if not diff.equal or diff.source_rows != self.rows:
                print(f"  WRONG: equal tables, Bascule says: {diff.summary()}")
                self.wrong = True
            samples["bascule"].append(seconds)
            return seconds

        def other(name: str, work: Callable[[], int], expected: int) -> float:
            seconds, result = self.timed(work)
            if result != expected:
                print(f"  WRONG: {name} gave {result}, expected {expected}")
            samples[name].append(seconds)
            return seconds

        for work in (count_seq, count_conc, lambda: diff_table(source, target, SPEC)):  # warm caches and plans
            work()
        naive_repeats = max(1, min(2 if self.rows < LARGE_ROWS else 1, self.repeats))
        for repeat in range(self.repeats):
            if repeat % 2 == 0:
                counts, diff = other("count_conc", count_conc, 2 * self.rows), bascule()
            else:
                diff, counts = bascule(), other("count_conc", count_conc, 2 * self.rows)
            pairs["vs_count"].append(diff / counts)
            other("count_seq", count_seq, 2 * self.rows)
            if repeat < naive_repeats:
                slow = other("naive", naive, 0)
                pairs["naive_vs"].append(slow / bascule())
            print(f"  repeat {repeat + 1}: diff {diff * 1000:.0f} ms, counts {counts * 1000:.0f} ms", flush=True)
        out: dict[str, Any] = {name: median_ms(values) for name, values in samples.items()}
        out["runs"] = samples
        out["pairs"] = {name: statistics.median(values) for name, values in pairs.items()}
        out["pair_runs"] = pairs
        out["method"] = diffs[-1].method
        out["one_side"] = self.one_side(source)
        if sweep:
            out["sweep"] = self.sweep()
        pool.shutdown()
        source.close()
        target.close()
        return out

    def one_side(self, source: Any) -> tuple[float, float, str]:
        """Median ms of the source's fingerprint query alone and of count(*) alone there; its plan."""
        captured: list[Any] = []
        original = Session.query

        def capture(session: Any, statement: Any, params: Any = None, *, fetch: bool = True) -> Any:
            text = session.render(statement) if isinstance(statement, sql.Composable) else statement
            if session.side == "source" and "count(*)" in text and not captured:
                captured.append(statement)
            return original(session, statement, params, fetch=fetch)

        target_cluster = self.clusters()[1]
        with closing(connect(target_cluster)) as target:
            Session.query = capture  # type: ignore[method-assign,assignment]  # bench instrumentation only
            try:
                diff_table(source, target, SPEC)
            finally:
                Session.query = original  # type: ignore[method-assign]
        session = Session(source, "source", SPEC.qualified_name)
        session.begin()  # the diff's own transaction and settings
        try:
            checksum = [self.timed(lambda: session.query(captured[0]))[0] for _ in range(self.repeats + 1)][1:]
            plan = [r[0] for r in session.query(sql.SQL("EXPLAIN ") + captured[0])]
        finally:
            session.end()
        count = [self.timed(lambda: count_rows(source))[0] for _ in range(self.repeats + 1)][1:]
        nodes = [n for n in ("Partial Aggregate", "Parallel Seq Scan") if any(n in line for line in plan)]
        workers = next((line.strip() for line in plan if "Workers Planned" in line), "no workers")
        return median_ms(checksum), median_ms(count), f"{' + '.join(nodes) or 'NOT PARALLEL'}, {workers}"

    def sweep(self) -> list[tuple[str, float, float]]:
        """Equal diff and concurrent counts with parallel query off on both sides (medians, ms)."""
        source_cluster, target_cluster = self.clusters()
        s, t = connect(source_cluster, parallel=False), connect(target_cluster, parallel=False)
        with ThreadPoolExecutor(2) as pool:

            def counts() -> Any:
                return list(pool.map(count_rows, (s, t)))

            diff_table(s, t, SPEC)  # warm
            diff_times, count_times = [], []
            for _ in range(self.repeats):
                diff_times.append(self.timed(lambda: diff_table(s, t, SPEC))[0])
                count_times.append(self.timed(counts)[0])
        s.close()
        t.close()
        result = [("parallel off", median_ms(diff_times), median_ms(count_times))]
        print(f"  sweep: parallel off: diff {result[0][1]:.0f} ms, counts {result[0][2]:.0f} ms", flush=True)
        return result

    def run_damaged(self, equal_ms: float) -> dict[str, Any]:
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
            "extra": median_ms(times) - equal_ms,
            "runs": times,
            "diff": diff,
            "correct": correct,
            "found": len(set(got) & set(expected)),
        }


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report(equal: dict[str, Any], damaged: dict[str, Any], rows: int, repeats: int, rss: tuple[float, float]) -> None:
    def runs(values: list[float]) -> str:
        return ", ".join(f"{v * 1000:.0f}" for v in values)

    vs_count, naive_vs = equal["pairs"]["vs_count"], equal["pairs"]["naive_vs"]
    print()
    print(f"Equal tables, {rows:,} rows each ({repeats} pairs; naive: {len(equal['runs']['naive'])})")
    print()
    print("| method | median ms | runs (ms) |")
    print("|---|---|---|")
    for name, label in (
        ("count_conc", "count(*) both at once"),
        ("count_seq", "count(*) source, then target"),
        ("bascule", f"**Bascule diff** ({equal['method']})"),
        ("naive", "naive fetch-and-compare"),
    ):
        print(f"| {label} | {equal[name]:.0f} | {runs(equal['runs'][name])} |")
    ratios = ", ".join(f"{r:.2f}" for r in equal["pair_runs"]["vs_count"])
    print(f"\nPaired ratios diff / concurrent counts: {ratios} (median {vs_count:.2f}x)")
    checksum_ms, count_ms, plan = equal["one_side"]
    print(
        f"One side alone (source; target idle): fingerprint query {checksum_ms:.0f} ms, count(*) {count_ms:.0f} ms:"
        f" {checksum_ms / count_ms:.2f}x one count(*); plan: {plan}"
    )
    for label, diff_ms, count_ms in equal.get("sweep", []):
        print(f"Sweep, {label}: diff {diff_ms:.0f} ms, concurrent counts {count_ms:.0f} ms: {diff_ms / count_ms:.2f}x")
    print()
    diff: TableDiff = damaged["diff"]
    print(
        f"10 differences: {damaged['bascule']:.0f} ms (runs {runs(damaged['runs'])}), found {damaged['found']}/10,"
        f" {damaged['extra']:+.0f} ms over the equal diff ({damaged['bascule'] / equal['bascule']:.2f}x)"
    )
    print(f"  {diff.summary()}")
    print(f"Client peak RSS: {rss[0]:.0f} MiB after the equal runs, {rss[1]:.0f} MiB after the damaged ones")
    print()
    verdict = {True: "PASS", False: "MISS"}
    print("| target | measured | verdict |")
    print("|---|---|---|")
    print(
        f"| equal diff <= {TARGET_VS_COUNT:.0f}x two count(*) in parallel | {vs_count:.2f}x (paired median)"
        f" | {verdict[vs_count <= TARGET_VS_COUNT]} |"
    )
    print(f"| >= {TARGET_VS_NAIVE:.0f}x faster than naive | {naive_vs:.1f}x | {verdict[naive_vs >= TARGET_VS_NAIVE]} |")
    print(
        f"| all 10 differences found, nothing else | {damaged['found']}/10, exact: {damaged['correct']},"
        f" {damaged['extra']:+.0f} ms | {verdict[damaged['correct']]} |"
    )


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--large", action="store_true", help=f"{LARGE_ROWS:,} rows (make bench-large; not CI)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sweep", action="store_true", help="also time the diff and counts with parallel query off")
    args = parser.parse_args()
    rows = LARGE_ROWS if args.large else args.rows
    workdir = Path(tempfile.mkdtemp(prefix="bascule-bench-tablediff-"))
    bench = Bench(workdir, rows, args.repeats)
    print(f"tablediff bench: {rows:,} rows, {args.repeats} repeats, {os.cpu_count()} cores, loadavg {loadavg()}")
    try:
        bench.start()
        bench.load()
        equal = bench.run_equal(args.sweep)
        rss_equal = peak_rss_mib()
        damaged = bench.run_damaged(equal["bascule"])
        report(equal, damaged, rows, args.repeats, (rss_equal, peak_rss_mib()))
        print(f"\nloadavg at the end: {loadavg()}")
    finally:
        bench.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if bench.wrong else 0


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())

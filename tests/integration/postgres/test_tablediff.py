"""Segmented-checksum table diff against two real PostgreSQL clusters.

Each test builds its tables with the same deterministic SQL on both sides (in this
module's own database ``tablediff_it`` in both clusters), then alters the target
(or the source) in known ways, and checks that exactly those keys are reported.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import psycopg2
import pytest
from psycopg2.extras import LoggingConnection

from bascule.identifiers import split_qualified
from bascule.postgres.tablediff import diff_table, recheck
from bascule.postgres.tablediff_records import TableDiffError, TableSpec

pytestmark = pytest.mark.integration

DATABASE = "tablediff_it"


@pytest.fixture(scope="module")
def conns(pg_pair) -> Iterator[tuple[Any, Any]]:
    """Autocommit connections to ``tablediff_it`` on the source and the target."""
    for cluster in pg_pair:
        with closing(cluster.connect()) as admin, admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
            cur.execute(f"CREATE DATABASE {DATABASE}")
    source, target = (cluster.connect(DATABASE) for cluster in pg_pair)
    try:
        yield source, target
    finally:
        source.close()
        target.close()
        for cluster in pg_pair:
            with closing(cluster.connect()) as admin, admin.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


def run(conn: Any, statement: str, params: Any = None) -> None:
    with conn.cursor() as cur:
        cur.execute(statement, params)


def on_both(conns: tuple[Any, Any], statement: str) -> None:
    for conn in conns:
        run(conn, statement)


def found(diff) -> dict[tuple[Any, ...], str]:
    keys = [d.key for d in diff.differences]
    assert len(keys) == len(set(keys)), "a key was reported twice"
    return {d.key: d.kind for d in diff.differences}


# -- 200k rows, 10 differences ----------------------------------------------------------

STAYS_COLUMNS = ["id", "patient_id", "admitted", "code", "amount", "note", "updated_at", "urgent", "tags", "payload"]
STAYS = TableSpec("public", "stays", ["id"], STAYS_COLUMNS)
STAYS_ROWS = 200_000


def _create_stays(conns: tuple[Any, Any]) -> None:
    # Keys are multiples of 3, so extra rows can land in the gaps as well as outside.
    on_both(conns, "DROP TABLE IF EXISTS stays")
    on_both(
        conns,
        """
        CREATE TABLE stays (
            id bigint PRIMARY KEY, patient_id int NOT NULL, admitted date NOT NULL, code text NOT NULL,
            amount numeric(12,2), note text, updated_at timestamptz NOT NULL, urgent boolean,
            tags text[], payload jsonb);
        INSERT INTO stays
        SELECT 3 * g, (g::bigint * 7919) % 100000, date '2020-01-01' + g % 1500, 'C' || g % 977,
               (g % 100000)::numeric / 100,
               CASE WHEN g % 10 = 0 THEN NULL ELSE 'note ' || md5(g::text) END,
               timestamptz '2024-01-01 00:00+00' + g * interval '1 second', g % 7 = 0,
               ARRAY['t' || g % 5, 'u' || g % 3], jsonb_build_object('g', g, 'w', g % 11)
        FROM generate_series(1, {STAYS_ROWS}) g;
        ANALYZE stays;
        """.replace("{STAYS_ROWS}", str(STAYS_ROWS)),
    )


def _damage_stays(target: Any) -> dict[tuple[Any, ...], str]:
    """Ten seeded differences on the target, min and max keys among them."""
    rng = random.Random(20261128)
    lo, hi = 3, 3 * STAYS_ROWS
    inner = rng.sample(range(2, STAYS_ROWS), 7)  # g values, distinct, not the edges
    changed = [lo, hi, 3 * inner[0], 3 * inner[1]]
    missing = [3 * inner[2], 3 * inner[3], 3 * inner[4]]
    extra = [1, 3 * inner[5] + 1, hi + 2]  # below min, in a gap, above max
    changes = [
        "amount = amount + 0.01",
        "note = coalesce(note, '') || '!'",
        "updated_at = updated_at + interval '1 microsecond'",
        "tags = tags || ARRAY['v']",
    ]
    for key, change in zip(changed, changes, strict=True):
        run(target, f"UPDATE stays SET {change} WHERE id = %s", (key,))
    run(target, "DELETE FROM stays WHERE id = ANY(%s)", (missing,))
    for key in extra:
        run(
            target,
            "INSERT INTO stays VALUES (%s, 1, '2020-01-01', 'X', 1.00, NULL, '2024-01-01 00:00+00', false, NULL, NULL)",
            (key,),
        )
    expected = {(k,): "changed" for k in changed}
    expected |= {(k,): "missing_on_target" for k in missing}
    expected |= {(k,): "extra_on_target" for k in extra}
    assert len(expected) == 10
    return expected


@pytest.fixture(scope="module")
def stays(conns) -> dict[tuple[Any, ...], str]:
    _create_stays(conns)
    return _damage_stays(conns[1])


def test_ten_differences_in_200k_rows_are_all_found_with_their_kind(conns, stays) -> None:
    diff = diff_table(*conns, STAYS)
    assert found(diff) == stays
    assert diff.method == "key_range"
    assert (diff.source_rows, diff.target_rows) == (STAYS_ROWS, STAYS_ROWS)
    assert not diff.truncated
    assert 1 <= diff.segments_bisected <= 20
    assert [d.key for d in diff.differences] == sorted(stays)
    # Deep bisection (few top segments, tiny leaves) reaches the same answer.
    deep = diff_table(*conns, STAYS, segments=7, leaf_rows=16)
    assert found(deep) == stays
    assert deep.segments == 7
    assert deep.segments_bisected > 2 * len(stays)  # several levels were walked


def test_summary_and_json_name_the_table_counts_and_first_keys(conns, stays) -> None:
    diff = diff_table(*conns, STAYS)
    line = diff.summary()
    assert "\n" not in line
    assert line.startswith("public.stays: source 200,000 rows, target 200,000 rows: 10 differences")
    assert "4 changed" in line and "3 missing_on_target" in line and "3 extra_on_target" in line
    assert "id=1 extra_on_target" in line and "id=3 changed" in line
    data = json.loads(diff.to_json())
    assert data["table"] == "public.stays"
    assert {(d["key"]["id"], d["kind"]) for d in data["differences"]} == {(k[0], v) for k, v in stays.items()}
    assert data["counts_by_kind"] == {"changed": 4, "missing_on_target": 3, "extra_on_target": 3}


def test_max_differences_truncates(conns, stays) -> None:
    diff = diff_table(*conns, STAYS, max_differences=4)
    assert diff.truncated
    assert len(diff.differences) == 4
    assert all(stays[d.key] == d.kind for d in diff.differences)
    assert "or more (truncated)" in diff.summary()


def test_recheck_keeps_only_differences_that_remain(conns, stays) -> None:
    source, target = conns
    diff = diff_table(source, target, STAYS)
    assert {(d.key, d.kind) for d in recheck(source, target, STAYS, diff.differences)} == set(stays.items())
    # The "replica catches up" on two keys: they are no longer reported.
    run(target, "UPDATE stays t SET amount = amount - 0.01 WHERE id = 3")
    run(target, "DELETE FROM stays WHERE id = 1")
    try:
        remaining = recheck(source, target, STAYS, [{"id": k[0]} for k in stays])
        assert {(d.key, d.kind) for d in remaining} == set(stays.items()) - {
            ((3,), "changed"),
            ((1,), "extra_on_target"),
        }
        assert recheck(source, target, STAYS, [(3,), (1,), (6,)]) == []  # plain tuples, an equal key too
    finally:
        run(target, "UPDATE stays t SET amount = amount + 0.01 WHERE id = 3")
        run(
            target,
            "INSERT INTO stays VALUES (1, 1, '2020-01-01', 'X', 1.00, NULL, '2024-01-01 00:00+00', false, NULL, NULL)",
        )
    assert found(diff_table(source, target, STAYS)) == stays


# -- edge cases -------------------------------------------------------------------------


def test_equal_tables_have_no_differences_and_nothing_is_bisected(conns) -> None:
    on_both(
        conns,
        """
        DROP TABLE IF EXISTS equal_rows;
        CREATE TABLE equal_rows (id int PRIMARY KEY, label text, score float8);
        INSERT INTO equal_rows SELECT g, 'row ' || g, g / 7.0 FROM generate_series(-5000, 5000) g;
        """,
    )
    spec = TableSpec("public", "equal_rows", ["id"], ["id", "label", "score"])
    diff = diff_table(*conns, spec)
    assert diff.differences == []
    assert (diff.source_rows, diff.target_rows, diff.segments_bisected) == (10_001, 10_001, 0)
    assert diff.equal
    assert diff.summary().endswith(" s]") and ": equal [" in diff.summary()


def test_empty_tables_and_an_empty_side(conns) -> None:
    source, target = conns
    on_both(conns, "DROP TABLE IF EXISTS empty_rows; CREATE TABLE empty_rows (id bigint PRIMARY KEY, v text)")
    spec = TableSpec("public", "empty_rows", ["id"], ["id", "v"])
    diff = diff_table(source, target, spec)
    assert (diff.source_rows, diff.target_rows, diff.differences, diff.truncated) == (0, 0, [], False)
    run(target, "INSERT INTO empty_rows SELECT g, 'x' FROM generate_series(10, 59) g")
    diff = diff_table(source, target, spec)
    assert found(diff) == {(k,): "extra_on_target" for k in range(10, 60)}
    assert (diff.source_rows, diff.target_rows) == (0, 50)


def test_nulls_nan_and_infinity_are_values_of_their_own(conns) -> None:
    source, target = conns
    on_both(
        conns,
        """
        DROP TABLE IF EXISTS nullable;
        CREATE TABLE nullable (id int PRIMARY KEY, a text, b text, n numeric, f float8, at timestamptz);
        INSERT INTO nullable SELECT g, 'a' || g, 'b' || g, g, g, timestamptz '2025-01-01 00:00+00' + g * interval '1 s'
        FROM generate_series(1, 2000) g;
        """,
    )
    t0 = "2025-01-01 00:00+00"
    cases = {  # id: (source values, target values) of (a, b, n, f, at)
        1: ((None, "x", 1, 1, t0), ("", "x", 1, 1, t0)),  # NULL vs ''
        2: (("", "x", 1, 1, t0), (None, "x", 1, 1, t0)),
        3: ((None, "", 1, 1, t0), ("", None, 1, 1, t0)),  # the NULL moved to the next column
        4: (("a", "b", "NaN", 1, t0), ("a", "b", "Infinity", 1, t0)),
        5: (("a", "b", "-Infinity", 1, t0), ("a", "b", "Infinity", 1, t0)),
        6: (("a", "b", None, 1, t0), ("a", "b", "NaN", 1, t0)),
        7: (("a", "b", 0, None, t0), ("a", "b", 0, 0, t0)),
        8: (("a", "b", 0, "NaN", t0), ("a", "b", 0, "Infinity", t0)),
        12: (("a", "b", 0, 0, None), ("a", "b", 0, 0, "infinity")),
        13: (("a", "b", 0, 0, "infinity"), ("a", "b", 0, 0, "-infinity")),
        14: (("a", "b", 0, 0, "epoch"), ("a", "b", 0, 0, "-infinity")),  # -infinity is no interval from the epoch
        15: (("a", "b", 0, 0, t0), ("a", "b", 0, 0, "2025-01-01 00:00:00.000001+00")),
        # Equal by the type's "=" but not as text: the diff holds the text (tablediff_hashing).
        16: (("a", "b", "1.0", 0, t0), ("a", "b", "1.00", 0, t0)),  # the recorded precision
        17: (("a", "b", 0, "-0", t0), ("a", "b", 0, "0", t0)),
    }
    same = {  # the same text on both sides
        9: (("a", "b", "1.0", 0, t0), ("a", "b", "1.0", 0, "2025-01-01 01:00+01")),  # one instant, one UTC text
        18: (("a", "b", "-0.0", 0, t0), ("a", "b", "0.0", 0, t0)),  # numeric has no -0: both read 0.0
        10: ((None, None, None, None, None), (None, None, None, None, None)),
        11: (("a", "b", "NaN", "NaN", "infinity"), ("a", "b", "NaN", "NaN", "infinity")),
    }
    for key, (left, right) in {**cases, **same}.items():
        for conn, values in ((source, left), (target, right)):
            run(
                conn,
                "UPDATE nullable SET a = %s, b = %s, n = %s::numeric, f = %s::float8, at = %s::timestamptz"
                " WHERE id = %s",
                (*values, key),
            )
    spec = TableSpec("public", "nullable", ["id"], ["id", "a", "b", "n", "f", "at"])
    assert found(diff_table(source, target, spec)) == {(k,): "changed" for k in cases}


def test_nan_in_a_constrained_numeric_and_narrow_integers(conns) -> None:
    # numeric(p,s) cannot hold +-Infinity, so NaN is hashed without a state of its own;
    # small is smallint on both sides, qty int on the source and bigint on the target.
    source, target = conns
    for conn, qty_type in ((source, "int"), (target, "bigint")):
        run(
            conn,
            f"""
            DROP TABLE IF EXISTS bounded;
            CREATE TABLE bounded (id int PRIMARY KEY, m numeric(8,2), small smallint, qty {qty_type});
            INSERT INTO bounded SELECT g, g, (g % 100)::smallint, g * 10 FROM generate_series(1, 500) g;
            UPDATE bounded SET m = 'NaN' WHERE id IN (1, 2, 3);
            """,
        )
    spec = TableSpec("public", "bounded", ["id"], ["id", "m", "small", "qty"])
    assert diff_table(source, target, spec).equal
    run(target, "UPDATE bounded SET m = 0 WHERE id = 2")
    run(target, "UPDATE bounded SET m = NULL WHERE id = 3")
    run(target, "UPDATE bounded SET m = 'NaN' WHERE id = 4")
    run(target, "UPDATE bounded SET small = -small WHERE id = 5")
    run(target, "UPDATE bounded SET qty = 3000000000 WHERE id = 6")
    assert found(diff_table(source, target, spec)) == {(k,): "changed" for k in (2, 3, 4, 5, 6)}


def test_composite_key_uses_key_hash_buckets_and_sub_buckets(conns) -> None:
    source, target = conns
    on_both(
        conns,
        """
        DROP TABLE IF EXISTS visits;
        CREATE TABLE visits (region text, patient_id int, visit_no smallint, seen_at timestamp, cost numeric(10,2),
                             PRIMARY KEY (region, patient_id, visit_no));
        INSERT INTO visits
        SELECT 'R' || g % 13, g / 4, (g % 4)::smallint, timestamp '2025-01-01' + g * interval '1 minute', g % 997
        FROM generate_series(1, 20000) g;
        """,
    )

    def key(g: int) -> tuple[str, int, int]:
        return (f"R{g % 13}", g // 4, g % 4)

    where = "(region, patient_id, visit_no) = (%s, %s, %s)"
    run(target, f"UPDATE visits SET cost = cost + 1 WHERE {where}", key(13))
    run(target, f"UPDATE visits SET seen_at = NULL WHERE {where}", key(19999))
    run(target, f"DELETE FROM visits WHERE {where}", key(21))
    run(target, f"DELETE FROM visits WHERE {where}", key(10001))
    run(target, "INSERT INTO visits VALUES ('R99', 1, 1, NULL, 0)")
    expected = {
        key(13): "changed",
        key(19999): "changed",
        key(21): "missing_on_target",
        key(10001): "missing_on_target",
        ("R99", 1, 1): "extra_on_target",
    }
    spec = TableSpec(
        "public",
        "visits",
        ["region", "patient_id", "visit_no"],
        ["region", "patient_id", "visit_no", "seen_at", "cost"],
    )
    diff = diff_table(source, target, spec)
    assert diff.method == "key_hash"
    assert found(diff) == expected
    deep = diff_table(source, target, spec, segments=4, leaf_rows=40)  # ~5,000 rows a bucket: 2 sub-levels
    assert found(deep) == expected
    assert deep.segments_bisected >= 10  # top buckets, then two levels of sub-buckets
    assert {(d.key, d.kind) for d in recheck(source, target, spec, expected)} == set(expected.items())


def test_text_key_and_identifiers_that_need_quoting(conns) -> None:
    source, target = conns
    on_both(
        conns,
        '''
        DROP SCHEMA IF EXISTS "Care ""Data""" CASCADE;
        CREATE SCHEMA "Care ""Data""";
        CREATE TABLE "Care ""Data"""."Patients-2024" ("Code" text PRIMARY KEY, "Full name" varchar(80), born date);
        INSERT INTO "Care ""Data"""."Patients-2024"
        SELECT 'patient-' || lpad(g::text, 5, '0'), 'Name ' || g, date '1950-01-01' + g FROM generate_series(1, 5000) g;
        ''',
    )
    table = '"Care ""Data"""."Patients-2024"'
    run(source, f"""INSERT INTO {table} VALUES ('Abc', 'case', NULL), ('it''s; DROP', 'quote', NULL)""")
    run(target, f"""INSERT INTO {table} VALUES ('abc', 'case', NULL), ('it''s; DROP', 'quote', '2000-01-01')""")
    run(target, f"""UPDATE {table} SET "Full name" = 'Name 42 ' WHERE "Code" = 'patient-00042'""")
    run(target, f"""DELETE FROM {table} WHERE "Code" = 'patient-05000'""")
    spec = TableSpec('Care "Data"', "Patients-2024", ["Code"], ["Code", "Full name", "born"])
    diff = diff_table(source, target, spec)
    assert diff.method == "key_hash"
    assert found(diff) == {
        ("Abc",): "missing_on_target",
        ("abc",): "extra_on_target",
        ("it's; DROP",): "changed",
        ("patient-00042",): "changed",
        ("patient-05000",): "missing_on_target",
    }
    # Bascule's one text form (docs/workloads.md#identifiers): the part with quotes is quoted, and reads back.
    assert diff.table == '"Care ""Data""".Patients-2024'
    assert split_qualified(diff.table) == ('Care "Data"', "Patients-2024")


def test_without_unique_key_repeated_rows_cannot_cancel_out(conns) -> None:
    # Source {A, A, B}, target {B, C, C}: same count and same XOR of row hashes in one
    # segment; only the sum (used when no unique index backs the key) tells them apart.
    source, target = conns
    on_both(conns, "DROP TABLE IF EXISTS events; CREATE TABLE events (kind text, at int)")
    run(source, "INSERT INTO events VALUES ('A', 1), ('A', 1), ('B', 2)")
    run(target, "INSERT INTO events VALUES ('B', 2), ('C', 3), ('C', 3)")
    spec = TableSpec("public", "events", ["kind", "at"], ["kind", "at"])
    diff = diff_table(source, target, spec, segments=1)
    assert found(diff) == {("A", 1): "missing_on_target", ("C", 3): "extra_on_target"}


def test_integer_key_with_a_type_change_and_a_huge_span(conns) -> None:
    # int on the source, bigint on the target (same hash family); keys spread over the
    # whole bigint range, where (key - lo) no longer fits in a bigint.
    source, target = conns
    for conn, key_type in ((source, "int"), (target, "bigint")):
        run(conn, f"DROP TABLE IF EXISTS spread; CREATE TABLE spread (id {key_type} PRIMARY KEY, v int)")
        run(conn, "INSERT INTO spread SELECT g * 1000, g FROM generate_series(-2000, 2000) g")
    run(target, "INSERT INTO spread VALUES (-9223372036854775808, 0), (9223372036854775807, 0)")
    run(target, "UPDATE spread SET v = -v WHERE id = 1000000")
    spec = TableSpec("public", "spread", ["id"], ["id", "v"])
    diff = diff_table(source, target, spec)
    assert diff.method == "key_range"
    assert found(diff) == {
        (-(2**63),): "extra_on_target",
        (2**63 - 1,): "extra_on_target",
        (1_000_000,): "changed",
    }


def test_errors_name_the_table_and_the_side(pg_pair, conns) -> None:
    source, target = conns
    on_both(conns, "DROP TABLE IF EXISTS only_source")
    run(source, "CREATE TABLE only_source (id int PRIMARY KEY, v text)")
    with pytest.raises(TableDiffError, match=r"public\.only_source does not exist on the target") as error:
        diff_table(source, target, TableSpec("public", "only_source", ["id"], ["id", "v"]))
    assert error.value.side == "target"
    with pytest.raises(TableDiffError, match=r"public\.only_source on the source has no column nope"):
        diff_table(source, target, TableSpec("public", "only_source", ["id"], ["id", "nope"]))
    # A role that may not read the target's table: the query error names the side.
    run(target, "CREATE TABLE only_source (id int PRIMARY KEY, v text)")
    run(target, "DROP ROLE IF EXISTS tablediff_reader; CREATE ROLE tablediff_reader LOGIN PASSWORD 'reader-pw'")
    try:
        with closing(
            psycopg2.connect(pg_pair[1].dsn(DATABASE, user="tablediff_reader", password="reader-pw"))
        ) as reader:
            with pytest.raises(
                TableDiffError, match=r"table diff of public\.only_source: query on the target .*permission denied"
            ) as error:
                diff_table(source, reader, TableSpec("public", "only_source", ["id"], ["id", "v"]))
            assert error.value.side == "target" and not error.value.retryable
            assert reader.autocommit is False  # restored
            assert reader.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE
    finally:
        run(target, "DROP TABLE only_source")
        run(target, "DROP ROLE tablediff_reader")
    # The shared connections are left as they were: idle, autocommit unchanged.
    for conn in conns:
        assert conn.autocommit is True
        assert conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE


def test_types_without_a_stable_hash_compare_by_text(conns) -> None:
    # Enum hashes are their OIDs, which differ between the clusters here (an extra
    # type shifts them); xml has no hash at all. Both compare by their text output.
    source, target = conns
    run(source, "DROP TYPE IF EXISTS tablediff_pad; CREATE TYPE tablediff_pad AS ENUM ('p')")
    on_both(
        conns,
        """
        DROP TABLE IF EXISTS typed; DROP TYPE IF EXISTS severity;
        CREATE TYPE severity AS ENUM ('low', 'high');
        CREATE TABLE typed (id int PRIMARY KEY, s severity, doc xml, ints int[], period tstzrange, raw bytea);
        INSERT INTO typed SELECT g, CASE WHEN g % 2 = 0 THEN 'low' ELSE 'high' END::severity,
               ('<v n="' || g || '"/>')::xml, ARRAY[g, NULL, -g],
               tstzrange(timestamptz '2025-01-01 00:00+00' + g * interval '1 hour', NULL), decode(md5(g::text), 'hex')
        FROM generate_series(1, 3000) g;
        """,
    )
    enum_oids = set()
    for conn in conns:
        with conn.cursor() as cur:
            cur.execute("SELECT oid FROM pg_enum WHERE enumtypid = 'severity'::regtype AND enumlabel = 'low'")
            enum_oids.add(cur.fetchone()[0])
    assert len(enum_oids) == 2, "the test needs different enum OIDs on the two sides"
    spec = TableSpec("public", "typed", ["id"], ["id", "s", "doc", "ints", "period", "raw"])
    assert diff_table(source, target, spec).equal
    run(target, "UPDATE typed SET s = 'low' WHERE id = 7")
    run(target, "UPDATE typed SET doc = '<v n=\"8 \"/>' WHERE id = 8")
    run(target, "UPDATE typed SET ints = ARRAY[9, NULL, NULL] WHERE id = 9")
    run(target, "UPDATE typed SET raw = raw || '\\x00'::bytea WHERE id = 10")
    assert found(diff_table(source, target, spec)) == {(k,): "changed" for k in (7, 8, 9, 10)}


def test_runs_in_its_own_read_only_transaction_and_refuses_an_open_one(pg_pair, conns) -> None:
    source, _ = conns
    on_both(conns, "DROP TABLE IF EXISTS small; CREATE TABLE small (id int PRIMARY KEY)")
    spec = TableSpec("public", "small", ["id"], ["id"])
    with closing(pg_pair[1].connect(DATABASE, autocommit=False)) as target:
        assert diff_table(source, target, spec).equal
        assert target.autocommit is False
        assert target.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE
        with target.cursor() as cur:
            cur.execute("SELECT 1")  # opens a transaction (not autocommit)
        with pytest.raises(TableDiffError, match="target connection is not idle") as error:
            diff_table(source, target, spec)
        assert error.value.side == "target"
        assert target.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_INTRANS  # left untouched
        target.rollback()


# -- whole-table fingerprints first ----------------------------------------------------


@pytest.fixture
def logged(pg_pair, conns) -> Iterator[tuple[Any, Any, list[io.StringIO]]]:
    """Connections to both sides (to ``conns``' database) that log every statement sent."""
    logs = [io.StringIO(), io.StringIO()]
    conns = []
    for cluster, log in zip(pg_pair, logs, strict=True):
        conn = psycopg2.connect(cluster.dsn(DATABASE), connection_factory=LoggingConnection)
        conn.initialize(log)
        conn.autocommit = True
        conns.append(conn)
    try:
        yield conns[0], conns[1], logs
    finally:
        for conn in conns:
            conn.close()


def _forget(logs: list[io.StringIO]) -> None:
    """Empty the logs: what follows is the diff's own statements."""
    for log in logs:
        log.seek(0)
        log.truncate()


def _segment_queries(logs: list[io.StringIO]) -> int:
    return sum(log.getvalue().count("GROUP BY") for log in logs)


def _create_fingerprinted(conns: tuple[Any, Any]) -> None:
    on_both(
        conns,
        """
        DROP TABLE IF EXISTS fingerprinted;
        CREATE TABLE fingerprinted (id int PRIMARY KEY, label text, note text, amount numeric(8,2));
        INSERT INTO fingerprinted SELECT g, 'row ' || g, CASE WHEN g % 5 = 0 THEN NULL ELSE 'n' || g END, g / 4.0
        FROM generate_series(1, 5000) g;
        """,
    )


FINGERPRINTED = TableSpec("public", "fingerprinted", ["id"], ["id", "label", "note", "amount"])


def test_equal_tables_are_settled_by_the_fingerprints_without_a_segment_query(logged) -> None:
    source, target, logs = logged
    _create_fingerprinted((source, target))
    _forget(logs)
    diff = diff_table(source, target, FINGERPRINTED)
    assert diff.equal and (diff.source_rows, diff.target_rows) == (5000, 5000)
    assert (diff.method, diff.segments, diff.segments_bisected) == ("fingerprint", 0, 0)
    assert _segment_queries(logs) == 0
    for log in logs:  # one ungrouped aggregate per side, the checksum of the segments
        assert log.getvalue().count("bit_xor(") == 1


@pytest.mark.parametrize(
    ("side", "change", "key", "kind"),
    [
        (1, "UPDATE fingerprinted SET label = 'row 4321.' WHERE id = 4321", 4321, "changed"),
        (1, "DELETE FROM fingerprinted WHERE id = 4321", 4321, "missing_on_target"),
        (0, "DELETE FROM fingerprinted WHERE id = 4321", 4321, "extra_on_target"),
        (1, "UPDATE fingerprinted SET note = '' WHERE id = 4320", 4320, "changed"),  # NULL on the source
        (0, "UPDATE fingerprinted SET note = '' WHERE id = 4320", 4320, "changed"),  # NULL on the target
        (1, "UPDATE fingerprinted SET amount = -amount WHERE id = 4321", 4321, "changed"),
    ],
)
def test_one_differing_row_fails_the_fingerprints_and_segments_name_it(
    logged, side: int, change: str, key: int, kind: str
) -> None:
    source, target, logs = logged
    _create_fingerprinted((source, target))
    run((source, target)[side], change)
    _forget(logs)
    diff = diff_table(source, target, FINGERPRINTED)
    assert found(diff) == {(key,): kind}
    assert diff.method == "key_range" and diff.segments >= 1
    assert _segment_queries(logs) >= 2  # the fingerprints differed: each side's segments were read


def test_types_equal_by_their_operator_but_not_as_text_are_told_apart(conns) -> None:
    # Each of these pairs compares equal with "=" (and hashes alike with the type's own
    # hash) but reads differently: the diff must report it (tablediff_hashing docstring).
    source, target = conns
    for conn, f_type, c_type in ((source, "float4", "inet"), (target, "float8", "cidr")):
        run(
            conn,
            f"""
            DROP TABLE IF EXISTS textual;
            CREATE TABLE textual (id int PRIMARY KEY, span interval, doc jsonb, code bpchar, fixed char(4),
                                  ratio {f_type}, net {c_type}, flt float8, num numeric);
            INSERT INTO textual SELECT g, g * interval '1 day', jsonb_build_object('v', g), 'c' || g, 'f' || g % 9,
                   0.5, '10.0.0.0/8', g, g / 4.0
            FROM generate_series(1, 300) g;
            """,
        )
    spec = TableSpec("public", "textual", ["id"], ["id", "span", "doc", "code", "fixed", "ratio", "net", "flt", "num"])
    assert diff_table(source, target, spec).method == "fingerprint"  # same text everywhere: equal, fast
    run(source, "UPDATE textual SET span = '1 mon' WHERE id = 30")
    run(target, "UPDATE textual SET span = '30 days' WHERE id = 30")
    run(source, """UPDATE textual SET doc = '{"v": 1.0}' WHERE id = 31""")
    run(target, """UPDATE textual SET doc = '{"v": 1.00}' WHERE id = 31""")
    run(target, "UPDATE textual SET code = 'c32 ' WHERE id = 32")  # trailing blank kept by bare bpchar
    run(target, "UPDATE textual SET fixed = 'f6 ' WHERE id = 33")  # char(4) pads alike: no difference
    run(source, "UPDATE textual SET ratio = 0.1 WHERE id = 34")  # float4 0.1 is not float8 0.1
    run(target, "UPDATE textual SET ratio = 0.1::float4::float8 WHERE id = 34")  # ... nor its text
    run(target, "UPDATE textual SET flt = '-0' WHERE id = 35")
    run(source, "UPDATE textual SET flt = 0 WHERE id = 35")
    run(target, "UPDATE textual SET num = 9.250 WHERE id = 37")  # 9.25 on the source
    run(target, "UPDATE textual SET num = -num WHERE id = 38")  # numeric's own hash ignores the sign
    run(source, "UPDATE textual SET net = '10.0.0.1/32' WHERE id = 36")  # inet prints 10.0.0.1
    run(target, "UPDATE textual SET net = '10.0.0.1/32' WHERE id = 36")  # cidr prints 10.0.0.1/32
    assert found(diff_table(source, target, spec)) == {(k,): "changed" for k in (30, 31, 32, 34, 35, 36, 37, 38)}

"""What the migrated tables need outside ``source.schemas``, and what logical replication does
not carry: refused at preflight and at the snapshot before anything is created, or carried
as documented (docs/workloads.md#dependencies), on the throwaway clusters.

The registry fixture, the manifest and the two sides come from ``test_pg_phases``.
"""

from __future__ import annotations

from contextlib import closing

import pytest
import test_pg_phases
from test_pg_phases import _manifest, _sides, _wait_ready

from bascule.governance.evidence.store import EvidenceStore
from bascule.governance.routing import RoutingRegistry
from bascule.postgres import cutover_phases, matviews, scope_checks, sequences
from bascule.postgres import phases as pg_phases
from bascule.workload import parse_manifest

pytestmark = pytest.mark.integration

MANIFEST = "include/workloads/phases.yaml"
registry = test_pg_phases.registry  # the fixture: a fresh registry database on the source, an empty one on the target


@pytest.fixture
def db(pg_pair, registry):
    """(source cluster, target cluster, database, evidence bucket) of a fresh registry."""
    source, target = pg_pair
    database, bucket = registry
    return source, target, database, bucket


def _source_sql(cluster, database: str, *statements: str) -> None:
    with closing(cluster.connect(database)) as conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
        conn.commit()


def _scope(source, target, database: str, workload) -> dict[str, object]:
    """The preflight's two checks, by name, as preflight_checks runs them."""
    sides = _sides(source, target, database)
    with sides.autocommit_both() as (src, tgt):
        inventory = pg_phases.catalog.read_inventory(src, list(workload.source.schemas), list(workload.source.tables))
        return {c.name: c for c in scope_checks.scope_checks(src, tgt, workload, inventory, MANIFEST)}


def _replicating(workload, sides, evidence, run: str) -> dict:
    """Snapshot, schema, copies and replication started, up to the end of the copies' overlap."""
    snapshot = pg_phases.take_snapshot(workload, sides, evidence, run, fresh_run=True)
    pg_phases.apply_schema_section(workload, sides, evidence, snapshot, "pre-data", run, 1)
    copies = [pg_phases.copy_one_table(sides, evidence, snapshot, t, run, 1) for t in snapshot["tables"]]
    pg_phases.apply_schema_section(workload, sides, evidence, snapshot, "post-data", run, 1)
    pg_phases.start_replication(workload, sides, evidence, snapshot)
    _wait_ready(workload, sides, pg_phases.overlap_end(copies))
    return snapshot


def _nothing_created(source, target, database: str, name: str) -> None:
    with closing(source.connect(database)) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from pg_replication_slots where slot_name = %s", (name,))
        assert cur.fetchone()[0] == 0, "no slot"
        cur.execute("select count(*) from pg_publication where pubname = %s", (name,))
        assert cur.fetchone()[0] == 0, "no publication"
    with closing(target.connect(database)) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from pg_namespace where nspname = 'registry'")
        assert cur.fetchone()[0] == 0, "no target schema"
        cur.execute("select count(*) from pg_subscription where subname = %s", (name,))
        assert cur.fetchone()[0] == 0, "no subscription"


def test_an_enum_of_an_unlisted_schema_is_refused_at_preflight_and_nothing_is_created(db, s3_client) -> None:
    source, target, database, bucket = db
    _source_sql(
        source, database,
        "create type public.care_level as enum ('ambulatory', 'inpatient')",
        "alter table registry.patients add column care public.care_level",
    )  # fmt: skip
    workload = parse_manifest(MANIFEST, _manifest("phases_enum", database, bucket))
    dependencies = _scope(source, target, database, workload)["dependencies"]
    assert not dependencies.ok
    assert (
        "column care of table registry.patients uses type public.care_level: add schema public to source.schemas"
        in dependencies.detail
    ), dependencies.detail
    assert f"Change {MANIFEST} as named" in dependencies.detail
    assert dependencies.detail.count("docs/runbooks.md#postgres-dependency-outside-the-schemas") == 1

    evidence = EvidenceStore(s3_client, bucket, workload.id)
    with pytest.raises(scope_checks.OutOfScope) as refused:
        pg_phases.take_snapshot(workload, _sides(source, target, database), evidence, "run_enum", fresh_run=True)
    assert "uses type public.care_level: add schema public to source.schemas" in str(refused.value)
    _nothing_created(source, target, database, workload.slot_name())
    assert evidence.keys() == [], "no evidence, no ownership record: nothing was claimed"


def test_dependencies_of_each_kind_are_named_with_their_fix_and_extension_objects_included(db, s3_client) -> None:
    source, target, database, bucket = db
    _source_sql(
        source, database,
        "create schema shared",
        "create domain shared.positive as int check (value > 0)",
        "create collation shared.french (provider = icu, locale = 'fr-FR')",
        "create function shared.today_year() returns int language sql immutable as 'select 2026'",
        "create function shared.touch() returns trigger language plpgsql as 'begin return new; end'",
        "create sequence shared.claim_no",
        "create table shared.hospitals (hospital_id int primary key)",
        "create extension if not exists citext schema shared",
        "alter table registry.stays add column los shared.positive",
        "alter table registry.stays add column ward text collate shared.french",
        "alter table registry.stays add column claim bigint default nextval('shared.claim_no')",
        "alter table registry.stays add column cohort int default shared.today_year()",
        "alter table registry.stays add column age_band int generated always as (shared.today_year() - stay_no) stored",
        "alter table registry.stays add constraint recent check (shared.today_year() > 2000)",
        "alter table registry.stays add column hospital_id int references shared.hospitals",
        "create trigger stays_touch before update on registry.stays for each row execute function shared.touch()",
        "alter table registry.patients add column email shared.citext",
    )  # fmt: skip
    workload = parse_manifest(MANIFEST, _manifest("phases_deps", database, bucket))
    check = _scope(source, target, database, workload)["dependencies"]
    assert not check.ok
    fix = "add schema shared to source.schemas"
    for line in (
        f"column los of table registry.stays uses type shared.positive: {fix}",
        f"column ward of table registry.stays uses collation shared.french: {fix}",
        f"default value for column claim of table registry.stays uses sequence shared.claim_no: {fix}",
        f"default value for column cohort of table registry.stays uses function shared.today_year(): {fix}",
        f"default value for column age_band of table registry.stays uses function shared.today_year(): {fix}",
        f"constraint recent on table registry.stays uses function shared.today_year(): {fix}",
        f"constraint stays_hospital_id_fkey on table registry.stays uses table shared.hospitals: {fix}",
        f"trigger stays_touch on table registry.stays uses function shared.touch(): {fix}",
    ):
        assert line in check.detail, f"{line!r} not in {check.detail}"
    assert "Included automatically (extension objects, created with the extension): type shared.citext " \
        "(extension citext)" in check.detail  # fmt: skip
    assert not any("email" in line for line in check.evidence["refused"])

    # A foreign key to a table of a listed schema that source.tables leaves out names that table.
    narrowed = parse_manifest(
        MANIFEST,
        _manifest("phases_deps", database, bucket, "  tables: [registry.stays, registry.dispensations]"),
    )
    narrow = _scope(source, target, database, narrowed)["dependencies"]
    assert (
        "constraint stays_patient_fk on table registry.stays uses table registry.patients: add table "
        "registry.patients to source.tables (or drop the foreign key on the source)"
    ) in narrow.detail, narrow.detail


def test_not_carried_by_replication_is_refused_with_what_to_do(db, s3_client) -> None:
    source, target, database, bucket = db
    with closing(source.connect()) as admin, admin.cursor() as cur:
        cur.execute("select 1 from pg_roles where rolname = 'phases_auditor'")
        if cur.fetchone() is None:
            cur.execute("create role phases_auditor")  # on the source server only
        admin.commit()
    _source_sql(
        source, database,
        "select lo_from_bytea(0, 'scanned consent form')",
        "create unlogged table registry.scratch (id int primary key)",
        "create table registry.events (id int primary key, what text)",
        "create function registry.note() returns trigger language plpgsql as 'begin return new; end'",
        "create trigger always_note after insert on registry.events for each row execute function registry.note()",
        "alter table registry.events enable always trigger always_note",
        "alter table registry.patients enable row level security",
        "create policy auditors_read on registry.patients for select to phases_auditor using (true)",
    )  # fmt: skip
    workload = parse_manifest(MANIFEST, _manifest("phases_nocarry", database, bucket))
    check = _scope(source, target, database, workload)["not_replicated"]
    assert not check.ok
    refused = check.evidence["refused"]
    assert len(refused) == 4, refused
    assert refused[0].startswith("the source database holds 1 large object(s) (pg_largeobject)")
    assert "select lo_from_bytea(<oid>, <lo_get(oid) read on the source>)" in refused[0]
    assert any(r.startswith("table registry.scratch is UNLOGGED") and "set logged" in r for r in refused)
    assert any(r.startswith("trigger always_note on registry.events is ENABLE ALWAYS") for r in refused)
    assert any(
        "row-level security policies name role(s) ['phases_auditor'] that do not exist on the target" in r
        for r in refused
    ), refused
    assert "docs/runbooks.md#postgres-not-carried-by-logical-replication" in check.detail

    evidence = EvidenceStore(s3_client, bucket, workload.id)
    with pytest.raises(scope_checks.OutOfScope):
        pg_phases.take_snapshot(workload, _sides(source, target, database), evidence, "run_nocarry", fresh_run=True)
    _nothing_created(source, target, database, workload.slot_name())
    # REPLICA IDENTITY NOTHING is refused by the primary-key check, which runs first.
    _source_sql(source, database, "alter table registry.events replica identity nothing")
    with pytest.raises(pg_phases.MissingPrimaryKey) as nothing:
        pg_phases.take_snapshot(workload, _sides(source, target, database), evidence, "run_nocarry", fresh_run=True)
    assert "registry.events have REPLICA IDENTITY NOTHING" in str(nothing.value), str(nothing.value)
    _nothing_created(source, target, database, workload.slot_name())


def test_what_is_copied_behaves_as_documented(db, s3_client) -> None:
    """Ordinary triggers do not fire for the apply; generated columns are computed by the target;
    a sequence owned by no column is carried at cutover; row-level security policies are copied."""
    source, target, database, bucket = db
    _source_sql(
        source, database,
        "create table registry.patient_changes (change_id bigserial primary key, patient_id int, department text)",
        "create function registry.log_change() returns trigger language plpgsql as $$ begin "
        "insert into registry.patient_changes (patient_id, department) values (new.patient_id, new.department); "
        "return new; end $$",
        "create trigger log_change after update on registry.patients for each row execute function registry.log_change()",
        "alter table registry.patients add column decade int generated always as (birth_year / 10 * 10) stored",
        "create sequence registry.claim_no",
        "select setval('registry.claim_no', 500)",
        "alter table registry.stays enable row level security",
        "create policy stays_all on registry.stays using (true)",
    )  # fmt: skip
    workload = parse_manifest(MANIFEST, _manifest("phases_carried", database, bucket))
    notes = _scope(source, target, database, workload)["not_replicated"]
    assert notes.ok, notes.detail
    assert "triggers ['registry.patients:log_change'] are copied and do not fire for replicated changes" in notes.detail
    assert "generated columns ['registry.patients.decade'] are computed by the target" in notes.detail
    assert "sequences ['registry.claim_no'] (owned by no column) are carried at cutover" in notes.detail
    sides = _sides(source, target, database)
    evidence = EvidenceStore(s3_client, bucket, workload.id)
    run = "run_carried"
    snapshot = _replicating(workload, sides, evidence, run)
    _source_sql(source, database, "update registry.patients set department = '75' where patient_id <= 20")
    from bascule.postgres.validation_phases import wait_until_applied

    wait_until_applied(sides, snapshot["slot"])
    counts = []
    for cluster in (source, target):
        with closing(cluster.connect(database)) as conn, conn.cursor() as cur:
            cur.execute("select (select count(*) from registry.patient_changes), "
                        "(select count(*) from registry.patients where decade is distinct from birth_year / 10 * 10)")  # fmt: skip
            counts.append(cur.fetchone())
    # 20 logged on the source and replicated; the target's copy of the trigger did not add 20 more.
    assert counts == [(20, 0), (20, 0)], counts
    with closing(target.connect(database)) as conn, conn.cursor() as cur:
        cur.execute("select polname from pg_policy where polrelid = 'registry.stays'::regclass")
        assert [row[0] for row in cur.fetchall()] == ["stays_all"]
        cur.execute("select tgenabled from pg_trigger where tgname = 'log_change'")
        assert cur.fetchone()[0] == "O", "an ordinary (ENABLE ORIGIN) trigger: not fired by the apply"
    inventory = pg_phases.load_inventory(evidence, snapshot)
    unowned = [s for s in inventory.sequences if s.name == "claim_no"]
    assert [s.owned_by for s in unowned] == [None]
    with sides.autocommit_both() as (src, tgt):
        sequences.sync_sequences(src, tgt, [f"{s.schema}.{s.name}" for s in inventory.sequences])
        with tgt.cursor() as cur:
            cur.execute("select nextval('registry.claim_no')")
            assert cur.fetchone()[0] == 501
    cutover_phases.release_replication(workload, sides, evidence, run)


def test_materialized_views_are_refreshed_on_the_target_at_cutover_and_counted(db, s3_client) -> None:
    """A view is created by the schema copy, refreshed at cutover (its rows are not in the stream),
    its row count proven against its definition on the frozen source; a wrong count stops the switch."""
    source, target, database, bucket = db
    _source_sql(
        source, database,
        'create materialized view registry."Patients by Sex" as '
        "select sex, count(*) as patients from registry.patients group by 1",
        # Stale on the source by design: the application refreshes it when it likes.
        "create materialized view registry.recent_stays as select * from registry.stays where stay_no > 0 with no data",
    )  # fmt: skip
    workload = parse_manifest(MANIFEST, _manifest("phases_matviews", database, bucket))
    notes = _scope(source, target, database, workload)["not_replicated"]
    assert notes.ok, notes.detail
    assert (
        "materialized views ['registry.Patients by Sex', 'registry.recent_stays'] are created by the schema copy "
        "and refreshed on the target at cutover" in notes.detail
    ), notes.detail
    sides = _sides(source, target, database)
    evidence = EvidenceStore(s3_client, bucket, workload.id)
    run = "run_matviews"
    snapshot = _replicating(workload, sides, evidence, run)
    # After the copy: the stream carries these rows, never the views'.
    _source_sql(source, database, "update registry.patients set sex = '9' where patient_id <= 40")
    pg_phases.finish_catch_up(workload, sides, evidence, snapshot)
    from bascule.postgres.validation_phases import wait_until_applied

    wait_until_applied(sides, snapshot["slot"])
    with sides.autocommit_both() as (src, tgt), tgt.cursor() as cur:
        # A view whose refresh would not match its definition stops the cutover, named.
        cur.execute('create materialized view registry.skewed as select 1 as one with no data')
        with src.cursor() as scur:
            scur.execute("create materialized view registry.skewed as select 1 as one union all select 2")
        with pytest.raises(matviews.MaterializedViewMismatch, match=r"registry.skewed: 1 row\(s\) on the target"):
            matviews.refresh_on_target(src, tgt, ["registry"])
        with src.cursor() as scur:
            scur.execute("drop materialized view registry.skewed")
        cur.execute("drop materialized view registry.skewed")

    routing = RoutingRegistry(s3_client, bucket)
    record = cutover_phases.cutover(workload, sides, evidence, routing, snapshot, run, 1, lambda line: None)
    assert routing.read(workload.id)[0].live == "scaleway"
    views = {v["view"]: v for v in record["materialized_views"]}
    assert set(views) == {"registry.Patients by Sex", "registry.recent_stays"}
    for view in views.values():
        assert view["target_rows"] == view["source_definition_rows"] > 0, view
    counts = []
    for cluster in (source, target):
        with closing(cluster.connect(database)) as conn, conn.cursor() as cur:
            cur.execute('select patients from registry."Patients by Sex" where sex = \'9\'')
            counts.append(cur.fetchone())
    with closing(source.connect(database)) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from registry.patients where sex = '9'")
        females = cur.fetchone()[0]
    # The source's stored view is stale (refreshed before the update); the target's is current.
    assert counts[1] == (females,) and counts[0] != counts[1], counts

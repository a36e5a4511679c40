"""Operators for the phases of a postgres workload (Azure PostgreSQL -> Scaleway PostgreSQL).

Each operator builds connections from Airflow connections (``clients``), calls one
function of ``bascule.postgres.phases``, and maps the domain's errors onto Airflow's: a
problem with the data or a refusal fails at once; a transient fault raises normally
so the task's retries apply. The plumbing shared with the object-store kind is in
``bascule_airflow.common``; the catch-up's trigger, which runs in the triggerer, is in
``bascule_airflow.postgres_trigger``.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from bascule_airflow.common import PhaseOperator, RollbackPhaseOperator, SnapshotPhaseOperator, mirror_routing_variable
from bascule_airflow.evidence_records import append
from bascule_airflow.postgres_trigger import ReplicationCaughtUpTrigger
from bascule_airflow.progress import progress_reporter, publish_progress, segments_progress
from bascule_airflow.quorum import require_quorum
from bascule_airflow.xcoms import mapped_results


class _PostgresPhase(PhaseOperator):
    """The workload model, both databases and the evidence bucket, built inside execute()."""

    def _model(self) -> Any:
        from bascule.workload import PostgresWorkload

        return PostgresWorkload.model_validate(self.workload)

    def _sides(self, workload: Any) -> Any:
        from bascule_airflow import clients

        return clients.postgres_sides(workload)

    def _evidence(self, workload: Any) -> Any:
        from bascule_airflow import clients

        return clients.evidence_store(workload)

    def _routing(self, workload: Any) -> Any:
        from bascule_airflow import clients

        return clients.routing_registry(workload)

    def runbook_section(self) -> str:
        return f"postgres-{self.phase.replace('_', '-')}"

    def _run(self, call: Any) -> Any:
        """Call the domain, classifying driver errors (unreachable -> retry, refused -> fail)."""
        import psycopg2

        from bascule.exceptions import BasculeError
        from bascule_airflow.clients import classify_postgres_error

        try:
            return call()
        except BasculeError as exc:
            self._fail_or_retry(exc)
        except psycopg2.OperationalError as exc:
            self._fail_or_retry(classify_postgres_error(exc))


class _SnapshotPhase(SnapshotPhaseOperator, _PostgresPhase):
    """A postgres phase that works on the snapshot."""


class PgSnapshotOperator(_PostgresPhase):
    """Inventory of the schemas in scope (evidence) and the replication slot the change stream starts at."""

    phase = "snapshot"
    ui_color = "#eef6e8"

    def execute(self, context: Any) -> dict[str, Any]:
        from bascule.postgres.phases import take_snapshot

        workload = self._model()
        fresh = context["ti"].try_number == 1
        record = self._run(
            lambda: take_snapshot(
                workload, self._sides(workload), self._evidence(workload), context["run_id"], fresh_run=fresh
            )
        )
        self.log.info(
            "snapshot: %d table(s) (~%d rows, %.1f MB), %d sequence(s); slot %s starts at %s; inventory %s",
            len(record["tables"]), record["rows_estimate"], record["bytes"] / 1e6, record["sequences"],
            record["slot"], record["slot_lsn"], record["inventory_key"],
        )  # fmt: skip
        append(
            context, self.workload, "inventory",
            {"tables": len(record["tables"]), "rows": record["rows_estimate"], "bytes": record["bytes"],
             "sequences": record["sequences"], "slot": record["slot"], "slot_lsn": record["slot_lsn"]},
            [record["inventory_key"]],
        )  # fmt: skip
        return record


class PlanCopyOperator(_SnapshotPhase):
    """The copy plan: one unit per table, or key ranges of a table over ``transfer.split_table_above_mib``."""

    phase = "plan_copy"
    ui_color = "#e8eef6"

    def execute(self, context: Any) -> list[dict[str, Any]]:
        from bascule.postgres.phases import plan_copy

        workload = self._model()
        plan = self._run(
            lambda: plan_copy(
                workload, self._sides(workload), self._evidence(workload), self.snapshot, context["run_id"],
                context["ti"].try_number,
            )
        )  # fmt: skip
        for note in plan["notes"]:
            self.log.info("copy plan: %s", note)
        self.log.info(
            "copy plan: %d copy task(s) for %d table(s), largest first (split above %d MiB); plan in %s",
            len(plan["units"]), len({u["table"] for u in plan["units"]}), workload.transfer.split_table_above_mib,
            plan["plan_key"],
        )  # fmt: skip
        # Only the units go to XCom: the mapped copy_table tasks expand over them.
        return list(plan["units"])


class SchemaSectionOperator(_SnapshotPhase):
    """Create the tables (pre-data, before the copy) or their indexes and constraints (post-data, after)."""

    ui_color = "#e8eef6"

    def __init__(self, *, section: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.section = section
        self.phase = f"schema_{section.replace('-', '_')}"

    def execute(self, context: Any) -> dict[str, Any]:
        from bascule.postgres.phases import apply_schema_section

        workload = self._model()
        record = self._run(
            lambda: apply_schema_section(
                workload, self._sides(workload), self._evidence(workload), self.snapshot, self.section,
                context["run_id"], context["ti"].try_number,
            )
        )  # fmt: skip
        self.log.info(
            "%s schema applied on the target in %.1f s (DDL in %s)", self.section, record["seconds"], record["ddl_key"]
        )
        append(context, self.workload, "schema", {"section": self.section, "success": True}, [record["ddl_key"]])
        return record


class CopyTableOperator(_SnapshotPhase):
    """Copy one table or one key range of it, streamed source -> target in one target transaction.
    Mapped over the copy plan's units."""

    phase = "copy_table"
    ui_color = "#e8eef6"
    template_fields = ("snapshot", "table")

    def __init__(self, *, table: str | dict[str, Any], **kwargs: Any):
        super().__init__(**kwargs)
        self.table = table

    def execute(self, context: Any) -> dict[str, Any]:
        from bascule.postgres.copy_plan import CopyUnit
        from bascule.postgres.phases import copy_one_table

        workload = self._model()
        unit = CopyUnit.from_item(self.table)
        context["copy_unit"] = unit.describe()  # rendered into the map index (dag_factory)
        if unit.range is None:
            self.log.info("copying %s (a retry truncates and copies it again, in one transaction)", unit.table)
        else:
            self.log.info(
                "copying %s (a retry deletes this range only and copies it again, in one transaction)",
                unit.describe(),
            )
        # Bytes streamed, as the target reads them (the COPY's row count is known only at its end).
        reporter = progress_reporter(context, "bytes", log=self.log.info, label=unit.describe())
        record = self._run(
            lambda: copy_one_table(
                self._sides(workload), self._evidence(workload), self.snapshot, self.table, context["run_id"],
                context["ti"].try_number, progress=reporter.update,
            )
        )  # fmt: skip
        reporter.finish()
        rate = record["rows"] / record["seconds"] if record["seconds"] else float("nan")
        self.log.info(
            "%s: %d rows, %.1f MB in %.1f s (%.0f rows/s); source at %s after the copy",
            unit.describe(), record["rows"], record["bytes"] / 1e6, record["seconds"], rate, record["source_lsn_after"],
        )  # fmt: skip
        # The evidence report sums "tables": a split table counts once, on its first range.
        counted = 1 if unit.range is None or unit.range.index == 1 else 0
        append(
            context, self.workload, "transfer_report",
            {"tables": counted, "table": unit.table, "rows": record["rows"], "bytes": record["bytes"],
             "source_lsn_after": record["source_lsn_after"], "success": True,
             **({"range": unit.range.label} if unit.range else {})},
        )  # fmt: skip
        return record


class StartReplicationOperator(_SnapshotPhase):
    """Publication on the source, overlap triggers and subscription on the target."""

    phase = "start_replication"
    ui_color = "#e8f6f4"

    def execute(self, context: Any) -> dict[str, Any]:
        from bascule.postgres.phases import start_replication

        workload = self._model()
        record = self._run(
            lambda: start_replication(workload, self._sides(workload), self._evidence(workload), self.snapshot)
        )
        self.log.info(
            "subscription %s streams from slot %s; overlap triggers on %d table(s)",
            record["subscription"], self.snapshot["slot"], len(record["overlap_triggers"]),
        )  # fmt: skip
        append(context, self.workload, "replication", {**record, "success": True})
        return record


class CatchUpOperator(_SnapshotPhase):
    """Wait, deferred (no worker slot), until the replica is within the manifest's lag threshold."""

    phase = "catch_up"
    ui_color = "#e8f6f4"
    template_fields = ("snapshot", "copies")

    def __init__(self, *, copies: Any, poll_seconds: float = 5.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.copies = copies
        self.poll_seconds = poll_seconds

    def execute(self, context: Any) -> Any:
        from bascule.postgres.phases import overlap_end, replication_status
        from bascule.progress import keep_lag_sample, lag_progress

        workload = self._model()
        end = overlap_end([c for c in (self.copies or []) if c])
        # Already caught up (the usual case for a small or quiet database): no need to defer.
        # A deferral that resumes within seconds also meets an Airflow 3.3.2 executor race.
        now = self._run(lambda: replication_status(workload, self._sides(workload), end))
        # The triggerer cannot write XComs: the page sees the lag published here, and at the resume
        # the record built from the lag history the trigger hands back in its event.
        history = keep_lag_sample([], time.time(), now["lag_bytes"])
        publish_progress(context, lag_progress(history, now["lag_seconds"]))
        if now["ready"]:
            return self.execute_complete(context, {"status": "ready", **now})
        deadline = time.time() + workload.replication.catch_up_timeout_minutes * 60
        self.log.info(
            "waiting for the replica (deferred): lag <= %d bytes and %.0f s, and past %s (the last copy's point)",
            workload.replication.max_lag_bytes, workload.replication.max_lag_seconds, end or "-",
        )  # fmt: skip
        self.defer(
            trigger=ReplicationCaughtUpTrigger(
                workload=self.workload, overlap_end_lsn=end, deadline=deadline, poll_seconds=self.poll_seconds,
                lag_history=history,
            ),
            method_name="execute_complete",
            timeout=timedelta(minutes=workload.replication.catch_up_timeout_minutes + 5),
        )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from bascule.postgres.phases import finish_catch_up
        from bascule.progress import lag_progress

        if event.get("lag_history"):
            publish_progress(context, lag_progress(event["lag_history"], event.get("lag_seconds")))
        status = event.get("status")
        if status == "error":
            raise AirflowFailException(f"{event['message']}\nRunbook: {self.runbook()}")
        if status == "timeout":
            raise AirflowFailException(
                f"replica still behind after {self._model().replication.catch_up_timeout_minutes} min: "
                f"{event['lag_bytes']} bytes, {event.get('lag_seconds')} s. Check the subscription on the target "
                f"(pg_stat_subscription) and the source's write rate, then clear this task. "
                f"Runbook: {self.runbook()}"
            )
        workload = self._model()
        done = self._run(
            lambda: finish_catch_up(workload, self._sides(workload), self._evidence(workload), self.snapshot)
        )
        self.log.info(
            "replica caught up: lag %d bytes, %s s; overlap replayed, strict apply on %d table(s)",
            event["lag_bytes"], event.get("lag_seconds"), len(done["overlap_triggers_removed"]),
        )  # fmt: skip
        result = {"lag_bytes": event["lag_bytes"], "lag_seconds": event.get("lag_seconds"), **done}
        append(context, self.workload, "replication", {**result, "success": True})
        return result


class PgValidateOperator(_SnapshotPhase):
    """Segmented-checksum diff of every table, then the Great Expectations suites on the target."""

    phase = "validate"
    ui_color = "#f6f0e8"

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from bascule.postgres.validation_phases import failure_message, validate

        workload = self._model()
        evidence = self._evidence(workload)
        reporter = progress_reporter(context, "segments", log=self.log.info)
        result = self._run(
            lambda: validate(
                workload, self._sides(workload), evidence, self.snapshot, context["run_id"], context["ti"].try_number,
                log=self.log.info, progress=segments_progress(reporter),
            )
        )  # fmt: skip
        append(
            context, self.workload, "table_diff",
            {"success": result["diff_ok"], "tables": result["tables"], "rows": result["rows"],
             "differences": result["differences"], "summary": result["diff_summary"] or "no difference"},
            [result["diff_key"]],
        )  # fmt: skip
        append(
            context, self.workload, "validation",
            {"success": result["gates_ok"], "summary": result["gates_summary"]},
            [result["gates_key"]],
            idempotency_key=f"validate-gx:{context['ti'].try_number}",
        )  # fmt: skip
        failure = failure_message(result)
        if failure:
            raise AirflowFailException(f"{failure} Runbook: {self.runbook()}")
        return {k: v for k, v in result.items() if k not in ("diffs",)}


class PgShadowRunOperator(_SnapshotPhase):
    """Declared SQL queries on both databases (A/A on the source), compared."""

    phase = "shadow_run"
    ui_color = "#f0e8f6"

    def execute(self, context: Any) -> dict[str, Any]:
        from bascule.postgres.validation_phases import shadow_run

        workload = self._model()
        report = self._run(
            lambda: shadow_run(
                workload, self._sides(workload), self._evidence(workload), self.snapshot, context["run_id"],
                context["ti"].try_number,
            )
        )  # fmt: skip
        self._record_shadow_run(
            context, report["ok"], report["jobs"], report["summary"], report["report_key"], report["diff_report"],
            report["report_uri"],
        )  # fmt: skip
        return {k: v for k, v in report.items() if k != "diff_report"}


class PgCutoverOperator(_SnapshotPhase):
    """Freeze the source's application roles, drain, final diff, sequences, switch routing, detach."""

    phase = "cutover"
    ui_color = "#f6e8e8"

    def execute(self, context: Any) -> dict[str, Any]:
        from bascule.postgres.cutover_phases import cutover

        approval = require_quorum(context, self.workload)
        workload = self._model()
        self._enforce_policy(context, workload, "before freezing")
        record = self._run(
            lambda: cutover(
                workload, self._sides(workload), self._evidence(workload), self._routing(workload), self.snapshot,
                context["run_id"], context["ti"].try_number, log=self.log.info,
                before_switch=lambda: self._enforce_policy(context, workload, "before the switch"),
            )
        )  # fmt: skip
        mirror_routing_variable(workload.id, "scaleway", record["routing"])
        if "freeze_window_seconds" in record:
            self.log.info("downtime window (freeze -> switch): %.2f s", record["freeze_window_seconds"])
        keep = ("frozen_at", "switched_at", "freeze_window_seconds", "drain_seconds", "routing", "evidence_key")
        append(
            context, self.workload, "cutover",
            {**{k: record[k] for k in keep if k in record}, "sequences": record.get("sequences", []),
             "final_diff_tables": len(record.get("final_diff", [])), "approved_by": approval["approved_by"],
             "evidence_digest": approval["evidence_digest"]},
            [record["evidence_key"]],
        )  # fmt: skip
        return {
            **{k: record[k] for k in keep if k in record},
            "sequences": len(record.get("sequences", [])),
            "target_write_baseline": record.get("target_write_baseline", {}),
        }

    def _enforce_policy(self, context: Any, workload: Any, moment: str) -> None:
        from bascule_airflow import clients
        from bascule_airflow.policy_gate import enforce_at_cutover, enforce_evidence_bucket, enforce_postgres_target

        evidence_bucket = clients.evidence_bucket(workload)
        enforce_at_cutover(
            context,
            self.workload,
            [
                lambda: enforce_postgres_target(self._sides(workload)),
                lambda: enforce_evidence_bucket(workload, evidence_bucket),
            ],
            moment,
            self.runbook(),
        )


class PgRollbackOperator(RollbackPhaseOperator, _PostgresPhase):
    """Routing back to the source, application roles unfrozen; target writes since cutover reported."""

    def execute(self, context: Any) -> dict[str, Any]:
        from bascule.postgres.cutover_phases import rollback

        reason = self._start_rollback(context)
        workload = self._model()
        evidence = self._evidence(workload)
        baseline = _last_cutover_baseline(evidence)

        def warn(message: str) -> None:
            self.log.warning("%s", message)

        record = self._run(
            lambda: rollback(
                workload, self._sides(workload), evidence, self._routing(workload), context["run_id"],
                context["ti"].try_number, reason, baseline, log=warn,
            )
        )  # fmt: skip
        mirror_routing_variable(workload.id, "azure", f"postgresql database {workload.source.database} (Azure)")
        append(context, self.workload, "rollback", record)
        self._seal_if_requested(context)
        self.log.info(
            "rollback: routing %s (live: %s); roles %s writable again on the source; reason: %s",
            "switched back to Azure" if record["routing_changed"] else "already on Azure", record["live"],
            record["source_unfrozen_roles"], reason,
        )  # fmt: skip
        return record


def _last_cutover_baseline(evidence: Any) -> dict[str, int] | None:
    """The target's write counters recorded by the most recent cutover of this workload, if any."""
    cutovers = [(key, at) for key, at in evidence.keys("runs/") if "/cutover-try" in key]
    if not cutovers:
        return None
    latest_key, _ = max(cutovers, key=lambda item: item[1])
    return evidence.read_json(latest_key).get("target_write_baseline")


class ReleaseReplicationOperator(_PostgresPhase):
    """After a failure, reject or timeout before cutover: drop the slot so the source keeps no WAL for it."""

    phase = "release_replication"
    ui_color = "#fde8e8"

    def execute(self, context: Any) -> dict[str, Any]:
        from bascule.postgres.cutover_phases import release_replication

        workload = self._model()
        evidence = self._evidence(workload)
        record = self._run(lambda: release_replication(workload, self._sides(workload), evidence, context["run_id"]))
        if record["left_alone"]:
            self.log.warning("no cutover in this run; %s Runbook: %s", record["reason"], self.runbook())
        else:
            self.log.info(
                "no cutover in this run: %s dropped (%s; the source keeps no WAL for them); ownership record %s; "
                "a new run starts from a new snapshot",
                record["released"], record["dropped"], record["record"],
            )  # fmt: skip
        append(context, self.workload, "note", {"summary": "no cutover: replication released", **record})
        return record


class PgCompleteOperator(_SnapshotPhase):
    phase = "complete"

    def execute(self, context: Any) -> dict[str, Any]:
        from bascule.postgres.phases import run_key

        ti = context["ti"]
        workload = self._model()
        summary = {
            "workload": workload.id,
            "run_id": context["run_id"],
            **{
                task: ti.xcom_pull(task_ids=task)
                for task in (
                    "snapshot",
                    "schema_pre_data",
                    "schema_post_data",
                    "start_replication",
                    "catch_up",
                    "validate",
                    "shadow_run",
                    "approve_cutover",
                    "cutover",
                )
            },  # fmt: skip
            "copy": mapped_results(ti, "copy_table"),
        }
        key = self._record_completion(
            context, self._evidence(workload), f"runs/{run_key(context['run_id'])}/completed-try{ti.try_number}.json",
            summary,
        )  # fmt: skip
        self.log.info("migration of %s complete; evidence summary at %s", workload.id, key)
        return {"summary_key": key}


def describe_cutover(context: Any) -> str:
    """What the approver sees for a postgres workload: the evidence the cutover rests on."""
    ti = context["ti"]
    snapshot = ti.xcom_pull(task_ids="snapshot") or {}
    copies = mapped_results(ti, "copy_table")
    catch_up = ti.xcom_pull(task_ids="catch_up") or {}
    validate = ti.xcom_pull(task_ids="validate") or {}
    shadow = ti.xcom_pull(task_ids="shadow_run") or {}
    rows = sum(c["rows"] for c in copies)
    moved = sum(c["bytes"] for c in copies)
    return "\n".join(
        [
            f"### Cutover of database workload (slot `{snapshot.get('slot')}`)",
            "",
            "| evidence | value |",
            "|---|---|",
            f"| tables in scope | {len(snapshot.get('tables', []))} ({snapshot.get('bytes', 0) / 1e6:,.1f} MB on the source) |",
            f"| inventory | `{snapshot.get('inventory_key')}` |",
            f"| bulk copy | {rows:,} rows, {moved / 1e6:,.1f} MB in {len(copies)} copy task(s) over "
            f"{len({c['table'] for c in copies})} table(s) (a split table has one per key range) |",
            f"| replication | lag {catch_up.get('lag_bytes', '?')} bytes / {catch_up.get('lag_seconds', '?')} s at catch-up |",
            f"| table diff (segmented checksums) | {'PASS' if validate.get('diff_ok') else 'FAIL'}: "
            f"{validate.get('tables', 0)} table(s), {validate.get('rows', 0):,} rows, "
            f"{validate.get('differences', 0)} difference(s) |",
            f"| Great Expectations | {'PASS' if validate.get('gates_ok') else 'FAIL'}: {validate.get('gates_summary', '')} |",
            f"| shadow queries | {'PASS' if shadow.get('ok') else 'FAIL'}: {shadow.get('jobs', 0)} job(s) |",
            "",
            f"Reports: diff `{validate.get('diff_uri')}`, GX `{validate.get('gates_uri')}`, shadow `{shadow.get('report_uri')}`.",
            "",
            "Approving starts the cutover at the next maintenance window: the application roles become "
            "read-only on the source, the replica drains, a final diff must be empty, sequences are carried "
            "over, then routing switches to Scaleway. Rejecting fails the run; give a reason.",
        ]
    )

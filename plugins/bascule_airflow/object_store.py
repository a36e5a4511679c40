"""Operators for the phases of an object-store workload (Azure Blob -> Scaleway S3).

Each operator builds clients from Airflow connections, calls one function of
``bascule.objects.phases``, and turns the domain's errors into Airflow's: a problem
with the data or a refusal fails at once (``AirflowFailException``); a transient
fault raises normally so the task's retries apply. The plumbing shared with the
postgres kind is in ``bascule_airflow.common``.
"""

from __future__ import annotations

import time
from typing import Any

from bascule_airflow.common import PhaseOperator, RollbackPhaseOperator, SnapshotPhaseOperator, mirror_routing_variable
from bascule_airflow.evidence_records import append
from bascule_airflow.progress import progress_reporter
from bascule_airflow.quorum import require_quorum
from bascule_airflow.xcoms import mapped_results


class _ObjectStorePhase(PhaseOperator):
    """The workload model, clients and evidence store, built inside execute(): no connection lookup at parse time."""

    def _model(self) -> Any:
        from bascule.workload import ObjectStoreWorkload

        return ObjectStoreWorkload.model_validate(self.workload)

    def _source(self, workload: Any) -> Any:
        from bascule_airflow import clients

        return clients.blob_container(workload.source.conn_id, workload.source.container)

    def _target(self, workload: Any, bucket: str | None = None) -> Any:
        from bascule_airflow import clients

        return clients.target_bucket(workload, bucket, concurrency=workload.transfer.concurrency)

    def _evidence(self, workload: Any) -> Any:
        """The evidence store, in the workload's evidence bucket: the data bucket holds the source's objects only."""
        from bascule_airflow import clients

        return clients.evidence_store(workload)

    def _stores(self, workload: Any) -> tuple[Any, Any, Any]:
        """Source container, target (data) bucket and the evidence store (evidence bucket)."""
        return self._source(workload), self._target(workload), self._evidence(workload)


class _SnapshotPhase(SnapshotPhaseOperator, _ObjectStorePhase):
    """An object-store phase that works on the snapshot."""


class SnapshotOperator(_ObjectStorePhase):
    """List every source object once into the run's inventory (evidence); XCom gets its key."""

    phase = "snapshot"
    ui_color = "#eef6e8"

    def execute(self, context: Any) -> dict[str, Any]:
        from bascule.exceptions import BasculeError
        from bascule.objects.phases import snapshot_id_for, take_snapshot

        workload = self._model()
        snapshot_id = snapshot_id_for(context["run_id"], context["ti"].try_number)
        self.log.info("taking snapshot %s of %s", snapshot_id, workload.source.container)
        try:
            record = take_snapshot(workload, self._source(workload), self._evidence(workload), snapshot_id)
        except BasculeError as exc:
            self._fail_or_retry(exc)
        self.log.info(
            "snapshot %s: %d object(s), %.1f MB in %.1f s; inventory %s",
            snapshot_id, record["objects"], record["bytes"] / 1e6, record["seconds"], record["inventory_key"],
        )  # fmt: skip
        append(
            context, self.workload, "inventory",
            {"objects": record["objects"], "bytes": record["bytes"], "snapshot_id": snapshot_id,
             "inventory_sha256": record.get("inventory_sha256")},
            [record["inventory_key"]],
        )  # fmt: skip
        return {**record, "too_large": record["too_large"][:20]}


class TransferShardOperator(_SnapshotPhase):
    """Copy one shard of the snapshot, verified and idempotent. Mapped over the shards."""

    phase = "transfer"
    ui_color = "#e8eef6"

    def __init__(self, *, shard_index: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.shard_index = shard_index

    def execute(self, context: Any) -> dict[str, Any]:
        from bascule.exceptions import BasculeError
        from bascule.objects.phases import TransferIncomplete, transfer_shard

        workload = self._model()
        target = self._target(workload)
        started = time.monotonic()

        # The control room's progress bar and the `done/total (pct%) rate ETA` line (bascule_airflow.progress).
        shard_log = lambda line: self.log.info("shard %d: %s", self.shard_index, line)  # noqa: E731
        reporter = progress_reporter(context, "objects", log=shard_log)

        def progress(p: Any) -> None:
            reporter.total, reporter.bytes_total = p.objects_total, p.bytes_total
            reporter.update(p.objects_done, p.bytes_done)
            self.log.info("shard %d: %s", self.shard_index, p.describe())

        try:
            summary = transfer_shard(
                workload,
                self._source(workload),
                target,
                self._evidence(workload),
                self.snapshot,
                self.shard_index,
                context["ti"].try_number,
                progress=progress,
            )
        except TransferIncomplete:
            raise  # a retry copies only what is missing
        except BasculeError as exc:
            self._fail_or_retry(exc)
        self.log.info(
            "shard %d done in %.1f s: %d copied, %d already there, %.1f MB; report %s",
            self.shard_index, time.monotonic() - started, summary["copied"], summary["skipped"],
            summary["bytes"] / 1e6, summary["report_key"],
        )  # fmt: skip
        append(
            context, self.workload, "transfer_report",
            {"shard": self.shard_index, "copied": summary["copied"], "skipped": summary["skipped"],
             "bytes": summary["bytes"], "success": True},
            [summary["report_key"]],
        )  # fmt: skip
        return summary


class ValidateOperator(_SnapshotPhase):
    """Great Expectations gates: parity (source inventory vs fresh target) and content suites."""

    phase = "validate"
    ui_color = "#f6f0e8"

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from bascule.objects.inventory import read_inventory
        from bascule.objects.phases import describe_problems, prove_parity, run_content_suites

        workload = self._model()
        source, target, evidence = self._stores(workload)
        sid = self.snapshot["snapshot_id"]
        base = f"snapshots/{sid}/validate-try{context['ti'].try_number}"
        report_context = {"workload": workload.id, "snapshot": sid, "run_id": context["run_id"]}
        parity = prove_parity(
            workload, read_inventory(evidence, self.snapshot["inventory_key"]), target, evidence, base, report_context
        )
        self.log.info("parity over %d object(s): %s", parity.rows, "PASS" if parity.success else "FAIL")
        content = run_content_suites(workload, source, target, evidence, self.snapshot, base, report_context)
        for suite in content["suites"]:
            self.log.info(
                "content suite %s/%s: %s", suite["suite"], suite["table"], "PASS" if suite["success"] else "FAIL"
            )
        result = {
            "parity": parity.to_dict(),
            "content": content,
            "success": parity.success and content["success"],
        }
        append(
            context, self.workload, "validation",
            {"success": result["success"], "parity_objects": parity.rows, "parity_problems": parity.problem_count,
             "content_success": content["success"],
             "summary": "parity and content suites passed" if result["success"] else "validation failed"},
            [parity.report_key, content.get("report_key") or ""],
        )  # fmt: skip
        if not parity.success:
            raise AirflowFailException(
                f"parity failed for {parity.problem_count} object(s): {describe_problems(parity.problems, total=parity.problem_count)}. "
                f"Report: {evidence.uri(parity.report_key[len(evidence.prefix) :])}. Nothing downstream runs. "
                f"Runbook: {self.runbook()}"
            )
        if not content["success"]:
            raise AirflowFailException(
                f"content validation failed: {content['failure_summary']}. Report: {content['report_uri']}. "
                f"Runbook: {self.runbook()}"
            )
        return result


class ShadowRunOperator(_SnapshotPhase):
    """Run the workload's shadow jobs on the Azure copy and the Scaleway copy; compare with A/A calibration."""

    phase = "shadow_run"
    ui_color = "#f0e8f6"

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowTaskTimeout

        from bascule.objects.phases import run_shadow_jobs

        workload = self._model()
        source, target, evidence = self._stores(workload)
        name = f"snapshots/{self.snapshot['snapshot_id']}/shadow-try{context['ti'].try_number}"
        report, key = run_shadow_jobs(
            workload, source, target, evidence, name, snapshot=self.snapshot, propagate=(AirflowTaskTimeout,)
        )
        self._record_shadow_run(
            context, report.ok, len(workload.shadow_run.jobs), report.summary(), key, report.diff_report(),
            evidence.uri(key[len(evidence.prefix) :]),
        )  # fmt: skip
        return {"ok": report.ok, "jobs": len(workload.shadow_run.jobs), "report_key": key}


def describe_cutover(context: Any) -> str:
    """What the approver sees for an object-store workload: the evidence the cutover rests on."""
    ti = context["ti"]
    snapshot = ti.xcom_pull(task_ids="snapshot") or {}
    shards = mapped_results(ti, "transfer")
    validate = ti.xcom_pull(task_ids="validate") or {}
    shadow = ti.xcom_pull(task_ids="shadow_run") or {}
    copied = sum(s["copied"] for s in shards)
    skipped = sum(s["skipped"] for s in shards)
    moved = sum(s["bytes"] for s in shards)
    parity = validate.get("parity", {})
    content = validate.get("content", {})
    return "\n".join(
        [
            f"### Cutover of snapshot `{snapshot.get('snapshot_id')}`",
            "",
            "| evidence | value |",
            "|---|---|",
            f"| objects in snapshot | {snapshot.get('objects', 0):,} ({snapshot.get('bytes', 0) / 1e6:,.1f} MB) |",
            f"| inventory sha256 | `{snapshot.get('inventory_sha256', '')}` |",
            f"| transfer | {copied:,} copied, {skipped:,} already there, {moved / 1e6:,.1f} MB, {len(shards)} shard(s) |",
            f"| parity (GX) | {'PASS' if parity.get('success') else 'FAIL'}: {parity.get('objects', 0):,} objects, "
            f"{parity.get('problems', 0)} problem(s) |",
            f"| content suites (GX) | {'PASS' if content.get('success') else 'FAIL'}: {len(content.get('suites', []))} table(s) |",
            f"| shadow run | {'PASS' if shadow.get('ok') else 'FAIL'}: {shadow.get('jobs', 0)} job(s) |",
            "",
            f"Reports: parity `{parity.get('report_key')}`, content `{content.get('report_key')}`, "
            f"shadow `{shadow.get('report_key')}`.",
            "",
            "Approving starts the cutover at the next maintenance window: the source is frozen, the delta "
            "synced and re-verified, then routing switches to Scaleway. Rejecting fails the run; give a reason.",
        ]
    )


class CutoverOperator(_SnapshotPhase):
    """Freeze the source, sync the final delta, re-prove parity, switch routing, smoke-check."""

    phase = "cutover"
    ui_color = "#f6e8e8"

    def execute(self, context: Any) -> dict[str, Any]:
        from bascule.exceptions import BasculeError
        from bascule.objects.phases import TransferIncomplete, cutover
        from bascule_airflow import clients

        approval = require_quorum(context, self.workload)
        workload = self._model()
        source, target = self._source(workload), self._target(workload)
        self._enforce_policy(context, workload, target, "before freezing")
        try:
            record = cutover(
                workload,
                container_client=clients.container_client(workload.source.conn_id, workload.source.container),
                source=source,
                target=target,
                target_for=lambda bucket: self._target(workload, bucket),
                evidence=self._evidence(workload),
                routing=clients.routing_registry(workload),
                snapshot=self.snapshot,
                run_id=context["run_id"],
                attempt=context["ti"].try_number,
                context={"workload": workload.id, "run_id": context["run_id"]},
                log=self.log.info,
                before_switch=lambda: self._enforce_policy(context, workload, target, "before the switch"),
            )
        except TransferIncomplete:
            raise
        except BasculeError as exc:
            self._fail_or_retry(exc)
        mirror_routing_variable(workload.id, "scaleway", record["routing"])
        self.log.info(
            "cutover done: routing -> %s; writes blocked for %.1f s (freezing by %s %.1f s, of which %.1f s waiting "
            "for the probe write to be refused, then %.1f s to the switch, %d delta round(s))",
            record["routing"], record["freeze_to_switch_seconds"], record["freeze_method"], record["freeze_seconds"],
            record["probe_wait_seconds"], record["frozen_to_switch_seconds"], record["delta_rounds"],
        )  # fmt: skip
        keep = (
            "snapshot_id", "switched_at", "freeze_seconds", "frozen_to_switch_seconds", "freeze_to_switch_seconds",
            "probe_wait_seconds", "freeze_method", "delta_rounds",
        )  # fmt: skip
        result = {k: record[k] for k in (*keep, "routing", "smoke")}
        append(
            context, self.workload, "cutover",
            {**{k: record.get(k) for k in keep}, "routing": record["routing"], "frozen_at": record.get("frozen_at"),
             "approved_by": approval["approved_by"], "evidence_digest": approval["evidence_digest"]},
        )  # fmt: skip
        return result

    def _enforce_policy(self, context: Any, workload: Any, target: Any, moment: str) -> None:
        from bascule_airflow import clients
        from bascule_airflow.policy_gate import enforce_at_cutover, enforce_evidence_bucket, enforce_object_target

        evidence_bucket = clients.evidence_bucket(workload)
        checks = [lambda: enforce_object_target(workload, target), lambda: enforce_evidence_bucket(workload, evidence_bucket)]
        enforce_at_cutover(context, self.workload, checks, moment, self.runbook())


class RollbackOperator(RollbackPhaseOperator, _ObjectStorePhase):
    """Routing back to Azure and the source unfrozen. Idempotent; recorded in the evidence.

    ``when="requested"`` runs when an operator triggers the DAG with the rollback Param;
    ``when="cutover_failed"`` runs only if the cutover task itself failed.
    """

    def execute(self, context: Any) -> dict[str, Any]:
        from bascule.objects.freeze import unfreeze
        from bascule_airflow import clients

        reason = self._start_rollback(context)
        workload = self._model()
        routing = clients.routing_registry(workload)
        current, _ = routing.read(workload.id)
        switched = False
        if current is not None:
            current, switched = routing.switch(workload.id, "azure", context["run_id"], reason)
        # Restores the stored access policy exactly as recorded on the container at freeze time.
        released = unfreeze(
            clients.container_client(workload.source.conn_id, workload.source.container),
            workload.source.prefix,
            workload.id,
            config=workload.cutover.freeze,
        )
        record = {
            "when": self.when,
            "reason": reason,
            "routing_changed": switched,
            "live": current.live if current else "azure (never switched)",
            "leases_released": released.released,
            "policy_restored": released.policy_restored,
            "run_id": context["run_id"],
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        evidence = self._evidence(workload)
        key = evidence.put_json(f"rollbacks/{context['run_id']}-try{context['ti'].try_number}.json", record)
        append(context, self.workload, "rollback", record, [key])
        self._seal_if_requested(context)
        if current is not None:
            mirror_routing_variable(workload.id, "azure", current.live_location().describe())
        self.log.info(
            "rollback: routing %s (live: %s), %d lease(s) released, stored access policy restored: %s; reason: %s",
            "switched back to Azure" if switched else "already on Azure", record["live"], released.released,
            released.policy_restored or "none was frozen", reason,
        )  # fmt: skip
        return record


class RecordCompletionOperator(_ObjectStorePhase):
    """The migration's closing record: one evidence file summarising every phase's outcome."""

    phase = "complete"

    def execute(self, context: Any) -> dict[str, Any]:
        ti = context["ti"]
        workload = self._model()
        summary = {
            "workload": workload.id,
            "run_id": context["run_id"],
            "snapshot": ti.xcom_pull(task_ids="snapshot"),
            "transfer": mapped_results(ti, "transfer"),
            "validate": ti.xcom_pull(task_ids="validate"),
            "shadow_run": ti.xcom_pull(task_ids="shadow_run"),
            "approval": ti.xcom_pull(task_ids="approve_cutover"),
            "cutover": ti.xcom_pull(task_ids="cutover"),
        }
        sid = (summary["snapshot"] or {}).get("snapshot_id", "unknown")
        key = self._record_completion(
            context, self._evidence(workload), f"snapshots/{sid}/completed-try{ti.try_number}.json", summary
        )
        self.log.info(
            "migration of %s complete; evidence summary at s3://%s/%s", workload.id, workload.evidence.bucket, key
        )
        return {"summary_key": key}


"""Turn workload manifests into DAGs: one ``migrate_<id>`` DAG per manifest.

Parsing reads only YAML files. No connection, network call or heavy import
happens here; every phase does its work inside its task.
"""

from __future__ import annotations

import gc
import hashlib
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import pendulum
from airflow.sdk import DAG, Param

from bascule.workload import LoadedManifest, ObjectStoreWorkload, PostgresWorkload, load_manifests
from bascule_airflow.assets import workload_asset
from bascule_airflow.notifications import failure_notifiers, gate_notifiers
from bascule_airflow.preflight import PreflightOperator

WORKLOADS_DIR_ENV = "BASCULE_WORKLOADS_DIR"
DEFAULT_WORKLOADS_DIR = Path(__file__).resolve().parents[2] / "include" / "workloads"
START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")

# Tasks that touch the network retry with backoff; a policy refusal fails at once instead.
NETWORK_TASK_ARGS = {
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
}

# The run's Params (the trigger form): name, default, JSON type, title, description.
RUN_PARAMS = (
    (
        "dry_run", False, "boolean", "Dry run",
        "Preflight only, reporting what it would create: nothing is created and no byte moves.",
    ),
    (
        "rollback", False, "boolean", "Roll back",
        "Only roll back: routing back to Azure and the source unfrozen (for a database, "
        "its application roles writable again). No migration runs.",  # both kinds can be rolled back on demand
    ),
    ("rollback_reason", "", "string", "Rollback reason", "Recorded in the evidence with the rollback."),
)  # fmt: skip


def run_params(source: Literal["dag"] | None = "dag") -> dict[str, Param]:
    """A new set of the run's Params: the DAG's own (``source=None``) or a task's copy of them.

    Airflow's ``apply_defaults`` deep-copies ``dag.params`` into every ``__init__`` layer of
    every operator built while the DAG has them (2.8 copies per task, of which only the
    outermost is kept): about a quarter of the parse (docs/benchmarks.md#parse). So the DAG gets its
    Params after its tasks are built, and each task is handed its own new set, marked
    ``source="dag"`` as Airflow marks the copies: the same Params in the same objects-per-task
    shape, built once instead of deep-copied three times.
    """
    return {
        name: Param(default, description=description, source=source, type=kind, title=title)
        for name, default, kind, title, description in RUN_PARAMS
    }


def workloads_dir() -> Path:
    return Path(os.environ.get(WORKLOADS_DIR_ENV) or DEFAULT_WORKLOADS_DIR)


def build_workload_dags(
    directory: Path | None = None, *, only_dag_id: str | None = None, freeze: bool = False
) -> dict[str, DAG]:
    """One DAG per manifest in ``directory`` (or only the one named ``only_dag_id``, if it is among them).

    ``only_dag_id``: a task's runner parses the DAG file for its own DAG only (Airflow's parsing
    context, ``get_parsing_context().dag_id``); every manifest is still read and validated, so a
    duplicate id is refused as in a full parse. ``freeze``: the caller keeps the DAGs for the
    life of the process (the DAG file, parsed by a DAG processor's parse process or a task's
    runner); see below.
    """
    dags: dict[str, DAG] = {}
    # Every object built here lives as long as the DagBag, so the cyclic GC's passes during
    # the build (triggered by the many small allocations of Airflow's operator __init__, and
    # each one walking all the DAGs built so far) find nothing to free: about a fifth of the
    # parse (docs/benchmarks.md#parse). Paused for the build only, and restored even on error.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for manifest in load_manifests(directory or workloads_dir()):
            if only_dag_id is None or _dag_id(manifest) == only_dag_id:
                dag = _workload_dag(manifest) if manifest.workload else _invalid_manifest_dag(manifest)
                dags[dag.dag_id] = dag
        if freeze:
            # Built with the GC paused, all of it sits in the youngest generation, and the
            # first collection after the pause would walk it all (~0.1 s CPU for 500 DAGs) to
            # free nothing. Frozen, the collector never walks it again; only for a caller that
            # keeps its DAGs to the end of its process (what is frozen is never collected).
            gc.freeze()
    finally:
        if gc_was_enabled:
            gc.enable()
    return dags


def _dag_id(manifest: LoadedManifest) -> str:
    return f"migrate_{manifest.workload.id}" if manifest.workload else invalid_manifest_dag_id(manifest.path)


def _workload_dag(manifest: LoadedManifest) -> DAG:
    workload = manifest.workload
    assert workload is not None
    # Dumped and resolved once per DAG: every operator gets the same (read-only) JSON and path.
    args = _phase_args(workload, manifest.path)
    with DAG(
        dag_id=_dag_id(manifest),
        description=workload.description[:200],
        doc_md=_doc(workload, args["manifest_path"]),
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,  # two runs of one migration would race on the same target
        tags=["bascule", workload.kind],
        default_args={"owner": workload.owner},
        # No params here: the run's Params are set once the tasks are built (see run_params).
        render_template_as_native_obj=False,
        # The manifest's notifications: the operators are e-mailed when a run fails (#15).
        on_failure_callback=failure_notifiers(args["workload"]) or None,
    ) as dag:
        preflight = PreflightOperator(
            task_id="preflight",
            dry_run="{{ params.dry_run }}",
            doc_md="Checks connections, source location, target region policy and target existence.",
            params=run_params(), **args,
            **NETWORK_TASK_ARGS,
        )
        if isinstance(workload, ObjectStoreWorkload):
            _object_store_phases(workload, args, preflight)
        else:
            _postgres_phases(workload, args, preflight)
    dag.params = run_params(source=None)  # the trigger form's fields, as Airflow keeps DAG-level Params
    return dag


def _object_store_phases(workload: ObjectStoreWorkload, phase_args: dict[str, Any], preflight: PreflightOperator) -> None:
    """preflight -> snapshot -> transfer[shards] -> validate -> shadow_run -> approve_cutover
    -> wait_for_window -> cutover -> complete, with rollback on request or after a failed cutover."""
    from bascule_airflow import object_store as ops

    args = {**phase_args, **NETWORK_TASK_ARGS}
    choose_mode, stop_if_dry_run = _mode_branches(ops.RollbackOperator, args)
    snapshot = ops.SnapshotOperator(task_id="snapshot", params=run_params(), **args)
    transfer = ops.TransferShardOperator.partial(
        task_id="transfer", snapshot=snapshot.output, params=run_params(), **args
    ).expand(shard_index=list(range(workload.transfer.shards)))
    validate = ops.ValidateOperator(task_id="validate", snapshot=snapshot.output, params=run_params(), **args)
    shadow_run = ops.ShadowRunOperator(task_id="shadow_run", snapshot=snapshot.output, params=run_params(), **args)
    approve_cutover, wait_for_window, cutover, rollback_after_failed_cutover = _cutover_tasks(
        ops.describe_cutover, ops.CutoverOperator, ops.RollbackOperator, snapshot, args
    )
    complete = ops.RecordCompletionOperator(task_id="complete", params=run_params(), **args)

    choose_mode >> preflight
    (
        preflight
        >> stop_if_dry_run
        >> snapshot
        >> transfer
        >> validate
        >> shadow_run
        >> approve_cutover
        >> wait_for_window
        >> cutover
    )
    cutover >> [complete, rollback_after_failed_cutover]
    _verify_evidence_after(complete, args)


def _postgres_phases(workload: PostgresWorkload, phase_args: dict[str, Any], preflight: PreflightOperator) -> None:
    """preflight -> snapshot -> schema_pre_data -> copy_table[tables] -> schema_post_data
    -> start_replication -> catch_up -> validate -> shadow_run -> approve_cutover
    -> wait_for_window -> cutover -> complete, with rollback on request or after a failed cutover."""
    from bascule_airflow import postgres as ops

    args = {**phase_args, **NETWORK_TASK_ARGS}
    choose_mode, stop_if_dry_run = _mode_branches(ops.PgRollbackOperator, args)
    snapshot = ops.PgSnapshotOperator(task_id="snapshot", params=run_params(), **args)
    pre_data = ops.SchemaSectionOperator(
        task_id="schema_pre_data", section="pre-data", snapshot=snapshot.output, params=run_params(), **args
    )
    plan_copy = ops.PlanCopyOperator(
        task_id="plan_copy",
        snapshot=snapshot.output,
        doc_md="One copy task per table, largest first; a table over transfer.split_table_above_mib "
        "gets one task per primary-key range.",
        params=run_params(), **args,
    )
    copy_table = ops.CopyTableOperator.partial(
        task_id="copy_table",
        snapshot=snapshot.output,
        map_index_template="{{ copy_unit }}",  # the grid shows "registry.stays range 2/4 of ..." per task
        max_active_tis_per_dagrun=workload.transfer.concurrency,
        params=run_params(), **args,
    ).expand(table=plan_copy.output)
    post_data = ops.SchemaSectionOperator(
        task_id="schema_post_data", section="post-data", snapshot=snapshot.output, params=run_params(), **args
    )
    start_replication = ops.StartReplicationOperator(
        task_id="start_replication", snapshot=snapshot.output, params=run_params(), **args
    )
    catch_up = ops.CatchUpOperator(
        task_id="catch_up", snapshot=snapshot.output, copies=copy_table.output, params=run_params(), **args
    )
    validate = ops.PgValidateOperator(task_id="validate", snapshot=snapshot.output, params=run_params(), **args)
    shadow_run = ops.PgShadowRunOperator(task_id="shadow_run", snapshot=snapshot.output, params=run_params(), **args)
    approve_cutover, wait_for_window, cutover, rollback_after_failed_cutover = _cutover_tasks(
        ops.describe_cutover, ops.PgCutoverOperator, ops.PgRollbackOperator, snapshot, args
    )
    complete = ops.PgCompleteOperator(task_id="complete", snapshot=snapshot.output, params=run_params(), **args)
    release_replication = ops.ReleaseReplicationOperator(
        task_id="release_replication",
        trigger_rule="one_failed",
        doc_md="Runs only when the migration stops before cutover: no replication slot is left on the source.",
        params=run_params(), **args,
    )

    choose_mode >> preflight
    preflight >> stop_if_dry_run >> snapshot >> pre_data >> plan_copy >> copy_table >> post_data
    post_data >> start_replication >> catch_up >> validate >> shadow_run >> approve_cutover
    approve_cutover >> wait_for_window >> cutover >> [complete, rollback_after_failed_cutover]
    _verify_evidence_after(complete, args)
    [start_replication, catch_up, validate, shadow_run, approve_cutover, wait_for_window] >> release_replication


def _phase_args(workload: ObjectStoreWorkload | PostgresWorkload, path: Path) -> dict[str, Any]:
    """What every phase operator is given: the manifest as validated JSON, and where it was read."""
    return {"workload": workload.model_dump(mode="json"), "manifest_path": _display_path(path)}


def _mode_branches(rollback_operator: type, args: dict[str, Any]) -> tuple[Any, Any]:
    """``choose_mode`` (migrate, or only roll back on request) and the dry run's stop after preflight."""
    from airflow.providers.standard.operators.python import BranchPythonOperator, ShortCircuitOperator

    choose_mode = BranchPythonOperator(
        task_id="choose_mode",
        python_callable=choose_mode_from_params,
        doc_md="Migrate, or only roll back when triggered with rollback=true.",
        params=run_params(),
    )
    rollback_requested = rollback_operator(
        task_id="rollback_requested", when="requested", reason="{{ params.rollback_reason }}",
        outlets=[workload_asset(args["workload"]["id"])], params=run_params(), **args,
    )
    stop_if_dry_run = ShortCircuitOperator(
        task_id="stop_if_dry_run", python_callable=not_dry_run, doc_md="A dry run ends after preflight.",
        params=run_params(),
    )
    choose_mode >> rollback_requested
    return choose_mode, stop_if_dry_run


def _cutover_tasks(
    describe_cutover: Callable[[Any], str], cutover_operator: type, rollback_operator: type, snapshot: Any,
    args: dict[str, Any],
) -> tuple[Any, Any, Any, Any]:
    """The approval gate (no retry: a retry would re-ask people), the wait for the maintenance
    window, the cutover, and the rollback that acts only if the cutover itself failed."""
    from bascule_airflow.approval import CutoverApprovalOperator
    from bascule_airflow.maintenance_window import WaitForWindowOperator

    approve_cutover = CutoverApprovalOperator(
        task_id="approve_cutover", workload=args["workload"], describe_cutover=describe_cutover, retries=0,
        notifiers=gate_notifiers(args["workload"]),  # the approvers are e-mailed when the gate opens (#15)
    )
    wait_for_window = WaitForWindowOperator(task_id="wait_for_window", params=run_params(), **args)
    outlets = [workload_asset(args["workload"]["id"])]  # where the workload lives, as Asset events (#15)
    cutover = cutover_operator(
        task_id="cutover", snapshot=snapshot.output, outlets=outlets, params=run_params(), **args
    )
    rollback_after_failed_cutover = rollback_operator(
        task_id="rollback_after_failed_cutover", when="cutover_failed", trigger_rule="one_failed", outlets=outlets,
        params=run_params(), **args,
    )
    return approve_cutover, wait_for_window, cutover, rollback_after_failed_cutover


def _verify_evidence_after(complete: Any, args: dict[str, Any]) -> None:
    from bascule_airflow.evidence_records import VerifyEvidenceOperator

    complete >> VerifyEvidenceOperator(task_id="verify_evidence", params=run_params(), **args)


def choose_mode_from_params(**context: Any) -> str:
    """Branch: a run triggered with ``rollback=true`` only rolls back."""
    return "rollback_requested" if context["params"].get("rollback") else "preflight"


def not_dry_run(**context: Any) -> bool:
    return not context["params"].get("dry_run")


def _invalid_manifest_dag(manifest: LoadedManifest) -> DAG:
    """A refused manifest still shows up in the UI, with its error, and cannot do anything.

    Raising at import would hide every other workload's DAG (one DAG file holds them
    all), so the error becomes a DAG whose only task fails with the message.
    """
    from bascule_airflow.invalid_manifest import ManifestInvalidOperator

    assert manifest.error is not None
    message = str(manifest.error).replace(str(manifest.path), _display_path(manifest.path))
    with DAG(
        dag_id=invalid_manifest_dag_id(manifest.path),
        description=f"Invalid manifest {manifest.path.name}: fix it to get its migration DAG",
        doc_md=f"## Invalid workload manifest\n\n```\n{message}\n```\n\nSee `docs/workloads.md` for every field.",
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        tags=["bascule", "invalid-manifest"],
    ) as dag:
        ManifestInvalidOperator(task_id="manifest_invalid", message=message)
    return dag


def invalid_manifest_dag_id(path: Path) -> str:
    """``bascule_invalid_manifest_<stem>_<hash>``: readable, unique per file name, within Airflow's 250 chars."""
    # Sanitising can make two names collide (a-b.yaml, a_b.yaml, x.yml, x.yaml), and a
    # duplicate DAG id would silently hide one: a short hash of the file name keeps them apart.
    stem = "".join(c if c.isalnum() or c == "_" else "_" for c in path.stem.lower())[:120]
    return f"bascule_invalid_manifest_{stem}_{hashlib.blake2b(path.name.encode(), digest_size=3).hexdigest()}"


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(DEFAULT_WORKLOADS_DIR.parents[1]))
    except ValueError:
        return str(path)


def _doc(workload: ObjectStoreWorkload | PostgresWorkload, display_path: str) -> str:
    if isinstance(workload, ObjectStoreWorkload):
        source = f"Azure Blob `{workload.source.conn_id}`: container `{workload.source.container}`, prefix `{workload.source.prefix or '(all)'}`"
        target = f"Scaleway S3 `{workload.target.conn_id}`: bucket `{workload.target.bucket}`, prefix `{workload.target.prefix or '(root)'}`"
    else:
        source = f"Azure PostgreSQL `{workload.source.conn_id}`: database `{workload.source.database}`, schemas {workload.source.schemas}"
        target = f"Scaleway PostgreSQL `{workload.target.conn_id}`: database `{workload.target.database}`"
    window = workload.cutover.window
    return "\n".join(
        [
            f"## {workload.id}",
            "",
            workload.description,
            "",
            f"- **Owner**: {workload.owner}",
            f"- **Source**: {source}",
            f"- **Target**: {target}, region `{workload.target.region}`",
            f"- **Evidence**: bucket `{workload.evidence.bucket}` (`{workload.evidence.conn_id}`, Object Lock "
            f"{'on' if workload.evidence.object_lock else 'off'})",
            f"- **Approvers**: {', '.join(workload.approvals.approvers)} ({workload.approvals.required} required)",
            f"- **Cutover window**: {', '.join(window.days)} {window.start:%H:%M}-{window.end:%H:%M} {window.timezone}",
            f"- **Manifest**: `{display_path}`",
        ]
    )

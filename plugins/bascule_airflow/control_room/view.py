"""The control room's answers: manifests joined with what Airflow recorded of their runs.

Every value is read, not recomputed: the phases' XComs (verdicts, counts, write-block),
the gate's record (``gate_view``), the progress records, the evidence verification result.
"""

from __future__ import annotations

from typing import Any

from bascule_airflow.control_room import runs
from bascule_airflow.progress import PROGRESS_XCOM_KEY

# The order a workload travels (either kind); the current phase is the last one started.
PHASES = (
    "preflight", "snapshot", "transfer", "schema_pre_data", "plan_copy", "copy_table", "schema_post_data",
    "start_replication", "catch_up", "validate", "shadow_run", "approve_cutover", "wait_for_window", "cutover",
    "complete", "verify_evidence", "rollback_requested", "rollback_after_failed_cutover", "release_replication",
)  # fmt: skip
WRITE_BLOCK_KEYS = ("freeze_to_switch_seconds", "freeze_window_seconds")


def current_phase(tasks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The phase being worked on: a running or waiting one first, else the last failed, else the last done."""
    ordered = [t for t in tasks if t["task_id"] in PHASES]
    for wanted in (("running", "deferred", "awaiting_input", "up_for_retry", "queued"), ("failed",)):
        hits = [t for t in ordered if t["state"] in wanted]
        if hits:
            return max(hits, key=lambda t: PHASES.index(t["task_id"]))
    done = [t for t in ordered if t["state"] == "success"]
    return max(done, key=lambda t: PHASES.index(t["task_id"])) if done else None


MAPPED_UNITS = {"transfer": "shards", "copy_table": "tables"}


def mapped_progress(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A mapped phase still at work, counted from its task instances: ``3/7 tables done``."""
    rows = []
    for task_id, unit in MAPPED_UNITS.items():
        mapped = [t for t in tasks if t["task_id"] == task_id and t["map_index"] >= 0]
        done = sum(t["state"] == "success" for t in mapped)
        if mapped and done < len(mapped) and any(t["state"] not in ("failed", "upstream_failed") for t in mapped):
            line = f"{done}/{len(mapped)} {unit} done"
            rows.append({"task_id": task_id, "map_index": -1, "done": done, "total": len(mapped), "line": line})
    return rows


# A failed catch-up's record stays on the page: its lag and the rate it (did not) shrink are
# what the on-call needs (docs/runbooks.md#postgres-catch-up).
SHOWN_WHEN_FAILED = {"catch_up"}


def progress(values: dict[tuple[str, str, int], Any], tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The progress records of tasks still at work (a finished task's result says the rest)."""
    active = {
        (t["task_id"], t["map_index"])
        for t in tasks
        if t["state"] in ("running", "deferred", "up_for_retry")
        or (t["state"] == "failed" and t["task_id"] in SHOWN_WHEN_FAILED)
    }
    published = [
        {"task_id": task, "map_index": index, **value}
        for (task, key, index), value in sorted(values.items())
        if key == PROGRESS_XCOM_KEY and (task, index) in active and isinstance(value, dict)
    ]
    return mapped_progress(tasks) + published


def gate(session: Any, dag_id: str, run_id: str, values: dict[tuple[str, str, int], Any]) -> dict[str, Any]:
    record = values.get((runs.GATE_TASK, "bascule_gate", -1)) or {}
    result = values.get((runs.GATE_TASK, "return_value", -1)) or {}
    request = runs.gate_request(session, dag_id, run_id)
    out = {k: record.get(k) for k in ("outcome", "required", "approved_by", "waiting_for", "deadline", "summary")}
    if result.get("approved_by"):
        # The gate's result is the last word once it passed; its record was written while it waited.
        from bascule.governance.approvals import GateState
        from bascule.governance.gate_summary import quorum_line

        state = GateState("approved", list(result["approved_by"]), needed=int(record.get("required") or 0))
        out.update(outcome="approved", approved_by=state.approved_by, waiting_for=[])
        out["summary"] = quorum_line(state, list(record.get("eligible") or []))
    out["evidence_digest"] = result.get("evidence_digest") or record.get("evidence_digest")
    out["open"] = bool(request) and not request["response_received"] and out.get("outcome") == "waiting"
    out["body"] = request["body"] if request else None
    return out


def verdicts(values: dict[tuple[str, str, int], Any]) -> dict[str, Any]:
    from bascule.governance.gate_summary import verdict
    from bascule_airflow.gate_view import parity_verdict

    validate = values.get(("validate", "return_value", -1))
    shadow = values.get(("shadow_run", "return_value", -1))
    cutover = values.get(("cutover", "return_value", -1)) or {}
    evidence = values.get(("verify_evidence", "return_value", -1)) or {}
    write_block = next((cutover[k] for k in WRITE_BLOCK_KEYS if k in cutover), None)
    return {
        "parity": parity_verdict(validate),
        "shadow": verdict(shadow, "ok"),
        "write_block_seconds": write_block,
        "evidence": {
            "chain": ("verified" if evidence.get("ok") else "broken") if evidence else "not verified yet",
            "records": evidence.get("records"),
            "digest": evidence.get("digest"),
            "report": evidence.get("report"),
        },
    }


def run_view(session: Any, dag_id: str, run: Any, kind: str) -> dict[str, Any]:
    from bascule_airflow.links import phase_anchor, runbook_url

    summary = runs.run_summary(session, dag_id, run)
    values = runs.xcoms(session, dag_id, run.run_id)
    phase = current_phase(summary["tasks"])
    failed = phase is not None and phase["state"] == "failed"
    return {
        "runbook": runbook_url(phase_anchor(kind, phase["task_id"])) if failed and phase else None,
        **summary,
        "phase": phase["task_id"] if phase else None,
        "phase_state": phase["state"] if phase else None,
        "progress": progress(values, summary["tasks"]),
        "gate": gate(session, dag_id, run.run_id, values),
        **verdicts(values),
    }


def report_uri(values: dict[tuple[str, str, int], Any], report: str, workload: Any) -> str | None:
    """Where a phase stored the report it names in its XCom (an ``s3://`` URI in the evidence bucket)."""
    if report == "evidence":
        return (values.get(("verify_evidence", "return_value", -1)) or {}).get("report")
    validate = values.get(("validate", "return_value", -1)) or {}
    if workload.kind == "postgres":
        return validate.get("diff_uri")
    key = (validate.get("parity") or {}).get("report_key")
    return f"s3://{workload.evidence.bucket}/{key}" if key else None

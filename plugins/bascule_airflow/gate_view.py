"""The gate's words: its Required Actions body and the record the control room reads.

Rendering lives here, not in ``approval.py`` (which owns the quorum logic), so the text
can change without touching the gate's decisions. The facts come from what the validate
and shadow phases already returned as XCom; nothing is recomputed.
"""

from __future__ import annotations

from typing import Any

GATE_XCOM_KEY = "bascule_gate"


def parity_verdict(validate: dict[str, Any] | None) -> str:
    """Object workloads record ``success``; Postgres ones the table diff as ``diff_ok``."""
    from bascule.governance.gate_summary import verdict

    key = "diff_ok" if validate and "diff_ok" in validate else "success"
    return verdict(validate, key)


def evidence_summary(context: Any, workload_id: str, digest: str) -> Any:
    from bascule.governance.gate_summary import EvidenceSummary, verdict
    from bascule_airflow.links import workload_url

    ti = context["ti"]
    validate = ti.xcom_pull(task_ids="validate") or {}
    shadow = ti.xcom_pull(task_ids="shadow_run") or {}
    return EvidenceSummary(
        digest=digest,
        parity=parity_verdict(validate),
        shadow=verdict(shadow, "ok"),
        report_url=workload_url(workload_id, context["run_id"]),
    )


def publish_gate(
    context: Any, workload_id: str, description: str, state: Any, eligible: list[str], digest: str,
    deadline: str | None,
) -> str:  # fmt: skip
    """Push the gate's record for the control room; return the Markdown body for the approvers."""
    from bascule.governance.gate_summary import gate_record, render_gate_body

    # XCom survives the resume from awaiting_input (Airflow clears it only on a new try).
    context["ti"].xcom_push(key=GATE_XCOM_KEY, value=gate_record(state, eligible, digest, deadline))
    from datetime import UTC, datetime

    as_of = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return render_gate_body(description, state, eligible, evidence_summary(context, workload_id, digest), as_of)

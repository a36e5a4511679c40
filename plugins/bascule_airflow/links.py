"""Links, not paths: where a runbook section, a workload's page and its reports are served.

The control room (``/bascule`` on the API server) serves docs/runbooks.md rendered with
anchors, so a failure message can end with a URL an on-call engineer clicks. With
``[api] base_url`` set the links are absolute; otherwise they are server-relative.
"""

from __future__ import annotations

from urllib.parse import quote

PREFIX = "/bascule"
# Tasks whose runbook section has another name than the task.
_SECTION = {"rollback_requested": "rollback", "rollback_after_failed_cutover": "rollback"}
# Tasks both kinds share (one operator): their section has no kind prefix.
_SHARED = {"approve_cutover", "wait_for_window"}


def base_url() -> str:
    from airflow.configuration import conf

    return (conf.get("api", "base_url", fallback="") or "").rstrip("/") + PREFIX


def runbook_url(anchor: str) -> str:
    return f"{base_url()}/runbooks#{anchor}"


def phase_anchor(kind: str, task_id: str) -> str:
    """The runbook anchor of a phase task, as each kind's operators name it (``runbook_section``)."""
    section = _SECTION.get(task_id, task_id)
    if kind == "postgres" and section not in _SHARED:
        return f"postgres-{section.replace('_', '-')}"
    return section


def workload_url(workload_id: str, run_id: str | None = None) -> str:
    url = f"{base_url()}/workloads/{quote(workload_id)}"
    return f"{url}?run={quote(run_id, safe='')}" if run_id else url


def with_runbook(message: str, anchor: str) -> str:
    """A failure message that ends with the link to its runbook section (for every phase to adopt)."""
    return f"{message}\nRunbook: {runbook_url(anchor)}"


def report_url(workload_id: str, run_id: str, report: str) -> str:
    """A stored report of a run (``evidence``: the auditor's report; ``validation``: parity / table diff)."""
    return f"{base_url()}/workloads/{quote(workload_id)}/reports/{report}?run={quote(run_id, safe='')}"

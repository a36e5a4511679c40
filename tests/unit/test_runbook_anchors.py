"""Every runbook anchor a failure message or a link names exists in docs/runbooks.md.

Anchors are named three ways: literally (``docs/runbooks.md#x``, ``{RUNBOOK}#x``,
``runbook_url("x")``), and per phase task through ``runbook_section()`` /
``links.phase_anchor``, which this test resolves on the DAGs built from the shipped manifests.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bascule.runbooks import RUNBOOKS, anchors, heading_anchors, render_html, slug

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
NAMED = re.compile(r"""(?:runbooks\.md#|RUNBOOK\}#|runbook_url\(["']|with_runbook\([^)]*,\s*["'])([\w-]+)""")


def _named_in_code() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for folder in ("include", "plugins"):
        for path in (ROOT / folder).rglob("*.py"):
            for anchor in NAMED.findall(path.read_text(encoding="utf-8")):
                found.setdefault(anchor, []).append(str(path.relative_to(ROOT)))
    return found


def test_literal_anchors_exist() -> None:
    named = _named_in_code()
    assert len(named) >= 5, "the pattern no longer finds the anchors the code names"
    missing = {a: where for a, where in named.items() if a not in anchors(RUNBOOKS.read_text(encoding="utf-8"))}
    assert not missing, f"runbook anchors named in code but missing from docs/runbooks.md: {missing}"


def test_every_phase_task_links_to_an_existing_section() -> None:
    from bascule_airflow.dag_factory import build_workload_dags
    from bascule_airflow.links import phase_anchor

    existing = anchors(RUNBOOKS.read_text(encoding="utf-8"))
    checked, missing = 0, []
    for dag in build_workload_dags(ROOT / "include" / "workloads").values():
        kind = "postgres" if "copy_table" in dag.task_dict else "object_store"
        for task in dag.tasks:
            if hasattr(task, "runbook_section"):
                checked += 1
                for anchor in {task.runbook_section(), phase_anchor(kind, task.task_id)}:
                    if anchor not in existing:
                        missing.append(f"{dag.dag_id}.{task.task_id} -> #{anchor}")
    assert checked >= 10
    assert not missing, missing


def test_slugs_follow_github_and_multi_name_headings_get_each_name() -> None:
    assert (
        slug("Invalid manifest (`bascule_invalid_manifest_<file>`)") == "invalid-manifest-bascule_invalid_manifest_file"
    )
    assert heading_anchors("postgres-schema-pre-data / postgres-schema-post-data") == [
        "postgres-schema-pre-data--postgres-schema-post-data", "postgres-schema-pre-data", "postgres-schema-post-data",
    ]  # fmt: skip
    html = render_html("## approve_cutover\n\ntext <script>x</script>\n")
    assert '<h2 id="approve_cutover">' in html and "<script>x" not in html

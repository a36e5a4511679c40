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


PARTS = ("Recognise", "Check", "Act", "Verified when")
_PART = re.compile(r"\*\*(Recognise|Check|Act|Verified when)\b")


def _sections(markdown: str) -> dict[str, str]:
    """Each heading below the title with its own text, up to the next heading of any level."""
    sections: dict[str, str] = {}
    current: str | None = None
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        match = None if in_code else re.match(r"^(#{2,6})\s+(.+?)\s*$", line)
        if match:
            current = match.group(2)
            sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
    return sections


def test_every_runbook_section_has_the_four_parts() -> None:
    # An on-call engineer reads one section, not the file: each must say how to recognise the
    # failure, what to check, what to do and how to know it is fixed, in the same words.
    sections = _sections(RUNBOOKS.read_text(encoding="utf-8"))
    assert len(sections) >= 30, "the section parser no longer finds the runbook's headings"
    missing = {h: [p for p in PARTS if p not in set(_PART.findall(body))] for h, body in sections.items()}
    missing = {h: parts for h, parts in missing.items() if parts}
    assert not missing, f"runbook sections without all four parts: {missing}"


def test_the_four_parts_check_finds_a_missing_part() -> None:
    sections = _sections("# T\n\n## a\n\n**Recognise.** x\n**Check.** y\n**Verified when** z\n\n## b\n**Act.** only\n")
    assert set(_PART.findall(sections["a"])) == {"Recognise", "Check", "Verified when"}
    assert set(_PART.findall(sections["b"])) == {"Act"}

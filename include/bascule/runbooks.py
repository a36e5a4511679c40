"""The runbooks as pages with anchors: the slugs failure messages and task links point to.

Slugs follow GitHub's rule (lower case, punctuation dropped, spaces to hyphens), so a
link works on GitHub and in the control room alike. A heading that names several phases
(``postgres-schema-pre-data / postgres-schema-post-data``) also gets one anchor per name,
because each phase's task links to its own name.
"""

from __future__ import annotations

import re
from html import escape
from pathlib import Path

RUNBOOKS = Path(__file__).resolve().parents[2] / "docs" / "runbooks.md"
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


def slug(heading: str) -> str:
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def heading_anchors(heading: str) -> list[str]:
    """The heading's own slug, then one per ``/``-separated name when there are several."""
    anchors = [slug(heading)]
    parts = [p.strip() for p in heading.split(" / ")]
    if len(parts) > 1:
        anchors += [slug(p) for p in parts if slug(p) not in anchors]
    return anchors


def anchors(markdown: str) -> set[str]:
    found: set[str] = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        match = None if in_code else _HEADING.match(line)
        if match:
            found.update(heading_anchors(match.group(2)))
    return found


def render_html(markdown: str, title: str = "Bascule runbooks") -> str:
    """A standalone HTML page; every heading carries its anchors (``id`` plus empty ``<a id>``)."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")

    def heading_open(renderer, tokens, idx, options, env):  # type: ignore[no-untyped-def]
        names = heading_anchors(tokens[idx + 1].content)
        extra = "".join(f'<a id="{escape(n)}"></a>' for n in names[1:])
        return f'<{tokens[idx].tag} id="{escape(names[0])}">{extra}'

    md.add_render_rule("heading_open", heading_open)
    body = md.render(markdown)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        "<style>body{font:15px/1.5 system-ui,sans-serif;max-width:60em;margin:1em auto;padding:0 1em}"
        "code,pre{background:#f4f4f4}pre{padding:.6em;overflow:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.2em .5em}:target{background:#fff3c4}</style></head>"
        f"<body>{body}</body></html>"
    )

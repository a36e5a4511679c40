"""The auditor's report of a run's evidence: a self-contained HTML page, and a Markdown summary.

Both are rendered from the chain's records alone (and, when given, the verifier's verdict):
no script, no external asset, every value escaped, so the page can be archived and opened
anywhere.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bascule.governance.evidence.records import FORMAT, Record
from bascule.governance.evidence.verify import VerifyResult

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem;color:#1d2330;max-width:1100px}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #d5d9e0}
table{border-collapse:collapse;width:100%;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid #d5d9e0;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f1f3f7}code,.hash{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.8rem;word-break:break-all}
.verdict{padding:1rem;border-radius:6px;font-weight:600;margin:1rem 0}
.ok{background:#e3f4e6;border:1px solid #3b8a4a}.bad{background:#fbe4e4;border:1px solid #b53737}
.unknown{background:#f5f0dd;border:1px solid #a58a2a}.muted{color:#5d6575}
.pass{color:#2f7a3d;font-weight:600}.fail{color:#b53737;font-weight:600}
"""

_MOVE_FIELDS = ("tables", "objects", "rows", "bytes", "copied", "skipped", "failed")
_CHECK_KINDS = ("validation", "table_diff", "shadow_run", "policy")


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _as_dict(record: Record | Mapping[str, Any]) -> dict[str, Any]:
    return record.to_dict() if isinstance(record, Record) else dict(record)


def _outcome(payload: Mapping[str, Any]) -> bool | None:
    for name in ("success", "ok", "passed"):
        if isinstance(payload.get(name), bool):
            return bool(payload[name])
    return None


def _compact(payload: Mapping[str, Any], limit: int = 400) -> str:
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + "…"


def _number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _moved_totals(records: list[dict[str, Any]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for record in records:
        if record["kind"] != "transfer_report":
            continue
        for name in _MOVE_FIELDS:
            value = record["payload"].get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                totals[name] = totals.get(name, 0) + value
    return totals


def render_report(
    records: Sequence[Record | Mapping[str, Any]],
    artifacts_meta: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    verification: VerifyResult | None = None,
    title: str | None = None,
) -> str:
    """A self-contained HTML page for an auditor (inline CSS, no script, no external asset).

    Reads these payload fields where present (every record is also listed in full):
    transfer_report/inventory ``tables, objects, rows, bytes, copied, skipped, failed``;
    validation/table_diff/shadow_run/policy ``success`` (or ``ok``/``passed``) and ``summary``;
    approval ``user`` (or ``approver``), ``at, decision, reason, evidence_digest`` — i.e.
    ``bascule.governance.approvals.Response.to_json()``, one approval record per response; cutover ``frozen_at, switched_at``;
    rollback ``reason``. ``artifacts_meta`` is ``VerifyResult.artifacts``.
    """
    rows = [_as_dict(r) for r in records]
    genesis = next((r for r in rows if r["kind"] == "genesis"), None)
    workload = genesis["payload"].get("workload") if genesis else None
    run = (genesis["payload"].get("run_id") or genesis["payload"].get("run_key")) if genesis else None
    heading = title or f"Evidence of migration run {run or '?'} — workload {workload or '?'}"
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(heading)}</title><style>{_CSS}</style></head><body>",
            f"<h1>{_e(heading)}</h1>",
            *_verdict(verification),
            *_opening(genesis),
            "<h2>What moved</h2>",
            *_moved(rows),
            "<h2>Validation outcomes</h2>",
            *_validations(rows),
            "<h2>HDS rules</h2>",
            *_hds_rules(rows, verification),
            "<h2>Approvals</h2>",
            *_approvals(rows),
            "<h2>Cutover and rollback</h2>",
            *_switches(rows),
            "<h2>Artifacts bound by the chain</h2>",
            *_artifacts(rows, artifacts_meta or {}),
            "<h2>The chain, record by record</h2>",
            *_records(rows, verification),
            '<p class="muted">Each record\'s hash is the SHA-256 of its canonical JSON (sorted keys, no spaces, UTF-8) '
            "without the hash field; each record's prev is the previous record's hash. "
            f"Format {_e(FORMAT)}.</p></body></html>",
        ]
    )


def _table(headings: Iterable[str], rows: Sequence[str], empty: str | None) -> list[str]:
    """A section's table: a heading row, then ``rows`` (each a rendered ``<tr>``), or ``empty`` when there is none."""
    if not rows and empty is not None:
        return [f'<p class="muted">{empty}</p>']
    return ["<table><tr>" + "".join(f"<th>{h}</th>" for h in headings) + "</tr>", *rows, "</table>"]


def _verdict(verification: VerifyResult | None) -> list[str]:
    if verification is None:
        return ['<div class="verdict unknown">Chain not verified for this report.</div>']
    css = "ok" if verification.ok else "bad"
    return [
        f'<div class="verdict {css}">{_e(verification.summary())}</div>',
        "<table><tr><th>Chain</th><td><code>"
        + _e(verification.uri)
        + "</code></td></tr><tr><th>Records</th><td>"
        + _e(verification.records)
        + "</td></tr><tr><th>Sealed</th><td>"
        + ("yes" if verification.sealed else "no")
        + "</td></tr><tr><th>Object Lock</th><td>"
        + _e(_lock_state(verification))
        + '</td></tr><tr><th>Chain digest</th><td class="hash">'
        + _e(verification.digest or "—")
        + "</td></tr></table>",
        *(f'<p class="muted">{_e(note)}</p>' for note in verification.notes),
    ]


def _lock_state(verification: VerifyResult | None) -> str:
    """The evidence's lock state: the chain's, and how many records the server reported locked, until when."""
    if verification is None or verification.object_lock is None:
        return "unknown"
    if not verification.object_lock:
        return "no"
    modes = {lock["mode"] for lock in verification.locks if lock["mode"]}
    locked = sum(1 for lock in verification.locks if lock["mode"])
    until = min((lock["retain_until"] for lock in verification.locks if lock["retain_until"]), default=None)
    return (
        f"yes ({', '.join(sorted(modes)) or 'mode not readable'}): {locked} of {len(verification.locks)} record(s) "
        f"locked{f', the earliest until {until}' if until else ''}"
    )


def _opening(genesis: Mapping[str, Any] | None) -> list[str]:
    if not genesis:
        return []
    lock = genesis["payload"].get("object_lock")
    return [
        f"<p>Chain opened {_e(genesis['at'])} by <code>{_e(genesis['actor'])}</code>; bucket "
        f"<code>{_e(genesis['payload'].get('bucket'))}</code>; Object Lock at opening: "
        f"{'yes' if lock else 'no'}.</p>"
    ]


def _moved(rows: list[dict[str, Any]]) -> list[str]:
    totals = _moved_totals(rows)
    out = []
    if totals:
        out.append(
            "<table><tr>"
            + "".join(f"<th>{_e(k)}</th>" for k in totals)
            + "</tr><tr>"
            + "".join(f"<td>{_e(_number(v))}</td>" for v in totals.values())
            + "</tr></table>"
        )
    transfers = []
    for r in rows:
        if r["kind"] not in ("inventory", "transfer_report"):
            continue
        figures = ", ".join(f"{name} {_number(r['payload'][name])}" for name in _MOVE_FIELDS if name in r["payload"])
        label = r["payload"].get("table") or r["payload"].get("shard") or ""
        transfers.append(
            f"<tr><td>{_e(r['seq'])}</td><td>{_e(r['kind'])}</td><td>{_e(r['at'])}</td>"
            f"<td>{_e(r['actor'])}</td><td>{_e(label)} {_e(figures)}</td></tr>"
        )
    return out + _table(("#", "Kind", "At", "By", "Figures"), transfers, "No inventory or transfer record.")


_VERDICTS = {True: '<span class="pass">passed</span>', False: '<span class="fail">FAILED</span>', None: "—"}


def _validations(rows: list[dict[str, Any]]) -> list[str]:
    checks = []
    for r in rows:
        if r["kind"] not in _CHECK_KINDS:
            continue
        summary = r["payload"].get("summary") or r["payload"].get("failure_summary") or ""
        checks.append(
            f"<tr><td>{_e(r['seq'])}</td><td>{_e(r['kind'])}</td><td>{_e(r['at'])}</td>"
            f"<td>{_VERDICTS[_outcome(r['payload'])]}</td><td>{_e(summary)}</td></tr>"
        )
    return _table(("#", "Check", "At", "Outcome", "Summary"), checks, "No validation record.")


# What the report's verdicts cover, and what they do not (docs/security.md#what-bascule-checks-and-what-it-does-not).
_NOT_CHECKED = (
    "Not checked by Bascule, and not claimed: any certification (Scaleway Object Storage is HDS-certified in Paris "
    "per Scaleway; its SecNumCloud qualification is in progress, so none is claimed), that the provider really "
    "encrypts or enforces a bucket-policy condition, key escrow and IAM on the Scaleway project."
)


def _policy_checks(rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], Mapping[str, Any]]]:
    """Each policy verdict with its record; preflight nests the policy report under ``policy``."""
    found = []
    for r in rows:
        if r["kind"] != "policy":
            continue
        nested = r["payload"].get("policy")
        report = nested if isinstance(nested, Mapping) else r["payload"]
        found += [(r, check) for check in report.get("checks") or () if isinstance(check, Mapping)]
    return found


def _encryption(checks: list[tuple[dict[str, Any], Mapping[str, Any]]]) -> str:
    """The method and key fingerprint the last encryption verdict recorded (never a key: none is recorded)."""
    facts = next(
        (c.get("evidence") or {} for _, c in reversed(checks) if c.get("name") == "policy_encryption_at_rest"), None
    )
    if facts is None:
        return "not recorded"
    if facts.get("sse_c") is True:
        return f"SSE-C (AES256), customer key MD5 {facts.get('sse_c_key_md5')}"
    if facts.get("method") == "client_side":
        return (
            "client-side (AES-256-GCM frames, a data key per object wrapped with AES-KW), key-encryption key MD5 "
            f"{facts.get('client_side_kek_md5')}; bucket default encryption for compliant deletion: "
            f"{', '.join(facts.get('bucket_default_encryption') or ()) or 'none'}"
        )
    defaults = facts.get("bucket_default_encryption")
    return f"no object encryption; bucket default encryption: {defaults or 'none'}"


def _hds_rules(rows: list[dict[str, Any]], verification: VerifyResult | None) -> list[str]:
    checks = _policy_checks(rows)
    lock = _lock_state(verification)
    lines = [
        "<table><tr><th>Encryption of the objects</th><td>" + _e(_encryption(checks)) + "</td></tr>"
        "<tr><th>Evidence under Object Lock</th><td>" + _e(lock) + "</td></tr></table>"
    ]
    cells = [
        f"<tr><td>{_e(r['seq'])}</td><td>{_e(r['payload'].get('when') or '')}</td><td><code>{_e(c.get('name'))}</code>"
        f"</td><td>{_VERDICTS[c.get('ok') if isinstance(c.get('ok'), bool) else None]}</td><td>{_e(c.get('detail'))}</td></tr>"
        for r, c in checks
    ]
    lines += _table(("#", "When", "Rule", "Verdict", "Detail"), cells, "No policy record.")
    return [*lines, f'<p class="muted">{_e(_NOT_CHECKED)}</p>']


def _approvals(rows: list[dict[str, Any]]) -> list[str]:
    approvals = []
    for r in rows:
        if r["kind"] != "approval":
            continue
        p = r["payload"]
        approvals.append(
            f"<tr><td>{_e(r['seq'])}</td><td>{_e(p.get('user') or p.get('approver') or r['actor'])}</td>"
            f"<td>{_e(p.get('at') or r['at'])}</td>"
            f"<td>{_e(p.get('decision'))}</td><td>{_e(p.get('reason'))}</td>"
            f'<td class="hash">{_e(p.get("evidence_digest"))}</td></tr>'
        )
    headings = ("#", "Who", "When", "Decision", "Reason", "Evidence digest approved")
    return _table(headings, approvals, "No approval record.")


def _switches(rows: list[dict[str, Any]]) -> list[str]:
    switches = []
    for r in rows:
        if r["kind"] not in ("cutover", "rollback"):
            continue
        details = [f"{k}: {r['payload'][k]}" for k in ("frozen_at", "switched_at", "reason") if k in r["payload"]]
        switches.append(
            f"<tr><td>{_e(r['seq'])}</td><td>{_e(r['kind'])}</td><td>{_e(r['at'])}</td>"
            f"<td>{_e(r['actor'])}</td><td>{_e('; '.join(details))}</td></tr>"
        )
    return _table(("#", "Event", "Recorded at", "By", "Details"), switches, "No cutover or rollback record.")


def _artifacts(rows: list[dict[str, Any]], artifacts_meta: Mapping[str, Mapping[str, Any]]) -> list[str]:
    bound = []
    for r in rows:
        for a in r.get("artifacts", []):
            bound.append(
                f"<tr><td>{_e(r['seq'])}</td><td><code>{_e(a['key'])}</code></td><td>{_e(_number(a['size']))}</td>"
                f'<td class="hash">{_e(a["sha256"])}</td><td>{_stored_state(a, artifacts_meta.get(a["key"]))}</td></tr>'
            )
    return _table(("#", "Object", "Size", "SHA-256 recorded", "Stored"), bound, "No artifact.")


def _stored_state(artifact: Mapping[str, Any], meta: Mapping[str, Any] | None) -> str:
    """Whether the bucket still holds the bytes the record bound (as the verifier found them)."""
    if meta is None:
        return "not checked"
    if meta.get("status") == "ok" and meta.get("sha256") == artifact["sha256"]:
        return '<span class="pass">matches</span>'
    return f'<span class="fail">{_e(meta.get("status"))}</span>'


def _record_lock(lock: Mapping[str, Any] | None) -> str:
    if lock is None or not lock.get("known"):
        return "not read"
    return f"{lock['mode']} until {lock['retain_until']}" if lock.get("mode") else "not locked"


def _records(rows: list[dict[str, Any]], verification: VerifyResult | None = None) -> list[str]:
    headings = ("#", "Kind", "At", "Actor", "Payload", "Hash", "Object Lock")
    locks = {lock["seq"]: lock for lock in verification.locks} if verification else {}
    cells = [
        f"<tr><td>{_e(r['seq'])}</td><td>{_e(r['kind'])}</td><td>{_e(r['at'])}</td><td>{_e(r['actor'])}</td>"
        f'<td><code>{_e(_compact(r["payload"]))}</code></td><td class="hash">{_e(r["hash"])}</td>'
        f"<td>{_e(_record_lock(locks.get(r['seq'])))}</td></tr>"
        for r in rows
    ]
    return _table(headings, cells, None)


def _md(value: Any) -> str:
    return html.escape(str(value if value is not None else ""), quote=False).replace("|", "\\|").replace("\n", " ")


def render_markdown(records: Sequence[Record | Mapping[str, Any]], verification: VerifyResult | None = None) -> str:
    """The same evidence as a Markdown table, for a ticket or a pull request."""
    rows = [_as_dict(r) for r in records]
    lines = [f"**Verification:** {_md(verification.summary()) if verification else 'not verified'}", ""]
    totals = _moved_totals(rows)
    if totals:
        lines += ["**Moved:** " + ", ".join(f"{k} {_number(v)}" for k, v in totals.items()), ""]
    lines += ["| # | kind | at | actor | payload | hash |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['seq']} | {_md(r['kind'])} | {_md(r['at'])} | {_md(r['actor'])} | "
            f"`{_md(_compact(r['payload'], 200))}` | `{r['hash'][:16]}…` |"
        )
    return "\n".join(lines) + "\n"

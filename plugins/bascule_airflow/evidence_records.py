"""Every phase's outcome as a record of the run's hash-chained evidence, and the verifier task.

Operators call ``append`` as their last step, once their work has succeeded, so a
failed attempt leaves no record and a retry appends its own. The idempotency key
(task, map index, try) keeps a re-executed append from writing twice.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator


def chain_for(workload: dict[str, Any], run_id: str) -> Any:
    from bascule.governance.evidence.chain import EvidenceChain
    from bascule.governance.evidence.records import run_key_for
    from bascule_airflow import clients

    model = clients.workload_model(workload)
    store = clients.evidence_store(model)
    # The manifest's lock mode and retention, used when the evidence bucket has Object Lock.
    lock = {"lock_mode": model.evidence.lock_mode, "retention": timedelta(days=model.evidence.retention_days)}
    return EvidenceChain(store.client, store.bucket, model.id, run_key_for(run_id), run_id=run_id, **lock)


def append(
    context: Any,
    workload: dict[str, Any],
    kind: str,
    payload: dict[str, Any],
    artifacts: list[str] | tuple[str, ...] = (),
    *,
    actor: str | None = None,
    idempotency_key: str | None = None,
) -> Any:
    ti = context["ti"]
    key = idempotency_key or f"{ti.task_id}:{ti.map_index}:try{ti.try_number}"
    chain = chain_for(workload, context["run_id"])
    record = chain.append(kind, actor or ti.task_id, payload, [a for a in artifacts if a], idempotency_key=key)
    context["task"].log.info("evidence record %d (%s) %s", record.seq, kind, record.hash[:16])
    return record


class VerifyEvidenceOperator(BaseOperator):
    """Seal the run's evidence chain, recompute it from the stored files, and publish the auditor's report.

    Fails naming the first broken record if anything was changed, removed or reordered.
    """

    ui_color = "#eef0f6"

    def __init__(self, *, workload: dict[str, Any], manifest_path: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.workload = workload
        self.manifest_path = manifest_path

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from bascule.governance.evidence.report import render_markdown, render_report
        from bascule.governance.evidence.verify import verify

        chain = chain_for(self.workload, context["run_id"])
        chain.seal(self.task_id)
        result = verify(chain.client, chain.bucket, chain.workload_id, chain.run_key)
        self.log.info("%s", result.summary())
        records = chain.records()
        html = render_report(
            records, result.artifacts, verification=result, title=f"Migration evidence: {chain.workload_id}"
        )
        base = chain.prefix.rsplit("chain/", 1)[0]
        for name, body, kind in (
            ("report.html", html.encode(), "text/html; charset=utf-8"),
            ("report.md", render_markdown(records, result).encode(), "text/markdown; charset=utf-8"),
        ):
            # Content-MD5: an Object Lock bucket (the evidence bucket) refuses a write without it.
            md5 = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()
            chain.client.put_object(Bucket=chain.bucket, Key=base + name, Body=body, ContentType=kind, ContentMD5=md5)
        if not result.ok:
            raise AirflowFailException(
                f"evidence chain broken: {result.reason} (record {result.first_broken}). "
                f"Do not rely on this run's evidence; see docs/evidence.md#when-verification-fails"
            )
        uri = f"s3://{chain.bucket}/{base}"
        self.log.info(
            "evidence verified: %d record(s), digest %s; report %sreport.html", result.records, result.digest, uri
        )
        return {"ok": True, "records": result.records, "digest": result.digest, "report": f"{uri}report.html"}

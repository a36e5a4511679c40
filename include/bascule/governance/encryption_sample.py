"""``policy_sse_c_sampled``: objects written with SSE-C really are SSE-C objects, as a reader can tell.

Scaleway's HDS guidance gives the check: a ``HeadObject`` *without* the key on an SSE-C
object answers 400 ("How to create a compliant bucket to host healthcare data",
https://www.scaleway.com/en/docs/object-storage/how-to/host-healthcare-data/). So the
rule takes a sample of the objects under the workload's prefix and, for each:

- HEAD without the key must be refused with 400: a 200 means the object is stored
  without SSE-C (readable by anyone with bucket read access, the provider included);
- HEAD with the key must answer 200 and echo the key's fingerprint
  (``x-amz-server-side-encryption-customer-key-MD5``): the object is under *this* key,
  not one rotated away.

A bucket with nothing written yet passes and says so (preflight before the first copy);
the cutover re-check runs on the copied objects. Every object of the data bucket is data:
Bascule's evidence is in its own bucket, so nothing is skipped.

moto ignores SSE-C (HEAD without the key answers 200), so on bare moto this rule fails,
as it should: the tests run it against a strict stand-in that answers like Scaleway
(scripts/ssec_standin.py).
"""

from __future__ import annotations

import itertools
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from bascule.exceptions import StoreAccessError
from bascule.governance.policy import DOCS, CheckResult
from bascule.storage.client_side import FORMAT, META_FORMAT, META_KEK
from bascule.storage.client_side import RUNBOOK as CLIENT_SIDE_RUNBOOK
from bascule.storage.encryption import SseCKey, key_fingerprint

NAME = "policy_sse_c_sampled"
DEFAULT_SAMPLE = 20


def _sample_keys(client: Any, bucket: str, prefix: str, size: int) -> list[str]:
    """Up to ``size`` data keys, spread over the first listing page (not only its first keys)."""
    answer = client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1000)
    keys = [o["Key"] for o in answer.get("Contents", ())]
    step = max(1, len(keys) // size)
    return list(itertools.islice(keys[::step], size))


def _head_status(client: Any, bucket: str, key: str, **params: Any) -> tuple[int, dict[str, Any]]:
    try:
        answer = client.head_object(Bucket=bucket, Key=key, **params)
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status or 0), {}
    return int(answer.get("ResponseMetadata", {}).get("HTTPStatusCode", 200)), answer


def check_sse_c_sample(
    client: Any, bucket: str, key: bytes, *, prefix: str = "", size: int = DEFAULT_SAMPLE
) -> CheckResult:
    """Sample up to ``size`` objects under ``prefix``: 400 without the key, 200 with it and its fingerprint."""
    fingerprint = key_fingerprint(key)
    with_key = SseCKey(key).request_params()
    try:
        keys = _sample_keys(client, bucket, prefix, size)
        readable, wrong_key, refused = [], [], 0
        for object_key in keys:
            status, _ = _head_status(client, bucket, object_key)
            if status == 200:
                readable.append(object_key)
                continue
            refused += status == 400
            status, answer = _head_status(client, bucket, object_key, **with_key)
            if status != 200 or answer.get("SSECustomerKeyMD5") != fingerprint:
                wrong_key.append(f"{object_key} (HTTP {status}, key MD5 {answer.get('SSECustomerKeyMD5')})")
    except (ClientError, BotoCoreError) as exc:
        raise StoreAccessError(
            f"bucket '{bucket}': sampling objects for SSE-C failed ({exc})", retryable=True
        ) from None
    facts = {
        "sampled": len(keys),
        "head_without_key_400": refused,
        "readable_without_key": readable[:20],
        "not_under_this_key": wrong_key[:20],
        "sse_c_key_md5": fingerprint,
        "prefix": prefix,
    }
    if not keys:
        return CheckResult(
            NAME, True, f"bucket '{bucket}' holds no object under '{prefix}' yet: nothing to sample", facts
        )
    if readable or wrong_key or refused != len(keys):
        problems = [f"readable without the key: {', '.join(readable[:5])}"] if readable else []
        problems += [f"not readable with key {fingerprint}: {', '.join(wrong_key[:5])}"] if wrong_key else []
        if refused != len(keys) and not problems:
            problems.append(f"only {refused} of {len(keys)} HEAD(s) without the key answered 400")
        return CheckResult(
            NAME,
            False,
            f"bucket '{bucket}': sampled objects are not all SSE-C objects under the workload's key: "
            f"{'; '.join(problems)}. An object readable without the key is stored without SSE-C: re-copy it "
            f"with the key (docs/runbooks.md#sse-c-key-missing-or-wrong; {DOCS})",
            facts,
        )
    return CheckResult(
        NAME,
        True,
        f"{len(keys)} sampled object(s) in bucket '{bucket}': HEAD without the key answered 400 for each, "
        f"HEAD with the key (MD5 {fingerprint}) answered 200",
        facts,
    )


CLIENT_SIDE_NAME = "policy_client_side_sampled"


def check_client_side_sample(
    client: Any, bucket: str, kek: bytes, *, prefix: str = "", size: int = DEFAULT_SAMPLE
) -> CheckResult:
    """Sample up to ``size`` objects under ``prefix``: each carries Bascule's client-side envelope under this KEK.

    What a reader can tell from outside: the format and the KEK fingerprint in the
    object's metadata (the data key itself is wrapped). An object without them is
    stored in clear; one under another KEK cannot be read with the workload's connection.
    """
    fingerprint = key_fingerprint(kek)
    try:
        keys = _sample_keys(client, bucket, prefix, size)
        unsealed, other_kek = [], []
        for object_key in keys:
            metadata = client.head_object(Bucket=bucket, Key=object_key).get("Metadata") or {}
            if metadata.get(META_FORMAT) != FORMAT:
                unsealed.append(object_key)
            elif metadata.get(META_KEK) != fingerprint:
                other_kek.append(f"{object_key} (KEK {metadata.get(META_KEK)})")
    except (ClientError, BotoCoreError) as exc:
        raise StoreAccessError(
            f"bucket '{bucket}': sampling objects for client-side encryption failed ({exc})", retryable=True
        ) from None
    facts = {
        "sampled": len(keys), "not_client_side_encrypted": unsealed[:20], "under_another_kek": other_kek[:20],
        "client_side_kek_md5": fingerprint, "prefix": prefix,
    }  # fmt: skip
    if not keys:
        return CheckResult(
            CLIENT_SIDE_NAME, True, f"bucket '{bucket}' holds no object under '{prefix}' yet: nothing to sample", facts
        )
    if unsealed or other_kek:
        problems = [f"not client-side encrypted: {', '.join(unsealed[:5])}"] if unsealed else []
        problems += [f"under another key-encryption key: {', '.join(other_kek[:5])}"] if other_kek else []
        return CheckResult(
            CLIENT_SIDE_NAME,
            False,
            f"bucket '{bucket}': sampled objects are not all client-side encrypted under the workload's "
            f"key-encryption key (MD5 {fingerprint}): {'; '.join(problems)}. Re-copy them, or put the right key "
            f"in the connection ({CLIENT_SIDE_RUNBOOK}; {DOCS})",
            facts,
        )
    return CheckResult(
        CLIENT_SIDE_NAME,
        True,
        f"{len(keys)} sampled object(s) in bucket '{bucket}' carry the {FORMAT} envelope under key-encryption key "
        f"MD5 {fingerprint}",
        facts,
    )

"""Sovereignty and HDS policy as code.

Rules here refuse a configuration before any byte moves, and again just before the
routing switch. Each returns a verdict with a reason precise enough to act on (which
bucket or server, what is wrong, how to fix it); none of them can be bypassed by a
Param or an environment variable. The one relaxation, plain-HTTP/plain-TCP stand-ins,
needs the deployment to be *declared* local development (the Airflow Variable
``bascule_deployment``), and every result that used it says so.

Rules:

- ``policy_tls``: the S3 endpoint is ``https``.
- ``policy_encryption_at_rest``: objects are written with SSE-C (a customer key from
  an Airflow connection) or the bucket has a default encryption the policy can read.
- ``policy_no_archive_lifecycle``: no enabled lifecycle rule moves data to an archive
  class (GLACIER, DEEP_ARCHIVE, GLACIER_IR; Scaleway's "Glacier" archive class is
  ``GLACIER``); ``policy_no_archive_storage_class``: no written object is in one.
- ``policy_not_public``: no bucket policy statement allows a wildcard principal, no ACL
  grant to AllUsers/AuthenticatedUsers, and the server's policy status is not public.
- ``policy_database_tls``: the target PostgreSQL session is encrypted and its sslmode
  cannot fall back to plain text.

About the moto stand-in (tests): moto stores bucket encryption, lifecycle, policy, ACL
and public access block faithfully, so the rules read the same documents as on
Scaleway. It is laxer than Scaleway on what those settings *do*: it accepts SSE-C
headers and then ignores them (objects are stored in clear, HEAD/GET work without the
key, a key of the wrong size is accepted, and plain HTTP is accepted where S3 refuses
SSE-C without TLS); it stores a public access block but does not enforce it (a public
ACL or policy is still accepted); lifecycle transitions never run. The rules therefore
check configuration, which is what an auditor reads, not the stand-in's behaviour.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TypeVar, get_args
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError
from botocore.exceptions import ConnectionError as BotoConnectionError

from bascule.exceptions import PolicyViolation, StoreAccessError
from bascule.workload import ObjectStoreWorkload, PostgresWorkload

Deployment = Literal["production", "local-development"]
DEPLOYMENTS: tuple[Deployment, ...] = get_args(Deployment)
# The Airflow Variable the glue reads the deployment from; absent means production.
DEPLOYMENT_VARIABLE = "bascule_deployment"

# Archive tiers: data there cannot be read without a restore (hours), so validation,
# the smoke check and consumers would fail, and HDS availability commitments break.
# Scaleway names its archive class GLACIER; the other two are AWS's.
ARCHIVE_STORAGE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE", "GLACIER_IR"})
SSE_C_KEY_BYTES = 32  # AES-256, the only SSE-C algorithm S3 and Scaleway accept
DATABASE_SSLMODES_WITHOUT_FALLBACK = frozenset({"require", "verify-ca", "verify-full"})
DOCS = "docs/security.md#sovereignty-and-hds-policy"

_ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
_AUTHENTICATED_USERS = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"
_NOT_SUPPORTED = {"NotImplemented", "MethodNotAllowed", "UnsupportedOperation"}
_T = TypeVar("_T")


@dataclass(frozen=True)
class CheckResult:
    """One preflight or policy check: its name, whether it passed, and why.

    ``evidence`` holds the facts the verdict rests on, for the evidence record
    (e.g. ``{"local_development": True}`` when a local stand-in exemption was used).
    """

    name: str
    ok: bool
    detail: str
    evidence: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {"name": self.name, "ok": self.ok, "detail": self.detail}
        if self.evidence:
            record["evidence"] = dict(self.evidence)
        return record


@dataclass(frozen=True)
class PolicyReport:
    """The policy verdict on one target, as recorded in the evidence."""

    subject: str
    deployment: Deployment
    checks: tuple[CheckResult, ...]
    evaluated_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def violations(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.ok]

    @property
    def local_development_exemptions(self) -> list[str]:
        """Checks that passed only because the deployment is local development."""
        return [c.name for c in self.checks if c.evidence.get("local_development")]

    def to_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "deployment": self.deployment,
            "local_development": self.deployment == "local-development",
            "local_development_exemptions": self.local_development_exemptions,
            "evaluated_at": self.evaluated_at,
            "ok": self.ok,
            "checks": [c.to_json() for c in self.checks],
        }

    def raise_for_violations(self) -> None:
        """Raise :class:`PolicyViolation` listing every failed rule; retrying cannot help."""
        if self.violations:
            lines = "\n".join(f"  - {c.name}: {c.detail}" for c in self.violations)
            raise PolicyViolation(f"policy refuses {self.subject}:\n{lines}\nSee {DOCS}")


def parse_deployment(value: str | None) -> Deployment:
    """The deployment from the Airflow Variable's text; absent means production.

    An unknown value fails closed: a typo must never select the lenient mode.
    """
    if value is None or value.strip() == "":
        return "production"
    cleaned = value.strip().lower()
    for deployment in DEPLOYMENTS:
        if cleaned == deployment:
            return deployment
    raise PolicyViolation(
        f"Airflow Variable '{DEPLOYMENT_VARIABLE}' is {value!r}; expected one of {list(DEPLOYMENTS)} "
        "(absent means 'production')"
    )


def _checked_deployment(deployment: str) -> Deployment:
    # Callers are typed, but the value comes from an Airflow Variable at runtime.
    for known in DEPLOYMENTS:
        if deployment == known:
            return known
    raise PolicyViolation(f"unknown deployment {deployment!r}; expected one of {list(DEPLOYMENTS)}")


# -- region ------------------------------------------------------------------------------


def check_target_region(workload: ObjectStoreWorkload | PostgresWorkload, manifest_path: str) -> CheckResult:
    """The manifest's target region must be in the workload's allow-list (HDS: fr-par)."""
    region = workload.target.region
    allowed = list(workload.policy.allowed_regions)
    if region in allowed:
        return CheckResult("target_region_allowed", True, f"target region '{region}' is in the allow-list {allowed}")
    return CheckResult(
        "target_region_allowed",
        False,
        f"target region '{region}' is not in the allow-list {allowed}. Health data (HDS) must stay in "
        f"fr-par; to allow another region, add it to policy.allowed_regions with a policy.justification "
        f"in {manifest_path}",
    )


def check_bucket_region(expected: str, actual: str, bucket: str) -> CheckResult:
    """The bucket must really live where the manifest says, not just be addressed from there."""
    if actual == expected:
        return CheckResult("target_bucket_region", True, f"bucket '{bucket}' is in region '{actual}'")
    return CheckResult(
        "target_bucket_region",
        False,
        f"bucket '{bucket}' is in region '{actual}', but the manifest's target.region is '{expected}'; "
        "data would land outside the declared region. Use a bucket created in the declared region",
    )


# -- transport ---------------------------------------------------------------------------


def is_local_standin_host(host: str) -> bool:
    """A host a local stand-in can live on: loopback or private addresses, ``localhost``,
    or a single-label name (a compose service such as ``minio``). A public name such as
    ``s3.fr-par.scw.cloud`` is never one, whatever the deployment says."""
    host = host.strip("[]").lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost" or host.endswith(".localhost") or ("." not in host and host != "")
    return address.is_loopback or address.is_private or address.is_link_local


def check_endpoint_tls(endpoint_url: str, bucket: str, *, deployment: Deployment) -> CheckResult:
    """``policy_tls``: the S3 endpoint must be ``https``.

    Plain HTTP passes only for a local stand-in host when the deployment is declared
    ``local-development``, and the result is flagged ``local_development``.
    """
    deployment = _checked_deployment(deployment)
    parts = urlsplit(endpoint_url)
    scheme, host = parts.scheme.lower(), parts.hostname or ""
    facts: dict[str, Any] = {"endpoint": endpoint_url, "scheme": scheme, "deployment": deployment}
    if scheme == "https":
        return CheckResult("policy_tls", True, f"bucket '{bucket}' is reached over TLS at {endpoint_url}", facts)
    if scheme == "http" and deployment == "local-development" and is_local_standin_host(host):
        return CheckResult(
            "policy_tls",
            True,
            f"LOCAL DEVELOPMENT: bucket '{bucket}' is reached over plain HTTP at {endpoint_url}; allowed only "
            f"because the Airflow Variable '{DEPLOYMENT_VARIABLE}' is 'local-development' and '{host}' is a "
            "local stand-in. Not acceptable for health data",
            {**facts, "local_development": True},
        )
    if scheme == "http" and deployment == "local-development":
        fix = (
            f"'{host}' is not a local stand-in host, so the local-development exemption does not apply; "
            "use the https endpoint"
        )
    elif scheme == "http":
        fix = (
            "use the https endpoint (e.g. https://s3.fr-par.scw.cloud) in the target connection's endpoint_url; "
            f"a local stand-in needs the Airflow Variable '{DEPLOYMENT_VARIABLE}' set to 'local-development'"
        )
    else:
        fix = "set the target connection's endpoint_url to an https:// URL"
    return CheckResult(
        "policy_tls",
        False,
        f"bucket '{bucket}' would be reached at {endpoint_url} without TLS: credentials, encryption keys and "
        f"health data would cross the network in clear. Fix: {fix}",
        facts,
    )


# -- reading bucket settings ---------------------------------------------------------------


class _Unverifiable(Exception):
    """A setting the policy needs could not be read: the rule cannot pass on faith."""


def _read_setting(bucket: str, what: str, permission: str, call: Callable[[], _T], *, absent: set[str]) -> _T | None:
    """``call()``'s answer; None if the setting is not configured (or not supported).

    Raises :class:`_Unverifiable` when the answer is a refusal, and StoreAccessError
    when the endpoint did not answer (a retry may help).
    """
    try:
        return call()
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in absent:
            return None
        if code in ("AccessDenied", "AllAccessDisabled") or status == 403:
            raise _Unverifiable(
                f"cannot read the {what} of bucket '{bucket}' (access denied): grant the target connection's "
                f"key {permission} on it so the policy can be verified"
            ) from None
        if code == "NoSuchBucket":
            raise _Unverifiable(f"bucket '{bucket}' does not exist") from None
        if status is not None and (int(status) in (408, 429) or int(status) >= 500) and code not in _NOT_SUPPORTED:
            raise StoreAccessError(
                f"bucket '{bucket}': reading its {what} failed ({code}, HTTP {status})", retryable=True
            ) from None
        raise _Unverifiable(f"cannot read the {what} of bucket '{bucket}': {code or 'error'} (HTTP {status})") from None
    except (EndpointConnectionError, BotoConnectionError, ConnectionError, TimeoutError) as exc:
        raise StoreAccessError(
            f"bucket '{bucket}': reading its {what} failed, endpoint unreachable ({type(exc).__name__}: {exc})",
            retryable=True,
        ) from None
    except BotoCoreError as exc:  # no credentials, invalid parameters: a retry would fail the same way
        raise StoreAccessError(
            f"bucket '{bucket}': reading its {what} failed ({type(exc).__name__}: {exc})", retryable=False
        ) from None


def _not_supported(call: Callable[[], _T]) -> Callable[[], _T | None]:
    """Wrap an optional API: a server that does not implement it answers None."""

    def wrapped() -> _T | None:
        try:
            return call()
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _NOT_SUPPORTED or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 501:
                return None
            raise

    return wrapped


# -- encryption at rest --------------------------------------------------------------------


def sse_customer_key_md5(key: bytes) -> str:
    """The key's fingerprint as S3 itself spells it (``x-amz-server-side-encryption-customer-key-MD5``).

    Safe to record: it identifies the key (rotation audits, matching HEAD answers)
    and reveals nothing usable about a 256-bit random key.
    """
    return base64.b64encode(hashlib.md5(key, usedforsecurity=False).digest()).decode("ascii")


def sse_customer_key_problem(key: bytes, bucket: str) -> str | None:
    """Why ``key`` cannot serve as an SSE-C key, or None if it can."""
    if len(key) != SSE_C_KEY_BYTES:
        return (
            f"the SSE-C key for bucket '{bucket}' is {len(key)} bytes; SSE-C (AES256) needs exactly "
            f"{SSE_C_KEY_BYTES} random bytes. Fix the key in the Airflow connection that holds it ({DOCS})"
        )
    if len(set(key)) == 1:
        return (
            f"the SSE-C key for bucket '{bucket}' repeats one byte value: it is a placeholder, not a key. "
            f"Generate one with `openssl rand -base64 32` ({DOCS})"
        )
    return None


def default_encryption_algorithms(configuration: Mapping[str, Any]) -> list[str]:
    """The default SSE algorithms of a ``get_bucket_encryption`` answer's configuration."""
    algorithms = []
    for rule in configuration.get("Rules", ()):
        algorithm = (rule.get("ApplyServerSideEncryptionByDefault") or {}).get("SSEAlgorithm")
        if algorithm:
            algorithms.append(str(algorithm))
    return algorithms


def check_encryption_at_rest(client: Any, bucket: str, *, sse_customer_key: bytes | None) -> CheckResult:
    """``policy_encryption_at_rest``: SSE-C with the customer key, or a readable bucket default encryption.

    The key comes from an Airflow connection (never the manifest); the writer must send
    it with every PUT, UploadPart and CopyObject. The bucket's default encryption is
    read and recorded either way.
    """
    name = "policy_encryption_at_rest"
    unreadable: str | None = None
    key_problem = sse_customer_key_problem(sse_customer_key, bucket) if sse_customer_key is not None else None
    if key_problem is not None:
        return CheckResult(name, False, key_problem, {"sse_c": "invalid key"})
    try:
        answer = _read_setting(
            bucket,
            "default encryption",
            "s3:GetEncryptionConfiguration",
            lambda: client.get_bucket_encryption(Bucket=bucket),
            absent={"ServerSideEncryptionConfigurationNotFoundError"},
        )
    except _Unverifiable as exc:
        if sse_customer_key is None:
            return CheckResult(name, False, f"{exc}; or provide an SSE-C key ({DOCS})", {"sse_c": False})
        answer, unreadable = None, str(exc)
    algorithms = default_encryption_algorithms((answer or {}).get("ServerSideEncryptionConfiguration") or {})
    facts: dict[str, Any] = {"bucket_default_encryption": algorithms or None}
    if unreadable:
        facts["bucket_default_encryption_unreadable"] = unreadable
    if sse_customer_key is not None:
        facts.update(sse_c=True, sse_c_algorithm="AES256", sse_c_key_md5=sse_customer_key_md5(sse_customer_key))
        also = f"; bucket default encryption: {', '.join(algorithms)}" if algorithms else ""
        return CheckResult(
            name,
            True,
            f"objects in bucket '{bucket}' are written with SSE-C (AES256, customer key MD5 "
            f"{facts['sse_c_key_md5']}){also}",
            facts,
        )
    facts["sse_c"] = False
    if algorithms:
        return CheckResult(
            name, True, f"bucket '{bucket}' encrypts at rest by default ({', '.join(algorithms)})", facts
        )
    return CheckResult(
        name,
        False,
        f"bucket '{bucket}' has no default encryption and no SSE-C key was provided: health data would be "
        "stored unencrypted at rest. Fix: put a 32-byte SSE-C key in the Airflow connection for it "
        f"({DOCS}), or set a default encryption on the bucket (put-bucket-encryption)",
        facts,
    )


# -- archive classes -----------------------------------------------------------------------


def _rule_scope(rule: Mapping[str, Any]) -> str:
    filter_ = rule.get("Filter") or {}
    prefix = filter_.get("Prefix", (filter_.get("And") or {}).get("Prefix", rule.get("Prefix")))
    if prefix:
        return f"prefix '{prefix}'"
    return "objects matching its filter" if filter_.get("Tag") or filter_.get("And") else "the whole bucket"


def archive_transitions(rules: Sequence[Mapping[str, Any]]) -> list[str]:
    """Enabled lifecycle rules that move current or noncurrent versions to an archive class.

    One line per offending transition; disabled rules are ignored (they move nothing).
    """
    found = []
    for index, rule in enumerate(rules):
        if str(rule.get("Status", "")).lower() != "enabled":
            continue
        rule_id = rule.get("ID") or f"#{index + 1}"
        transitions = [
            *(("", t) for t in rule.get("Transitions") or ()),
            # The deprecated single-transition form some S3 servers still return.
            *(("", t) for t in ([rule["Transition"]] if rule.get("Transition") else [])),
            *(("noncurrent versions ", t) for t in rule.get("NoncurrentVersionTransitions") or ()),
        ]
        for which, transition in transitions:
            storage_class = str(transition.get("StorageClass", "")).upper()
            if storage_class in ARCHIVE_STORAGE_CLASSES:
                found.append(
                    f"rule '{rule_id}' moves {which}{_rule_scope(rule)} to {storage_class} {_when(transition)}"
                )
    return found


def _when(transition: Mapping[str, Any]) -> str:
    for field_name in ("Days", "NoncurrentDays"):
        if field_name in transition:
            return f"after {transition[field_name]} day(s)"
    return f"on {transition['Date']}" if "Date" in transition else "at once"


def check_no_archive_lifecycle(client: Any, bucket: str) -> CheckResult:
    """``policy_no_archive_lifecycle``: no enabled lifecycle rule transitions data to an archive class."""
    name = "policy_no_archive_lifecycle"
    try:
        answer = _read_setting(
            bucket,
            "lifecycle configuration",
            "s3:GetLifecycleConfiguration",
            lambda: client.get_bucket_lifecycle_configuration(Bucket=bucket),
            absent={"NoSuchLifecycleConfiguration"},
        )
    except _Unverifiable as exc:
        return CheckResult(name, False, str(exc))
    rules = list((answer or {}).get("Rules") or ())
    offending = archive_transitions(rules)
    facts = {"lifecycle_rules": len(rules), "archive_transitions": offending}
    if not offending:
        what = f"{len(rules)} lifecycle rule(s), none to an archive class" if rules else "no lifecycle rule"
        return CheckResult(name, True, f"bucket '{bucket}' has {what}", facts)
    return CheckResult(
        name,
        False,
        f"bucket '{bucket}' has lifecycle rule(s) moving data to an archive class: {'; '.join(offending)}. "
        "Archived objects cannot be read without a restore, so validation, consumers and the HDS availability "
        "commitment would fail. Fix: remove or disable those transitions (put-bucket-lifecycle-configuration)",
        facts,
    )


class _Stored(Protocol):
    @property
    def key(self) -> str: ...
    @property
    def access_tier(self) -> str | None: ...


def check_storage_classes(objects: Iterable[_Stored], *, bucket: str | None = None) -> CheckResult:
    """``policy_no_archive_storage_class``: no object (of a sample or an inventory) is in an archive class.

    ``access_tier`` is the S3 StorageClass (None means STANDARD).
    """
    name = "policy_no_archive_storage_class"
    where = f"bucket '{bucket}'" if bucket else "the target"
    seen = 0
    archived: list[str] = []
    classes: dict[str, int] = {}
    for info in objects:
        seen += 1
        storage_class = (info.access_tier or "STANDARD").upper()
        classes[storage_class] = classes.get(storage_class, 0) + 1
        if storage_class in ARCHIVE_STORAGE_CLASSES:
            archived.append(f"{info.key} ({storage_class})")
    facts = {"objects_checked": seen, "storage_classes": classes}
    if not archived:
        return CheckResult(
            name, True, f"{seen} object(s) checked in {where}: storage classes {sorted(classes) or 'none'}", facts
        )
    return CheckResult(
        name,
        False,
        f"{len(archived)} of {seen} object(s) checked in {where} are in an archive class, e.g. "
        f"{', '.join(archived[:5])}. Fix: restore them and copy them back to STANDARD, and find what wrote "
        "them there (a lifecycle rule, or a StorageClass on upload)",
        {**facts, "archived_examples": archived[:20]},
    )


# -- public access -------------------------------------------------------------------------


def _is_wildcard(principal: Any) -> bool:
    if principal == "*":
        return True
    if isinstance(principal, Mapping):
        return any(_is_wildcard(value) for value in principal.values())
    if isinstance(principal, list | tuple):
        return any(p == "*" for p in principal)
    return False


def public_policy_statements(policy: str | Mapping[str, Any]) -> list[str]:
    """Statements of a bucket policy that allow anyone: ``Principal: "*"`` (or ``{"AWS": "*"}``,
    ``{"SCW": "*"}``...) or ``NotPrincipal`` with ``Effect: Allow``.

    A Condition does not make a wildcard acceptable: access to health data must be
    tied to an identity, not to a network. Raises ValueError if the policy is not JSON.
    """
    document = json.loads(policy) if isinstance(policy, str) else policy
    if not isinstance(document, Mapping):
        raise ValueError("the bucket policy is not a JSON object")
    statements = document.get("Statement") or []
    if isinstance(statements, Mapping):
        statements = [statements]
    found = []
    for index, statement in enumerate(statements):
        if str(statement.get("Effect", "")).lower() != "allow":
            continue
        label = f"statement '{statement.get('Sid')}'" if statement.get("Sid") else f"statement #{index + 1}"
        actions = statement.get("Action", statement.get("NotAction", "?"))
        if "NotPrincipal" in statement:
            found.append(f"{label} allows {actions} to everyone except {statement['NotPrincipal']} (NotPrincipal)")
        elif _is_wildcard(statement.get("Principal")):
            condition = " (with a Condition)" if statement.get("Condition") else ""
            found.append(f"{label} allows {actions} to Principal '*'{condition}")
    return found


def public_acl_grants(grants: Iterable[Mapping[str, Any]]) -> list[str]:
    """ACL grants to the AllUsers or AuthenticatedUsers groups (any S3 account counts as authenticated)."""
    found = []
    for grant in grants:
        uri = (grant.get("Grantee") or {}).get("URI", "")
        if uri in (_ALL_USERS, _AUTHENTICATED_USERS):
            found.append(f"{uri.rsplit('/', 1)[-1]} has {grant.get('Permission', '?')}")
    return found


def check_not_public(client: Any, bucket: str) -> CheckResult:
    """``policy_not_public``: neither the bucket policy, nor the ACL, nor the server's policy status
    makes the bucket public. The public access block is recorded when the server has one."""
    name = "policy_not_public"
    try:
        policy = _read_setting(
            bucket,
            "bucket policy",
            "s3:GetBucketPolicy",
            lambda: client.get_bucket_policy(Bucket=bucket),
            absent={"NoSuchBucketPolicy"},
        )
        acl = _read_setting(
            bucket, "ACL", "s3:GetBucketAcl", lambda: client.get_bucket_acl(Bucket=bucket), absent=set()
        )
        status = _read_setting(
            bucket,
            "policy status",
            "s3:GetBucketPolicyStatus",
            _not_supported(lambda: client.get_bucket_policy_status(Bucket=bucket)),
            absent={"NoSuchBucketPolicy"},
        )
        block = _read_setting(
            bucket,
            "public access block",
            "s3:GetBucketPublicAccessBlock",
            _not_supported(lambda: client.get_public_access_block(Bucket=bucket)),
            absent={"NoSuchPublicAccessBlockConfiguration"},
        )
    except _Unverifiable as exc:
        return CheckResult(name, False, str(exc))

    problems: list[str] = []
    policy_text = (policy or {}).get("Policy")
    if policy_text:
        try:
            problems += [f"bucket policy {p}" for p in public_policy_statements(policy_text)]
        except ValueError as exc:
            problems.append(f"its bucket policy cannot be parsed ({exc}), so it cannot be shown not to be public")
    problems += [f"ACL grant: {g}" for g in public_acl_grants((acl or {}).get("Grants") or ())]
    server_says_public = bool(((status or {}).get("PolicyStatus") or {}).get("IsPublic"))
    if server_says_public and not any(p.startswith("bucket policy") for p in problems):
        problems.append("the server reports its policy status as public")
    block_config = (block or {}).get("PublicAccessBlockConfiguration")
    facts: dict[str, Any] = {
        "bucket_policy": bool(policy_text),
        "policy_status_public": server_says_public if status is not None else None,
        "public_access_block": dict(block_config) if block_config else None,
    }
    if problems:
        return CheckResult(
            name,
            False,
            f"bucket '{bucket}' is public: {'; '.join(problems)}. Fix: remove wildcard principals from the bucket "
            "policy (grant named principals only) and public grants from the ACL (put-bucket-acl --acl private)",
            {**facts, "public_because": problems},
        )
    blocked = block_config and all(block_config.values())
    return CheckResult(
        name,
        True,
        f"bucket '{bucket}' is not public (no wildcard principal in its policy, no public ACL grant"
        + ("; public access block fully on)" if blocked else ")"),
        facts,
    )


# -- evaluation ----------------------------------------------------------------------------


def evaluate_object_target_policy(
    client: Any,
    bucket: str,
    endpoint_url: str,
    *,
    deployment: Deployment,
    sse_customer_key: bytes | None,
    expected_region: str | None = None,
    sample_prefix: str | None = None,
    sample_size: int = 1000,
) -> list[CheckResult]:
    """Every object-store rule on one existing bucket, each with its verdict.

    ``expected_region`` adds the bucket-region rule (used when re-evaluating before
    the routing switch). Raises StoreAccessError only when the endpoint did not
    answer (retryable); every refusal is a failed check instead.
    """
    checks = [check_endpoint_tls(endpoint_url, bucket, deployment=deployment)]
    if expected_region is not None:
        checks.append(_check_region_of(client, bucket, expected_region))
    return checks + evaluate_bucket_rules(
        client, bucket, sse_customer_key=sse_customer_key, sample_prefix=sample_prefix, sample_size=sample_size
    )


def evaluate_bucket_rules(
    client: Any,
    bucket: str,
    *,
    sse_customer_key: bytes | None,
    sample_prefix: str | None = None,
    sample_size: int = 1000,
) -> list[CheckResult]:
    """The rules about the bucket's own settings: encryption at rest, archive lifecycle, public
    access, and, with ``sample_prefix``, the storage classes of the first ``sample_size``
    objects written under it."""
    checks = [
        check_encryption_at_rest(client, bucket, sse_customer_key=sse_customer_key),
        check_no_archive_lifecycle(client, bucket),
        check_not_public(client, bucket),
    ]
    if sample_prefix is not None:
        checks.append(_sample_storage_classes(client, bucket, sample_prefix, sample_size))
    return checks


def _check_region_of(client: Any, bucket: str, expected_region: str) -> CheckResult:
    try:
        location = _read_setting(
            bucket,
            "location",
            "s3:GetBucketLocation",
            lambda: client.get_bucket_location(Bucket=bucket),
            absent=set(),
        )
    except _Unverifiable as exc:
        return CheckResult("target_bucket_region", False, str(exc))
    # S3 reports the historical default region as an empty constraint.
    return check_bucket_region(expected_region, (location or {}).get("LocationConstraint") or "us-east-1", bucket)


@dataclass(frozen=True)
class _Listed:
    key: str
    access_tier: str | None


def _sample_storage_classes(client: Any, bucket: str, prefix: str, limit: int) -> CheckResult:
    try:
        answer = _read_setting(
            bucket,
            "object listing",
            "s3:ListBucket",
            lambda: client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=min(limit, 1000)),
            absent=set(),
        )
    except _Unverifiable as exc:
        return CheckResult("policy_no_archive_storage_class", False, str(exc))
    listed = [_Listed(o["Key"], o.get("StorageClass")) for o in (answer or {}).get("Contents", ())]
    return check_storage_classes(listed, bucket=bucket)


def enforce_object_target_policy(
    client: Any,
    bucket: str,
    endpoint_url: str,
    *,
    deployment: Deployment,
    sse_customer_key: bytes | None,
    expected_region: str | None = None,
    sample_prefix: str | None = None,
) -> PolicyReport:
    """Evaluate and refuse: raises PolicyViolation unless every rule passes (e.g. just before
    the routing switch). The returned report is the evidence record."""
    checks = evaluate_object_target_policy(
        client,
        bucket,
        endpoint_url,
        deployment=deployment,
        sse_customer_key=sse_customer_key,
        expected_region=expected_region,
        sample_prefix=sample_prefix,
    )
    report = PolicyReport(f"S3 bucket '{bucket}' at {endpoint_url}", deployment, tuple(checks))
    report.raise_for_violations()
    return report


# -- database ------------------------------------------------------------------------------


def _sslmode(conn: Any) -> str | None:
    """The connection's effective libpq sslmode (psycopg2, or psycopg 3)."""
    if hasattr(conn, "get_dsn_parameters"):  # psycopg2
        return conn.get_dsn_parameters().get("sslmode")
    info = getattr(conn, "info", None)
    if info is not None and hasattr(info, "get_parameters"):  # psycopg 3 lists non-default values only
        return info.get_parameters().get("sslmode", "prefer")
    return None


def check_database_tls(conn: Any, *, host: str, deployment: Deployment) -> CheckResult:
    """``policy_database_tls``: this session is encrypted (``pg_stat_ssl``) and its sslmode
    cannot fall back to plain text. A plain session to a local stand-in host passes only
    when the deployment is declared local development, flagged ``local_development``."""
    deployment = _checked_deployment(deployment)
    name = "policy_database_tls"
    cur = conn.cursor()
    try:
        cur.execute(
            "select s.ssl, s.version, s.cipher, current_setting('ssl') "
            "from pg_stat_ssl s where s.pid = pg_backend_pid()"
        )
        row = cur.fetchone()
    finally:
        cur.close()
    in_use, version, cipher, server_ssl = (bool(row[0]), row[1], row[2], row[3]) if row else (False, None, None, "?")
    sslmode = _sslmode(conn)
    facts: dict[str, Any] = {
        "host": host,
        "ssl": in_use,
        "tls_version": version,
        "cipher": cipher,
        "server_ssl": server_ssl,
        "sslmode": sslmode,
        "deployment": deployment,
    }
    server = f"PostgreSQL server '{host}'"
    if in_use and sslmode in DATABASE_SSLMODES_WITHOUT_FALLBACK:
        note = (
            ""
            if sslmode == "verify-full"
            else f"; the server's certificate is not checked (sslmode={sslmode}): prefer sslmode=verify-full "
            "with the provider's CA as sslrootcert"
        )
        return CheckResult(name, True, f"the session to {server} is encrypted ({version}, {cipher}){note}", facts)
    if not in_use and deployment == "local-development" and is_local_standin_host(host):
        return CheckResult(
            name,
            True,
            f"LOCAL DEVELOPMENT: the session to {server} is NOT encrypted (server ssl={server_ssl}, "
            f"sslmode={sslmode}); allowed only because the Airflow Variable '{DEPLOYMENT_VARIABLE}' is "
            "'local-development' and the server is a local stand-in. Not acceptable for health data",
            {**facts, "local_development": True},
        )
    if in_use:
        problem = (
            f"the session to {server} is encrypted, but sslmode={sslmode} lets a later connection fall back to "
            "plain text"
        )
    elif server_ssl != "on":
        problem = f"{server} does not offer TLS (ssl={server_ssl}); the session is in clear"
    else:
        problem = f"the session to {server} is not encrypted (sslmode={sslmode}) although the server offers TLS"
    return CheckResult(
        name,
        False,
        f"{problem}. Fix: set sslmode=verify-full (and the provider's CA as sslrootcert) in the target "
        "connection's extra" + ("" if server_ssl == "on" else ", and turn TLS on at the server"),
        facts,
    )


def evaluate_postgres_target_policy(conn: Any, *, host: str, deployment: Deployment) -> list[CheckResult]:
    """Every database-target rule on an open connection to the target server."""
    return [check_database_tls(conn, host=host, deployment=deployment)]


def enforce_postgres_target_policy(conn: Any, *, host: str, deployment: Deployment) -> PolicyReport:
    """Evaluate and refuse (raises PolicyViolation); the returned report is the evidence record."""
    checks = evaluate_postgres_target_policy(conn, host=host, deployment=deployment)
    report = PolicyReport(f"PostgreSQL server '{host}'", deployment, tuple(checks))
    report.raise_for_violations()
    return report

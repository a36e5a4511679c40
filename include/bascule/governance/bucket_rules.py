"""The policy rules on an S3 bucket's own settings: encryption at rest, archive classes, public access.

Each reads the setting it needs from the server; a setting that cannot be read (access
denied, missing bucket) fails the rule with the permission to grant, because a rule never
passes on faith. An endpoint that did not answer raises StoreAccessError (a retry may help).

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

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError
from botocore.exceptions import ConnectionError as BotoConnectionError

from bascule.exceptions import StoreAccessError
from bascule.governance.encryption_sample import check_client_side_sample, check_sse_c_sample
from bascule.governance.policy import DOCS, CheckResult
from bascule.storage.bucket_guard import missing_guards
from bascule.storage.encryption import SSE_C_KEY_BYTES, key_fingerprint, key_problem

# Archive tiers: data there cannot be read without a restore (hours), so validation,
# the smoke check and consumers would fail, and HDS availability commitments break.
# Scaleway names its archive class GLACIER; the other two are AWS's.
ARCHIVE_STORAGE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE", "GLACIER_IR"})
__all__ = ["SSE_C_KEY_BYTES"]  # re-exported: callers and tests import it from here

_ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
_AUTHENTICATED_USERS = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"
_NOT_SUPPORTED = {"NotImplemented", "MethodNotAllowed", "UnsupportedOperation"}


# -- reading bucket settings ---------------------------------------------------------------


class SettingUnverifiable(Exception):
    """A setting the policy needs could not be read: the rule cannot pass on faith."""


@dataclass(frozen=True)
class BucketSetting:
    """A bucket setting a rule reads, and how to read it."""

    what: str
    permission: str  # what the target connection's key needs to read it
    operation: str  # the S3 client method
    absent: frozenset[str] = frozenset()  # error codes meaning "not configured"
    optional: bool = False  # some S3 servers do not implement it: that reads as not configured


ENCRYPTION = BucketSetting(
    "default encryption",
    "s3:GetEncryptionConfiguration",
    "get_bucket_encryption",
    frozenset({"ServerSideEncryptionConfigurationNotFoundError"}),
)
LIFECYCLE = BucketSetting(
    "lifecycle configuration",
    "s3:GetLifecycleConfiguration",
    "get_bucket_lifecycle_configuration",
    frozenset({"NoSuchLifecycleConfiguration"}),
)
BUCKET_POLICY = BucketSetting("bucket policy", "s3:GetBucketPolicy", "get_bucket_policy", frozenset({"NoSuchBucketPolicy"}))
ACL = BucketSetting("ACL", "s3:GetBucketAcl", "get_bucket_acl")
POLICY_STATUS = BucketSetting(
    "policy status",
    "s3:GetBucketPolicyStatus",
    "get_bucket_policy_status",
    frozenset({"NoSuchBucketPolicy"}),
    optional=True,
)
PUBLIC_ACCESS_BLOCK = BucketSetting(
    "public access block",
    "s3:GetBucketPublicAccessBlock",
    "get_public_access_block",
    frozenset({"NoSuchPublicAccessBlockConfiguration"}),
    optional=True,
)
LOCATION = BucketSetting("location", "s3:GetBucketLocation", "get_bucket_location")
LISTING = BucketSetting("object listing", "s3:ListBucket", "list_objects_v2")


def read_bucket_setting(client: Any, bucket: str, setting: BucketSetting, **params: Any) -> Any:
    """The server's answer for ``setting``; None if it is not configured (or not supported).

    Raises :class:`SettingUnverifiable` when the answer is a refusal, and StoreAccessError
    when the endpoint did not answer (a retry may help).
    """
    what, permission = setting.what, setting.permission
    try:
        return getattr(client, setting.operation)(Bucket=bucket, **params)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if setting.optional and (code in _NOT_SUPPORTED or status == 501):
            return None
        if code in setting.absent:
            return None
        if code in ("AccessDenied", "AllAccessDisabled") or status == 403:
            raise SettingUnverifiable(
                f"cannot read the {what} of bucket '{bucket}' (access denied): grant the target connection's "
                f"key {permission} on it so the policy can be verified"
            ) from None
        if code == "NoSuchBucket":
            raise SettingUnverifiable(f"bucket '{bucket}' does not exist") from None
        if status is not None and (int(status) in (408, 429) or int(status) >= 500) and code not in _NOT_SUPPORTED:
            raise StoreAccessError(
                f"bucket '{bucket}': reading its {what} failed ({code}, HTTP {status})", retryable=True
            ) from None
        raise SettingUnverifiable(
            f"cannot read the {what} of bucket '{bucket}': {code or 'error'} (HTTP {status})"
        ) from None
    except (EndpointConnectionError, BotoConnectionError, ConnectionError, TimeoutError) as exc:
        raise StoreAccessError(
            f"bucket '{bucket}': reading its {what} failed, endpoint unreachable ({type(exc).__name__}: {exc})",
            retryable=True,
        ) from None
    except BotoCoreError as exc:  # no credentials, invalid parameters: a retry would fail the same way
        raise StoreAccessError(
            f"bucket '{bucket}': reading its {what} failed ({type(exc).__name__}: {exc})", retryable=False
        ) from None


# -- encryption at rest --------------------------------------------------------------------


def sse_customer_key_md5(key: bytes) -> str:
    """The key's fingerprint as S3 itself spells it (``x-amz-server-side-encryption-customer-key-MD5``).

    Safe to record: it identifies the key (rotation audits, matching HEAD answers)
    and reveals nothing usable about a 256-bit random key.
    """
    return key_fingerprint(key)


def sse_customer_key_problem(key: bytes, bucket: str) -> str | None:
    """Why ``key`` cannot serve as an SSE-C key, or None if it can."""
    return key_problem(key, f"bucket '{bucket}'")


def default_encryption_algorithms(configuration: Mapping[str, Any]) -> list[str]:
    """The default SSE algorithms of a ``get_bucket_encryption`` answer's configuration."""
    algorithms = []
    for rule in configuration.get("Rules", ()):
        algorithm = (rule.get("ApplyServerSideEncryptionByDefault") or {}).get("SSEAlgorithm")
        if algorithm:
            algorithms.append(str(algorithm))
    return algorithms


def check_encryption_at_rest(
    client: Any,
    bucket: str,
    *,
    sse_customer_key: bytes | None,
    health_data: bool = False,
    client_side_kek: bytes | None = None,
) -> CheckResult:
    """``policy_encryption_at_rest``: SSE-C with the customer key, or (for a bucket that holds no
    health data, e.g. an evidence bucket) a readable bucket default encryption.

    ``health_data`` (every health-data target): Scaleway's HDS guidance asks
    for every object to be encrypted with SSE-C or client-side; a bucket default
    encryption (PutBucketEncryption) is its compliant-*deletion* mechanism, not an
    encryption method, so it does not satisfy the rule alone. The key comes from an
    Airflow connection (never the manifest); the writer sends it on every object request.
    The bucket's default encryption is read and recorded either way.

    ``client_side_kek`` (method ``client_side``): objects are encrypted by Bascule before
    upload, so the rule also requires the bucket default encryption Scaleway prescribes
    with it (compliant deletion); that every object was sealed is checked at parity,
    from each object's transfer record (:mod:`bascule.objects.parity`).
    """
    name = "policy_encryption_at_rest"
    if client_side_kek is not None:
        return _check_client_side(client, bucket, client_side_kek)
    unreadable: str | None = None
    problem = sse_customer_key_problem(sse_customer_key, bucket) if sse_customer_key is not None else None
    if problem is not None:
        return CheckResult(name, False, problem, {"sse_c": "invalid key"})
    if health_data and sse_customer_key is None:
        return CheckResult(
            name,
            False,
            f"objects in bucket '{bucket}' would not be encrypted with SSE-C or client-side: Scaleway's HDS guidance "
            "requires one of them for every object (a bucket default encryption is its deletion mechanism, not "
            "an encryption method). Fix: set target.encryption {method: sse_c (or client_side), key_conn_id: "
            "<connection>} in the "
            f"manifest ({DOCS})",
            {"sse_c": False, "method": None},
        )
    try:
        answer = read_bucket_setting(client, bucket, ENCRYPTION)
    except SettingUnverifiable as exc:
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


def _check_client_side(client: Any, bucket: str, kek: bytes) -> CheckResult:
    name = "policy_encryption_at_rest"
    problem = key_problem(kek, f"bucket '{bucket}'", "client-side key-encryption key")
    if problem is not None:
        return CheckResult(name, False, problem, {"method": "client_side", "sse_c": False})
    facts: dict[str, Any] = {"method": "client_side", "sse_c": False, "client_side_kek_md5": key_fingerprint(kek)}
    try:
        answer = read_bucket_setting(client, bucket, ENCRYPTION)
    except SettingUnverifiable as exc:
        return CheckResult(name, False, f"{exc}: client-side encryption needs it for compliant deletion ({DOCS})", facts)
    algorithms = default_encryption_algorithms((answer or {}).get("ServerSideEncryptionConfiguration") or {})
    facts["bucket_default_encryption"] = algorithms or None
    if not algorithms:
        return CheckResult(
            name,
            False,
            f"bucket '{bucket}' has no default encryption: with client-side encryption Scaleway's HDS guidance "
            "asks for PutBucketEncryption too (its compliant-deletion mechanism). Fix: aws s3api "
            f"put-bucket-encryption --bucket {bucket} --server-side-encryption-configuration "
            "'{\"Rules\":[{\"ApplyServerSideEncryptionByDefault\":{\"SSEAlgorithm\":\"AES256\"}}]}' "
            f"({DOCS})",
            facts,
        )
    return CheckResult(
        name,
        True,
        f"objects in bucket '{bucket}' are encrypted client-side before upload (AES-256-GCM, a data key per object "
        f"wrapped with the key-encryption key MD5 {facts['client_side_kek_md5']}); bucket default encryption "
        f"{', '.join(algorithms)} for compliant deletion",
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


def enabled_rule_ids(rules: Sequence[Mapping[str, Any]]) -> list[str]:
    """The ids of the enabled lifecycle rules (``#n`` for a rule without one)."""
    return [
        str(rule.get("ID") or f"#{index + 1}")
        for index, rule in enumerate(rules)
        if str(rule.get("Status", "")).lower() == "enabled"
    ]


def check_no_lifecycle(client: Any, bucket: str) -> CheckResult:
    """``policy_no_lifecycle``: no enabled lifecycle rule at all on a bucket holding health data.

    Scaleway's HDS guidance: "make sure that there is no active lifecycle rule" (not only
    archive transitions: an expiration deletes data, a transition moves it to a class the
    HDS commitment may not cover). Disabled rules move nothing and pass, counted.
    """
    name = "policy_no_lifecycle"
    try:
        answer = read_bucket_setting(client, bucket, LIFECYCLE)
    except SettingUnverifiable as exc:
        return CheckResult(name, False, str(exc))
    rules = list((answer or {}).get("Rules") or ())
    enabled, archived = enabled_rule_ids(rules), archive_transitions(rules)
    facts = {"lifecycle_rules": len(rules), "enabled_rules": enabled, "archive_transitions": archived}
    if not enabled:
        what = f"{len(rules)} lifecycle rule(s), all disabled" if rules else "no lifecycle rule"
        return CheckResult(name, True, f"bucket '{bucket}' has {what}", facts)
    archive = f" ({'; '.join(archived)})" if archived else ""
    return CheckResult(
        name,
        False,
        f"bucket '{bucket}' has enabled lifecycle rule(s) {', '.join(repr(i) for i in enabled)}{archive}: Scaleway's "
        "HDS guidance allows no active lifecycle rule on a bucket holding health data. Fix: remove them "
        f"(docs/runbooks.md#policy-no-lifecycle: aws s3api delete-bucket-lifecycle --bucket {bucket})",
        facts,
    )


def check_guard_policy(client: Any, bucket: str) -> CheckResult:
    """``policy_denies_prohibited``: the bucket policy still denies lifecycle rules and other storage classes.

    Bascule attaches it when it creates a health-data bucket (:mod:`bascule.storage.bucket_guard`);
    for a bucket created by someone else, its owner adds the same two statements.
    """
    name = "policy_denies_prohibited"
    try:
        policy = read_bucket_setting(client, bucket, BUCKET_POLICY)
    except SettingUnverifiable as exc:
        return CheckResult(name, False, str(exc))
    missing = missing_guards((policy or {}).get("Policy"))
    facts = {"bucket_policy": bool((policy or {}).get("Policy")), "missing_statements": missing}
    if not missing:
        return CheckResult(
            name, True, f"bucket '{bucket}''s policy denies PutLifecycleConfiguration and non-STANDARD writes", facts
        )
    return CheckResult(
        name,
        False,
        f"bucket '{bucket}''s policy lacks {', '.join(missing)}: nothing stops a lifecycle rule or an archive-class "
        "write from being added. Fix: add the statements shown in docs/security.md#bucket-policy-for-health-data "
        "to the bucket policy (put-bucket-policy)",
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
        policy = read_bucket_setting(client, bucket, BUCKET_POLICY)
        acl = read_bucket_setting(client, bucket, ACL)
        status = read_bucket_setting(client, bucket, POLICY_STATUS)
        block = read_bucket_setting(client, bucket, PUBLIC_ACCESS_BLOCK)
    except SettingUnverifiable as exc:
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


# -- every bucket rule ---------------------------------------------------------------------


def evaluate_bucket_rules(
    client: Any,
    bucket: str,
    *,
    sse_customer_key: bytes | None,
    sample_prefix: str | None = None,
    sample_size: int = 1000,
    health_data: bool = False,
    client_side_kek: bytes | None = None,
) -> list[CheckResult]:
    """The rules about the bucket's own settings: encryption at rest, archive lifecycle, public
    access, and, with ``sample_prefix``, the storage classes of the first ``sample_size``
    objects written under it, and (with an SSE-C key) that sampled objects really are
    SSE-C objects (:func:`bascule.governance.encryption_sample.check_sse_c_sample`)."""
    checks = [
        check_encryption_at_rest(
            client, bucket, sse_customer_key=sse_customer_key, health_data=health_data, client_side_kek=client_side_kek
        ),
        check_no_lifecycle(client, bucket),
        check_not_public(client, bucket),
    ]
    if health_data:
        checks.append(check_guard_policy(client, bucket))
    if sample_prefix is not None:
        checks.append(_sample_storage_classes(client, bucket, sample_prefix, sample_size))
    if sse_customer_key is not None and checks[0].ok:
        checks.append(check_sse_c_sample(client, bucket, sse_customer_key, prefix=sample_prefix or ""))
    if client_side_kek is not None and checks[0].ok:
        checks.append(check_client_side_sample(client, bucket, client_side_kek, prefix=sample_prefix or ""))
    return checks


@dataclass(frozen=True)
class _Listed:
    key: str
    access_tier: str | None


def _sample_storage_classes(client: Any, bucket: str, prefix: str, limit: int) -> CheckResult:
    try:
        answer = read_bucket_setting(client, bucket, LISTING, Prefix=prefix, MaxKeys=min(limit, 1000))
    except SettingUnverifiable as exc:
        return CheckResult("policy_no_archive_storage_class", False, str(exc))
    listed = [_Listed(o["Key"], o.get("StorageClass")) for o in (answer or {}).get("Contents", ())]
    return check_storage_classes(listed, bucket=bucket)

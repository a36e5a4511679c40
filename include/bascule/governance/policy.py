"""Sovereignty and HDS policy as code: the verdicts, the deployment, and the rules every target shares.

Rules refuse a configuration before any byte moves, and again just before the
routing switch. Each returns a verdict with a reason precise enough to act on (which
bucket or server, what is wrong, how to fix it); none of them can be bypassed by a
Param or an environment variable. The one relaxation, plain-HTTP/plain-TCP stand-ins,
needs the deployment to be *declared* local development (the Airflow Variable
``bascule_deployment``), and every result that used it says so.

Rules:

- ``target_region_allowed`` (here): the manifest's target region is in its allow-list, and
  no region other than fr-par (the only HDS region) is targeted or allowed.
- ``policy_tls`` (:mod:`bascule.governance.object_policy`): the S3 endpoint is ``https``.
- ``policy_encryption_at_rest`` (:mod:`bascule.governance.bucket_rules`): objects are written
  with SSE-C (a customer key from an Airflow connection) or the bucket has a default
  encryption the policy can read.
- ``policy_no_lifecycle``: no enabled lifecycle rule at all (Scaleway HDS guidance);
  ``policy_no_archive_storage_class``: no written object is in an archive class
  (GLACIER, DEEP_ARCHIVE, GLACIER_IR; Scaleway's "Glacier" class is ``GLACIER``);
  ``policy_denies_prohibited`` (health-data buckets): the bucket policy denies lifecycle
  rules and writes in another storage class; ``policy_sse_c_sampled``: sampled objects
  answer 400 to a HEAD without the key.
- ``policy_not_public``: no bucket policy statement allows a wildcard principal, no ACL
  grant to AllUsers/AuthenticatedUsers, and the server's policy status is not public.
- ``policy_database_tls`` (:mod:`bascule.governance.database_policy`): the target PostgreSQL
  session is encrypted and its sslmode cannot fall back to plain text.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from bascule.exceptions import PolicyViolation
from bascule.workload import ObjectStoreWorkload, PostgresWorkload

Deployment = Literal["production", "local-development"]
DEPLOYMENTS: tuple[Deployment, ...] = get_args(Deployment)
# The Airflow Variable the glue reads the deployment from; absent means production.
DEPLOYMENT_VARIABLE = "bascule_deployment"
DOCS = "docs/security.md#sovereignty-and-hds-policy"


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


def checked_deployment(deployment: str) -> Deployment:
    """A deployment given to a rule, refused unless it is one the policy knows."""
    # Callers are typed, but the value comes from an Airflow Variable at runtime.
    for known in DEPLOYMENTS:
        if deployment == known:
            return known
    raise PolicyViolation(f"unknown deployment {deployment!r}; expected one of {list(DEPLOYMENTS)}")


# -- region ------------------------------------------------------------------------------


# Scaleway's Object Storage is HDS-certified in Paris only; nl-ams and pl-waw are not offered for health data.
HDS_REGIONS = frozenset({"fr-par"})


def check_target_region(workload: ObjectStoreWorkload | PostgresWorkload, manifest_path: str) -> CheckResult:
    """The target region must be in the allow-list, and, the data being health data, an HDS region.

    A ``policy.justification`` lets a manifest *list* another region, but this rule refuses any
    region other than fr-par, targeted or merely allowed: Bascule moves health data, and
    Scaleway hosts health data (HDS) in fr-par only.
    """
    region = workload.target.region
    allowed = list(workload.policy.allowed_regions)
    not_hds = sorted(set(allowed) - HDS_REGIONS)
    why = "Scaleway offers health-data hosting (HDS) in fr-par only: nl-ams and pl-waw are not HDS regions"
    facts = {"region": region, "allowed_regions": allowed, "hds_regions": sorted(HDS_REGIONS)}
    if region not in allowed:
        return CheckResult(
            "target_region_allowed",
            False,
            f"target region '{region}' is not in the allow-list {allowed}. Health data (HDS) must stay in "
            f"fr-par ({why}); set target.region: fr-par in {manifest_path}",
            facts,
        )
    if region not in HDS_REGIONS or not_hds:
        return CheckResult(
            "target_region_allowed",
            False,
            f"policy.allowed_regions in {manifest_path} allows {not_hds} for health data, which no justification "
            f"can make compliant ({why}). Fix: target.region: fr-par and policy.allowed_regions: [fr-par]",
            facts,
        )
    return CheckResult(
        "target_region_allowed", True, f"target region '{region}' is in the allow-list {allowed} (HDS: fr-par)", facts
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


def plain_text_allowed(deployment: Deployment, host: str) -> bool:
    """The one relaxation: a connection in clear, only to a local stand-in host, only in declared local development."""
    return deployment == "local-development" and is_local_standin_host(host)


def local_development_pass(name: str, what: str, standin: str, facts: Mapping[str, Any]) -> CheckResult:
    """A check passed only through :func:`plain_text_allowed`: the verdict says so, and the evidence flags it."""
    return CheckResult(
        name,
        True,
        f"LOCAL DEVELOPMENT: {what}; allowed only because the Airflow Variable '{DEPLOYMENT_VARIABLE}' is "
        f"'local-development' and {standin} is a local stand-in. Not acceptable for health data",
        {**facts, "local_development": True},
    )

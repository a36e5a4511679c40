"""Workload manifests: the schema, loading, and errors that name file and field.

A manifest is one YAML file under ``include/workloads/`` describing one unit of
migration. Validation is strict (unknown fields are refused) because a typo in a
manifest for national health data must stop the workload, not be ignored.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal

import pendulum
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bascule.exceptions import ManifestError
from bascule.identifiers import parse_name, qualified_name, split_qualified

# Scaleway Object Storage / Managed Database regions. Health data (HDS) may only
# live in fr-par; the allow-list check itself is a preflight policy rule.
ScalewayRegion = Literal["fr-par", "nl-ams", "pl-waw"]
DEFAULT_ALLOWED_REGIONS: tuple[ScalewayRegion, ...] = ("fr-par",)

WORKLOAD_ID_PATTERN = r"^[a-z][a-z0-9_]{1,62}$"
# Airflow connection ids: letters, digits, dash, dot, underscore.
CONN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,249}$"
# Azure container names: 3-63 chars, lowercase letters, digits, single dashes.
AZURE_CONTAINER_PATTERN = r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$"
# S3 bucket names as Scaleway accepts them (DNS-compatible).
S3_BUCKET_PATTERN = r"^(?!.*\.\.)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
PG_IDENTIFIER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$"
GX_SUITE_PATTERN = r"^[a-z][a-z0-9_]{0,99}$"
PYTHON_CALLABLE_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"

WorkloadId = Annotated[str, StringConstraints(pattern=WORKLOAD_ID_PATTERN)]
ConnId = Annotated[str, StringConstraints(pattern=CONN_ID_PATTERN)]
PgIdentifier = Annotated[str, StringConstraints(pattern=PG_IDENTIFIER_PATTERN)]
NonEmptyText = Annotated[str, StringConstraints(min_length=1, strip_whitespace=True)]

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, regex_engine="python-re")


def _check_prefix(value: str) -> str:
    if value.startswith("/"):
        raise ValueError("a prefix is relative: remove the leading '/'")
    if value and not value.endswith("/"):
        raise ValueError("a non-empty prefix must end with '/' so it names a folder, not a name stem")
    return value


class BlobSource(_Strict):
    conn_id: ConnId
    container: Annotated[str, StringConstraints(pattern=AZURE_CONTAINER_PATTERN)]
    prefix: str = ""

    _prefix = field_validator("prefix")(_check_prefix)


class TargetEncryption(_Strict):
    """How every object is encrypted at rest (docs/security.md#sse-c-keys).

    ``sse_c``: the server encrypts with a customer key sent on every request; the key is
    the password (base64 of 32 bytes) of the Airflow connection ``key_conn_id``, never
    a manifest field. ``client_side``: Bascule encrypts every object before upload
    (AES-256-GCM frames, a data key per object wrapped with the key-encryption key held
    the same way in ``key_conn_id``; docs/security.md#client-side-encryption).
    """

    method: Literal["sse_c", "client_side"]
    key_conn_id: ConnId


class S3Target(_Strict):
    conn_id: ConnId
    bucket: Annotated[str, StringConstraints(pattern=S3_BUCKET_PATTERN)]
    prefix: str = ""
    region: ScalewayRegion
    create_if_missing: bool = False
    encryption: TargetEncryption | None = None

    _prefix = field_validator("prefix")(_check_prefix)


def _tables(tables: list[str]) -> list[str]:
    # Stored in the one text form (bascule.identifiers), so `"public"."patients"` and
    # `public.patients` are the same table everywhere downstream.
    return [qualified_name(*split_qualified(table)) for table in tables]


def _names(names: list[str]) -> list[str]:
    # Schemas are kept as PostgreSQL stores them (quotes removed): the catalog compares them as is.
    return [parse_name(name) for name in names]


class PostgresSource(_Strict):
    conn_id: ConnId
    database: PgIdentifier
    # Any name PostgreSQL accepts, written as the database shows it (docs/workloads.md#identifiers).
    schemas: list[str] = Field(default_factory=lambda: ["public"], min_length=1)
    # Empty: every table of the schemas.
    tables: list[str] = Field(default_factory=list)
    # The roles the applications write with: cutover makes them read-only on the source
    # (default_transaction_read_only) and ends their sessions; rollback restores them.
    application_roles: list[str] = Field(min_length=1)
    # Tables without a primary key are refused unless listed here: they replicate with
    # REPLICA IDENTITY FULL (set on the source at snapshot) and are diffed row by row,
    # which is slower (docs/workloads.md).
    tables_without_primary_key: list[str] = Field(default_factory=list)

    _schemas = field_validator("schemas", "application_roles")(_names)
    _tables = field_validator("tables", "tables_without_primary_key")(_tables)


class PostgresTarget(_Strict):
    conn_id: ConnId
    database: PgIdentifier
    region: ScalewayRegion
    create_if_missing: bool = False


class EvidenceLocation(_Strict):
    """The S3 bucket (Scaleway) holding a workload's evidence and its routing document, of either kind.

    Never the data bucket: an object workload's target bucket holds the source's objects
    and nothing else, and the evidence is governed by this bucket's own settings.

    Under Object Lock by default: a bucket Bascule creates gets it (Scaleway allows it only
    at creation), each record is locked in ``lock_mode`` for ``retention_days``; an existing
    bucket without it is refused at preflight unless ``object_lock: false`` with a
    ``justification``, which the evidence records.
    """

    conn_id: ConnId
    bucket: Annotated[str, StringConstraints(pattern=S3_BUCKET_PATTERN)]
    region: ScalewayRegion
    create_if_missing: bool = False
    object_lock: bool = True
    lock_mode: Literal["COMPLIANCE", "GOVERNANCE"] = "COMPLIANCE"
    # Six years: two three-year HDS certification cycles (docs/evidence.md); COMPLIANCE cannot be shortened.
    retention_days: int = Field(default=2190, ge=1, le=36500)
    justification: NonEmptyText | None = None

    @model_validator(mode="after")
    def _justify_no_lock(self) -> EvidenceLocation:
        if not self.object_lock and not self.justification:
            raise ValueError("evidence.object_lock: false needs an evidence.justification (recorded in the evidence)")
        return self


class Replication(_Strict):
    # The change stream must be this close to the source before validation and cutover go on.
    max_lag_seconds: float = Field(default=30.0, gt=0, le=3600)
    max_lag_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    # How long catch-up may take before the run fails and an engineer looks.
    catch_up_timeout_minutes: int = Field(default=240, ge=1, le=10080)


class PostgresTransfer(_Strict):
    # Tables copied at the same time (mapped tasks running at once).
    concurrency: int = Field(default=4, ge=1, le=64)
    # A table larger than this (pg_table_size at the snapshot, in MiB) is copied by several
    # mapped tasks over disjoint primary-key ranges of about this size each, so no single
    # COPY (and no single retry) has to move more. Low values are for tests and demos.
    split_table_above_mib: int = Field(default=10240, ge=1)


class Validation(_Strict):
    suites: list[Annotated[str, StringConstraints(pattern=GX_SUITE_PATTERN)]] = Field(default_factory=list)


class ShadowJob(_Strict):
    name: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
    callable: Annotated[str, StringConstraints(pattern=PYTHON_CALLABLE_PATTERN)] | None = None
    query: Annotated[str, StringConstraints(pattern=r"^[\w./-]+\.sql$")] | None = None
    # SQL results compare as sets unless the query's order is part of its meaning.
    ordered: bool = False

    @model_validator(mode="after")
    def _exactly_one(self) -> ShadowJob:
        if (self.callable is None) == (self.query is None):
            raise ValueError("a shadow job needs exactly one of 'callable' or 'query'")
        return self


class ShadowRun(_Strict):
    jobs: list[ShadowJob] = Field(default_factory=list)
    # Numeric results may differ by float rounding across engines; exact by default.
    relative_tolerance: float = Field(default=0.0, ge=0.0, le=0.1)
    absolute_tolerance: float = Field(default=0.0, ge=0.0)


class Transfer(_Strict):
    shards: int = Field(default=4, ge=1, le=256)
    concurrency: int = Field(default=8, ge=1, le=64)
    part_size_mib: int = Field(default=16, ge=5, le=5000)


class Approvals(_Strict):
    approvers: list[Annotated[str, StringConstraints(pattern=r"^[\w.@-]{1,100}$")]] = Field(min_length=1)
    required: int = Field(default=1, ge=1)
    # Without a response by then the run fails: there is never a default approval.
    timeout_minutes: int = Field(default=4320, ge=1, le=43200)

    @field_validator("approvers")
    @classmethod
    def _listed_once(cls, approvers: list[str]) -> list[str]:
        if len(set(approvers)) != len(approvers):
            raise ValueError("approvers must be listed once each")
        return approvers

    @field_validator("required")
    @classmethod
    def _quorum_reachable(cls, required: int, info: ValidationInfo) -> int:
        approvers = info.data.get("approvers")
        if approvers is not None and required > len(approvers):
            raise ValueError(f"required={required} approvals can never be reached with {len(approvers)} approver(s)")
        return required


EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+$"


class Notifications(_Strict):
    """Who is told what by e-mail (docs/workloads.md#notifications); empty lists send nothing."""

    smtp_conn_id: ConnId = "smtp_default"
    from_email: Annotated[str, StringConstraints(pattern=EMAIL_PATTERN)] | None = None
    # Told when the cutover gate opens (and asks them to approve).
    approvers: list[Annotated[str, StringConstraints(pattern=EMAIL_PATTERN)]] = Field(default_factory=list)
    # Told when a run fails (the operators, on-call).
    on_failure: list[Annotated[str, StringConstraints(pattern=EMAIL_PATTERN)]] = Field(default_factory=list)


@functools.lru_cache(maxsize=256)
def _is_iana_timezone(name: str) -> bool:
    """Whether pendulum knows ``name``; cached, as hundreds of manifests name the same few zones."""
    try:
        pendulum.timezone(name)
    except Exception:  # pendulum raises its own InvalidTimezone
        return False
    return True


class MaintenanceWindow(_Strict):
    timezone: str
    days: list[Literal[WEEKDAYS]] = Field(min_length=1)  # type: ignore[valid-type]
    start: time
    end: time

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        if not _is_iana_timezone(value):
            raise ValueError(f"unknown IANA timezone '{value}' (e.g. Europe/Paris)")
        return value

    @field_validator("start", "end", mode="before")
    @classmethod
    def _hh_mm(cls, value: Any) -> Any:
        # YAML 1.1 reads some unquoted times (2:00, 23:00) as sexagesimal integers.
        if isinstance(value, int):
            raise ValueError('write times quoted as "HH:MM", e.g. "02:00"')
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> MaintenanceWindow:
        if self.start == self.end:
            raise ValueError("start and end are equal: the window would be empty")
        return self


# Azure stored access policy ids (signed identifiers): 1-64 characters.
POLICY_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


class Freeze(_Strict):
    """How an object workload's writers are cut off at cutover (docs/workloads.md#cutover)."""

    # leases by default: what existing manifests did, and it needs nothing of the writers;
    # stored_access_policy is the method for containers above max_objects.
    method: Literal["stored_access_policy", "leases"] = "leases"
    # The stored access policy the writers' SAS tokens are bound to (their 'si=' parameter).
    policy_id: Annotated[str, StringConstraints(pattern=POLICY_ID_PATTERN)] | None = None
    # Azure documents up to 30 s for a policy change to take effect.
    probe_timeout_seconds: float = Field(default=60.0, gt=0, le=600)
    # Leasing costs one request per blob while writers wait: refused above this.
    max_objects: int = Field(default=50_000, ge=1, le=1_000_000)
    # Delta sync rounds at cutover: a change that lands after a round's listing (a writer the
    # freeze does not stop) is caught by the final parity and synced by another round, up to
    # this many; then the cutover fails, unfreezes and names what kept changing.
    delta_rounds: int = Field(default=3, ge=1, le=9)

    @model_validator(mode="after")
    def _policy_named(self) -> Freeze:
        if self.method == "stored_access_policy" and self.policy_id is None:
            raise ValueError(
                "method stored_access_policy needs 'policy_id': the stored access policy on the source container "
                "that the writers' SAS tokens are bound to (their 'si=' parameter)"
            )
        if self.method == "leases" and self.policy_id is not None:
            raise ValueError(
                f"policy_id '{self.policy_id}' is only used by method stored_access_policy; set "
                "method: stored_access_policy, or remove policy_id"
            )
        return self


class Cutover(_Strict):
    routing: Literal["routing_registry"] = "routing_registry"
    window: MaintenanceWindow
    # Declared here only to refuse it with a message that names the field: ObjectCutover
    # replaces it; a postgres workload freezes through its roles instead.
    freeze: Any = Field(default=None, exclude=True)

    @field_validator("freeze")
    @classmethod
    def _freeze_is_for_objects(cls, value: Any) -> Any:
        if cls is Cutover and value is not None:
            raise ValueError(
                "a postgres workload freezes writes by making source.application_roles read-only at cutover; "
                "cutover.freeze is for object_store workloads: remove it"
            )
        return value


class ObjectCutover(Cutover):
    freeze: Freeze = Field(default_factory=Freeze)


def _default_regions() -> list[ScalewayRegion]:
    return list(DEFAULT_ALLOWED_REGIONS)


class Policy(_Strict):
    allowed_regions: list[ScalewayRegion] = Field(default_factory=_default_regions, min_length=1)
    justification: str | None = None

    @model_validator(mode="after")
    def _justify_widening(self) -> Policy:
        widened = set(self.allowed_regions) - set(DEFAULT_ALLOWED_REGIONS)
        if widened and not (self.justification and self.justification.strip()):
            raise ValueError(
                f"allowing region(s) {sorted(widened)} beyond the HDS default "
                f"{list(DEFAULT_ALLOWED_REGIONS)} needs a 'justification'"
            )
        return self


class _WorkloadBase(_Strict):
    id: WorkloadId
    description: NonEmptyText
    owner: NonEmptyText
    validation: Validation = Field(default_factory=Validation)
    shadow_run: ShadowRun = Field(default_factory=ShadowRun)
    approvals: Approvals
    cutover: Cutover
    policy: Policy = Field(default_factory=Policy)
    notifications: Notifications = Field(default_factory=Notifications)
    evidence: EvidenceLocation


class ObjectStoreWorkload(_WorkloadBase):
    kind: Literal["object_store"]
    cutover: ObjectCutover
    source: BlobSource
    target: S3Target
    transfer: Transfer = Field(default_factory=Transfer)

    @field_validator("shadow_run")
    @classmethod
    def _callables_only(cls, shadow_run: ShadowRun) -> ShadowRun:
        for job in shadow_run.jobs:
            if job.query is not None:
                raise ValueError(
                    f"shadow job '{job.name}': object_store workloads run Python callables over the dataset "
                    "files ('callable: package.module:function'); SQL queries are for postgres workloads"
                )
        return shadow_run

    @model_validator(mode="after")
    def _evidence_outside_the_data(self) -> ObjectStoreWorkload:
        if self.evidence.bucket == self.target.bucket:
            raise ValueError(
                f"evidence.bucket '{self.evidence.bucket}' is the data bucket (target.bucket): the data bucket holds "
                "the source's objects and nothing else; name a dedicated evidence bucket (docs/workloads.md#evidence)"
            )
        return self

    def target_key(self, source_key: str) -> str:
        return self.target.prefix + source_key[len(self.source.prefix) :]


class PostgresWorkload(_WorkloadBase):
    kind: Literal["postgres"]
    source: PostgresSource
    target: PostgresTarget
    transfer: PostgresTransfer = Field(default_factory=PostgresTransfer)
    replication: Replication = Field(default_factory=Replication)

    @field_validator("shadow_run")
    @classmethod
    def _queries_only(cls, shadow_run: ShadowRun) -> ShadowRun:
        for job in shadow_run.jobs:
            if job.query is None:
                raise ValueError(
                    f"shadow job '{job.name}': postgres workloads run SQL files from include/sql/ "
                    "('query: name.sql') on both databases"
                )
        return shadow_run

    def slot_name(self) -> str:
        """Replication slot, publication and subscription share this name.

        A slot name allows only ``[a-z0-9_]`` and 63 bytes; the workload id is already of
        that alphabet. An id too long for the prefix keeps its first 46 characters and a
        hash of the whole id, so two long ids that share a beginning still get two slots.
        """
        name = f"bascule_{self.id}"
        if len(name) <= 63:
            return name
        return f"bascule_{self.id[:46]}_{hashlib.blake2b(self.id.encode(), digest_size=4).hexdigest()}"


Workload = Annotated[ObjectStoreWorkload | PostgresWorkload, Field(discriminator="kind")]


class _Document(BaseModel):
    model_config = ConfigDict(regex_engine="python-re")
    workload: Workload


@dataclass(frozen=True)
class LoadedManifest:
    """A manifest file and what came of it: a workload, or the reason it was refused."""

    path: Path
    workload: ObjectStoreWorkload | PostgresWorkload | None
    error: ManifestError | None


def _format_location(loc: tuple[Any, ...]) -> str:
    # Drop the wrapper key and pydantic's union tag so the path reads like the YAML.
    parts = [str(p) for p in loc[1:] if p not in ("object_store", "postgres")]
    dotted = ""
    for part in parts:
        dotted += f"[{part}]" if part.isdigit() else (f".{part}" if dotted else part)
    return dotted or "(top level)"


def _describe(error: dict[str, Any]) -> str:
    field = _format_location(tuple(error["loc"]))
    kind = error["type"]
    message = error["msg"].removeprefix("Value error, ")
    if kind == "missing":
        return f"field '{field}': required field is missing{_MISSING_HINTS.get(field, '')}"
    if kind == "extra_forbidden":
        return f"field '{field}': unknown field (check its spelling in docs/workloads.md)"
    if kind == "union_tag_invalid":
        return f"field 'kind': expected 'object_store' or 'postgres', got {error['input'].get('kind')!r}"
    if kind == "union_tag_not_found":
        return "field 'kind': required field is missing (expected 'object_store' or 'postgres')"
    if kind == "string_pattern_mismatch":
        expected = _PATTERN_HINTS.get(error["ctx"]["pattern"], f"a value matching {error['ctx']['pattern']}")
        return f"field '{field}': expected {expected}, got {error['input']!r}"
    if kind == "literal_error":
        return f"field '{field}': expected {error['ctx']['expected']}, got {error['input']!r}"
    return f"field '{field}': {message} (got {error['input']!r})"


_MISSING_HINTS = {
    "evidence": (
        "; every workload names its own evidence bucket (Object Lock), never the data bucket: add "
        "'evidence: {conn_id: ..., bucket: ..., region: fr-par, create_if_missing: true}' "
        "(docs/workloads.md#evidence)"
    ),
}

_PATTERN_HINTS = {
    WORKLOAD_ID_PATTERN: "a workload id of lowercase letters, digits and '_' (2-63 chars, starting with a letter)",
    CONN_ID_PATTERN: "an Airflow connection id (letters, digits, '_', '-', '.')",
    AZURE_CONTAINER_PATTERN: "an Azure container name (3-63 lowercase letters, digits, single '-')",
    S3_BUCKET_PATTERN: "an S3 bucket name (3-63 lowercase letters, digits, '.', '-')",
    PG_IDENTIFIER_PATTERN: "a PostgreSQL identifier",
    GX_SUITE_PATTERN: "a suite name of lowercase letters, digits and '_'",
    PYTHON_CALLABLE_PATTERN: "a callable path 'package.module:function'",
}


def parse_manifest(path: Path, text: str) -> ObjectStoreWorkload | PostgresWorkload:
    """Validate one manifest's text; raise ManifestError naming ``path`` and the fields."""
    try:
        data = yaml.load(text, Loader=_SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ManifestError(str(path), [f"not valid YAML{where}: {problem}"]) from None
    if not isinstance(data, dict):
        raise ManifestError(str(path), [f"expected a mapping of fields at the top level, got {type(data).__name__}"])
    try:
        return _Document.model_validate({"workload": data}).workload
    except ValidationError as exc:
        raise ManifestError(str(path), [_describe(dict(e)) for e in exc.errors()]) from None


try:  # libyaml's loader is ~10x faster; parse time matters with hundreds of manifests.
    _BaseLoader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - libyaml missing
    _BaseLoader = yaml.SafeLoader


class _SafeLoader(_BaseLoader):
    """A safe loader that refuses duplicate keys: YAML would silently keep the last one."""


def _mapping_without_duplicates(loader: Any, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key '{key}' (first at line {seen[key].start_mark.line + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node
    return dict(loader.construct_pairs(node, deep=True))


_SafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def load_manifests(directory: Path) -> list[LoadedManifest]:
    """Load every ``*.yaml``/``*.yml`` manifest in ``directory``, sorted by file name.

    A bad manifest never hides the good ones: it comes back with its error. Two
    files declaring the same id are both refused, since neither can be trusted to
    be the one the operator meant.
    """
    files = sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    loaded: list[LoadedManifest] = []
    for path in files:
        try:
            workload = parse_manifest(path, path.read_text(encoding="utf-8"))
            loaded.append(LoadedManifest(path, workload, None))
        except ManifestError as exc:
            loaded.append(LoadedManifest(path, None, exc))
        except (OSError, UnicodeDecodeError) as exc:
            loaded.append(LoadedManifest(path, None, ManifestError(str(path), [f"cannot read file: {exc}"])))

    by_id: dict[str, list[Path]] = {}
    for item in loaded:
        if item.workload is not None:
            by_id.setdefault(item.workload.id, []).append(item.path)
    duplicated = {wid: paths for wid, paths in by_id.items() if len(paths) > 1}
    if not duplicated:
        return loaded
    result = []
    for item in loaded:
        if item.workload is not None and item.workload.id in duplicated:
            others = [str(p) for p in duplicated[item.workload.id] if p != item.path]
            error = ManifestError(
                str(item.path),
                [
                    f"field 'id': workload id '{item.workload.id}' is also declared in {', '.join(others)}; ids must be unique"
                ],
            )
            result.append(LoadedManifest(item.path, None, error))
        else:
            result.append(item)
    return result

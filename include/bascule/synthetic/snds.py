"""Synthetic SNDS-like health data, for tests, demos and benchmarks.

Everything this module produces is invented by a seeded pseudo-random generator:
it is never real data, never derived from real data, and must never be mixed with
it. It exists because a migration of national health data cannot be rehearsed on
the real thing, yet its validation suites (referential integrity, code formats,
date coherence, checksums) need data with the right *shape* to check. So the
tables mimic the French national health data system (SNDS):

* ``patients/patients.csv``: a pseudonymous patient registry (sex coded 1/2,
  birth year, department of residence, as in SNDS referentials);
* ``stays/year=YYYY/month=MM/stays.csv``: PMSI-like hospital stays with an
  ICD-10 main diagnosis;
* ``dispensations/year=YYYY/month=MM/part-NNNN.csv``: DCIR-like pharmacy
  dispensations with an ATC code and a CIP13 pack code.

Output is deterministic: the same :class:`DatasetSpec` (seed included) always
yields byte-identical objects, each object being drawn from its own generator
seeded by ``(seed, table, month, part)``, so objects can be produced one at a
time (:func:`generate` streams) and any one of them regenerated alone.

Standard library only; no Airflow import. The Azure SDK is imported lazily by
:func:`upload_to_azure`, the one function that needs it.
"""

from __future__ import annotations

import calendar
import csv
import dataclasses
import hashlib
import io
import random
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

DATASET_NAME = "snds-synthetic"
CONTENT_TYPE = "text/csv; charset=utf-8"

PATIENTS_KEY = "patients/patients.csv"
PATIENT_COLUMNS = ("patient_id", "sex", "birth_year", "department")
STAY_COLUMNS = (
    "stay_id",
    "patient_id",
    "admission_date",
    "discharge_date",
    "main_diagnosis",
    "length_of_stay_days",
)
DISPENSATION_COLUMNS = ("dispensation_id", "patient_id", "dispensation_date", "atc_code", "cip13", "quantity")

# Formats the validation suites check; kept here so tests and checks share them.
PATIENT_ID_PATTERN = r"^[0-9a-f]{16}$"
ICD10_PATTERN = r"^[A-Z][0-9]{2}(\.[0-9A-Z]{1,2})?$"
ATC5_PATTERN = r"^[A-Z][0-9]{2}[A-Z]{2}[0-9]{2}$"
CIP13_PATTERN = r"^[0-9]{13}$"
DEPARTMENT_PATTERN = r"^(0[1-9]|[1-8][0-9]|9[0-5]|2A|2B|97[1-46])$"

BIRTH_YEAR_MIN = 1920
BIRTH_YEAR_MAX = 2024
QUANTITY_MIN = 1
QUANTITY_MAX = 10
MAX_PARTS_PER_MONTH = 9999  # part-NNNN

# Metropolitan departments (Corsica as 2A/2B, no "20") and the five overseas ones.
DEPARTMENTS: tuple[str, ...] = (
    *(f"{n:02d}" for n in range(1, 96) if n != 20),
    "2A",
    "2B",
    "971",
    "972",
    "973",
    "974",
    "976",
)

# Frequent main diagnoses (ICD-10), weighted roughly like a general hospital mix.
ICD10_CODES: tuple[tuple[str, int], ...] = (
    ("I21.9", 4),  # acute myocardial infarction
    ("I50.9", 5),  # heart failure
    ("I63.9", 4),  # cerebral infarction
    ("I10", 3),  # essential hypertension
    ("E11.9", 4),  # type 2 diabetes
    ("J18.9", 5),  # pneumonia
    ("J44.1", 3),  # COPD with exacerbation
    ("C50.9", 3),  # breast cancer
    ("C34.9", 2),  # lung cancer
    ("C18.9", 2),  # colon cancer
    ("F32.9", 2),  # depressive episode
    ("F10.2", 2),  # alcohol dependence
    ("K80.2", 3),  # gallstones
    ("K35.8", 2),  # acute appendicitis
    ("N39.0", 3),  # urinary tract infection
    ("S72.0", 3),  # fracture of femoral neck
    ("M17.1", 2),  # knee osteoarthritis
    ("O80", 4),  # single spontaneous delivery
    ("Z51.1", 6),  # chemotherapy session
    ("R07.4", 2),  # chest pain
    ("A09", 2),  # gastroenteritis
    ("G40.9", 1),  # epilepsy
    ("H25.9", 3),  # senile cataract
    ("U07.1", 1),  # COVID-19
)

# Frequently dispensed substances (ATC level 5).
ATC_CODES: tuple[tuple[str, int], ...] = (
    ("N02BE01", 12),  # paracetamol
    ("C10AA05", 5),  # atorvastatin
    ("C10AA01", 3),  # simvastatin
    ("A10BA02", 5),  # metformin
    ("A02BC01", 4),  # omeprazole
    ("A02BC05", 4),  # esomeprazole
    ("C09AA05", 3),  # ramipril
    ("C07AB07", 3),  # bisoprolol
    ("C08CA01", 3),  # amlodipine
    ("B01AC06", 4),  # acetylsalicylic acid
    ("B01AF01", 2),  # rivaroxaban
    ("J01CA04", 5),  # amoxicillin
    ("J01CR02", 3),  # amoxicillin + clavulanic acid
    ("M01AE01", 4),  # ibuprofen
    ("N02AX02", 2),  # tramadol
    ("N06AB10", 2),  # escitalopram
    ("N05BA12", 2),  # alprazolam
    ("R03AC02", 2),  # salbutamol
    ("R06AE07", 2),  # cetirizine
    ("H03AA01", 3),  # levothyroxine
    ("A11CC05", 3),  # colecalciferol
    ("L04AX03", 1),  # methotrexate
)

_CIP13_PER_ATC = 3


@dataclass(frozen=True)
class DatasetSpec:
    """How much synthetic data to produce, and from which seed.

    ``months`` lists the ``(year, month)`` partitions, in output order; a list is
    accepted and stored as a tuple. Build a contiguous range with
    :func:`month_range`. Use :func:`dataclasses.replace` to derive variants.
    """

    patients: int
    months: tuple[tuple[int, int], ...]
    stays_per_month: int
    dispensation_files_per_month: int
    dispensations_per_file: int
    seed: int = 0

    def __post_init__(self) -> None:
        months = tuple((int(y), int(m)) for y, m in self.months)
        object.__setattr__(self, "months", months)
        if self.patients < 1:
            raise ValueError(f"patients must be >= 1, got {self.patients}")
        if not months:
            raise ValueError("months must list at least one (year, month)")
        if len(set(months)) != len(months):
            raise ValueError(f"months must not repeat: {months}")
        for year, month in months:
            if not 1 <= month <= 12 or not 1900 <= year <= 9999:
                raise ValueError(f"invalid (year, month): ({year}, {month})")
        for name in ("stays_per_month", "dispensation_files_per_month", "dispensations_per_file"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.dispensation_files_per_month > MAX_PARTS_PER_MONTH:
            raise ValueError(f"dispensation_files_per_month must be <= {MAX_PARTS_PER_MONTH}")

    @property
    def object_count(self) -> int:
        """Objects :func:`generate` yields: the registry, then per month stays + parts."""
        return 1 + len(self.months) * (1 + self.dispensation_files_per_month)

    @property
    def row_count(self) -> int:
        """Data rows (headers excluded) across all objects."""
        per_month = self.stays_per_month + self.dispensation_files_per_month * self.dispensations_per_file
        return self.patients + len(self.months) * per_month


@dataclass(frozen=True)
class SyntheticObject:
    """One object to store: key, bytes, and the properties to store with it."""

    key: str
    body: bytes
    content_type: str = CONTENT_TYPE
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def md5(self) -> bytes:
        """MD5 digest of the body (what Azure calls Content-MD5)."""
        return hashlib.md5(self.body, usedforsecurity=False).digest()


@dataclass(frozen=True)
class UploadSummary:
    """What :func:`upload_to_azure` stored."""

    count: int
    bytes: int


def month_range(start: tuple[int, int], end: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    """Every ``(year, month)`` from ``start`` to ``end`` inclusive."""
    (year, month), last = start, end
    if (year, month) > last:
        raise ValueError(f"start {start} is after end {end}")
    out: list[tuple[int, int]] = []
    while (year, month) <= last:
        out.append((year, month))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return tuple(out)


# ~25 objects, a few tens of KB: fast enough for every unit test.
SMALL = DatasetSpec(
    patients=40,
    months=month_range((2024, 1), (2024, 6)),
    stays_per_month=15,
    dispensation_files_per_month=3,
    dispensations_per_file=20,
    seed=20240101,
)

# ~61 objects, ~2 MB over a year: for demos and DAG runs.
DEMO = DatasetSpec(
    patients=2000,
    months=month_range((2024, 1), (2024, 12)),
    stays_per_month=300,
    dispensation_files_per_month=4,
    dispensations_per_file=500,
    seed=20240101,
)


def scaled(factor: float, base: DatasetSpec = DEMO) -> DatasetSpec:
    """``base`` with patients, stays and dispensation files multiplied by ``factor``.

    Rows per dispensation file stay as in ``base``, so the object count grows with
    the factor while object sizes keep their shape (for object-rate benchmarks);
    change ``dispensations_per_file`` with :func:`dataclasses.replace` to benchmark
    throughput on bigger objects instead. Each count is at least 1.
    """
    if factor <= 0:
        raise ValueError(f"factor must be > 0, got {factor}")

    def scale(n: int) -> int:
        return max(1, round(n * factor))

    return dataclasses.replace(
        base,
        patients=scale(base.patients),
        stays_per_month=scale(base.stays_per_month),
        dispensation_files_per_month=min(MAX_PARTS_PER_MONTH, scale(base.dispensation_files_per_month)),
    )


def stays_key(year: int, month: int) -> str:
    return f"stays/year={year:04d}/month={month:02d}/stays.csv"


def dispensations_key(year: int, month: int, part: int) -> str:
    return f"dispensations/year={year:04d}/month={month:02d}/part-{part:04d}.csv"


def expected_keys(spec: DatasetSpec) -> list[str]:
    """The keys :func:`generate` yields for ``spec``, in the same order."""
    keys = [PATIENTS_KEY]
    for year, month in spec.months:
        keys.append(stays_key(year, month))
        keys.extend(dispensations_key(year, month, p) for p in range(spec.dispensation_files_per_month))
    return keys


def generate(spec: DatasetSpec) -> Iterator[SyntheticObject]:
    """Yield the dataset's objects one at a time, registry first.

    Only the patient registry's ids and birth years are held across objects (for
    referential integrity); each other object is built, yielded and forgotten.
    """
    patients = _patients(spec)
    yield _object(spec, PATIENTS_KEY, "patients", PATIENT_COLUMNS, patients)

    by_year: dict[int, list[str]] = {}

    def eligible(year: int) -> list[str]:
        # Nobody is hospitalised or dispensed drugs before being born.
        if year not in by_year:
            ids = [pid for pid, _sex, birth, _dep in patients if birth <= year]
            by_year[year] = ids or [row[0] for row in patients]
        return by_year[year]

    for year, month in spec.months:
        ids = eligible(year)
        stays = _stays(spec, year, month, ids)
        yield _object(spec, stays_key(year, month), "stays", STAY_COLUMNS, stays, year, month)
        for part in range(spec.dispensation_files_per_month):
            rows = _dispensations(spec, year, month, part, ids)
            key = dispensations_key(year, month, part)
            yield _object(spec, key, "dispensations", DISPENSATION_COLUMNS, rows, year, month)


def upload_to_azure(
    container_client: ContainerClient,
    objects: Iterable[SyntheticObject],
    *,
    max_workers: int = 8,
) -> UploadSummary:
    """Upload ``objects`` to the container, creating it if missing.

    Each blob is written single-shot with ``overwrite=True``, its content type,
    Content-MD5 (checked by the service on receipt) and metadata. ``objects`` is
    consumed lazily with at most ``2 * max_workers`` bodies in flight.
    """
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob import ContentSettings

    if max_workers < 1:
        raise ValueError(f"max_workers must be >= 1, got {max_workers}")
    try:
        container_client.create_container()
    except ResourceExistsError:
        pass

    def upload(obj: SyntheticObject) -> int:
        container_client.upload_blob(
            name=obj.key,
            data=obj.body,
            overwrite=True,
            length=len(obj.body),
            content_settings=ContentSettings(content_type=obj.content_type, content_md5=bytearray(obj.md5)),
            metadata=dict(obj.metadata),
        )
        return len(obj.body)

    count = total = 0
    pending: set[Future[int]] = set()

    def collect(done: set[Future[int]]) -> None:
        nonlocal count, total
        for future in done:
            total += future.result()  # re-raises the upload's error
            count += 1

    with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="synthetic-upload") as pool:
        try:
            for obj in objects:
                if len(pending) >= 2 * max_workers:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    collect(done)
                pending.add(pool.submit(upload, obj))
            done, pending = wait(pending)
            collect(done)
        finally:
            for future in pending:
                future.cancel()
    return UploadSummary(count=count, bytes=total)


# --- internals ---------------------------------------------------------------

Row = tuple[str | int, ...]


def _rng(spec: DatasetSpec, *parts: object) -> random.Random:
    # A str seed is hashed with SHA-512 by random.seed: stable across runs and
    # interpreters (unlike hash()), and independent per object.
    return random.Random(":".join(str(p) for p in (DATASET_NAME, spec.seed, *parts)))


def _patients(spec: DatasetSpec) -> list[tuple[str, int, int, str]]:
    rng = _rng(spec, "patients")
    seen: set[str] = set()
    rows: list[tuple[str, int, int, str]] = []
    while len(rows) < spec.patients:
        pid = f"{rng.getrandbits(64):016x}"
        if pid in seen:
            continue
        seen.add(pid)
        sex = 1 if rng.random() < 0.485 else 2
        # Skewed towards older patients, as hospital and pharmacy users are.
        birth = min(BIRTH_YEAR_MAX, int(rng.triangular(BIRTH_YEAR_MIN, BIRTH_YEAR_MAX + 1, 1955)))
        rows.append((pid, sex, birth, rng.choice(DEPARTMENTS)))
    return rows


def _month_days(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


def _stays(spec: DatasetSpec, year: int, month: int, patient_ids: Sequence[str]) -> list[Row]:
    rng = _rng(spec, "stays", year, month)
    codes = [c for c, _ in ICD10_CODES]
    weights = [w for _, w in ICD10_CODES]
    days = _month_days(year, month)
    rows: list[Row] = []
    for n in range(spec.stays_per_month):
        admission = date(year, month, rng.randint(1, days))
        # About a third ambulatory (same-day) stays, then a long-tailed length.
        los = 0 if rng.random() < 0.35 else min(120, 1 + int(rng.expovariate(1 / 5)))
        discharge = admission + timedelta(days=los)
        rows.append(
            (
                f"S{year:04d}{month:02d}{n:07d}",
                rng.choice(patient_ids),
                admission.isoformat(),
                discharge.isoformat(),
                rng.choices(codes, weights)[0],
                los,
            )
        )
    return rows


def _dispensations(spec: DatasetSpec, year: int, month: int, part: int, patient_ids: Sequence[str]) -> list[Row]:
    rng = _rng(spec, "dispensations", year, month, part)
    codes = [c for c, _ in ATC_CODES]
    weights = [w for _, w in ATC_CODES]
    days = _month_days(year, month)
    rows: list[Row] = []
    for n in range(spec.dispensations_per_file):
        atc = rng.choices(codes, weights)[0]
        rows.append(
            (
                f"D{year:04d}{month:02d}{part:04d}{n:07d}",
                rng.choice(patient_ids),
                date(year, month, rng.randint(1, days)).isoformat(),
                atc,
                rng.choice(CIP13_BY_ATC[atc]),
                min(QUANTITY_MAX, max(QUANTITY_MIN, int(rng.expovariate(1 / 1.5)) + 1)),
            )
        )
    return rows


def _object(
    spec: DatasetSpec,
    key: str,
    table: str,
    header: Sequence[str],
    rows: Iterable[Row],
    year: int | None = None,
    month: int | None = None,
) -> SyntheticObject:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    count = 0
    for row in rows:
        writer.writerow(row)
        count += 1
    metadata = {
        "dataset": DATASET_NAME,
        "table": table,
        "synthetic": "true",
        "seed": str(spec.seed),
        "rows": str(count),
    }
    if year is not None and month is not None:
        metadata["partition"] = f"{year:04d}-{month:02d}"
    return SyntheticObject(key=key, body=buf.getvalue().encode("utf-8"), metadata=metadata)


def cip13_check_digit(first12: str) -> str:
    """EAN-13 check digit (CIP13 codes are EAN-13 numbers)."""
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(first12))
    return str((10 - total % 10) % 10)


def _cip13_catalogue() -> dict[str, tuple[str, ...]]:
    # A fixed, seed-independent catalogue: a few packs per substance, each a
    # "34009" French-prefix EAN-13 with a valid check digit.
    out: dict[str, tuple[str, ...]] = {}
    for atc, _ in ATC_CODES:
        rng = random.Random(f"{DATASET_NAME}:cip13:{atc}")
        packs = []
        for _ in range(_CIP13_PER_ATC):
            first12 = "34009" + f"{rng.randrange(10**7):07d}"
            packs.append(first12 + cip13_check_digit(first12))
        out[atc] = tuple(packs)
    return out


# The packs of each substance; the registry database draws from the same catalogue.
CIP13_BY_ATC = _cip13_catalogue()

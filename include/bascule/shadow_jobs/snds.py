"""Example shadow jobs over the synthetic SNDS-like dataset (:mod:`bascule.synthetic.snds`).

Each job mirrors an aggregate the dataset's users compute, reads CSVs with the
standard library only, and lists objects through the reader, so an object missing on
the target shows up as a different result rather than being skipped unnoticed.
Keys are sorted before reading: the result must not depend on the store's listing order.

``extract_with_run_timestamp`` is deliberately non-deterministic, for demos and tests
of the A/A calibration.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from bascule.synthetic.snds import PATIENTS_KEY
from bascule.validation.object_shadow import DatasetReader

STAYS_PREFIX = "stays/"
DISPENSATIONS_PREFIX = "dispensations/"


def stays_by_icd10_chapter(reader: DatasetReader) -> dict[str, Any]:
    """Stays and mean length of stay per admission month and ICD-10 letter.

    The chapter is the diagnosis' first letter, as such reports usually group it (a few
    WHO chapters share or split a letter, e.g. C/D or H; the letter is what users see).
    """
    groups: dict[tuple[str, str], list[int]] = {}
    for key in _csv_keys(reader, STAYS_PREFIX):
        for row in _csv_rows(reader, key):
            group = groups.setdefault((row["admission_date"][:7], row["main_diagnosis"][:1]), [0, 0])
            group[0] += 1
            group[1] += int(row["length_of_stay_days"])
    return {
        "total_stays": sum(count for count, _ in groups.values()),
        "by_month_chapter": {
            "__key__": ["month", "chapter"],
            "rows": [
                {"month": month, "chapter": chapter, "count": count, "mean_length_of_stay_days": days / count}
                for (month, chapter), (count, days) in sorted(groups.items())
            ],
        },
    }


def dispensations_by_atc_group(reader: DatasetReader) -> dict[str, Any]:
    """Dispensations and total quantity per ATC level-1 (anatomical main) group."""
    count = 0
    quantity: Counter[str] = Counter()
    for key in _csv_keys(reader, DISPENSATIONS_PREFIX):
        for row in _csv_rows(reader, key):
            count += 1
            quantity[row["atc_code"][:1]] += int(row["quantity"])
    return {"dispensations": count, "quantity_by_atc_group": dict(sorted(quantity.items()))}


def patients_profile(reader: DatasetReader) -> dict[str, Any]:
    """Patients by sex and by department of residence."""
    by_sex: Counter[str] = Counter()
    by_department: Counter[str] = Counter()
    for row in _csv_rows(reader, PATIENTS_KEY):
        by_sex[row["sex"]] += 1
        by_department[row["department"]] += 1
    return {
        "patients": sum(by_sex.values()),
        "by_sex": dict(sorted(by_sex.items())),
        "by_department": dict(sorted(by_department.items())),
    }


def extract_with_run_timestamp(reader: DatasetReader) -> dict[str, Any]:
    """Row counts per table, stamped like a real extract: ``generated_at`` and ``run_id``.

    The stamp differs on every run, which is what the A/A calibration must recognise
    as noise; the counts are what must match.
    """
    counts = {
        "patients": sum(1 for _ in _csv_rows(reader, PATIENTS_KEY)),
        "stays": sum(1 for key in _csv_keys(reader, STAYS_PREFIX) for _ in _csv_rows(reader, key)),
        "dispensations": sum(1 for key in _csv_keys(reader, DISPENSATIONS_PREFIX) for _ in _csv_rows(reader, key)),
    }
    return {"rows": counts, "generated_at": datetime.now(UTC).isoformat(), "run_id": uuid.uuid4().hex}


def _csv_keys(reader: DatasetReader, prefix: str) -> list[str]:
    return sorted(key for key in reader.keys(prefix) if key.endswith(".csv"))


def _csv_rows(reader: DatasetReader, key: str) -> Iterator[dict[str, str]]:
    yield from csv.DictReader(io.StringIO(reader.read(key).decode("utf-8"), newline=""))

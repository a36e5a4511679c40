"""The synthetic SNDS-like generator: determinism, shapes, integrity, upload calls."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import re
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest

from bascule.synthetic import snds as synthetic
from bascule.synthetic.snds import (
    DEMO,
    SMALL,
    DatasetSpec,
    SyntheticObject,
    UploadSummary,
    expected_keys,
    generate,
    month_range,
    scaled,
    upload_to_azure,
)

pytestmark = pytest.mark.unit

PARTITION = re.compile(r"/year=(\d{4})/month=(\d{2})/")


@pytest.fixture(scope="module")
def small() -> list[SyntheticObject]:
    return list(generate(SMALL))


def rows(obj: SyntheticObject) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(obj.body.decode("utf-8"))))


def table(objects: list[SyntheticObject], name: str) -> list[SyntheticObject]:
    return [o for o in objects if o.metadata["table"] == name]


def partition(obj: SyntheticObject) -> tuple[int, int]:
    match = PARTITION.search(obj.key)
    assert match, obj.key
    return int(match.group(1)), int(match.group(2))


def test_same_seed_gives_identical_bytes(small: list[SyntheticObject]) -> None:
    again = list(generate(SMALL))
    assert [(o.key, o.body, o.metadata) for o in again] == [(o.key, o.body, o.metadata) for o in small]


def test_other_seed_gives_other_bytes(small: list[SyntheticObject]) -> None:
    other = list(generate(dataclasses.replace(SMALL, seed=SMALL.seed + 1)))
    assert [o.key for o in other] == [o.key for o in small]
    for a, b in zip(small, other, strict=True):
        assert a.body != b.body, a.key


def test_objects_are_independent_of_the_other_months() -> None:
    # Each month is drawn from its own generator: dropping months changes no other object.
    fewer = dataclasses.replace(SMALL, months=SMALL.months[2:4])
    full = {o.key: o.body for o in generate(SMALL)}
    for obj in generate(fewer):
        assert obj.body == full[obj.key], obj.key


def test_generate_streams() -> None:
    it = generate(SMALL)
    assert isinstance(it, Iterator)
    first = next(it)
    assert first.key == "patients/patients.csv"


def test_keys_and_count_match_spec(small: list[SyntheticObject]) -> None:
    keys = [o.key for o in small]
    assert keys == expected_keys(SMALL)
    assert len(keys) == len(set(keys)) == SMALL.object_count
    assert SMALL.object_count == 1 + 6 * (1 + 3)
    assert keys[:3] == [
        "patients/patients.csv",
        "stays/year=2024/month=01/stays.csv",
        "dispensations/year=2024/month=01/part-0000.csv",
    ]
    assert keys[-1] == "dispensations/year=2024/month=06/part-0002.csv"


def test_row_counts_match_spec(small: list[SyntheticObject]) -> None:
    assert len(rows(small[0])) == SMALL.patients
    for obj in table(small, "stays"):
        assert len(rows(obj)) == SMALL.stays_per_month
        assert obj.metadata["rows"] == str(SMALL.stays_per_month)
    for obj in table(small, "dispensations"):
        assert len(rows(obj)) == SMALL.dispensations_per_file
    assert sum(int(o.metadata["rows"]) for o in small) == SMALL.row_count


def test_headers_encoding_and_line_endings(small: list[SyntheticObject]) -> None:
    headers = {
        "patients": ",".join(synthetic.PATIENT_COLUMNS),
        "stays": ",".join(synthetic.STAY_COLUMNS),
        "dispensations": ",".join(synthetic.DISPENSATION_COLUMNS),
    }
    for obj in small:
        text = obj.body.decode("utf-8")
        assert text.split("\n", 1)[0] == headers[obj.metadata["table"]]
        assert "\r" not in text
        assert text.endswith("\n")
        assert obj.content_type == "text/csv; charset=utf-8"
        assert obj.metadata["dataset"] == "snds-synthetic"
        assert obj.metadata["synthetic"] == "true"


def test_patients_shape(small: list[SyntheticObject]) -> None:
    patients = rows(small[0])
    ids = [p["patient_id"] for p in patients]
    assert len(ids) == len(set(ids))
    for p in patients:
        assert re.fullmatch(synthetic.PATIENT_ID_PATTERN, p["patient_id"])
        assert p["sex"] in {"1", "2"}
        assert 1920 <= int(p["birth_year"]) <= 2024
        assert re.fullmatch(synthetic.DEPARTMENT_PATTERN, p["department"]), p["department"]


def test_departments_are_french_codes() -> None:
    assert len(synthetic.DEPARTMENTS) == len(set(synthetic.DEPARTMENTS)) == 101
    for code in ("01", "13", "2A", "2B", "75", "95", "971", "976"):
        assert code in synthetic.DEPARTMENTS
    for code in synthetic.DEPARTMENTS:
        assert re.fullmatch(synthetic.DEPARTMENT_PATTERN, code)
    assert "20" not in synthetic.DEPARTMENTS


def test_referential_integrity(small: list[SyntheticObject]) -> None:
    births = {p["patient_id"]: int(p["birth_year"]) for p in rows(small[0])}
    referenced = 0
    for obj in small[1:]:
        year, _ = partition(obj)
        for row in rows(obj):
            assert row["patient_id"] in births, (obj.key, row)
            assert births[row["patient_id"]] <= year  # nobody is treated before birth
            referenced += 1
    assert referenced == SMALL.row_count - SMALL.patients


def test_stays_codes_and_dates(small: list[SyntheticObject]) -> None:
    stay_ids: set[str] = set()
    for obj in table(small, "stays"):
        year, month = partition(obj)
        for row in rows(obj):
            assert re.fullmatch(r"^[A-Z][0-9]{2}(\.[0-9A-Z]{1,2})?$", row["main_diagnosis"]), row
            admission = date.fromisoformat(row["admission_date"])
            discharge = date.fromisoformat(row["discharge_date"])
            assert (admission.year, admission.month) == (year, month)
            assert discharge >= admission
            assert int(row["length_of_stay_days"]) == (discharge - admission).days
            stay_ids.add(row["stay_id"])
    assert len(stay_ids) == len(SMALL.months) * SMALL.stays_per_month


def test_dispensations_codes_and_dates(small: list[SyntheticObject]) -> None:
    ids: set[str] = set()
    for obj in table(small, "dispensations"):
        year, month = partition(obj)
        for row in rows(obj):
            assert re.fullmatch(r"^[A-Z][0-9]{2}[A-Z]{2}[0-9]{2}$", row["atc_code"]), row
            assert re.fullmatch(r"^[0-9]{13}$", row["cip13"]), row
            assert row["cip13"][-1] == synthetic.cip13_check_digit(row["cip13"][:12])
            assert 1 <= int(row["quantity"]) <= 10
            day = date.fromisoformat(row["dispensation_date"])
            assert (day.year, day.month) == (year, month)
            ids.add(row["dispensation_id"])
    assert len(ids) == len(SMALL.months) * SMALL.dispensation_files_per_month * SMALL.dispensations_per_file


def test_code_catalogues_match_formats() -> None:
    for code, _ in synthetic.ICD10_CODES:
        assert re.fullmatch(synthetic.ICD10_PATTERN, code), code
    for code, _ in synthetic.ATC_CODES:
        assert re.fullmatch(synthetic.ATC5_PATTERN, code), code


def test_cip13_check_digit_known_value() -> None:
    # EAN-13 of a real-world barcode: 400638133393 -> 1.
    assert synthetic.cip13_check_digit("400638133393") == "1"


def test_preset_sizes() -> None:
    small_bytes = sum(len(o.body) for o in generate(SMALL))
    assert 10 <= SMALL.object_count <= 60
    assert small_bytes < 1_000_000
    assert len(DEMO.months) == 12
    demo = list(generate(DEMO))
    assert len(demo) == DEMO.object_count
    assert 200_000 <= sum(len(o.body) for o in demo) <= 5_000_000


def test_md5_property() -> None:
    obj = next(generate(SMALL))
    assert obj.md5 == hashlib.md5(obj.body).digest()


def test_scaled() -> None:
    double = scaled(2)
    assert double.patients == 2 * DEMO.patients
    assert double.stays_per_month == 2 * DEMO.stays_per_month
    assert double.dispensation_files_per_month == 2 * DEMO.dispensation_files_per_month
    assert double.dispensations_per_file == DEMO.dispensations_per_file
    assert double.months == DEMO.months and double.seed == DEMO.seed
    tiny = scaled(0.001, base=SMALL)
    assert tiny.patients == tiny.stays_per_month == tiny.dispensation_files_per_month == 1
    assert len(list(generate(tiny))) == tiny.object_count
    with pytest.raises(ValueError):
        scaled(0)


def test_month_range() -> None:
    assert month_range((2023, 11), (2024, 2)) == ((2023, 11), (2023, 12), (2024, 1), (2024, 2))
    assert month_range((2024, 5), (2024, 5)) == ((2024, 5),)
    with pytest.raises(ValueError):
        month_range((2024, 2), (2024, 1))


def test_spec_accepts_list_months_and_is_hashable() -> None:
    spec = DatasetSpec(
        patients=3,
        months=[(2024, 2)],  # type: ignore[arg-type]
        stays_per_month=2,
        dispensation_files_per_month=0,
        dispensations_per_file=5,
    )
    assert spec.months == ((2024, 2),)
    hash(spec)
    assert [o.key for o in generate(spec)] == ["patients/patients.csv", "stays/year=2024/month=02/stays.csv"]


@pytest.mark.parametrize(
    "change",
    [
        {"patients": 0},
        {"months": ()},
        {"months": ((2024, 1), (2024, 1))},
        {"months": ((2024, 13),)},
        {"stays_per_month": -1},
        {"dispensations_per_file": -1},
        {"dispensation_files_per_month": 10_000},
    ],
)
def test_spec_validation(change: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(SMALL, **change)


def test_leap_day_and_month_ends() -> None:
    spec = DatasetSpec(
        patients=5,
        months=((2024, 2), (2023, 2)),
        stays_per_month=400,
        dispensation_files_per_month=1,
        dispensations_per_file=400,
        seed=7,
    )
    seen: dict[tuple[int, int], set[int]] = {}
    for obj in list(generate(spec))[1:]:
        year, month = partition(obj)
        for row in rows(obj):
            day = date.fromisoformat(row.get("admission_date") or row["dispensation_date"])
            assert (day.year, day.month) == (year, month)
            seen.setdefault((year, month), set()).add(day.day)
    assert max(seen[(2024, 2)]) == 29
    assert max(seen[(2023, 2)]) == 28


class FakeContainer:
    """Records calls the way ContainerClient would receive them."""

    def __init__(self, exists: bool) -> None:
        self.exists = exists
        self.created = 0
        self.uploads: dict[str, dict[str, Any]] = {}

    def create_container(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        if self.exists:
            raise ResourceExistsError("ContainerAlreadyExists")
        self.exists = True
        self.created += 1

    def upload_blob(self, name: str, data: bytes, **kwargs: Any) -> None:
        assert name not in self.uploads
        self.uploads[name] = {"data": data, **kwargs}


@pytest.mark.parametrize("exists", [False, True])
def test_upload_to_azure_calls(small: list[SyntheticObject], exists: bool) -> None:
    fake = FakeContainer(exists)
    summary = upload_to_azure(fake, iter(small))  # type: ignore[arg-type]
    assert summary == UploadSummary(count=len(small), bytes=sum(len(o.body) for o in small))
    assert fake.created == (0 if exists else 1)
    assert set(fake.uploads) == {o.key for o in small}
    for obj in small:
        call = fake.uploads[obj.key]
        assert call["data"] == obj.body
        assert call["overwrite"] is True
        assert call["metadata"] == obj.metadata
        settings = call["content_settings"]
        assert settings.content_type == "text/csv; charset=utf-8"
        assert bytes(settings.content_md5) == hashlib.md5(obj.body).digest()


def test_upload_to_azure_propagates_errors(small: list[SyntheticObject]) -> None:
    class Failing(FakeContainer):
        def upload_blob(self, name: str, data: bytes, **kwargs: Any) -> None:
            if name.endswith("part-0001.csv"):
                raise RuntimeError(f"boom {name}")
            super().upload_blob(name, data, **kwargs)

    with pytest.raises(RuntimeError, match="boom"):
        upload_to_azure(Failing(exists=True), small, max_workers=2)  # type: ignore[arg-type]

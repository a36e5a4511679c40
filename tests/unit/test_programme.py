"""The programme rows the control room lists: facts of a valid manifest, the loader's error for an invalid one."""

from __future__ import annotations

from pathlib import Path

import pendulum
import pytest

from bascule.programme import manifest_summary
from bascule.workload import load_manifests

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def _rows(now: pendulum.DateTime, tmp_path: Path) -> dict[str, dict]:
    text = (ROOT / "include" / "workloads" / "snds_extracts.yaml").read_text()
    night = text.replace("days: [monday, tuesday, wednesday, thursday, friday, saturday, sunday]", "days: [sunday]")
    night = night.replace('start: "00:00"', 'start: "02:00"').replace('end: "23:59"', 'end: "05:00"')
    (tmp_path / "snds.yaml").write_text(night)
    (tmp_path / "broken.yaml").write_text("id: broken\nkind: object_store\n")
    return {m.path.name: manifest_summary(m, now) for m in load_manifests(tmp_path)}


def test_a_valid_manifest_names_source_target_and_the_next_window_in_its_zone(tmp_path: Path) -> None:
    friday = pendulum.datetime(2026, 12, 4, 19, 0, tz="UTC")
    row = _rows(friday, tmp_path)["snds.yaml"]
    assert (row["dag_id"], row["kind"], row["owner"]) == ("migrate_snds_extracts", "object_store", "data-platform")
    assert row["source"] == "Azure Blob snds-extracts/" and row["target"] == "Scaleway S3 hdh-snds-extracts/ (fr-par)"
    window = row["window"]
    assert not window["open_now"]
    assert window["next_opening_utc"] == "2026-12-06T01:00:00+00:00"  # Sunday 02:00 in Paris (CET)
    assert window["next_opening_local"] == "Sun 2026-12-06 02:00 CET"


def test_an_open_window_says_so_and_an_invalid_manifest_keeps_its_error(tmp_path: Path) -> None:
    sunday_night = pendulum.datetime(2026, 12, 6, 2, 30, tz="UTC")
    rows = _rows(sunday_night, tmp_path)
    assert rows["snds.yaml"]["window"]["open_now"]
    broken = rows["broken.yaml"]
    assert not broken["valid"] and "field 'owner': required field is missing" in broken["error"]

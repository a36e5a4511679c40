"""Part planning within Scaleway's limits (1,000 parts, 5 MiB..5 GB each, 5 TB per object)."""

from __future__ import annotations

import random

import pytest

from bascule.objects.parts import (
    DEFAULT_MULTIPART_THRESHOLD,
    DEFAULT_PART_SIZE,
    MAX_OBJECT_SIZE,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    MiB,
    ObjectTooLarge,
    PartPlan,
    plan_parts,
)

pytestmark = pytest.mark.unit

GiB = 1024 * MiB
TiB = 1024 * GiB


def assert_within_limits(plan: PartPlan, size: int) -> None:
    parts = list(plan.parts())
    assert len(parts) == plan.part_count
    assert sum(length for _, _, length in parts) == size
    assert [number for number, _, _ in parts] == list(range(1, plan.part_count + 1))
    # Contiguous, in order, no gap and no overlap.
    offset = 0
    for _, start, length in parts:
        assert start == offset
        offset += length
    if not plan.multipart:
        assert plan.part_count == 1 and plan.part_size == size
        return
    assert 1 <= plan.part_count <= MAX_PARTS
    assert MIN_PART_SIZE <= plan.part_size <= MAX_PART_SIZE
    *body, (_, _, last) = parts
    assert all(length == plan.part_size for _, _, length in body)
    assert 0 < last <= plan.part_size  # the last part may be smaller, never empty


@pytest.mark.parametrize(
    "size",
    [
        0,
        1,
        DEFAULT_MULTIPART_THRESHOLD - 1,
        DEFAULT_MULTIPART_THRESHOLD,
        DEFAULT_MULTIPART_THRESHOLD + 1,
        5 * MiB * 1000,
        50 * GiB,
        TiB,
        MAX_OBJECT_SIZE,
    ],
)
def test_listed_sizes_fit_the_limits(size: int) -> None:
    assert_within_limits(plan_parts(size), size)


def test_single_put_below_threshold_multipart_from_it() -> None:
    assert not plan_parts(0).multipart
    assert not plan_parts(1).multipart
    assert not plan_parts(DEFAULT_MULTIPART_THRESHOLD - 1).multipart
    at = plan_parts(DEFAULT_MULTIPART_THRESHOLD)
    assert at.multipart and at.part_size == DEFAULT_PART_SIZE and at.part_count == 16
    above = plan_parts(DEFAULT_MULTIPART_THRESHOLD + 1)
    assert above.multipart and above.part_count == 17


def test_empty_object_is_one_empty_put() -> None:
    plan = plan_parts(0)
    assert plan == PartPlan(size=0, part_size=0, part_count=1, multipart=False)
    assert list(plan.parts()) == [(1, 0, 0)]


def test_exactly_a_thousand_preferred_parts_keeps_the_preferred_size() -> None:
    plan = plan_parts(5 * MiB * 1000, preferred_part_size=5 * MiB)
    assert plan.part_size == 5 * MiB and plan.part_count == 1000
    one_more = plan_parts(5 * MiB * 1000 + 1, preferred_part_size=5 * MiB)
    assert one_more.part_size == 6 * MiB and one_more.part_count <= 1000


def test_large_objects_grow_parts_to_whole_mebibytes() -> None:
    plan = plan_parts(50 * GiB)
    assert plan.part_count <= 1000
    assert plan.part_size % MiB == 0
    assert plan.part_size == 52 * MiB  # ceil(50 GiB / 1000) = 51.2 MiB, rounded up


def test_five_terabytes_is_a_thousand_five_gigabyte_parts() -> None:
    plan = plan_parts(MAX_OBJECT_SIZE)
    assert plan.part_size == MAX_PART_SIZE == 5 * 1000**3
    assert plan.part_count == 1000


def test_above_five_terabytes_is_refused_naming_the_object() -> None:
    with pytest.raises(ObjectTooLarge) as caught:
        plan_parts(MAX_OBJECT_SIZE + 1, key="exports/huge.bin")
    message = str(caught.value)
    assert "exports/huge.bin" in message
    assert f"{MAX_OBJECT_SIZE + 1:,}" in message
    assert caught.value.retryable is False


@pytest.mark.parametrize("preferred", [MIN_PART_SIZE - 1, MAX_PART_SIZE + 1, 0])
def test_part_sizes_outside_scaleway_limits_are_refused(preferred: int) -> None:
    with pytest.raises(ValueError, match="preferred_part_size"):
        plan_parts(10 * MiB, preferred_part_size=preferred)


@pytest.mark.parametrize("threshold", [0, -1, 5 * 1000**3 + 2])
def test_thresholds_outside_single_put_limits_are_refused(threshold: int) -> None:
    with pytest.raises(ValueError, match="multipart_threshold"):
        plan_parts(10 * MiB, multipart_threshold=threshold)


def test_negative_size_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        plan_parts(-1, key="k")


def test_random_sizes_always_fit() -> None:
    rng = random.Random(20261128)
    for _ in range(3000):
        # Log-uniform over 0 B .. 5 TB, plus the edges around every power of two.
        exponent = rng.uniform(0, 42.2)
        size = min(MAX_OBJECT_SIZE, int(2**exponent) + rng.choice([-1, 0, 1]))
        size = max(0, size)
        preferred = rng.choice([MIN_PART_SIZE, DEFAULT_PART_SIZE, 16 * MiB, 64 * MiB, rng.randint(5, 512) * MiB])
        threshold = rng.choice([1, MIN_PART_SIZE, DEFAULT_MULTIPART_THRESHOLD, 5 * 1000**3])
        plan = plan_parts(size, preferred, threshold)
        assert plan.multipart == (size >= threshold)
        assert_within_limits(plan, size)
        if plan.multipart:
            # Never larger parts than needed: the preferred size, or the smallest whole MiB fitting 1,000.
            needed = -(-size // MAX_PARTS)
            assert plan.part_size == min(MAX_PART_SIZE, max(preferred, -(-needed // MiB) * MiB))

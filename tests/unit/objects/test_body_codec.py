"""The sealed part plan: whole frames, and the *stored* sizes within Scaleway's part and object limits."""

from __future__ import annotations

import pytest

from bascule.objects.body_codec import MAX_CLIENT_SIDE_OBJECT, PlainBody, SealedBody
from bascule.objects.parts import MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE, MiB, ObjectTooLarge
from bascule.storage.client_side import FRAME_SIZE, ClientSideKey

pytestmark = pytest.mark.unit

KEK = ClientSideKey(bytes(range(32)), "c")


@pytest.mark.parametrize(
    ("size", "preferred"),
    [(11 * MiB + 7, 5 * MiB), (11 * MiB, 5 * MiB + 12345), (40 * 1000**3, 8 * MiB), (MAX_CLIENT_SIDE_OBJECT, 8 * MiB)],
)
def test_sealed_parts_are_whole_frames_within_scaleway_limits(size: int, preferred: int) -> None:
    body = SealedBody(KEK, size)
    plan = body.plan(size, preferred, 128 * MiB, "k")
    assert plan.multipart and plan.part_count <= MAX_PARTS
    stored = [body.stored_length(offset, length) for _, offset, length in plan.parts()]
    assert all(offset % FRAME_SIZE == 0 for _, offset, _ in plan.parts())
    assert all(MIN_PART_SIZE <= s <= MAX_PART_SIZE for s in stored[:-1]) and stored[-1] <= MAX_PART_SIZE
    assert sum(stored) == body.envelope.stored_size


def test_a_sealed_single_put_stays_within_one_part_and_a_too_large_object_is_refused() -> None:
    size = 5 * MiB + 100  # above a non-aligned preferred size, below the frame-rounded part
    plan = SealedBody(KEK, size).plan(size, 5 * MiB + 50, 128 * MiB, "k")
    assert not plan.multipart and plan.size == size
    with pytest.raises(ObjectTooLarge, match="'huge'"):
        SealedBody(KEK, MAX_CLIENT_SIDE_OBJECT + 1).plan(MAX_CLIENT_SIDE_OBJECT + 1, 8 * MiB, 128 * MiB, "huge")
    plain = PlainBody()
    assert plain.seal(bytearray(b"x"), 0) == bytearray(b"x") and plain.metadata({"a": "b"}, None) == {"a": "b"}

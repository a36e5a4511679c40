from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

import pytest

from bascule.objects.compare import compare, etag_proves, expected_md5
from bascule.storage.base import ObjectInfo

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 28, tzinfo=UTC)


def _md5(data: bytes) -> tuple[str, str]:
    digest = hashlib.md5(data).digest()
    return base64.b64encode(digest).decode(), digest.hex()


def _src(key: str, data: bytes, *, with_md5: bool = True) -> ObjectInfo:
    b64, _ = _md5(data)
    return ObjectInfo(key=key, size=len(data), etag="0x8D", last_modified=NOW, content_md5=b64 if with_md5 else None)


def _tgt(key: str, data: bytes, *, recorded: bytes | None = None, multipart: bool = False) -> ObjectInfo:
    b64, hexdigest = _md5(recorded if recorded is not None else data)
    _, real_hex = _md5(data)
    etag = f'"{real_hex}-3"' if multipart else f'"{real_hex}"'
    return ObjectInfo(key=key, size=len(data), etag=etag, last_modified=NOW, metadata={"md5chksum": b64})


class Readback:
    def __init__(self, store: dict[str, bytes]):
        self.store = store
        self.calls: list[str] = []

    def __call__(self, key: str) -> str:
        self.calls.append(key)
        return _md5(self.store[key])[0]


def test_identical_sides_are_verified_by_etag_without_reading_back() -> None:
    data = {"a.csv": b"1,2\n", "dir/b c+%.csv": b"", "é.csv": b"x" * 100}
    readback = Readback({f"t/{k}": v for k, v in data.items()})
    rows = list(
        compare(
            [_src(f"s/{k}", v) for k, v in data.items()],
            [_tgt(f"t/{k}", v) for k, v in data.items()],
            source_prefix="s/",
            target_prefix="t/",
            readback_md5=readback,
        )
    )
    assert [r.key for r in rows] == list(data)
    assert all(r.in_source and r.in_target and r.verified and r.source_md5 == r.target_md5 for r in rows)
    assert readback.calls == []


def test_multipart_etag_is_proven_by_reading_back() -> None:
    body = b"y" * 1000
    readback = Readback({"big.bin": body})
    (row,) = compare(
        [_src("big.bin", body)],
        [_tgt("big.bin", body, multipart=True)],
        source_prefix="",
        target_prefix="",
        readback_md5=readback,
    )
    assert row.verified and readback.calls == ["big.bin"]


def test_corrupted_bytes_with_copied_metadata_are_caught() -> None:
    good, bad = b"stay_id\n1\n", b"stay_id\n2\n"
    readback = Readback({"stays.csv": bad})
    # The corrupter kept the recorded hash: only the stored bytes changed.
    (row,) = compare(
        [_src("stays.csv", good)],
        [_tgt("stays.csv", bad, recorded=good)],
        source_prefix="",
        target_prefix="",
        readback_md5=readback,
    )
    assert row.source_md5 == row.target_md5
    assert not row.verified
    assert readback.calls == ["stays.csv"]


def test_missing_extra_size_and_hash_mismatches() -> None:
    rows = {
        r.key: r
        for r in compare(
            [_src("missing", b"a"), _src("resized", b"abc"), _src("rehashed", b"abc")],
            [_tgt("extra", b"z"), _tgt("resized", b"ab"), _tgt("rehashed", b"abd")],
            source_prefix="",
            target_prefix="",
            readback_md5=Readback({}),
        )
    }
    assert (rows["missing"].in_source, rows["missing"].in_target, rows["missing"].verified) == (True, False, False)
    assert (rows["extra"].in_source, rows["extra"].in_target) == (False, True)
    assert rows["resized"].source_size == 3 and rows["resized"].target_size == 2 and not rows["resized"].verified
    assert rows["rehashed"].source_md5 != rows["rehashed"].target_md5 and not rows["rehashed"].verified


def test_block_blob_without_content_md5_uses_the_recorded_hash() -> None:
    body = b"committed from blocks"
    source = _src("b.csv", body, with_md5=False)
    target = _tgt("b.csv", body)
    assert expected_md5(source, target) == _md5(body)[0]
    (row,) = compare([source], [target], source_prefix="", target_prefix="", readback_md5=Readback({}))
    assert row.verified


def test_etag_proves_only_equal_md5() -> None:
    b64, hexdigest = _md5(b"abc")
    assert etag_proves(f'"{hexdigest}"', b64)
    assert not etag_proves(f'"{hexdigest}-2"', b64)
    assert not etag_proves('"0x8DCAFE"', b64)
    assert not etag_proves(f'"{hexdigest}"', "not base64!")


def test_delta_finds_new_modified_and_deleted() -> None:
    from bascule.objects.compare import delta

    before = [_src("same", b"a"), _src("modified", b"b"), _src("deleted", b"c")]
    after = [
        _src("same", b"a"),
        ObjectInfo(key="modified", size=1, etag="0x9E", last_modified=NOW),
        _src("new", b"d"),
    ]
    result = delta(before, after)
    assert [o.key for o in result.changed] == ["modified", "new"]
    assert result.deleted == ["deleted"]
    assert delta(after, after).changed == [] and delta(after, after).deleted == []

"""Merge-joins of sorted listings: the join itself, its order checks, deltas and record-based proof."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from bascule.objects.compare import compare, iter_delta
from bascule.objects.merge_join import ListingOrderError, azure_order, merge_join, read_ahead, s3_order, sorted_records
from bascule.objects.transfer_records import TransferRecord
from bascule.storage.base import ObjectInfo

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 28, tzinfo=UTC)


def _info(key: str, etag: str = "0x1", size: int = 1, when: datetime = NOW, md5: str | None = None) -> ObjectInfo:
    return ObjectInfo(key=key, size=size, etag=etag, last_modified=when, content_md5=md5)


def _md5(data: bytes) -> tuple[str, str]:
    digest = hashlib.md5(data).digest()
    return base64.b64encode(digest).decode(), digest.hex()


def test_full_outer_join_pairs_equal_keys_and_keeps_the_rest_in_order() -> None:
    joined = list(merge_join(iter(["a", "c", "d"]), iter(["b", "c", "e"]), left_key=str, right_key=str))
    assert joined == [("a", "a", None), ("b", None, "b"), ("c", "c", "c"), ("d", "d", None), ("e", None, "e")]


@pytest.mark.parametrize(("keys", "fragment"), [(["b", "a"], "listed after 'b'"), (["a", "a"], "listed twice")])
def test_a_listing_out_of_order_stops_the_join_naming_the_key_and_the_runbook(keys: list[str], fragment: str) -> None:
    with pytest.raises(ListingOrderError) as caught:
        list(merge_join(iter(keys), iter([]), left_key=str, right_key=str, left_name="target listing"))
    message = str(caught.value)
    assert "target listing" in message and fragment in message and "docs/runbooks.md#listing-order" in message


def test_azure_and_s3_orders_differ_above_the_basic_plane_as_the_stand_ins_list() -> None:
    # Seen on Azurite 3.35 and moto 5.2 (tests/integration/objects/test_parity_listing.py checks it live).
    keys = ["\uffee", "😀", "é", "Z", "a"]
    assert sorted(keys, key=s3_order) == ["Z", "a", "é", "\uffee", "😀"]
    assert sorted(keys, key=azure_order) == ["Z", "a", "é", "😀", "\uffee"]


def test_external_sort_of_records_matches_sorted_with_several_runs() -> None:
    records = [{"key": f"k{(i * 7919) % 1000:04d}", "n": i} for i in range(1000)]
    out = list(sorted_records(iter(records), lambda r: r["key"], run_size=64))
    assert out == sorted(records, key=lambda r: r["key"])


def test_delta_of_two_streams_finds_new_modified_and_deleted() -> None:
    before = [_info("a"), _info("b"), _info("c"), _info("d"), _info("e")]
    after = [
        _info("a"),
        _info("b", etag="0x2"),  # rewritten
        _info("c", when=NOW + timedelta(seconds=1)),  # touched: only last-modified moved
        _info("c2"),  # new
        _info("e", size=2),  # resized
    ]
    changes = [(c.kind, c.info.key) for c in iter_delta(iter(before), iter(after))]
    assert changes == [("modified", "b"), ("modified", "c"), ("new", "c2"), ("deleted", "d"), ("modified", "e")]


def test_delta_refuses_a_stream_out_of_azure_order() -> None:
    with pytest.raises(ListingOrderError, match="source listing after the freeze"):
        list(iter_delta(iter([_info("a")]), iter([_info("b"), _info("a")])))


def _record(key: str, md5: str, target_etag: str, *, status: str = "copied", source_etag: str = "0x1") -> TransferRecord:
    return TransferRecord(key, key, status, 4, source_etag, md5, False, target_etag, True)  # type: ignore[arg-type]


class Readback:
    def __init__(self, md5: str):
        self.md5, self.calls = md5, []  # type: ignore[var-annotated]

    def __call__(self, key: str) -> str:
        self.calls.append(key)
        return self.md5


def test_a_copied_record_proves_a_multipart_object_whose_etag_has_not_moved_without_a_read() -> None:
    md5, hexdigest = _md5(b"data")
    listed = ObjectInfo("big.bin", 4, f"{hexdigest}-2", NOW)  # a listing: no metadata
    readback = Readback(md5)
    (row,) = compare(
        iter([_info("big.bin", size=4)]), iter([listed]), source_prefix="", target_prefix="",
        readback_md5=readback, records=iter([_record("big.bin", md5, f"{hexdigest}-2")]),
    )  # fmt: skip
    assert row.verified and row.target_md5 == md5 and readback.calls == []


@pytest.mark.parametrize(
    "record_args",
    [
        {"target_etag": "someotheretag-2"},  # rewritten since the copy, metadata kept
        {"status": "skipped"},  # the copier only saw the metadata
        {"source_etag": "0xOLD"},  # a record of an earlier version of the blob
    ],
)
def test_a_record_that_cannot_prove_the_bytes_leads_to_a_read_back(record_args: dict[str, str]) -> None:
    md5, hexdigest = _md5(b"data")
    bad_md5, _ = _md5(b"dat4")
    listed = ObjectInfo("big.bin", 4, f"{hexdigest}-2", NOW)
    fields = {"target_etag": f"{hexdigest}-2", **record_args}
    readback = Readback(bad_md5)
    (row,) = compare(
        iter([_info("big.bin", size=4, md5=md5)]), iter([listed]), source_prefix="", target_prefix="",
        readback_md5=readback, records=iter([_record("big.bin", md5, **fields)]),
    )  # fmt: skip
    assert not row.verified and readback.calls == ["big.bin"]


def test_parity_refuses_a_target_listing_out_of_order() -> None:
    with pytest.raises(ListingOrderError, match="target listing"):
        list(
            compare(
                iter([_info("a"), _info("b")]), iter([_info("b"), _info("a")]), source_prefix="", target_prefix="",
                readback_md5=Readback(""),
            )  # fmt: skip
        )


def test_read_ahead_keeps_order_raises_the_listing_error_and_stops_when_closed() -> None:
    import threading

    assert list(read_ahead(iter(range(10_000)), depth=7)) == list(range(10_000))

    def failing():
        yield "a"
        raise ConnectionError("listing page 2 failed")

    ahead = read_ahead(failing())
    assert next(ahead) == "a"
    with pytest.raises(ConnectionError, match="page 2"):
        next(ahead)

    pulled: list[int] = []

    def endless():
        n = 0
        while True:
            pulled.append(n)
            yield n
            n += 1

    early = read_ahead(endless(), depth=5)
    assert [next(early) for _ in range(3)] == [0, 1, 2]
    early.close()  # a consumer that stops (a parity that raised) must not leave the thread running
    assert not any(t.name == "bascule-read-ahead" and t.is_alive() for t in threading.enumerate())
    assert len(pulled) <= 3 + 5 + 2, "the thread reads at most depth items ahead"

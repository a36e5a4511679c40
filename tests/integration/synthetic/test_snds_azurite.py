"""upload_to_azure against a real Azurite: the session's stand-in (``blob_service`` in conftest)."""

from __future__ import annotations

import hashlib

import pytest

from bascule.synthetic.snds import SMALL, generate, upload_to_azure

pytestmark = pytest.mark.integration


def test_upload_small_dataset(blob_service) -> None:
    container = blob_service.get_container_client("synthetic-small")
    expected = {o.key: o for o in generate(SMALL)}

    summary = upload_to_azure(container, generate(SMALL))
    assert summary.count == len(expected) == SMALL.object_count
    assert summary.bytes == sum(len(o.body) for o in expected.values())

    blobs = {b.name: b for b in container.list_blobs(include=["metadata"])}
    assert set(blobs) == set(expected)
    for key, obj in expected.items():
        blob = blobs[key]
        assert blob.size == len(obj.body)
        assert blob.content_settings.content_md5 is not None
        assert bytes(blob.content_settings.content_md5) == hashlib.md5(obj.body).digest()
        assert blob.content_settings.content_type == "text/csv; charset=utf-8"
        assert blob.metadata == obj.metadata

    first = next(iter(expected.values()))
    assert container.download_blob(first.key).readall() == first.body

    # Idempotent: a second run overwrites in place (existing container, same blobs).
    again = upload_to_azure(container, generate(SMALL), max_workers=1)
    assert again == summary
    assert sum(1 for _ in container.list_blobs()) == len(expected)

"""Every content setting a reader relies on survives the copy (Azurite source, moto target), one test per header.

Each header is checked on a single PUT and on a multipart upload (whose metadata is fixed
at CreateMultipartUpload and rewritten by CopyObject to record the computed MD5: both
must keep every setting).
"""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from azure.storage.blob import BlobServiceClient, ContentSettings

import devstack
from bascule.objects.copy_config import CopyConfig, RetryPolicy
from bascule.objects.copy_engine import copy_object
from bascule.objects.parts import MiB
from bascule.storage.azure_blob import AzureBlobContainer
from bascule.storage.base import MD5_KEY
from bascule.storage.s3 import S3Bucket, decode_metadata

pytestmark = pytest.mark.integration

CONFIG = CopyConfig(preferred_part_size=5 * MiB, multipart_threshold=10 * MiB, chunk_size=MiB, retry=RetryPolicy(2))
SETTINGS = {
    "content_type": "text/csv; charset=utf-8",
    "content_encoding": "gzip",
    "cache_control": "private, max-age=0, no-store",
    "content_language": "fr-FR",
    # HTTP headers are ASCII: a non-ASCII file name travels in RFC 5987 form.
    "content_disposition": "attachment; filename=\"sejours 2024.csv\"; filename*=UTF-8''s%C3%A9jours%202024.csv",
}
METADATA = {"source_system": "snds", "extraction": "2024-03", "Mixed_Case": "Value with  two spaces"}


@pytest.fixture(scope="module")
def copied(standins: devstack.Ports, blob_service: BlobServiceClient) -> Iterator[dict[str, dict[str, Any]]]:
    """One small (single PUT, with Content-MD5) and one large (multipart, from blocks) object, copied once."""
    name = f"content-{uuid.uuid4().hex[:12]}"
    container = blob_service.create_container(name)
    client = boto3.client(
        "s3", endpoint_url=f"http://127.0.0.1:{standins.moto}", region_name="fr-par",
        aws_access_key_id="x", aws_secret_access_key="y",
    )  # fmt: skip
    client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "fr-par"})
    small, large = b"id;libelle\n1;ok\n" * 10, os.urandom(11 * MiB)
    md5 = hashlib.md5(small).digest()
    container.upload_blob(
        "small.csv", small, metadata=METADATA,
        content_settings=ContentSettings(content_md5=bytearray(md5), **SETTINGS),
    )  # fmt: skip
    blob = container.get_blob_client("large.bin")
    ids = []
    for index, start in enumerate(range(0, len(large), 2 * MiB)):
        block_id = base64.b64encode(f"{index:08d}".encode()).decode()
        blob.stage_block(block_id, large[start : start + 2 * MiB])
        ids.append(block_id)
    blob.commit_block_list(ids, metadata=METADATA, content_settings=ContentSettings(**SETTINGS))
    source, target = AzureBlobContainer(blob_service, name), S3Bucket(client, name)
    heads = {}
    for info in source.iter_objects(""):
        outcome = copy_object(info, source, target, snapshot_id="s1", config=CONFIG)
        assert outcome.status == "copied", outcome.reason
        heads[info.key] = {"head": client.head_object(Bucket=name, Key=info.key), "source": info}
    try:
        yield heads
    finally:
        container.delete_container()
        for key in heads:
            client.delete_object(Bucket=name, Key=key)


HEADERS = {
    "content_type": "ContentType",
    "content_encoding": "ContentEncoding",
    "cache_control": "CacheControl",
    "content_language": "ContentLanguage",
    "content_disposition": "ContentDisposition",
}


@pytest.mark.parametrize("key", ["small.csv", "large.bin"])
@pytest.mark.parametrize("setting", list(HEADERS))
def test_each_content_header_survives(copied: dict[str, dict[str, Any]], setting: str, key: str) -> None:
    assert getattr(copied[key]["source"], setting) == SETTINGS[setting]  # the inventory read it from Azure
    assert copied[key]["head"].get(HEADERS[setting]) == SETTINGS[setting]


@pytest.mark.parametrize("key", ["small.csv", "large.bin"])
def test_user_metadata_survives(copied: dict[str, dict[str, Any]], key: str) -> None:
    metadata = decode_metadata(copied[key]["head"]["Metadata"])
    # S3 lowercases metadata names (Azure compares them case-insensitively); values are kept exactly.
    assert {k: metadata[k.lower()] for k in METADATA} == METADATA


def test_content_md5_survives(copied: dict[str, dict[str, Any]]) -> None:
    small = copied["small.csv"]
    # The blob's own Content-MD5 is what the target records (and what the PUT carried for the server to check).
    assert small["source"].content_md5 is not None
    assert small["head"]["Metadata"][MD5_KEY] == small["source"].content_md5
    assert small["head"]["ETag"].strip('"') == base64.b64decode(small["source"].content_md5).hex()
    # A blob committed from blocks has none: the MD5 computed in transit is recorded instead.
    large = copied["large.bin"]
    assert large["source"].content_md5 is None and len(base64.b64decode(large["head"]["Metadata"][MD5_KEY])) == 16

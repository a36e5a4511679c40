"""A transfer process killed with SIGKILL mid-shard: the rerun completes, nothing lost, duplicated or corrupt."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import boto3
import pytest
from azure.storage.blob import BlobServiceClient
from botocore.config import Config

import devstack
from bascule.objects.copy_config import CopyConfig, recommended_s3_config
from bascule.objects.shard import copy_shard
from bascule.storage.azure_blob import AzureBlobContainer
from bascule.storage.s3 import S3Bucket

pytestmark = pytest.mark.integration

SMALL_OBJECTS = 400
LARGE_OBJECTS = 3
LARGE_SIZE = 12 * 1024 * 1024  # multipart with 5 MiB parts below

COPIER = textwrap.dedent(
    """
    import json, sys
    import boto3
    from azure.storage.blob import BlobServiceClient
    from botocore.config import Config
    from bascule.storage.azure_blob import AzureBlobContainer
    from bascule.storage.s3 import S3Bucket
    from bascule.objects.copy_config import CopyConfig, recommended_s3_config
    from bascule.objects.shard import copy_shard

    args = json.loads(sys.argv[1])
    service = BlobServiceClient(args["azure_url"], credential=args["credential"], retry_total=0)
    source = AzureBlobContainer(service, args["container"])
    s3 = boto3.client("s3", endpoint_url=args["s3_url"], region_name="fr-par", aws_access_key_id="x",
                      aws_secret_access_key="y", config=Config(**recommended_s3_config(4)))
    target = S3Bucket(s3, args["bucket"])
    copy_shard(source.iter_objects(""), source, target, source_prefix="", target_prefix="",
               snapshot_id="crash", concurrency=4,
               config=CopyConfig(preferred_part_size=5 * 1024 * 1024, multipart_threshold=8 * 1024 * 1024))
    """
)


def test_sigkill_mid_shard_then_rerun_loses_and_duplicates_nothing(standins: devstack.Ports, tmp_path: Path) -> None:
    credential = {"account_name": devstack.AZURITE_ACCOUNT, "account_key": devstack.AZURITE_KEY}
    service = BlobServiceClient(devstack.azurite_url(standins.azurite), credential=credential)
    container = service.create_container("crash-src")
    expected: dict[str, str] = {}
    for i in range(LARGE_OBJECTS):
        body = os.urandom(LARGE_SIZE)
        container.upload_blob(f"archive/big {i}.dcm", body)
        expected[f"archive/big {i}.dcm"] = hashlib.md5(body).hexdigest()
    for i in range(SMALL_OBJECTS):
        body = os.urandom(2048 + i)
        container.upload_blob(f"docs/é {i:04d}+%.txt", body)
        expected[f"docs/é {i:04d}+%.txt"] = hashlib.md5(body).hexdigest()

    s3 = boto3.client(
        "s3", endpoint_url=f"http://127.0.0.1:{standins.moto}", region_name="fr-par",
        aws_access_key_id="x", aws_secret_access_key="y", config=Config(**recommended_s3_config(4)),
    )  # fmt: skip
    s3.create_bucket(Bucket="crash-dst", CreateBucketConfiguration={"LocationConstraint": "fr-par"})
    args = {
        "azure_url": devstack.azurite_url(standins.azurite),
        "credential": credential,
        "container": "crash-src",
        "s3_url": f"http://127.0.0.1:{standins.moto}",
        "bucket": "crash-dst",
    }
    copier = subprocess.Popen([sys.executable, "-c", COPIER, json.dumps(args)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        # Kill while a multipart upload is half done: the worst moment.
        while not s3.list_multipart_uploads(Bucket="crash-dst").get("Uploads"):
            assert copier.poll() is None, f"the copier ended before it could be killed: {copier.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "the copier made no progress"
            time.sleep(0.05)
        copier.send_signal(signal.SIGKILL)
    finally:
        copier.wait(30)
    present_before = _count(s3)
    assert present_before < len(expected), "the kill must land mid-shard"
    assert s3.list_multipart_uploads(Bucket="crash-dst").get("Uploads"), "an upload was cut mid-way"

    source = AzureBlobContainer(service, "crash-src")
    target = S3Bucket(s3, "crash-dst")
    report = copy_shard(
        source.iter_objects(""), source, target, source_prefix="", target_prefix="", snapshot_id="crash",
        concurrency=4, config=CopyConfig(preferred_part_size=5 * 1024 * 1024, multipart_threshold=8 * 1024 * 1024),
    )  # fmt: skip
    assert report.failed == 0, report.failures
    assert report.skipped == present_before, "every object the killed run completed is verified and skipped"
    assert report.copied == len(expected) - present_before, "only the missing objects are copied again"

    listed = [
        item
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="crash-dst")
        for item in page.get("Contents", ())
    ]
    assert sorted(i["Key"] for i in listed) == sorted(expected), "0 missing, 0 extra"
    for key, md5 in expected.items():
        body = s3.get_object(Bucket="crash-dst", Key=key)["Body"].read()
        assert hashlib.md5(body).hexdigest() == md5, f"{key!r} is corrupt"
    leftovers = s3.list_multipart_uploads(Bucket="crash-dst").get("Uploads", [])
    assert leftovers == [], f"incomplete multipart uploads left behind: {leftovers}"


def _count(s3) -> int:
    return sum(page.get("KeyCount", 0) for page in s3.get_paginator("list_objects_v2").paginate(Bucket="crash-dst"))

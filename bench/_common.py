"""What the benchmarks share: how loaded the machine was, and a client on the S3 stand-in."""

from __future__ import annotations

import os
import subprocess
from typing import Any


def uptime() -> str:
    """``uptime``'s line (load averages): on a shared machine the figures move with the neighbours' load."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def s3_client(port: int, threads: int = 16) -> Any:
    """boto3 on the S3 stand-in (moto), configured as the operators configure theirs for ``threads``."""
    import boto3
    from botocore.config import Config

    import devstack  # scripts/ is on the path of every benchmark
    from bascule.objects.copy_config import recommended_s3_config

    return boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name=devstack.TARGET_REGION,
        aws_access_key_id=devstack.S3_ACCESS_KEY,
        aws_secret_access_key=devstack.S3_SECRET_KEY,
        config=Config(**recommended_s3_config(threads)),
    )

"""The distributed stack (scripts/celery_stack.py), started once per test session.

It runs on the machine's PostgreSQL (a metadata database of this session's own, dropped
at the end) and Redis (db 11), with the API server on a free port, and is torn down
whatever the tests do. Workloads come from a session folder written before the start.
The Postgres workload's target connection goes through a bandwidth-capped link
(``wan_link.py``), started with the stack and stopped after it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import devstack
from airflow_stack import Api
from celery_stack import CeleryStack, StackConfig
from dist_support import (
    OBJECT_WORKLOAD,
    PG_TARGET_CONN,
    PG_WORKLOAD,
    REDIS_DB,
    WAN_BYTES_PER_SECOND,
    object_manifest,
    postgres_manifest,
)
from wan_link import WanLink


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Distributed tests run last: the session's Celery stack then never idles beside the other tests."""
    items.sort(key=lambda item: item.get_closest_marker("distributed") is not None)


class _StackWithWanLink(CeleryStack):
    """The stack, plus the connection the Postgres workload reaches its target by: the
    target cluster's, through the WAN link. (Its password exists once the stack created the
    cluster, so the connection is made where the stack makes the others.)"""

    wan_port = 0

    def connections(self) -> dict[str, str]:
        _, target = self.pg_pair()
        behind_the_link = dataclasses.replace(target, port=self.wan_port)
        return {**super().connections(), f"AIRFLOW_CONN_{PG_TARGET_CONN.upper()}": behind_the_link.airflow_connection()}


@pytest.fixture(scope="session")
def celery_stack(session_dir: Path) -> Iterator[CeleryStack]:
    workloads = session_dir / "distributed-workloads"
    workloads.mkdir(exist_ok=True)
    (workloads / f"{OBJECT_WORKLOAD}.yaml").write_text(yaml.safe_dump(object_manifest(), sort_keys=False))
    (workloads / f"{PG_WORKLOAD}.yaml").write_text(yaml.safe_dump(postgres_manifest(), sort_keys=False))
    stack = _StackWithWanLink(
        StackConfig(
            state_dir=session_dir / "celery",
            env_file=session_dir / "celery.env",
            api_port=devstack.free_port(),
            db_name=f"bascule_test_{os.getpid()}",
            redis_db=REDIS_DB,
            workloads_dir=str(workloads),
        ).resolved()
    )
    link = WanLink(upstream_port=stack.config.pg_pair_ports[1], bytes_per_second=WAN_BYTES_PER_SECOND).start()
    stack.wan_port = link.port
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        link.stop()


@pytest.fixture(scope="session")
def stack_operator(celery_stack: CeleryStack) -> Api:
    return celery_stack.api("operator")


@pytest.fixture(scope="session")
def stack_s3(celery_stack: CeleryStack):
    import boto3

    return boto3.client(
        "s3", endpoint_url=f"http://127.0.0.1:{celery_stack.config.moto_port}", region_name="fr-par",
        aws_access_key_id="x", aws_secret_access_key="y",
    )  # fmt: skip


@pytest.fixture(scope="session")
def stack_azure(celery_stack: CeleryStack):
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient(
        devstack.azurite_url(celery_stack.config.azurite_port),
        credential={"account_name": devstack.AZURITE_ACCOUNT, "account_key": devstack.AZURITE_KEY},
    )

"""Build the domain's storage clients from Airflow connections, through the providers' hooks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bascule.exceptions import StoreAccessError


def blob_container(conn_id: str, container: str) -> Any:
    from airflow.providers.microsoft.azure.hooks.wasb import WasbHook

    from bascule.storage.azure_blob import AzureBlobContainer

    return AzureBlobContainer(WasbHook(wasb_conn_id=conn_id).get_conn(), container)


def s3_bucket(conn_id: str, bucket: str, *, concurrency: int = 8) -> Any:
    """The bucket through the connection, with a connection pool sized for ``concurrency`` threads.

    The connection's own ``config_kwargs`` win over Bascule's recommendations, so an
    operator can still tune a store that needs something else.
    """
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from botocore.config import Config

    from bascule.storage.s3 import S3Bucket
    from bascule.transfer import recommended_s3_config

    from_connection = S3Hook(aws_conn_id=conn_id).conn_config.botocore_config
    config = Config(**recommended_s3_config(concurrency))
    if from_connection is not None:
        config = config.merge(from_connection)
    return S3Bucket(S3Hook(aws_conn_id=conn_id, config=config).get_conn(), bucket)


def container_client(conn_id: str, container: str) -> Any:
    """The Azure SDK's ContainerClient, for operations outside the copy seam (freeze)."""
    from airflow.providers.microsoft.azure.hooks.wasb import WasbHook

    return WasbHook(wasb_conn_id=conn_id).get_conn().get_container_client(container)


def postgres_connector(conn_id: str) -> Callable[..., Any]:
    """``connect(database=None)``: a psycopg2 connection to that database on the connection's server."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    def connect(database: str | None = None) -> Any:
        hook = (
            PostgresHook(postgres_conn_id=conn_id, database=database)
            if database
            else PostgresHook(postgres_conn_id=conn_id)
        )
        return hook.get_conn()

    return connect


def classify_postgres_error(exc: Exception) -> StoreAccessError:
    """Tell a retry-worthy failure (server unreachable) from one a retry cannot fix."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    unreachable = ("could not connect", "Connection refused", "timeout expired", "could not translate host")
    if any(marker in str(exc) for marker in unreachable):
        return StoreAccessError(f"{text}; check the connection's host and port", retryable=True)
    if "password authentication failed" in str(exc) or "no pg_hba.conf entry" in str(exc):
        return StoreAccessError(f"{text}; check the login and password in the connection", retryable=False)
    if "does not exist" in str(exc):
        return StoreAccessError(f"{text}; check the database named in the connection or manifest", retryable=False)
    return StoreAccessError(text, retryable=False)

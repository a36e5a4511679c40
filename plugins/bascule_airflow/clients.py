"""Build the domain's storage clients from Airflow connections, through the providers' hooks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bascule.exceptions import StoreAccessError


def blob_container(conn_id: str, container: str) -> Any:
    from airflow.providers.microsoft.azure.hooks.wasb import WasbHook

    from bascule.storage.azure_blob import AzureBlobContainer

    return AzureBlobContainer(WasbHook(wasb_conn_id=conn_id).get_conn(), container)


def s3_bucket(conn_id: str, bucket: str) -> Any:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from bascule.storage.s3 import S3Bucket

    return S3Bucket(S3Hook(aws_conn_id=conn_id).get_conn(), bucket)


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

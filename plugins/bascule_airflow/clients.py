"""Build the domain's storage clients from Airflow connections, through the providers' hooks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bascule.exceptions import StoreAccessError


def workload_model(workload: dict[str, Any]) -> Any:
    """The validated manifest model of either kind, from the JSON form each task carries."""
    from bascule.workload import ObjectStoreWorkload, PostgresWorkload

    if workload["kind"] == "postgres":
        return PostgresWorkload.model_validate(workload)
    return ObjectStoreWorkload.model_validate(workload)


def blob_container(conn_id: str, container: str) -> Any:
    from airflow.providers.microsoft.azure.hooks.wasb import WasbHook

    from bascule.storage.azure_blob import AzureBlobContainer

    return AzureBlobContainer(WasbHook(wasb_conn_id=conn_id).get_conn(), container)


def sse_c_key(conn_id: str) -> Any:
    """The SSE-C key held (base64) in the password of connection ``conn_id``, masked in task logs."""
    from bascule.storage.encryption import SseCKey

    return workload_key(conn_id, SseCKey)


def client_side_key(conn_id: str) -> Any:
    """The client-side key-encryption key held (base64) in the password of connection ``conn_id``, masked."""
    from bascule.storage.client_side import ClientSideKey

    return workload_key(conn_id, ClientSideKey)


def workload_key(conn_id: str, key_class: Any) -> Any:
    """A workload key (``key_class``: SseCKey or ClientSideKey) from the password of connection ``conn_id``.

    Refuses (EncryptionKeyError, naming the connection) before any request is made when
    the connection is missing, empty, not base64 or not 32 bytes. The password is
    registered with Airflow's masker first. Only the fingerprint may leave this
    function in a log line, an XCom or the evidence.
    """
    from airflow.sdk import BaseHook
    from airflow.sdk.log import mask_secret

    from bascule.storage.encryption import EncryptionKeyError

    try:
        connection = BaseHook.get_connection(conn_id)
    except Exception as exc:  # AirflowNotFoundException and its kin: the message says which id
        raise EncryptionKeyError(
            f"Airflow connection '{conn_id}' (target.encryption.key_conn_id) holding the {key_class.purpose} could "
            f"not be read ({type(exc).__name__}); create it with the key as its password. Nothing was written "
            f"({key_class.runbook})"
        ) from None
    password = connection.password or ""
    if password:
        mask_secret(password)  # the task log shows *** if anything ever prints it
    return key_class.from_base64(password, conn_id)


def target_bucket(workload: Any, bucket: str | None = None, *, concurrency: int = 8) -> Any:
    """An object workload's target bucket, with its SSE-C key or client-side KEK as the manifest asks."""
    encryption = workload.target.encryption
    method = encryption.method if encryption is not None else None
    sse_c = sse_c_key(encryption.key_conn_id) if method == "sse_c" else None
    client_side = client_side_key(encryption.key_conn_id) if method == "client_side" else None
    return s3_bucket(
        workload.target.conn_id, bucket or workload.target.bucket, concurrency=concurrency, sse_c=sse_c,
        client_side=client_side,
    )  # fmt: skip


def s3_bucket(conn_id: str, bucket: str, *, concurrency: int = 8, sse_c: Any = None, client_side: Any = None) -> Any:
    """The bucket through the connection, with a connection pool sized for ``concurrency`` threads.

    The connection's own ``config_kwargs`` win over Bascule's recommendations, so an
    operator can still tune a store that needs something else. ``sse_c``: the SseCKey
    every object request then carries; ``client_side``: the ClientSideKey reads decrypt with.
    """
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from botocore.config import Config

    from bascule.objects.copy_config import recommended_s3_config
    from bascule.storage.s3 import S3Bucket

    from_connection = S3Hook(aws_conn_id=conn_id).conn_config.botocore_config
    config = Config(**recommended_s3_config(concurrency))
    if from_connection is not None:
        config = config.merge(from_connection)
    client = S3Hook(aws_conn_id=conn_id, config=config).get_conn()
    return S3Bucket(client, bucket, sse_c=sse_c, client_side=client_side)


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


def pg_params(conn_id: str, database: str) -> Any:
    """libpq parameters for ``database`` on the connection's server, from the Airflow connection.

    The domain streams COPY between two psycopg2 connections and runs pg_dump, so it
    needs the parameters rather than the hook's (psycopg 3) connection object.
    """
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    from bascule.postgres.client import LibpqParams

    conn = PostgresHook(postgres_conn_id=conn_id).connection
    extra = conn.extra_dejson
    return LibpqParams(
        host=conn.host or "localhost",
        port=int(conn.port or 5432),
        user=conn.login or "",
        password=conn.password or "",
        dbname=database,
        sslmode=extra.get("sslmode"),
    )


def pg_tls(conn_id: str) -> tuple[str | None, str | None]:
    """``(sslmode, sslrootcert)`` from the connection's extra, for the Managed PostgreSQL TLS rule."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    extra = PostgresHook(postgres_conn_id=conn_id).connection.extra_dejson
    return extra.get("sslmode"), extra.get("sslrootcert")


def postgres_sides(workload: Any) -> Any:
    """Source and target of a postgres workload, as the domain's ``PgSides``."""
    from bascule.postgres.sides import PgSides

    source = pg_params(workload.source.conn_id, workload.source.database)
    target = pg_params(workload.target.conn_id, workload.target.database)
    return PgSides.connecting(source, target)


def evidence_bucket(workload: Any) -> Any:
    """The workload's evidence bucket (``evidence`` in its manifest, either kind): never the data bucket."""
    return s3_bucket(workload.evidence.conn_id, workload.evidence.bucket)


def evidence_store(workload: Any) -> Any:
    """The workload's evidence files (``_bascule/<workload>/``) in its evidence bucket."""
    from bascule.governance.evidence.store import EvidenceStore

    bucket = evidence_bucket(workload)
    return EvidenceStore(bucket.client, workload.evidence.bucket, workload.id)


def routing_registry(workload: Any) -> Any:
    """Where the workload is live (``_bascule/routing/<workload>.json``), in its evidence bucket."""
    from bascule.governance.routing import RoutingRegistry

    bucket = evidence_bucket(workload)
    return RoutingRegistry(bucket.client, workload.evidence.bucket)

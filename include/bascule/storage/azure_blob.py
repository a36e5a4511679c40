"""Azure Blob Storage, the source side, over the official ``azure-storage-blob`` SDK."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import TYPE_CHECKING

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)

from bascule.exceptions import StoreAccessError
from bascule.storage.base import ObjectInfo

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient


class AzureBlobContainer:
    """One container of one storage account."""

    def __init__(self, service: BlobServiceClient, container: str):
        self._service = service
        self.container = container
        self._client = service.get_container_client(container)

    @property
    def account_url(self) -> str:
        return self._service.url

    def describe(self) -> str:
        return f"Azure container '{self.container}' at {self.account_url}"

    def check_exists(self) -> bool:
        """True if the container exists; raise StoreAccessError if we cannot tell."""
        try:
            return bool(self._client.exists())
        except ClientAuthenticationError as exc:
            raise StoreAccessError(
                f"{self.describe()}: authentication failed ({_first_line(exc)}); "
                "check the account key or SAS token in the source connection",
                retryable=False,
            ) from None
        except ServiceRequestError as exc:
            raise StoreAccessError(
                f"{self.describe()}: endpoint unreachable ({_first_line(exc)}); "
                "check the connection's host/account URL and the network path",
                retryable=True,
            ) from None
        except HttpResponseError as exc:
            retryable = exc.status_code is None or exc.status_code >= 500
            if exc.status_code == 403:
                raise StoreAccessError(
                    f"{self.describe()}: access denied (HTTP 403, {getattr(exc, 'error_code', None)}); "
                    "check the account key or SAS token in the source connection",
                    retryable=False,
                ) from None
            raise StoreAccessError(
                f"{self.describe()}: HTTP {exc.status_code} {getattr(exc, 'error_code', None)}", retryable=retryable
            ) from None

    def iter_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every blob under ``prefix``, page by page: memory stays flat however many there are."""
        try:
            for blob in self._client.list_blobs(name_starts_with=prefix or None, include=["metadata"]):
                settings = blob.content_settings
                md5 = settings.content_md5 if settings else None
                yield ObjectInfo(
                    key=blob.name,
                    size=int(blob.size),
                    etag=str(blob.etag).strip('"'),
                    last_modified=blob.last_modified,
                    content_md5=base64.b64encode(bytes(md5)).decode() if md5 else None,
                    content_type=settings.content_type if settings else None,
                    content_encoding=settings.content_encoding if settings else None,
                    metadata=dict(blob.metadata or {}),
                    access_tier=str(blob.blob_tier) if blob.blob_tier else None,
                )
        except ResourceNotFoundError:
            raise StoreAccessError(f"{self.describe()}: container not found", retryable=False) from None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__

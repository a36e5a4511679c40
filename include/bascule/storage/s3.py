"""S3-compatible object storage (Scaleway), the target side, over boto3."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from bascule.exceptions import StoreAccessError

_AUTH_ERRORS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken"}


class S3Bucket:
    """One bucket behind one S3 endpoint."""

    def __init__(self, client: Any, bucket: str):
        self._client = client
        self.bucket = bucket

    @property
    def endpoint(self) -> str:
        return str(self._client.meta.endpoint_url)

    @property
    def client_region(self) -> str | None:
        return self._client.meta.region_name

    def describe(self) -> str:
        return f"S3 bucket '{self.bucket}' at {self.endpoint}"

    def region(self) -> str | None:
        """The bucket's region, or None if the bucket does not exist."""
        try:
            answer = self._client.get_bucket_location(Bucket=self.bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchBucket", "404"):
                return None
            raise self._access_error(exc, code) from None
        except (EndpointConnectionError, ConnectionError) as exc:
            raise StoreAccessError(
                f"{self.describe()}: endpoint unreachable ({exc}); check the connection's endpoint_url",
                retryable=True,
            ) from None
        except NoCredentialsError:
            raise StoreAccessError(
                f"{self.describe()}: no credentials in the target connection (login/password)",
                retryable=False,
            ) from None
        # S3 reports the historical default region as an empty constraint.
        return answer.get("LocationConstraint") or "us-east-1"

    def create(self, region: str) -> None:
        try:
            self._client.create_bucket(Bucket=self.bucket, CreateBucketConfiguration={"LocationConstraint": region})
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "BucketAlreadyOwnedByYou":
                return
            raise self._access_error(exc, code) from None

    def _access_error(self, exc: ClientError, code: str) -> StoreAccessError:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _AUTH_ERRORS or status == 403:
            return StoreAccessError(
                f"{self.describe()}: access denied ({code}); check the access key and secret "
                "in the target connection and the key's permissions on this bucket",
                retryable=False,
            )
        return StoreAccessError(
            f"{self.describe()}: {code or 'error'} (HTTP {status})",
            retryable=status is None or status >= 500,
        )

"""SSE-C: the customer key every request to an encrypted target carries, and its fingerprint.

With SSE-C the server encrypts each object with a 256-bit AES key that the client sends
with every write *and every read* (HEAD, GET, range GET, CopyObject source and target),
and does not keep (Scaleway, "Enabling server-side encryption (SSE-C)":
https://www.scaleway.com/en/docs/object-storage/api-cli/enable-sse-c/). Without the key
nobody reads the object, the provider included; an ``HeadObject`` without it answers 400.

The key comes from an Airflow connection (its password, base64) read by the glue; this
module never sees where it came from except the connection id, which every error names.
Only the fingerprint (base64 of the key's MD5, the value S3 itself sends as
``x-amz-server-side-encryption-customer-key-MD5``) may be logged or recorded.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from bascule.exceptions import StoreAccessError

SSE_C_ALGORITHM = "AES256"  # the only SSE-C algorithm S3 and Scaleway accept
SSE_C_KEY_BYTES = 32
RUNBOOK = "docs/runbooks.md#sse-c-key-missing-or-wrong"


class EncryptionKeyError(StoreAccessError):
    """The customer key is missing, malformed, or not the one the objects were written with (never retryable)."""

    def __init__(self, message: str):
        super().__init__(message, retryable=False)


def key_fingerprint(key: bytes) -> str:
    """Base64 of the key's MD5: identifies a key (rotation audits, HEAD answers), reveals nothing usable."""
    return base64.b64encode(hashlib.md5(key, usedforsecurity=False).digest()).decode("ascii")


def key_problem(key: bytes, where: str, purpose: str = "SSE-C key", runbook: str = RUNBOOK) -> str | None:
    """Why ``key`` cannot serve as a 32-byte workload key, or None if it can; ``where`` names what the key is for."""
    if len(key) != SSE_C_KEY_BYTES:
        algorithm = "SSE-C (AES256)" if purpose == "SSE-C key" else "AES-256"
        return (
            f"the {purpose} for {where} is {len(key)} bytes; {algorithm} needs exactly {SSE_C_KEY_BYTES} "
            f"random bytes. Fix the key in the Airflow connection that holds it ({runbook})"
        )
    if len(set(key)) == 1:
        return (
            f"the {purpose} for {where} repeats one byte value: it is a placeholder, not a key. "
            f"Generate one with `openssl rand -base64 32` ({runbook})"
        )
    return None


@dataclass(frozen=True)
class ConnectionKey:
    """A validated 32-byte key read from an Airflow connection; ``repr`` and ``str`` show the fingerprint only.

    The base of both methods' keys (SSE-C customer key, client-side key-encryption key):
    one validation, one base64 decoding, one fingerprint, every refusal naming the connection.
    """

    key: bytes = field(repr=False)
    conn_id: str = ""  # where it came from, for error messages
    purpose: ClassVar[str] = "SSE-C key"
    runbook: ClassVar[str] = RUNBOOK

    def __post_init__(self) -> None:
        problem = key_problem(self.key, f"connection '{self.conn_id}'", self.purpose, self.runbook)
        if problem:
            raise EncryptionKeyError(problem)

    @classmethod
    def from_base64(cls, text: str | None, conn_id: str) -> Self:
        """The key stored base64-encoded in a connection's password; refuses with the connection named."""
        if not text or not text.strip():
            raise EncryptionKeyError(
                f"Airflow connection '{conn_id}' (target.encryption.key_conn_id) has no password: put the "
                f"base64 of 32 random bytes there (`openssl rand -base64 32`). Nothing was written ({cls.runbook})"
            )
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise EncryptionKeyError(
                f"the password of Airflow connection '{conn_id}' (target.encryption.key_conn_id) is not base64: "
                f"store the key as `openssl rand -base64 32` prints it. Nothing was written ({cls.runbook})"
            ) from None
        return cls(raw, conn_id)

    @property
    def fingerprint(self) -> str:
        return key_fingerprint(self.key)

    def __str__(self) -> str:
        return f"{self.purpose} (MD5 {self.fingerprint}) from connection '{self.conn_id}'"


@dataclass(frozen=True)
class SseCKey(ConnectionKey):
    """A validated SSE-C key; ``repr`` and ``str`` show the fingerprint only, never the key."""

    def request_params(self) -> dict[str, Any]:
        """Parameters for any boto3 object call on an SSE-C object; botocore adds the base64 and the key MD5."""
        return {"SSECustomerAlgorithm": SSE_C_ALGORITHM, "SSECustomerKey": self.key}

    def copy_source_params(self) -> dict[str, Any]:
        """The same for the source of a CopyObject / UploadPartCopy (the object is read with this key)."""
        return {"CopySourceSSECustomerAlgorithm": SSE_C_ALGORITHM, "CopySourceSSECustomerKey": self.key}

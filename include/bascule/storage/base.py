from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

# The user-metadata key that records an object's base64 MD5 at the target: the name
# `rclone check` reads for multipart S3 objects, whose ETag is not an MD5.
MD5_KEY = "md5chksum"
# Throttling and server-side hiccups, on either store: the request was fine, the moment was not.
TRANSIENT_HTTP_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class ObjectInfo:
    """What an inventory records about one object, whichever store holds it."""

    key: str
    size: int
    etag: str
    last_modified: datetime
    content_md5: str | None = None  # base64, as both Azure and S3 spell it
    content_type: str | None = None
    content_encoding: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    access_tier: str | None = None
    # The other content settings a reader relies on (HTTP headers on GET); None when unset.
    cache_control: str | None = None
    content_language: str | None = None
    content_disposition: str | None = None


# ObjectInfo field -> boto3 parameter, for the content settings carried over on copy.
CONTENT_SETTINGS = {
    "content_type": "ContentType",
    "content_encoding": "ContentEncoding",
    "cache_control": "CacheControl",
    "content_language": "ContentLanguage",
    "content_disposition": "ContentDisposition",
}

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


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

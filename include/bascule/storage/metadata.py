"""User metadata as S3 carries it in ``x-amz-meta-*`` headers, and back (names, non-ASCII values)."""

from __future__ import annotations

import base64
import email.header
import re
from collections.abc import Mapping
from urllib.parse import quote

# RFC 7230 token characters: what an HTTP header name (x-amz-meta-<name>) may hold.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-zA-Z]+")
_ENCODED_WORD = re.compile(r"=\?[^?]+\?[bBqQ]\?[^?]*\?=")


def encode_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """User metadata as S3 can carry it in ``x-amz-meta-*`` headers.

    - Names are lowercased (S3 returns them so; Azure compares them case-insensitively,
      so no two collide); characters outside the HTTP token set are percent-encoded.
    - Values that are not plain printable ASCII (non-ASCII, control characters,
      leading/trailing blanks that HTTP would strip) are sent as one RFC 2047
      encoded word ``=?UTF-8?B?<base64>?=``: the form AWS S3 itself decodes on input
      and uses on output, and which botocore accepts (it refuses raw non-ASCII).
      Values that merely look like an encoded word are encoded too, so decoding
      is never ambiguous. :func:`decode_metadata` reverses both.
    """
    encoded: dict[str, str] = {}
    for name, value in metadata.items():
        key = name.lower()
        if not _TOKEN.fullmatch(key):
            key = quote(key, safe="!#$&'*+-.^_`|~")
        encoded[key] = _encode_value(value)
    return encoded


def decode_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """Inverse of :func:`encode_metadata` for values (names stay as S3 returns them)."""
    return {key: _decode_value(value) for key, value in metadata.items()}


def _encode_value(value: str) -> str:
    plain = value.isascii() and value.isprintable() and value == value.strip() and "=?" not in value
    if plain:
        return value
    return "=?UTF-8?B?" + base64.b64encode(value.encode("utf-8")).decode("ascii") + "?="


def _decode_value(value: str) -> str:
    if not _ENCODED_WORD.search(value):
        return value
    try:
        return "".join(
            part.decode(charset or "ascii") if isinstance(part, bytes) else part
            for part, charset in email.header.decode_header(value)
        )
    except (LookupError, ValueError):
        return value  # not ours and not decodable: keep it verbatim rather than guess

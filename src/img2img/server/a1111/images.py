"""Images inside A1111 requests: base64 of any format Pillow reads, with or without a data: URL prefix
(whatever MIME type it claims), or, when the server allows it, an http(s) URL."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from ...errors import InvalidRequest

DATA_URL = re.compile(r"^\s*data:[^,;]*(;[^,;]*)*;base64,", re.IGNORECASE)
URL = re.compile(r"^\s*https?://", re.IGNORECASE)


def decode_base64_image(value: Any, field: str, fetch=None) -> bytes:
    """Raw image bytes. Text is base64 unless it is an http(s) URL, which `fetch(url, field)` gets (None:
    URLs refused). Never a file path: "/9j/..." is the base64 of a JPEG, not a path."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"{field}: expected a base64-encoded image, got {type(value).__name__}", field)
    if URL.match(value):
        if fetch is None:
            raise InvalidRequest(f"{field}: image URLs are not fetched by this server (start it with "
                                 "--allow-image-urls to allow them); send the image itself as base64", field)
        return fetch(value.strip(), field)
    if value.lstrip().lower().startswith("file:"):
        raise InvalidRequest(f"{field}: file URLs are not accepted; send the image itself as base64", field)
    text = re.sub(r"\s+", "", DATA_URL.sub("", value, count=1))
    text = text.replace("-", "+").replace("_", "/")  # the URL-safe alphabet, which some clients use
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{field}: not valid base64", field) from None
    if not data:
        raise InvalidRequest(f"{field}: the image is empty", field)
    return data

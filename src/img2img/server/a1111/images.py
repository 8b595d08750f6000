"""Images inside A1111 requests: base64 text, with or without a data: URL prefix."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from ...errors import InvalidRequest

DATA_URL = re.compile(r"^\s*data:[^,;]*(;[^,;]*)*;base64,", re.IGNORECASE)


def decode_base64_image(value: Any, field: str) -> bytes:
    """Raw bytes from base64 text, with or without a data: URL prefix. Never a URL or a path."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"{field}: expected a base64-encoded image, got {type(value).__name__}", field)
    text = DATA_URL.sub("", value, count=1)
    if text.lstrip().lower().startswith(("http://", "https://", "file:", "/")):
        raise InvalidRequest(f"{field}: URLs and file paths are not accepted; send the image itself as base64", field)
    text = re.sub(r"\s+", "", text)
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{field}: not valid base64", field) from None
    if not data:
        raise InvalidRequest(f"{field}: the image is empty", field)
    return data


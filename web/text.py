"""Text from clients must be valid Unicode storable on every database.

A lone surrogate (the JSON escape "\\ud800") cannot be encoded as UTF-8, so a
frame or snapshot holding one could never be sent; PostgreSQL refuses NUL in
text and in JSON. Both are refused at the edge, wherever they appear in a
decoded JSON value (keys included), and never echoed back.
"""

from __future__ import annotations

import json
import re
from typing import Any

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def is_storable(text: str) -> bool:
    """True when `text` holds no lone surrogate and no NUL."""
    return _UNSTORABLE.search(text) is None


def all_storable(value: Any) -> bool:
    """True when every string in a decoded JSON value (keys too) is storable; iterative, so depth cannot overflow."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if not is_storable(item):
                return False
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return True


def encode_frame(content: Any) -> str:
    """JSON for a socket frame: UTF-8 text as is, or with \\u escapes when it holds something UTF-8 cannot encode.

    Refusal at the edge keeps such text out; this keeps a row stored before
    that (or by another writer) from making its thread's snapshot unsendable.
    """
    text = json.dumps(content, ensure_ascii=False)
    if text.isascii() or is_storable(text):
        return text
    return json.dumps(content, ensure_ascii=True)

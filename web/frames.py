"""Validation of client frames (docs/protocol.md, "Client to server")."""

from __future__ import annotations

import json
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, TypeAdapter, ValidationError, field_validator

from .text import all_storable, is_storable

MAX_FRAME_BYTES = 8192
TURN_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
# Finds the turn_id of a frame too large to parse, so that its refusal can name it.
_TURN_ID_IN_TEXT = re.compile(r'"turn_id"\s*:\s*"([A-Za-z0-9_.:-]{1,64})"')

TurnId = Annotated[StrictStr, Field(pattern=TURN_ID_PATTERN)]


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class UserMessageFrame(_Frame):
    type: Literal["user_message"]
    content: StrictStr
    turn_id: TurnId | None = None
    mentioned_documents: list | None = None
    # Edit and resend: the answer this message follows (null: a new first
    # message). Absent (see `follows_active_leaf`) differs from null.
    parent_id: StrictInt | None = None

    @property
    def follows_active_leaf(self) -> bool:
        return "parent_id" not in self.model_fields_set

    @field_validator("content")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("content must be non-empty text")
        return value


class CancelFrame(_Frame):
    type: Literal["cancel"]
    turn_id: TurnId | None = None


class PingFrame(_Frame):
    type: Literal["ping"]


class RegenerateFrame(_Frame):
    type: Literal["regenerate"]
    message_id: StrictInt
    turn_id: TurnId | None = None


class SwitchVersionFrame(_Frame):
    type: Literal["switch_version"]
    message_id: StrictInt


AnyFrame = UserMessageFrame | CancelFrame | PingFrame | RegenerateFrame | SwitchVersionFrame
ClientFrame = Annotated[AnyFrame, Field(discriminator="type")]
_adapter = TypeAdapter(ClientFrame)
KNOWN_TYPES = {"user_message", "cancel", "ping", "regenerate", "switch_version"}


class FrameError(Exception):
    """A refused frame: the `error` code and message to send back, and its turn_id if it had one."""

    def __init__(self, code: str, message: str, turn_id: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.turn_id = turn_id


def parse_frame(text: str) -> AnyFrame:
    """Parse one text frame or raise FrameError with the contract's error code."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FRAME_BYTES:
        found = _TURN_ID_IN_TEXT.search(text)
        raise FrameError(
            "message_too_large", f"Frames are limited to {MAX_FRAME_BYTES} bytes.", found.group(1) if found else None
        )
    try:
        data = json.loads(text)
    except ValueError:
        raise FrameError("invalid_json", "The frame is not valid JSON.") from None
    except RecursionError:
        # 8192 bytes can nest ~4000 levels, past the parser's recursion limit.
        raise FrameError("invalid_json", "The frame is nested too deeply to parse.") from None
    if not isinstance(data, dict):
        raise FrameError("invalid_message", "A frame must be a JSON object.")
    # A refusal names the frame's turn_id, unless that text could not even be encoded.
    turn_id = data.get("turn_id")
    turn_id = turn_id if isinstance(turn_id, str) and is_storable(turn_id) else None
    if not all_storable(data):
        raise FrameError(
            "invalid_message", "The frame holds text that is not valid Unicode (a lone surrogate or NUL).", turn_id
        )
    frame_type = data.get("type")
    if not isinstance(frame_type, str):
        raise FrameError("invalid_message", "The frame has no `type`.", turn_id)
    if frame_type not in KNOWN_TYPES:
        raise FrameError("unknown_type", f"Unknown frame type {frame_type[:50]!r}.", turn_id)
    try:
        return _adapter.validate_python(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'][1:]) or 'frame'}: {err['msg']}" for err in exc.errors()[:3]
        )
        raise FrameError("invalid_message", f"Invalid {frame_type} frame: {problems}", turn_id) from None

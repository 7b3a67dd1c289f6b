"""The export format of a thread (PROTOCOL.md "Export and import"): checking an import, writing Markdown.

An export is `{"format": "chat-export", "version": 1, "thread": {...},
"messages": [message, ...]}` with every message of every branch in seq order
(chat.selectors.thread_export). `parse_export` checks a body against it and
the server's limits before chat.threads.import_thread stores anything.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_MESSAGES = 2000
MAX_ACTIONS = 100
MAX_CONTENT = 500_000
MAX_DEPTH = 32  # nesting of metadata, tool input and output

Status = Literal["streaming", "completed", "cancelled", "failed", "interrupted"]


class InvalidExport(Exception):
    """The body is not an export this server can import; nothing was stored."""


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=False)


class ExportAction(_Part):
    call_id: str = Field(min_length=1, max_length=128)
    tool: str = Field(max_length=100)
    input: Any = None
    output: Any = None
    status: Literal["pending", "success", "error"]
    position: int = Field(default=0, ge=0, le=2**31 - 1)
    started_at: datetime | None = None
    finished_at: datetime | None = None


class ExportUsage(_Part):
    model: str = Field(default="", max_length=100)
    prompt_tokens: int = Field(default=0, ge=0, le=2**31 - 1)
    completion_tokens: int = Field(default=0, ge=0, le=2**31 - 1)
    total_tokens: int = Field(default=0, ge=0, le=2**31 - 1)
    cost_micros: int = Field(default=0, ge=0, le=2**62)
    estimated: bool = False


class ExportMessage(_Part):
    id: int
    parent_id: int | None = None
    role: Literal["user", "assistant"]
    status: Status = "completed"
    content: str = Field(default="", max_length=MAX_CONTENT)
    metadata: dict = Field(default_factory=dict)
    actions: list[ExportAction] = Field(default_factory=list, max_length=MAX_ACTIONS)
    usage: ExportUsage | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class ExportThread(_Part):
    title: str = Field(default="", max_length=200)
    system_prompt: str = Field(default="", max_length=8000)
    created_at: datetime | None = None
    updated_at: datetime | None = None


class Export(_Part):
    format: Literal["chat-export"]
    version: Literal[1]
    thread: ExportThread
    messages: list[ExportMessage] = Field(max_length=MAX_MESSAGES)


def parse_export(body: bytes) -> Export:
    """The export in `body`, checked: JSON, the format, limits, text every database stores, a tree in order."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidExport("The body is not JSON.") from None
    _check_values(data, 0)
    try:
        export = Export.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors()[:3]
        )
        raise InvalidExport(f"Not a chat export: {problems}") from None
    seen: set[int] = set()
    for message in export.messages:
        if message.id in seen:
            raise InvalidExport(f"Message id {message.id} appears twice.")
        if message.parent_id is not None and message.parent_id not in seen:
            raise InvalidExport(f"Message {message.id} follows {message.parent_id}, which does not come before it.")
        seen.add(message.id)
    return export


def _check_values(value: Any, depth: int) -> None:
    """Refuse nesting past MAX_DEPTH and text no database column stores (NUL, lone surrogates)."""
    if depth > MAX_DEPTH:
        raise InvalidExport("The export is nested too deeply.")
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidExport("The export holds a NUL character.")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidExport("The export holds text that is not valid Unicode.") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_values(key, depth + 1)
            _check_values(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_values(item, depth + 1)


def markdown(detail: dict) -> str:
    """A thread object with its active path (chat.selectors.thread_detail) as readable Markdown."""
    lines = [f"# {detail['title'] or 'Untitled chat'}", ""]
    for message in detail["messages"]:
        lines += [f"## {'User' if message['role'] == 'user' else 'Assistant'}", ""]
        for action in message["actions"]:
            lines += [
                f"**Tool `{action['tool']}`** ({action['status']})",
                "",
                *_fenced("input", action["input"]),
                *_fenced("output", action["output"]),
            ]
        lines += [message["content"], ""]
    return "\n".join(lines)


def _fenced(label: str, value: Any) -> list[str]:
    text = json.dumps(value, indent=2, ensure_ascii=False)
    fence = "```"
    while fence in text:
        fence += "`"
    return [f"{label}:", "", f"{fence}json", text, fence, ""]

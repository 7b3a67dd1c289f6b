"""A thread's earlier messages as the conversation a model sees, trimmed to a budget.

Pure: the turn runtime reads the rows and passes them in; nothing here touches
the database.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .base import ChatMessage, ToolCall

UNFINISHED_TOOL_OUTPUT = {"error": "the tool did not finish"}


@dataclass
class HistoryEntry:
    """One stored message of a thread, in `seq` order.

    `role` is "user" or "assistant" and `content` its full text. `actions`
    (assistant only) are its tool calls in position order, each a dict with
    `call_id`, `tool`, `input` (the JSON arguments; a str is sent as it is),
    `output` (any JSON value, None while pending) and `status` ("pending" |
    "success" | "error"). A result goes back to the model as the JSON text
    of `output`, as the runtime sends it during the turn.
    """

    role: str
    content: str = ""
    actions: list[dict] = field(default_factory=list)


def build_history(messages: Iterable[HistoryEntry | Mapping | Any], budget_chars: int) -> list[ChatMessage]:
    """The newest messages that fit in `budget_chars`, as ChatMessages.

    `messages` are HistoryEntry objects, dicts, or any objects with the same
    attributes, oldest first. An assistant message with actions becomes an
    assistant message with tool calls, one `tool` message per call, then an
    assistant message with its text. Whole messages are dropped from the
    oldest until the rest fits, so a tool result never loses its call; the
    newest user message is kept even when it alone is over the budget, and
    the kept part starts with a user message, as chat templates want.
    """
    groups = [_convert(_entry(message)) for message in messages]
    newest_user = max((i for i, group in enumerate(groups) if group and group[0].role == "user"), default=None)
    kept: list[list[ChatMessage]] = []
    used = 0
    for index in range(len(groups) - 1, -1, -1):
        size = sum(_size(message) for message in groups[index])
        if used + size > budget_chars and index != newest_user:
            if newest_user is None or index < newest_user:
                break
            continue  # an answer newer than the newest user message that does not fit
        kept.append(groups[index])
        used += size
    kept.reverse()
    while kept and (not kept[0] or kept[0][0].role != "user"):
        kept.pop(0)
    return [message for group in kept for message in group]


def _entry(message: HistoryEntry | Mapping | Any) -> HistoryEntry:
    if isinstance(message, HistoryEntry):
        return message
    if isinstance(message, Mapping):
        return HistoryEntry(message["role"], message.get("content") or "", list(message.get("actions") or ()))
    return HistoryEntry(message.role, message.content or "", list(getattr(message, "actions", None) or ()))


def _convert(entry: HistoryEntry) -> list[ChatMessage]:
    """The ChatMessages of one stored message; empty for an assistant message with nothing in it."""
    if entry.role != "assistant":
        return [ChatMessage(entry.role, entry.content)]
    converted: list[ChatMessage] = []
    if entry.actions:
        calls = [
            ToolCall(
                str(action.get("call_id") or f"call_{position}"), str(action.get("tool") or ""), _arguments(action)
            )
            for position, action in enumerate(entry.actions)
        ]
        converted.append(ChatMessage("assistant", tool_calls=calls))
        converted += [
            ChatMessage("tool", _tool_output(action), tool_call_id=call.call_id)
            for call, action in zip(calls, entry.actions, strict=True)
        ]
    if entry.content:
        converted.append(ChatMessage("assistant", entry.content))
    return converted


def _arguments(action: Mapping) -> str:
    value = action.get("input")
    if isinstance(value, str):
        return value
    return json.dumps({} if value is None else value, ensure_ascii=False)


def _tool_output(action: Mapping) -> str:
    output = UNFINISHED_TOOL_OUTPUT if action.get("status") == "pending" else action.get("output")
    return json.dumps(output)


def _size(message: ChatMessage) -> int:
    return len(message.content) + sum(len(call.name) + len(call.arguments) for call in message.tool_calls)

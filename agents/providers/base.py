"""What a model provider is to the turn runtime: a stream of events for one model call.

The runtime owns the loop (history, tool execution, step limit); a provider
only turns a conversation into events. Providers know nothing of the
database or of sockets.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class ToolCall:
    """A tool call the model asked for; `arguments` is the raw JSON text it sent."""

    call_id: str
    name: str
    arguments: str


@dataclass
class ChatMessage:
    """One entry of the conversation sent to a model (OpenAI chat roles)."""

    role: str  # "system" | "user" | "assistant" | "tool"
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)  # assistant only
    tool_call_id: str = ""  # tool only


@dataclass
class ToolSpec:
    """A tool offered to the model: name, description and JSON schema of its input."""

    name: str
    description: str
    parameters: dict


@dataclass
class TextDelta:
    text: str


@dataclass
class ThinkingDelta:
    text: str


@dataclass
class ToolCallRequest:
    call: ToolCall


@dataclass
class UsageReport:
    model: str
    prompt_tokens: int
    completion_tokens: int


ProviderEvent = TextDelta | ThinkingDelta | ToolCallRequest | UsageReport


class ProviderError(Exception):
    """A model call failed; `code`, `message` and `retryable` go to the client as they are."""

    def __init__(self, code: str, message: str, retryable: bool = False):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable

    def as_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "retryable": self.retryable}


class Provider(Protocol):
    name: str  # shown as `agent` in agent_started
    model: str

    def stream(self, messages: list[ChatMessage], tools: list[ToolSpec]) -> AsyncGenerator[ProviderEvent]:
        """Run one model call. Tool calls come as complete ToolCallRequest events.

        Raises ProviderError on failure. Closing the iterator (or cancelling
        the task iterating it) must release the connection at once.
        """
        ...

"""A provider for any OpenAI-compatible chat-completions server, on the official SDK.

One `stream()` is one streamed model call. Failures before anything streamed
(connect errors, 429, 5xx) are retried with backoff; once an event was
yielded nothing is retried, since a second call would repeat the text. The
API key is scrubbed from every error and log line this module writes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import AsyncGenerator

import httpx2
from django.conf import settings
from openai import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AsyncOpenAI,
    AsyncStream,
    AuthenticationError,
    OpenAIError,
    PermissionDeniedError,
    RateLimitError,
    Timeout,
)
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletionChunk
from openai.types.chat.chat_completion_chunk import ChoiceDeltaToolCall

from .base import (
    ChatMessage,
    ProviderError,
    ProviderEvent,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    ToolCallRequest,
    ToolSpec,
    UsageReport,
)

log = logging.getLogger(__name__)

# Local servers (Ollama, llama.cpp, LM Studio) ignore the key, but the SDK needs one.
PLACEHOLDER_KEY = "no-key"
# Given explicitly: left None, the SDK would read the environment itself.
OPENAI_API_URL = "https://api.openai.com/v1"
RETRY_DELAY_CAP = 20.0
SERVER_TEXT_LIMIT = 300


class OpenAIProvider:
    """Streams chat completions from `settings.OPENAI_BASE_URL` with `settings.OPENAI_MODEL`."""

    name = "openai"

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        retry_base_delay: float = 0.5,
    ):
        self.model = model or settings.OPENAI_MODEL
        # An agent's own server and key; None reads the settings at each call.
        self.base_url = base_url
        self.api_key = api_key
        # First backoff pause in seconds, doubled each retry; tests make it small.
        self.retry_base_delay = retry_base_delay

    async def stream(self, messages: list[ChatMessage], tools: list[ToolSpec]) -> AsyncGenerator[ProviderEvent]:
        """See Provider.stream(). Settings are read per call, so overrides apply at once."""
        key = settings.OPENAI_API_KEY if self.api_key is None else self.api_key
        request: dict = {
            "model": self.model,
            "messages": [wire_message(message) for message in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if tools:
            request["tools"] = [wire_tool(tool) for tool in tools]
        async with _client(key, self.base_url) as client:
            chunks = await self._open(client, request, key)
            async with chunks:
                assembly = _Assembly()
                try:
                    async for chunk in chunks:
                        for event in assembly.feed(chunk):
                            yield event
                except (OpenAIError, ValueError) as err:
                    error = _failure(err, key, streaming=True)
                    log.warning("model stream failed: %s: %s", error.code, error.message)
                    raise error from None
                for event in assembly.finish(self.model):
                    yield event

    async def _open(self, client: AsyncOpenAI, request: dict, key: str) -> AsyncStream[ChatCompletionChunk]:
        """Start the call, retrying what failed before any byte of the answer."""
        retries = max(0, settings.AGENT_MAX_RETRIES)
        attempt = 0
        while True:
            try:
                return await client.chat.completions.create(**request)
            except OpenAIError as err:
                error = _failure(err, key, streaming=False)
                if attempt == retries or not _worth_retrying(err):
                    log.warning("model call failed: %s: %s", error.code, error.message)
                    raise error from None
                delay = _retry_delay(err, attempt, self.retry_base_delay)
                attempt += 1
                log.warning(
                    "model call failed before streaming (%s: %s); retry %d of %d in %.2fs",
                    error.code, error.message, attempt, retries, delay,
                )  # fmt: skip
                await asyncio.sleep(delay)


def _client(key: str, base_url: str | None = None) -> AsyncOpenAI:
    """A client for one call: connection pools belong to one event loop, calls may not."""
    return AsyncOpenAI(
        api_key=key or PLACEHOLDER_KEY,
        base_url=(settings.OPENAI_BASE_URL if base_url is None else base_url) or OPENAI_API_URL,
        max_retries=0,
        # `read` is the longest silence between two chunks of the stream.
        timeout=Timeout(settings.AGENT_READ_TIMEOUT, connect=settings.AGENT_CONNECT_TIMEOUT),
    )


def wire_message(message: ChatMessage) -> dict:
    """A ChatMessage as the chat-completions API wants it."""
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    if message.role == "assistant" and message.tool_calls:
        return {
            "role": "assistant",
            "content": message.content or None,
            "tool_calls": [
                {"id": call.call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
                for call in message.tool_calls
            ],
        }
    return {"role": message.role, "content": message.content}


def wire_tool(tool: ToolSpec) -> dict:
    """A ToolSpec as a chat-completions function tool."""
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
    }


class _Assembly:
    """Turns chunks into events and assembles tool-call fragments into whole calls."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.open_calls: dict[int, dict] = {}  # fragment index -> the call it extends
        self.finished = False
        self.usage: CompletionUsage | None = None

    def feed(self, chunk: ChatCompletionChunk) -> list[ProviderEvent]:
        events: list[ProviderEvent] = []
        if getattr(chunk, "usage", None):
            self.usage = chunk.usage  # the last one wins: some servers repeat a running total
        for choice in getattr(chunk, "choices", None) or ():
            delta = getattr(choice, "delta", None)
            if delta is not None:
                # DeepSeek, vLLM and llama.cpp say `reasoning_content`; Ollama and OpenRouter `reasoning`.
                thinking = getattr(delta, "reasoning_content", None) or getattr(delta, "reasoning", None)
                if isinstance(thinking, str) and thinking:
                    events.append(ThinkingDelta(thinking))
                if delta.content:
                    events.append(TextDelta(delta.content))
                for position, fragment in enumerate(delta.tool_calls or ()):
                    self._add_fragment(fragment, position)
            if choice.finish_reason:
                self.finished = True
        return events

    def _add_fragment(self, fragment: ChoiceDeltaToolCall, position: int) -> None:
        index = fragment.index if isinstance(fragment.index, int) else position
        call = self.open_calls.get(index)
        # A new id at a known index starts a new call: older Ollama sends every call at index 0.
        if call is None or (fragment.id and call["id"] and fragment.id != call["id"]):
            call = {"id": "", "name": "", "arguments": ""}
            self.calls.append(call)
            self.open_calls[index] = call
        if fragment.id and not call["id"]:
            call["id"] = fragment.id
        function = fragment.function
        if function is not None:
            call["name"] += function.name or ""
            call["arguments"] += function.arguments or ""

    def finish(self, model: str) -> list[ProviderEvent]:
        """The complete tool calls and the usage, once the stream ended; fails if it was cut short."""
        if not self.finished:
            raise ProviderError(
                "stream_interrupted", "the model server ended the stream before the answer was finished", True
            )
        events: list[ProviderEvent] = [
            ToolCallRequest(ToolCall(call["id"] or f"call_{uuid.uuid4().hex[:24]}", call["name"], call["arguments"]))
            for call in self.calls
        ]
        if self.usage is not None:
            events.append(UsageReport(model, self.usage.prompt_tokens or 0, self.usage.completion_tokens or 0))
        return events


def _worth_retrying(err: OpenAIError) -> bool:
    """Connect failures, 429 and 5xx: the server did not start on the answer."""
    if isinstance(err, APITimeoutError):
        return isinstance(err.__cause__, httpx2.ConnectTimeout)
    if isinstance(err, APIConnectionError):
        return True
    return isinstance(err, APIStatusError) and (err.status_code == 429 or err.status_code >= 500)


def _retry_delay(err: OpenAIError, attempt: int, base: float) -> float:
    """The server's Retry-After when it sent one, else exponential backoff with jitter."""
    if isinstance(err, APIStatusError):
        headers = err.response.headers
        for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
            try:
                return min(RETRY_DELAY_CAP, max(0.0, float(headers[name]) * scale))
            except (KeyError, ValueError):
                continue
    return min(RETRY_DELAY_CAP, base * 2**attempt) * random.uniform(0.5, 1.0)


def _failure(err: Exception, key: str, *, streaming: bool) -> ProviderError:
    """The ProviderError for an SDK error, with the key scrubbed from the server's words."""
    if isinstance(err, APITimeoutError):
        if isinstance(err.__cause__, httpx2.ConnectTimeout):
            error = ProviderError("provider_timeout", "connecting to the model server timed out", True)
        else:
            error = ProviderError("provider_timeout", "the model server stopped sending for too long", True)
    elif isinstance(err, APIConnectionError):
        if streaming:
            error = ProviderError("stream_interrupted", "the connection to the model server broke mid-answer", True)
        else:
            error = ProviderError("provider_unavailable", "could not connect to the model server", True)
    elif isinstance(err, (AuthenticationError, PermissionDeniedError)):
        error = ProviderError(
            "authentication_failed", f"the model server refused the API key (HTTP {err.status_code})", False
        )
    elif isinstance(err, RateLimitError):
        said = _server_text("the model server is rate limiting (HTTP 429)", err, key)
        error = ProviderError("rate_limited", said, True)
    elif isinstance(err, APIStatusError):
        retryable = err.status_code >= 500
        error = ProviderError(
            "provider_error", _server_text(f"the model server answered HTTP {err.status_code}", err, key), retryable
        )
    elif isinstance(err, APIError):
        error = ProviderError("provider_error", _server_text("the model server reported an error", err, key), False)
    else:
        said = f"unreadable answer from the model server ({type(err).__name__})"
        error = ProviderError("provider_error", said, False)
    return error


def _server_text(prefix: str, err: APIError, key: str) -> str:
    """`prefix` plus what the server said, short, with the key removed."""
    body = err.body
    said = body.get("message") if isinstance(body, dict) else body
    said = said if isinstance(said, str) else ""
    if key:
        said = said.replace(key, "[redacted]")
    said = " ".join(said.split())[:SERVER_TEXT_LIMIT]
    return f"{prefix}: {said}" if said else prefix

"""The offline, deterministic `local` model of docs/protocol.md.

It needs no network, so the whole system runs and is tested offline: it
answers a word at a time, calls `calculator` for arithmetic and `clock` for
"time", and obeys `/lorem N`, `/fail N` and `/markdown` (an answer with
headings, a table, lists, a code block and formulas, for the page).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncGenerator

from django.conf import settings

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

LOREM = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et "
    "dolore magna aliqua ut enim ad minim veniam quis nostrud exercitation ullamco laboris nisi ut aliquip ex "
    "ea commodo consequat"
).split()
MAX_WORDS = 100_000
_COMMAND = re.compile(r"^\s*/(lorem|fail)\s+(\d+)\s*$")
_MARKDOWN_COMMAND = re.compile(r"^\s*/markdown\s*$")
# A word with the whitespace after it, newlines and indentation included.
_PIECE = re.compile(r"\S+\s*")
MARKDOWN = """# What the page renders

Streamed by the offline model, **word by word**, with `inline code` too.

## A table

| model | tokens | cost ($) |
| --- | ---: | ---: |
| local | 12 | 0 |
| remote | 340 | 0.002 |

## Lists

- streams one word at a time
- runs offline
  - nested under it

1. first step
2. second step

## A code block

```python
import math


def area(radius: float) -> float:
    return math.pi * radius**2
```

## A formula

The area of a circle is $A = \\pi r^2$, and Euler's identity reads:

$$
e^{i\\pi} + 1 = 0
$$
"""
_EXPRESSION = re.compile(r"[\d.()\s+\-*/]+")
_OPERATOR_BETWEEN = re.compile(r"[\d.)]\s*[+\-*/]\s*[\d.(\-]")
_TIME = re.compile(r"\btime\b", re.IGNORECASE)


def find_expression(text: str) -> str | None:
    """The longest run of digits, operators, dots, parentheses and spaces with an operator in it.

    Unmatched parentheses in a run belong to the prose around it ("2+2 (roughly)") and are left out.
    """
    candidates = [_matched_parentheses(m.group()).strip() for m in _EXPRESSION.finditer(text)]
    candidates = [c for c in candidates if _OPERATOR_BETWEEN.search(c)]
    return max(candidates, key=len) if candidates else None


def _matched_parentheses(run: str) -> str:
    """`run` without the parentheses that have no partner in it."""
    unmatched, opened = set(), []
    for index, char in enumerate(run):
        if char == "(":
            opened.append(index)
        elif char == ")":
            if opened:
                opened.pop()
            else:
                unmatched.add(index)
    unmatched.update(opened)
    return "".join(char for index, char in enumerate(run) if index not in unmatched)


def _words(text: str) -> list[str]:
    return text.split()


def _last_user_index(messages: list[ChatMessage]) -> int:
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "user":
            return index
    return -1


_CAPITALS = re.compile(r"reply in capitals", re.IGNORECASE)


class LocalProvider:
    name = "local"

    def __init__(self, delay_ms: int | None = None, model: str = "local"):
        self.delay = (settings.LOCAL_MODEL_DELAY_MS if delay_ms is None else delay_ms) / 1000
        self.model = model

    async def stream(self, messages: list[ChatMessage], tools: list[ToolSpec]) -> AsyncGenerator[ProviderEvent]:
        index = _last_user_index(messages)
        text = messages[index].content if index >= 0 else ""
        results = [m for m in messages[index + 1 :] if m.role == "tool"]
        prompt_tokens = sum(len(_words(m.content)) for m in messages)
        offered = {tool.name for tool in tools}
        capitals = any(m.role == "system" and _CAPITALS.search(m.content) for m in messages)

        if _MARKDOWN_COMMAND.match(text):
            yield ThinkingDelta("Writing Markdown.")
            async for event in self._say_pieces(_PIECE.findall(MARKDOWN), prompt_tokens):
                yield event
            return

        command = _COMMAND.match(text)
        if command:
            count = min(int(command.group(2)), MAX_WORDS)
            yield ThinkingDelta("Writing placeholder text.")
            async for event in self._say(_lorem(count), prompt_tokens):
                yield event
            if command.group(1) == "fail":
                raise ProviderError("provider_unavailable", "The local model failed on purpose (/fail).", True)
            return

        if not results:
            call = self._tool_call(text, offered)
            if call is not None:
                yield ThinkingDelta(f"Calling the {call.name} tool.")
                yield ToolCallRequest(call)
                yield UsageReport(self.model, prompt_tokens, 0)
                return

        yield ThinkingDelta("Writing the answer.")
        answer = self._answer(text, results)
        async for event in self._say(answer.upper() if capitals else answer, prompt_tokens):
            yield event

    def _tool_call(self, text: str, offered: set[str]) -> ToolCall | None:
        expression = find_expression(text)
        if expression and "calculator" in offered:
            return ToolCall("call_calculator", "calculator", json.dumps({"expression": expression}))
        if _TIME.search(text) and "clock" in offered:
            return ToolCall("call_clock", "clock", "{}")
        return None

    def _answer(self, text: str, results: list[ChatMessage]) -> str:
        if not results:
            return f"This is the offline local model. You wrote: {text}"
        parts = []
        for result in results:
            try:
                output = json.loads(result.content)
            except ValueError:
                output = {"error": result.content}
            if "error" in output:
                parts.append(f"I could not compute that: {output['error']}.")
            elif "result" in output:
                parts.append(f"The result of {output.get('expression')} is {output['result']}.")
            elif "utc" in output:
                parts.append(f"The current time is {output['utc']} (UTC).")
            else:
                parts.append(json.dumps(output))
        return " ".join(parts)

    async def _say(self, text: str, prompt_tokens: int) -> AsyncGenerator[ProviderEvent]:
        async for event in self._say_pieces([word + " " for word in _words(text)], prompt_tokens):
            yield event

    async def _say_pieces(self, pieces: list[str], prompt_tokens: int) -> AsyncGenerator[ProviderEvent]:
        """Stream piece i (a word and what follows it) at i delays after the start, then report one token per piece.

        The pace is kept on the clock, as a remote model keeps its own: a busy
        event loop delays a piece, and the next ones then come at once
        instead of drifting later and later.
        """
        loop = asyncio.get_running_loop()
        due = loop.time()
        for piece in pieces:
            if self.delay:
                due += self.delay
                await asyncio.sleep(max(0.0, due - loop.time()))
            else:
                await asyncio.sleep(0)
            yield TextDelta(piece)
        yield UsageReport(self.model, prompt_tokens, len(pieces))


def _lorem(count: int) -> str:
    return " ".join(LOREM[i % len(LOREM)] for i in range(count))

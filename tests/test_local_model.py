"""The offline `local` model of docs/protocol.md (agents.providers.local)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any
from unittest import mock

from django.test import SimpleTestCase, override_settings

from agents.providers import local
from agents.providers.base import (
    ChatMessage,
    ProviderError,
    TextDelta,
    ThinkingDelta,
    ToolCallRequest,
    UsageReport,
)
from agents.providers.local import LocalProvider, find_expression
from agents.tools import TOOLS, ToolError

SPECS = [tool.spec for tool in TOOLS.values()]


async def collect(provider: LocalProvider, messages: list[ChatMessage], tools=SPECS):
    """All events of one model call, and the error it raised (or None)."""
    events = []
    try:
        async for event in provider.stream(messages, tools):
            events.append(event)
    except ProviderError as exc:
        return events, exc
    return events, None


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage("user", text)]


def texts(events) -> list[str]:
    return [e.text for e in events if isinstance(e, TextDelta)]


def after_tool(text: str, call, output: dict) -> list[ChatMessage]:
    """The conversation after the runtime ran `call` and got `output`."""
    return [
        ChatMessage("user", text),
        ChatMessage("assistant", "", tool_calls=[call]),
        ChatMessage("tool", json.dumps(output), tool_call_id=call.call_id),
    ]


def run_tool(call) -> dict:
    """What the runtime sends back for a tool call: its output, or {"error": ...}."""
    try:
        return TOOLS[call.name].run(json.loads(call.arguments))
    except ToolError as exc:
        return {"error": str(exc)}


class LocalModelTestCase(SimpleTestCase):
    def setUp(self) -> None:
        self.model = LocalProvider(delay_ms=0)

    def assertWordDeltas(self, deltas: list[str]) -> None:
        """Each delta is one word followed by exactly one space."""
        for delta in deltas:
            self.assertRegex(delta, r"^\S+ $")


class PlainTextTests(LocalModelTestCase):
    async def test_thinking_then_a_word_at_a_time_then_usage(self) -> None:
        """Plain text: one thinking event, then one delta per word ("word "), then usage with one token per word."""
        events, error = await collect(self.model, user("hello there friend"))
        self.assertIsNone(error)
        self.assertIsInstance(events[0], ThinkingDelta)
        self.assertTrue(events[0].text)
        deltas = events[1:-1]
        self.assertTrue(deltas)
        self.assertTrue(all(isinstance(e, TextDelta) for e in deltas))
        self.assertWordDeltas(texts(deltas))
        answer = "".join(texts(deltas))
        self.assertIn("hello there friend", answer)
        usage = events[-1]
        self.assertIsInstance(usage, UsageReport)
        self.assertEqual(usage.model, "local")
        self.assertEqual(usage.completion_tokens, len(deltas))
        self.assertEqual(usage.completion_tokens, len(answer.split()))
        self.assertEqual(usage.prompt_tokens, 3)

    async def test_deterministic(self) -> None:
        """The same conversation gives the same events."""
        first, _ = await collect(self.model, user("say something"))
        second, _ = await collect(self.model, user("say something"))
        self.assertEqual(first, second)

    async def test_answers_the_last_user_message(self) -> None:
        """With history, the answer is about the latest user message; prompt tokens count every message."""
        messages = [
            ChatMessage("user", "first question"),
            ChatMessage("assistant", "an answer"),
            ChatMessage("user", "second"),
        ]
        events, _ = await collect(self.model, messages)
        answer = "".join(texts(events))
        self.assertIn("second", answer)
        self.assertNotIn("first question", answer)
        self.assertEqual(events[-1].prompt_tokens, 5)

    async def test_no_tool_call_when_tools_are_not_offered(self) -> None:
        """Arithmetic or "time" without tools offered gets a plain answer, no tool call."""
        for text in ("what is 2 + 2", "what time is it"):
            with self.subTest(text=text):
                events, _ = await collect(self.model, user(text), tools=[])
                self.assertFalse([e for e in events if isinstance(e, ToolCallRequest)])
                self.assertTrue(texts(events))


class CommandTests(LocalModelTestCase):
    async def test_lorem_streams_exactly_n_words(self) -> None:
        """`/lorem 7` streams exactly 7 words, one per delta, and reports 7 completion tokens."""
        events, error = await collect(self.model, user("/lorem 7"))
        self.assertIsNone(error)
        self.assertIsInstance(events[0], ThinkingDelta)
        deltas = texts(events)
        self.assertEqual(len(deltas), 7)
        self.assertWordDeltas(deltas)
        self.assertEqual("".join(deltas).split(), local.LOREM[:7])
        self.assertEqual(events[-1].completion_tokens, 7)

    async def test_lorem_wraps_around_its_word_list(self) -> None:
        """`/lorem N` beyond the word list keeps going to exactly N words."""
        count = len(local.LOREM) * 2 + 3
        events, _ = await collect(self.model, user(f"  /lorem {count} "))
        self.assertEqual(len(texts(events)), count)

    async def test_fail_streams_n_words_then_raises_a_retryable_error(self) -> None:
        """`/fail 3` yields 3 words, then raises ProviderError with a code and retryable=True."""
        events, error = await collect(self.model, user("/fail 3"))
        self.assertEqual(len(texts(events)), 3)
        self.assertIsInstance(error, ProviderError)
        self.assertTrue(error.retryable)
        self.assertTrue(error.code)
        self.assertEqual(error.as_dict(), {"code": error.code, "message": error.message, "retryable": True})

    async def test_fail_zero_raises_before_any_word(self) -> None:
        """`/fail 0` streams no word and fails."""
        events, error = await collect(self.model, user("/fail 0"))
        self.assertEqual(texts(events), [])
        self.assertIsInstance(error, ProviderError)

    async def test_command_must_be_the_whole_message(self) -> None:
        """`/lorem 3` inside other text is no command: the usual answer echoes it."""
        events, _ = await collect(self.model, user("please /lorem 3 now"))
        self.assertIn("please /lorem 3 now", "".join(texts(events)))


class CalculatorCallTests(LocalModelTestCase):
    async def test_arithmetic_calls_the_calculator(self) -> None:
        """Arithmetic: thinking, then one calculator call with {"expression": ...}, and no text yet."""
        events, error = await collect(self.model, user("what is (2 + 3) * 4?"))
        self.assertIsNone(error)
        self.assertIsInstance(events[0], ThinkingDelta)
        self.assertIsInstance(events[1], ToolCallRequest)
        call = events[1].call
        self.assertEqual(call.name, "calculator")
        self.assertTrue(call.call_id)
        self.assertEqual(json.loads(call.arguments), {"expression": "(2 + 3) * 4"})
        self.assertEqual(texts(events), [])
        self.assertEqual([type(e) for e in events[2:]], [UsageReport])

    async def test_answers_with_the_tool_result(self) -> None:
        """After the calculator's result, the model thinks and answers with it, a word at a time."""
        text = "what is (2 + 3) * 4?"
        events, _ = await collect(self.model, user(text))
        call = events[1].call
        answer_events, error = await collect(self.model, after_tool(text, call, run_tool(call)))
        self.assertIsNone(error)
        self.assertIsInstance(answer_events[0], ThinkingDelta)
        self.assertFalse([e for e in answer_events if isinstance(e, ToolCallRequest)])
        deltas = texts(answer_events)
        self.assertWordDeltas(deltas)
        self.assertIn("20", "".join(deltas).split(" ")[-2])
        self.assertIn("(2 + 3) * 4", "".join(deltas))

    async def test_division_by_zero_answer_says_it_could_not_compute(self) -> None:
        """`1/0`: the calculator errors and the answer says it could not compute, with the reason."""
        events, _ = await collect(self.model, user("1/0"))
        call = events[1].call
        self.assertEqual(json.loads(call.arguments), {"expression": "1/0"})
        output = run_tool(call)
        self.assertIn("error", output)
        answer_events, error = await collect(self.model, after_tool("1/0", call, output))
        self.assertIsNone(error)
        answer = "".join(texts(answer_events))
        self.assertIn("could not compute", answer)
        self.assertIn("division by zero", answer)


class ClockCallTests(LocalModelTestCase):
    async def test_the_word_time_calls_the_clock(self) -> None:
        """A message with the word "time" makes thinking, then a clock call with {} arguments."""
        events, _ = await collect(self.model, user("What TIME is it?"))
        self.assertIsInstance(events[0], ThinkingDelta)
        self.assertIsInstance(events[1], ToolCallRequest)
        self.assertEqual(events[1].call.name, "clock")
        self.assertEqual(json.loads(events[1].call.arguments), {})

    async def test_time_inside_another_word_is_not_the_word_time(self) -> None:
        """ "sometimes" or "timeline" does not call the clock."""
        for text in ("sometimes it rains", "the timeline"):
            with self.subTest(text=text):
                events, _ = await collect(self.model, user(text))
                self.assertFalse([e for e in events if isinstance(e, ToolCallRequest)])

    async def test_answers_with_the_time(self) -> None:
        """After the clock's result, the answer gives the UTC time it returned."""
        events, _ = await collect(self.model, user("what time is it"))
        call = events[1].call
        output = run_tool(call)
        answer_events, _ = await collect(self.model, after_tool("what time is it", call, output))
        self.assertIn(output["utc"], "".join(texts(answer_events)))


class FakeClock:
    """The model's view of time: `sleep` advances it by what was asked, plus `late` seconds once (a busy loop)."""

    def __init__(self, late: float = 0.0) -> None:
        self.now = 0.0
        self.late = late
        self.pauses: list[float] = []

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds + self.late
        self.late = 0.0

    def patched(self) -> Any:
        return mock.patch.object(local, "asyncio", SimpleNamespace(sleep=self.sleep, get_running_loop=lambda: self))


class DelayTests(SimpleTestCase):
    async def test_pauses_the_configured_delay_before_each_word(self) -> None:
        """With LOCAL_MODEL_DELAY_MS=40, the model pauses 0.04 s before each word (pauses recorded, not timed)."""
        clock = FakeClock()
        with override_settings(LOCAL_MODEL_DELAY_MS=40):
            model = LocalProvider()
        with clock.patched():
            events, _ = await collect(model, user("/lorem 5"))
        self.assertEqual(len(texts(events)), 5)
        self.assertEqual([round(p, 9) for p in clock.pauses], [0.04] * 5)

    async def test_a_late_word_does_not_slow_the_next_ones(self) -> None:
        """A pause that overran by 0.1 s (a busy event loop): the words it held back come at once, then on time."""
        clock = FakeClock(late=0.1)
        times = []
        with clock.patched():
            async for event in LocalProvider(delay_ms=40).stream(user("/lorem 5"), []):
                if isinstance(event, TextDelta):
                    times.append(round(clock.now, 9))
        self.assertEqual(times, [0.14, 0.14, 0.14, 0.16, 0.2])

    def test_delay_comes_from_settings_unless_given(self) -> None:
        """LocalProvider() reads LOCAL_MODEL_DELAY_MS; an explicit delay_ms wins."""
        with override_settings(LOCAL_MODEL_DELAY_MS=0):
            self.assertEqual(LocalProvider().delay, 0)
        with override_settings(LOCAL_MODEL_DELAY_MS=250):
            self.assertEqual(LocalProvider().delay, 0.25)
            self.assertEqual(LocalProvider(delay_ms=0).delay, 0)

    @override_settings(LOCAL_MODEL_DELAY_MS=0)
    async def test_zero_delay_streams_without_pausing(self) -> None:
        """With delay 0 the model only yields to the loop (sleep(0)) between words."""

        clock = FakeClock()
        with clock.patched():
            await collect(LocalProvider(), user("/lorem 3"))
        self.assertEqual(clock.pauses, [0, 0, 0])


class FindExpressionTests(SimpleTestCase):
    def test_finds_expressions(self) -> None:
        """The arithmetic part of a message is found, trimmed of surrounding spaces."""
        cases = {
            "what is (2 + 3) * 4?": "(2 + 3) * 4",
            "1/0": "1/0",
            "compute 6*7 please": "6*7",
            "-3 + 5": "-3 + 5",
            "0.5 * 4": "0.5 * 4",
            "is 10 - 3 equal to 7?": "10 - 3",
        }
        for text, expected in cases.items():
            with self.subTest(text=text):
                self.assertEqual(find_expression(text), expected)

    def test_needs_an_operator_between_numbers(self) -> None:
        """Numbers alone, a leading sign or an operator with no number after it are no expression."""
        for text in ("I have 3 apples", "2024", "-5", "hello", "", "3 +", "( )"):
            with self.subTest(text=text):
                self.assertIsNone(find_expression(text))

    def test_takes_the_longest_expression(self) -> None:
        """With several expressions, the longest is taken."""
        self.assertEqual(find_expression("1+1 or 100 * (2 + 3)?"), "100 * (2 + 3)")

    def test_leaves_out_parentheses_of_the_surrounding_prose(self) -> None:
        """Unmatched parentheses next to an expression belong to the prose and are left out."""
        cases = {
            "what is 2+2 (roughly)?": "2+2",
            "Compute (quickly) 2+2": "2+2",
            "(note: 3*3)": "3*3",
            "(2 + 3) * 4)": "(2 + 3) * 4",
            "((1 + 2) * 3": "(1 + 2) * 3",
        }
        for text, expected in cases.items():
            with self.subTest(text=text):
                self.assertEqual(find_expression(text), expected)

    async def test_prose_parentheses_do_not_break_the_calculator_call(self) -> None:
        """A message like "what is 2+2 (roughly)?" gets a calculator call that succeeds."""
        events, _ = await collect(LocalProvider(delay_ms=0), user("what is 2+2 (roughly)?"))
        call = events[1].call
        self.assertEqual(run_tool(call), {"expression": "2+2", "result": 4})


class MarkdownCommandTests(LocalModelTestCase):
    async def test_markdown_streams_headings_a_table_lists_code_and_formulas(self) -> None:
        """/markdown streams a Markdown answer a word at a time, newlines and indentation kept."""
        events, error = await collect(LocalProvider(delay_ms=0), user("/markdown"))
        self.assertIsNone(error)
        pieces = [e.text for e in events if isinstance(e, TextDelta)]
        text = "".join(pieces)
        self.assertEqual(text, local.MARKDOWN)
        self.assertTrue(all(len(piece.split()) == 1 for piece in pieces))
        for part in ("# ", "\n## A table\n", "| --- | ---: |", "\n- ", "\n  - ", "\n1. ", "```python\n", "    return"):
            self.assertIn(part, text)
        self.assertIn("$$\ne^{i\\pi} + 1 = 0\n$$", text)
        self.assertEqual(events[-1], UsageReport("local", 1, len(pieces)))


class SystemPromptTests(LocalModelTestCase):
    async def test_reply_in_capitals_in_a_system_prompt_answers_in_upper_case(self) -> None:
        """A system prompt holding 'reply in capitals' (any case) makes the answer upper case."""
        messages = [ChatMessage("system", "Always Reply In Capitals."), ChatMessage("user", "hello you")]
        events, _ = await collect(LocalProvider(delay_ms=0), messages)
        text = "".join(e.text for e in events if isinstance(e, TextDelta))
        self.assertIn("YOU WROTE: HELLO YOU", text)
        plain, _ = await collect(LocalProvider(delay_ms=0), user("hello you"))
        self.assertIn("You wrote: hello you", "".join(e.text for e in plain if isinstance(e, TextDelta)))

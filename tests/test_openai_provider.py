"""The OpenAI-compatible provider, through the real SDK, against a scripted server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import io
import logging
import socket
import time
import traceback
from contextlib import contextmanager

from django.test import SimpleTestCase, override_settings

from agents.providers.base import (
    ChatMessage,
    ProviderError,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    ToolCallRequest,
    ToolSpec,
    UsageReport,
)
from agents.providers.history import HistoryEntry, build_history
from agents.providers.openai import OpenAIProvider
from tests.fake_openai import FakeOpenAI, Status, Stream, chat_chunks, hanging_connect_port, tool_call

API_KEY = "sk-test-never-leak-5f0c2a9e7d41b3"
CALCULATOR = ToolSpec(
    "calculator",
    "Evaluate an arithmetic expression.",
    {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
)
HELLO = [ChatMessage("user", "hello")]


async def collect(provider: OpenAIProvider, messages=HELLO, tools=()) -> tuple[list, ProviderError | None]:
    """Every event of one stream() and the ProviderError it ended with, if any."""
    events: list = []
    try:
        async for event in provider.stream(list(messages), list(tools)):
            events.append(event)
    except ProviderError as error:
        return events, error
    return events, None


@contextmanager
def capture_all_logs():
    """Everything any logger writes, down to DEBUG, SDK and HTTP client included."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    loggers = [logging.getLogger(name) for name in ("", "openai", "httpx2", "httpcore2", "agents")]
    levels = [logger.level for logger in loggers]
    console_handlers = root.handlers[:]
    root.handlers = [handler]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    try:
        yield buffer
    finally:
        root.handlers = console_handlers
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ScriptedServerTestCase(SimpleTestCase):
    """Starts a scripted server per test and points the provider settings at it."""

    def serve(self, *script: Stream | Status, **settings) -> FakeOpenAI:
        server = FakeOpenAI(script).start()
        self.addCleanup(server.stop)
        values = {
            "OPENAI_BASE_URL": server.url,
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_MODEL": "gpt-4o-mini",
            "AGENT_MAX_RETRIES": 2,
            "AGENT_CONNECT_TIMEOUT": 5.0,
            "AGENT_READ_TIMEOUT": 10.0,
        } | settings
        self.enterContext(override_settings(**values))
        return server

    def provider(self) -> OpenAIProvider:
        return OpenAIProvider(retry_base_delay=0.001)


class StreamingTests(ScriptedServerTestCase):
    async def test_content_deltas_become_text_deltas(self):
        """Each content delta of the stream is one TextDelta, in order."""
        server = self.serve(Stream(chat_chunks(["Hel", "lo", " world"])))
        events, error = await collect(self.provider())
        self.assertIsNone(error)
        self.assertEqual(events, [TextDelta("Hel"), TextDelta("lo"), TextDelta(" world")])
        self.assertEqual(len(server.requests), 1)

    async def test_request_streams_with_usage_and_bearer_key(self):
        """The call asks for a stream with usage, for the configured model, with the key as bearer token."""
        server = self.serve(Stream(chat_chunks(["ok"])))
        await collect(self.provider())
        request = server.requests[0]
        self.assertEqual(request.path, "/v1/chat/completions")
        self.assertEqual(request.headers["authorization"], f"Bearer {API_KEY}")
        self.assertEqual(request.body["model"], "gpt-4o-mini")
        self.assertIs(request.body["stream"], True)
        self.assertEqual(request.body["stream_options"], {"include_usage": True})
        self.assertEqual(request.body["messages"], [{"role": "user", "content": "hello"}])
        self.assertNotIn("tools", request.body)

    async def test_reasoning_content_becomes_thinking(self):
        """`reasoning_content` (DeepSeek, vLLM, llama.cpp) streams as ThinkingDelta before the answer."""
        self.serve(Stream(chat_chunks(["42"], reasoning=["Let me ", "think."])))
        events, error = await collect(self.provider())
        self.assertIsNone(error)
        self.assertEqual(events, [ThinkingDelta("Let me "), ThinkingDelta("think."), TextDelta("42")])

    async def test_reasoning_field_becomes_thinking(self):
        """`reasoning` (Ollama, OpenRouter) streams as ThinkingDelta too."""
        self.serve(Stream(chat_chunks(["42"], reasoning=["Hmm."], reasoning_field="reasoning")))
        events, error = await collect(self.provider())
        self.assertIsNone(error)
        self.assertEqual(events, [ThinkingDelta("Hmm."), TextDelta("42")])

    async def test_usage_chunk_is_reported_last(self):
        """The final usage chunk (empty choices) becomes one UsageReport under the configured model name."""
        self.serve(Stream(chat_chunks(["Hi"], usage=(11, 7))))
        events, error = await collect(self.provider())
        self.assertIsNone(error)
        self.assertEqual(events, [TextDelta("Hi"), UsageReport("gpt-4o-mini", 11, 7)])

    async def test_usage_on_the_finishing_chunk_is_reported(self):
        """Usage sent on the chunk with finish_reason (llama.cpp) is reported as well."""
        self.serve(Stream(chat_chunks(["Hi"], usage=(3, 1), usage_on_finish_chunk=True)))
        events, error = await collect(self.provider())
        self.assertIsNone(error)
        self.assertEqual(events, [TextDelta("Hi"), UsageReport("gpt-4o-mini", 3, 1)])

    async def test_no_usage_chunk_means_no_usage_report(self):
        """A server that sends no usage yields no UsageReport."""
        self.serve(Stream(chat_chunks(["Hi"])))
        events, _ = await collect(self.provider())
        self.assertFalse([event for event in events if isinstance(event, UsageReport)])


class ToolCallTests(ScriptedServerTestCase):
    async def test_tool_call_fragments_are_assembled(self):
        """Argument fragments of one call are joined; the call comes once, after the streamed text."""
        server = self.serve(
            Stream(
                chat_chunks(
                    ["Let me compute."],
                    tool_calls=[tool_call("call_a1", "calculator", '{"expr', 'ession": ', '"2+', '3"}')],
                    usage=(20, 9),
                )
            )
        )
        events, error = await collect(self.provider(), tools=[CALCULATOR])
        self.assertIsNone(error)
        self.assertEqual(
            events,
            [
                TextDelta("Let me compute."),
                ToolCallRequest(ToolCall("call_a1", "calculator", '{"expression": "2+3"}')),
                UsageReport("gpt-4o-mini", 20, 9),
            ],
        )
        self.assertEqual(len(server.requests), 1)

    async def test_two_tool_calls_are_assembled_in_index_order(self):
        """Two calls streamed one after the other come as two requests, in index order."""
        self.serve(
            Stream(
                chat_chunks(
                    tool_calls=[
                        tool_call("call_1", "calculator", '{"expression"', ': "1+1"}'),
                        tool_call("call_2", "clock", "{", "}"),
                    ]
                )
            )
        )
        events, error = await collect(self.provider(), tools=[CALCULATOR])
        self.assertIsNone(error)
        self.assertEqual(
            events,
            [
                ToolCallRequest(ToolCall("call_1", "calculator", '{"expression": "1+1"}')),
                ToolCallRequest(ToolCall("call_2", "clock", "{}")),
            ],
        )

    async def test_interleaved_fragments_are_assembled_by_index(self):
        """Fragments of two calls that alternate are put together by their index."""
        chunks = chat_chunks(tool_calls=[tool_call("call_1", "calculator"), tool_call("call_2", "clock")])
        role, head_1, head_2, finish = chunks
        fragments = []
        for index, piece in ((1, "{"), (0, '{"expression": '), (1, "}"), (0, '"6*7"}')):
            fragment = dict(head_1, choices=[{"index": 0, "delta": {"tool_calls": [
                {"index": index, "function": {"arguments": piece}}
            ]}, "finish_reason": None}])  # fmt: skip
            fragments.append(fragment)
        self.serve(Stream([role, head_1, head_2, *fragments, finish]))
        events, error = await collect(self.provider())
        self.assertIsNone(error)
        self.assertEqual(
            events,
            [
                ToolCallRequest(ToolCall("call_1", "calculator", '{"expression": "6*7"}')),
                ToolCallRequest(ToolCall("call_2", "clock", "{}")),
            ],
        )

    async def test_whole_tool_calls_in_one_chunk(self):
        """Calls sent complete in one chunk each (Ollama) come through unchanged."""
        self.serve(
            Stream(
                chat_chunks(
                    tool_calls=[
                        tool_call("call_x", "calculator", '{"expression": "9-4"}'),
                        tool_call("call_y", "clock", "{}"),
                    ],
                    whole_tool_calls=True,
                )
            )
        )
        events, error = await collect(self.provider())
        self.assertIsNone(error)
        self.assertEqual(
            [event.call for event in events],
            [ToolCall("call_x", "calculator", '{"expression": "9-4"}'), ToolCall("call_y", "clock", "{}")],
        )

    async def test_calls_with_new_ids_at_one_index_stay_apart(self):
        """Two complete calls both sent at index 0 (older Ollama) stay two calls."""
        chunks = chat_chunks(
            tool_calls=[tool_call("call_p", "clock", "{}"), tool_call("call_q", "clock", "{}")], whole_tool_calls=True
        )
        chunks[2]["choices"][0]["delta"]["tool_calls"][0]["index"] = 0
        self.serve(Stream(chunks))
        events, error = await collect(self.provider())
        self.assertIsNone(error)
        self.assertEqual([event.call.call_id for event in events], ["call_p", "call_q"])

    async def test_arguments_pass_through_raw(self):
        """Arguments that are not valid JSON reach the runtime as sent, for it to report."""
        self.serve(Stream(chat_chunks(tool_calls=[tool_call("call_1", "calculator", '{"expression": 2+')])))
        events, error = await collect(self.provider())
        self.assertIsNone(error)
        self.assertEqual(events, [ToolCallRequest(ToolCall("call_1", "calculator", '{"expression": 2+'))])

    async def test_call_without_id_gets_one(self):
        """A server that sends no call id still gets a call with a non-empty, unique id."""
        chunks = chat_chunks(tool_calls=[tool_call("", "clock", "{}"), tool_call("", "clock", "{}")])
        self.serve(Stream(chunks))
        events, error = await collect(self.provider())
        self.assertIsNone(error)
        ids = [event.call.call_id for event in events]
        self.assertEqual(len(ids), 2)
        self.assertTrue(all(ids))
        self.assertNotEqual(ids[0], ids[1])

    async def test_tools_are_offered_as_functions(self):
        """ToolSpecs go in the request body as `{"type": "function", "function": {...}}`."""
        server = self.serve(Stream(chat_chunks(["ok"])))
        await collect(self.provider(), tools=[CALCULATOR])
        self.assertEqual(
            server.requests[0].body["tools"],
            [
                {
                    "type": "function",
                    "function": {
                        "name": "calculator",
                        "description": "Evaluate an arithmetic expression.",
                        "parameters": CALCULATOR.parameters,
                    },
                }
            ],
        )

    async def test_tool_round_is_sent_in_openai_shape(self):
        """An assistant message with tool calls and the tool results go out as OpenAI messages."""
        server = self.serve(Stream(chat_chunks(["5"])))
        messages = [
            ChatMessage("system", "Be brief."),
            ChatMessage("user", "2+3?"),
            ChatMessage("assistant", tool_calls=[ToolCall("call_1", "calculator", '{"expression": "2+3"}')]),
            ChatMessage("tool", "5", tool_call_id="call_1"),
        ]
        await collect(self.provider(), messages=messages, tools=[CALCULATOR])
        self.assertEqual(
            server.requests[0].body["messages"],
            [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "2+3?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "calculator", "arguments": '{"expression": "2+3"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "5"},
            ],
        )


class FailureTests(ScriptedServerTestCase):
    async def test_rate_limit_then_success_is_retried(self):
        """A 429 before the first token is retried (after Retry-After) and the answer streams once."""
        server = self.serve(
            Status(429, "Rate limit reached", "rate_limit_exceeded", headers={"retry-after": "0"}),
            Stream(chat_chunks(["fine"])),
        )
        events, error = await collect(self.provider())
        self.assertIsNone(error)
        self.assertEqual(events, [TextDelta("fine")])
        self.assertEqual(len(server.requests), 2)

    async def test_retry_after_is_waited_before_the_retry(self):
        """A 429 with `Retry-After: 1`: the second request comes at least 1 s after the first."""
        server = self.serve(
            Status(429, "Rate limit reached", "rate_limit_exceeded", headers={"retry-after": "1"}),
            Stream(chat_chunks(["fine"])),
        )
        events, error = await collect(self.provider())  # its own backoff would be about 1 ms
        self.assertIsNone(error)
        self.assertEqual(events, [TextDelta("fine")])
        first, second = server.requests
        self.assertGreaterEqual(second.received_at - first.received_at, 1.0)

    async def test_connect_that_never_completes_times_out_and_is_retried(self):
        """A connect that hangs fails after AGENT_CONNECT_TIMEOUT, is tried 1 + AGENT_MAX_RETRIES times,
        then gives up with `provider_timeout`, retryable."""
        connect_timeout, retries = 0.3, 2
        with (
            hanging_connect_port() as port,
            override_settings(
                OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1",
                OPENAI_API_KEY=API_KEY,
                AGENT_CONNECT_TIMEOUT=connect_timeout,
                AGENT_MAX_RETRIES=retries,
                AGENT_READ_TIMEOUT=30.0,
            ),
            self.assertLogs("agents.providers.openai", "WARNING") as logs,
        ):
            started = time.monotonic()
            events, error = await collect(self.provider())
            elapsed = time.monotonic() - started
        self.assertEqual(events, [])
        self.assertEqual(error.as_dict(), {
            "code": "provider_timeout", "message": "connecting to the model server timed out", "retryable": True,
        })  # fmt: skip
        retried = [line for line in logs.output if "retry" in line]
        self.assertEqual(len(retried), retries)
        self.assertTrue(all("provider_timeout" in line for line in retried))
        self.assertIn(f"retry {retries} of {retries}", retried[-1])
        # Each try waited its whole connect timeout; the read timeout (30 s) did not govern the connect.
        self.assertGreaterEqual(elapsed, (retries + 1) * connect_timeout)
        self.assertLess(elapsed, 30.0)

    async def test_server_errors_are_retried_a_bounded_number_of_times(self):
        """A 500 before the first token is retried AGENT_MAX_RETRIES times, then fails retryable."""
        server = self.serve(Status(500), Status(500), Status(500), Stream(chat_chunks(["never sent"])))
        events, error = await collect(self.provider())
        self.assertEqual(events, [])
        self.assertEqual(error.code, "provider_error")
        self.assertTrue(error.retryable)
        self.assertIn("500", error.message)
        self.assertEqual(len(server.requests), 3)

    async def test_rate_limit_that_persists_fails_rate_limited(self):
        """429 on every try ends in `rate_limited` with the server's words."""
        self.serve(*[Status(429, "Slow down", "rate_limit_exceeded", headers={"retry-after": "0"})] * 3)
        events, error = await collect(self.provider())
        self.assertEqual(events, [])
        self.assertEqual(error.as_dict()["code"], "rate_limited")
        self.assertIn("Slow down", error.message)
        self.assertTrue(error.retryable)

    async def test_unreachable_server_is_unavailable(self):
        """Nobody listening: the connect error is retried, then `provider_unavailable`."""
        with override_settings(
            OPENAI_BASE_URL=f"http://127.0.0.1:{closed_port()}/v1", OPENAI_API_KEY=API_KEY, AGENT_MAX_RETRIES=1
        ):
            events, error = await collect(self.provider())
        self.assertEqual(events, [])
        self.assertEqual(error.code, "provider_unavailable")
        self.assertTrue(error.retryable)

    async def test_rejected_key_is_not_retried(self):
        """A 401 fails at once with `authentication_failed`, not retryable."""
        server = self.serve(Status(401, "Incorrect API key provided.", "invalid_request_error"), Stream(chat_chunks()))
        events, error = await collect(self.provider())
        self.assertEqual(events, [])
        self.assertEqual(error.as_dict(), {
            "code": "authentication_failed",
            "message": "the model server refused the API key (HTTP 401)",
            "retryable": False,
        })  # fmt: skip
        self.assertEqual(len(server.requests), 1)

    async def test_unknown_model_is_not_retried(self):
        """A 404 fails at once with the server's reason, not retryable."""
        server = self.serve(Status(404, "The model `gpt-9` does not exist", "invalid_request_error"))
        events, error = await collect(self.provider())
        self.assertEqual((error.code, error.retryable), ("provider_error", False))
        self.assertIn("gpt-9", error.message)
        self.assertEqual(len(server.requests), 1)

    async def test_connection_dropped_mid_stream_fails_without_retry(self):
        """A cut after text streamed: the text stays yielded, `stream_interrupted`, no second call."""
        server = self.serve(Stream(chat_chunks(["one ", "two ", "three"]), drop_after=3), Stream(chat_chunks(["x"])))
        events, error = await collect(self.provider())
        self.assertEqual(events, [TextDelta("one "), TextDelta("two ")])
        self.assertEqual(error.code, "stream_interrupted")
        self.assertTrue(error.retryable)
        self.assertEqual(len(server.requests), 1)

    async def test_stream_ending_before_finish_reason_is_interrupted(self):
        """A stream that ends cleanly but without finish_reason is cut short, not complete."""
        self.serve(
            Stream(chat_chunks(["half"], finish_reason="", tool_calls=[tool_call("c", "clock", "{")]), done=False)
        )
        events, error = await collect(self.provider())
        self.assertEqual(events, [TextDelta("half")])
        self.assertEqual(error.code, "stream_interrupted")

    async def test_error_event_in_stream_fails(self):
        """A `data: {"error": ...}` event mid-stream (vLLM, OpenRouter) ends the call with the server's words."""
        chunks = chat_chunks(["partial"])
        chunks.insert(2, {"error": {"message": "upstream model crashed", "type": "server_error"}})
        server = self.serve(Stream(chunks))
        events, error = await collect(self.provider())
        self.assertEqual(events, [TextDelta("partial")])
        self.assertEqual(error.code, "provider_error")
        self.assertIn("upstream model crashed", error.message)
        self.assertEqual(len(server.requests), 1)

    async def test_stalled_stream_times_out(self):
        """Silence between chunks longer than AGENT_READ_TIMEOUT: `provider_timeout`, connection closed."""
        server = self.serve(Stream(chat_chunks(["one ", "two"]), stall_after=2), AGENT_READ_TIMEOUT=0.2)
        events, error = await collect(self.provider())
        self.assertEqual(events, [TextDelta("one ")])
        self.assertEqual((error.code, error.retryable), ("provider_timeout", True))
        self.assertTrue(await asyncio.to_thread(server.wait_disconnected, 5))
        self.assertEqual(len(server.requests), 1)


class CancellationTests(ScriptedServerTestCase):
    async def test_cancelling_the_consumer_closes_the_connection(self):
        """Cancelling the task iterating the stream closes the HTTP connection at once."""
        server = self.serve(Stream(chat_chunks(["first ", "second"]), stall_after=2))
        first_delta = asyncio.Event()

        async def consume():
            async for event in self.provider().stream(HELLO, []):
                if isinstance(event, TextDelta):
                    first_delta.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(first_delta.wait(), 5)
        self.assertFalse(server.disconnected.is_set())
        task.cancel()
        with self.assertRaises(asyncio.CancelledError):
            await task
        self.assertTrue(await asyncio.to_thread(server.wait_disconnected, 5))

    async def test_closing_the_iterator_closes_the_connection(self):
        """aclose() on the stream closes the HTTP connection at once."""
        server = self.serve(Stream(chat_chunks(["first ", "second"]), stall_after=2))
        stream = self.provider().stream(HELLO, [])
        self.assertEqual(await anext(stream), TextDelta("first "))
        await stream.aclose()
        self.assertTrue(await asyncio.to_thread(server.wait_disconnected, 5))


class SecretTests(ScriptedServerTestCase):
    def assert_no_key(self, events, error: ProviderError, logs: str) -> None:
        traced = "".join(traceback.format_exception(error))
        for text in (repr(events), str(error), repr(error.as_dict()), traced, logs):
            self.assertNotIn(API_KEY, text)
        self.assertNotIn(API_KEY[-12:], logs + traced)

    async def test_key_echoed_by_the_server_is_scrubbed(self):
        """A server that echoes the key in its error: it appears in no error, traceback or log."""
        echo = f"Incorrect API key provided: {API_KEY}."
        self.serve(Status(401, echo, "invalid_request_error"))
        with capture_all_logs() as logs:
            events, error = await collect(self.provider())
        self.assertEqual(error.code, "authentication_failed")
        self.assert_no_key(events, error, logs.getvalue())

    async def test_key_in_retried_errors_and_stream_errors_is_scrubbed(self):
        """Retried 500s and a mid-stream error event that quote the key: scrubbed everywhere."""
        quote = f"backend said key={API_KEY} is odd"
        chunks = chat_chunks(["partial"])
        chunks.insert(2, {"error": {"message": quote, "type": "server_error"}})
        self.serve(Status(500, quote), Stream(chunks))
        with capture_all_logs() as logs:
            events, error = await collect(self.provider())
        self.assertEqual(error.code, "provider_error")
        self.assertIn("[redacted]", error.message)
        self.assertIn("retry 1 of 2", logs.getvalue())
        self.assert_no_key(events, error, logs.getvalue())


class HistoryTests(SimpleTestCase):
    def test_tool_calls_become_call_results_then_answer(self):
        """An assistant message with actions: tool calls, one tool result per call, then its text."""
        history = build_history(
            [
                HistoryEntry("user", "What is 2+3, and the time?"),
                HistoryEntry(
                    "assistant",
                    "2+3 is 5; it is noon.",
                    [
                        {"call_id": "c1", "tool": "calculator", "input": {"expression": "2+3"},
                         "output": {"expression": "2+3", "result": 5}, "status": "success"},
                        {"call_id": "c2", "tool": "clock", "input": {},
                         "output": {"utc": "12:00"}, "status": "success"},
                    ],
                ),
                HistoryEntry("user", "Thanks"),
            ],
            10_000,
        )  # fmt: skip
        self.assertEqual(
            history,
            [
                ChatMessage("user", "What is 2+3, and the time?"),
                ChatMessage(
                    "assistant",
                    tool_calls=[
                        ToolCall("c1", "calculator", '{"expression": "2+3"}'),
                        ToolCall("c2", "clock", "{}"),
                    ],
                ),
                ChatMessage("tool", '{"expression": "2+3", "result": 5}', tool_call_id="c1"),
                ChatMessage("tool", '{"utc": "12:00"}', tool_call_id="c2"),
                ChatMessage("assistant", "2+3 is 5; it is noon."),
                ChatMessage("user", "Thanks"),
            ],
        )

    def test_failed_and_unfinished_actions_still_get_results(self):
        """An `error` action reports its error; a `pending` one (process died) gets an error result."""
        history = build_history(
            [
                {"role": "user", "content": "1/0"},
                {
                    "role": "assistant",
                    "content": "",
                    "actions": [
                        {"call_id": "c1", "tool": "calculator", "input": {"expression": "1/0"},
                         "output": {"error": "division by zero"}, "status": "error"},
                        {"call_id": "c2", "tool": "calculator", "input": {"raw": '{"expression": 1/'}, "output": None,
                         "status": "pending"},
                    ],
                },
            ],
            10_000,
        )  # fmt: skip
        self.assertEqual(
            history[1:],
            [
                ChatMessage(
                    "assistant",
                    tool_calls=[
                        ToolCall("c1", "calculator", '{"expression": "1/0"}'),
                        ToolCall("c2", "calculator", '{"raw": "{\\"expression\\": 1/"}'),
                    ],
                ),
                ChatMessage("tool", '{"error": "division by zero"}', tool_call_id="c1"),
                ChatMessage("tool", '{"error": "the tool did not finish"}', tool_call_id="c2"),
            ],
        )

    def test_objects_with_attributes_are_accepted(self):
        """Rows given as objects with role, content and actions convert like dicts."""

        class Row:
            def __init__(self, role, content, actions=()):
                self.role, self.content, self.actions = role, content, list(actions)

        self.assertEqual(
            build_history([Row("user", "hi"), Row("assistant", "hello")], 100),
            [ChatMessage("user", "hi"), ChatMessage("assistant", "hello")],
        )

    def test_oldest_messages_are_dropped_to_fit_the_budget(self):
        """Whole messages go from the oldest until the rest fits."""
        entries = [HistoryEntry("user", "a" * 10), HistoryEntry("assistant", "b" * 10)] * 3 + [
            HistoryEntry("user", "q")
        ]
        history = build_history(entries, 41)
        self.assertEqual([len(message.content) for message in history], [10, 10, 10, 10, 1])
        self.assertEqual(history[0].role, "user")

    def test_newest_user_message_is_kept_over_budget(self):
        """The newest user message stays even when it alone is larger than the budget."""
        entries = [HistoryEntry("user", "old"), HistoryEntry("assistant", "reply"), HistoryEntry("user", "x" * 50)]
        self.assertEqual(build_history(entries, 10), [ChatMessage("user", "x" * 50)])

    def test_tool_results_are_never_left_without_their_call(self):
        """An assistant message with tool calls is kept or dropped whole; the kept part starts with a user."""
        big_round = HistoryEntry(
            "assistant",
            "done",
            [{"call_id": "c1", "tool": "calculator", "input": {"expression": "1+1"}, "output": "2" * 40,
              "status": "success"}],
        )  # fmt: skip
        entries = [HistoryEntry("user", "first"), big_round, HistoryEntry("user", "next")]
        history = build_history(entries, 30)
        self.assertEqual(history, [ChatMessage("user", "next")])
        for budget in range(0, 120):
            history = build_history(entries, budget)
            call_ids = {call.call_id for message in history for call in message.tool_calls}
            results = {message.tool_call_id for message in history if message.role == "tool"}
            self.assertEqual(call_ids, results, budget)
            self.assertEqual(history[0].role, "user", budget)

    def test_empty_assistant_messages_are_skipped(self):
        """An assistant message with no text and no actions sends nothing."""
        history = build_history(
            [HistoryEntry("user", "hi"), HistoryEntry("assistant", ""), HistoryEntry("user", "?")], 100
        )
        self.assertEqual(history, [ChatMessage("user", "hi"), ChatMessage("user", "?")])

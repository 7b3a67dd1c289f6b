"""One set of live-turn behaviours, run through the real socket and turn runtime against every provider.

`ProviderContract` holds the tests; each provider class arranges the model's
side of a scenario (a message the local model reacts to, or a script for
the OpenAI-compatible server on 127.0.0.1) and the tests check what a client
sees: the frames of the turn and the rows it left.
"""

from __future__ import annotations

import inspect
import json
import sys
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

from django.test import override_settings

from agents import ratelimit
from agents.providers.local import LOREM, LocalProvider
from agents.usage import price_micros
from chat.models import AgentAction, Message, TokenUsage
from tests.base import ChatTransactionTestCase, finish_turn, to_thread
from tests.fake_openai import FakeOpenAI, Status, Stream, chat_chunks, hanging_connect_port, tool_call
from tests.sockets import (
    FRAME_TIMEOUT,
    assert_contiguous,
    connect,
    rebuild,
    receive_until,
    receive_until_turn_ends,
)

FIVE_WORDS = ["lorem ", "ipsum ", "dolor ", "sit ", "amet "]
API_KEY = "sk-contract-never-leak-91d2e07c"


class ProviderContract:
    """What a client sees of a turn, whichever provider answers. Subclasses arrange the model's side."""

    agent: str
    model: str

    def arrange_answer(self) -> str:
        """The model answers with text only; return the user's message."""
        raise NotImplementedError

    def arrange_calculation(self) -> str:
        """The model calls calculator with {"expression": "2+3*4"}, then answers with the result."""
        raise NotImplementedError

    def arrange_failing_calculation(self) -> str:
        """The model calls calculator with {"expression": "1/0"}, then says it could not compute."""
        raise NotImplementedError

    def arrange_failure_after_five_words(self) -> str:
        """The model streams FIVE_WORDS, then fails."""
        raise NotImplementedError

    def arrange_endless_answer(self) -> str:
        """The model streams and does not stop by itself."""
        raise NotImplementedError

    def arrange_held_answer(self) -> tuple[str, str]:
        """The model streams the start of an answer and is still running when the test acts on its first delta;
        release_answer() lets it stream the rest. Return the user's message and the whole answer."""
        raise NotImplementedError

    def release_answer(self) -> None:
        """Let the answer of arrange_held_answer() stream to its end."""

    # Usage a turn that fails mid-answer stores: a dict of expected token counts, or None for no usage at all.
    usage_after_failure: dict | None

    async def assert_model_call_closed(self) -> None:
        """After a cancel, the provider's connection to the model is gone."""

    def assert_model_calls(self, count: int) -> None:
        """The model was called `count` times in this test (where the provider lets a test count them)."""

    def setUp(self) -> None:
        super().setUp()
        ratelimit.reset()
        self.user = self.make_user("alice")
        self.thread = self.make_thread(self.user)

    async def turn(self, content: str, turn_id: str) -> list[dict]:
        communicator, _ = await connect(self.user, self.thread.pk)
        await communicator.send_json_to({"type": "user_message", "content": content, "turn_id": turn_id})
        frames = await receive_until_turn_ends(communicator, turn_id)
        await finish_turn(self.thread.pk, turn_id)
        await communicator.disconnect()
        return frames

    def assert_turn_shape(self, frames: list[dict], status: str) -> int:
        """user_message, agent_started first, agent_completed last with `status`; return the message id."""
        kinds = [frame["type"] for frame in frames]
        self.assertEqual(kinds[:2], ["user_message", "agent_started"])
        self.assertEqual(kinds.count("agent_completed"), 1)
        self.assertEqual(kinds[-1], "agent_completed")
        self.assertEqual(frames[1]["data"], {"agent": self.agent, "model": self.model})
        self.assertEqual(frames[-1]["data"]["status"], status)
        message_id = frames[1]["message_id"]
        self.assertTrue(all(frame["message_id"] == message_id for frame in frames[1:]))
        assert_contiguous(frames, message_id)
        return message_id

    async def test_answer_streams_and_is_stored(self):
        """A text answer: contiguous deltas, `completed` with usage, content equal to the streamed text."""
        frames = await self.turn(self.arrange_answer(), "answer-1")
        message_id = self.assert_turn_shape(frames, "completed")
        end = frames[-1]["data"]
        self.assertIsNone(end["error"])
        self.assertEqual(end["usage"]["model"], self.model)
        text = rebuild("", frames, message_id)
        self.assertTrue(text.strip())
        message = await Message.objects.aget(pk=message_id)
        self.assertEqual((message.content, message.status, message.metadata["streaming"]), (text, "completed", False))
        self.assertEqual(await TokenUsage.objects.filter(message_id=message_id).acount(), 1)

    async def test_tool_call_is_run_stored_and_answered(self):
        """A calculator call: tool_executing, tool_completed `success` with 14, then the answer, all stored."""
        frames = await self.turn(self.arrange_calculation(), "calc-1")
        message_id = self.assert_turn_shape(frames, "completed")
        kinds = [frame["type"] for frame in frames]
        executing = frames[kinds.index("tool_executing")]["data"]
        completed = frames[kinds.index("tool_completed")]["data"]
        self.assertLess(kinds.index("tool_executing"), kinds.index("tool_completed"))
        self.assertLess(kinds.index("tool_completed"), kinds.index("message_delta"))
        self.assertEqual((executing["tool"], executing["input"]), ("calculator", {"expression": "2+3*4"}))
        self.assertEqual((completed["action_id"], completed["status"]), (executing["action_id"], "success"))
        self.assertEqual(completed["output"]["result"], 14)
        self.assertIn("14", rebuild("", frames, message_id))
        action = await AgentAction.objects.aget(message_id=message_id)
        self.assertEqual((action.tool, action.status, action.output["result"]), ("calculator", "success", 14))

    async def test_failing_tool_is_an_error_action_and_the_turn_goes_on(self):
        """A tool that fails ends `error`; the model is told and the turn still completes."""
        frames = await self.turn(self.arrange_failing_calculation(), "zero-1")
        message_id = self.assert_turn_shape(frames, "completed")
        completed = next(frame for frame in frames if frame["type"] == "tool_completed")
        self.assertEqual(completed["data"]["status"], "error")
        self.assertEqual((await AgentAction.objects.aget(message_id=message_id)).status, "error")
        self.assertIn("could not compute", (await Message.objects.aget(pk=message_id)).content)

    async def test_failure_keeps_partial_text(self):
        """A model failure after five words: `failed`, the five words kept, an error object, usage stored once."""
        frames = await self.turn(self.arrange_failure_after_five_words(), "fail-1")
        message_id = self.assert_turn_shape(frames, "failed")
        error = frames[-1]["data"]["error"]
        self.assertEqual(set(error), {"code", "message", "retryable"})
        self.assertIs(error["retryable"], True)
        message = await Message.objects.aget(pk=message_id)
        self.assertEqual(message.content.split(), [word.strip() for word in FIVE_WORDS])
        self.assertEqual(rebuild("", frames, message_id), message.content)
        flags = (message.status, message.metadata["has_error"], message.metadata["streaming"])
        self.assertEqual(flags, ("failed", True, False))
        rows = [row async for row in TokenUsage.objects.filter(message_id=message_id)]
        usage = frames[-1]["data"]["usage"]
        if self.usage_after_failure is None:
            self.assertEqual((rows, usage), ([], None))
        else:
            self.assertEqual(len(rows), 1)
            for field, count in self.usage_after_failure.items():
                self.assertEqual((field, getattr(rows[0], field), usage[field]), (field, count, count))

    async def test_cancel_mid_stream_keeps_partial_text(self):
        """A cancel during the answer: `cancelled`, partial text kept, the model call stopped."""
        communicator, _ = await connect(self.user, self.thread.pk)
        content = self.arrange_endless_answer()
        await communicator.send_json_to({"type": "user_message", "content": content, "turn_id": "stop-1"})
        message_id = (await receive_until(communicator, "message_delta"))[-1]["message_id"]
        await communicator.send_json_to({"type": "cancel", "turn_id": "stop-1"})
        frames = await receive_until_turn_ends(communicator, "stop-1")
        await finish_turn(self.thread.pk, "stop-1")
        await communicator.disconnect()
        self.assertEqual(frames[-1]["data"]["status"], "cancelled")
        message = await Message.objects.aget(pk=message_id)
        flags = (message.status, message.metadata["cancelled"], message.metadata["streaming"])
        self.assertEqual(flags, ("cancelled", True, False))
        self.assertTrue(message.content.strip())
        await self.assert_model_call_closed()

    async def send(self, communicator, content: str, turn_id: str) -> None:
        await communicator.send_json_to({"type": "user_message", "content": content, "turn_id": turn_id})

    async def first_delta(self, communicator) -> int:
        """Wait for the first message_delta; return its message id."""
        return (await receive_until(communicator, "message_delta"))[-1]["message_id"]

    async def test_reconnect_mid_turn_resumes_exactly_once(self):
        """A socket opened mid-turn: its snapshot plus the contiguous deltas after it rebuild the stored text."""
        content, answer = self.arrange_held_answer()
        first, _ = await connect(self.user, self.thread.pk)
        await self.send(first, content, "resume-1")
        message_id = await self.first_delta(first)
        second, snapshot = await connect(self.user, self.thread.pk)
        self.release_answer()
        self.assertEqual(snapshot["active_turn"], {"turn_id": "resume-1", "message_id": message_id})
        start = next(m for m in snapshot["messages"] if m["id"] == message_id)
        self.assertEqual((start["status"], start["metadata"]["streaming"]), ("streaming", True))
        self.assertTrue(start["content"])  # the first delta was committed before it was sent
        frames = await receive_until_turn_ends(second, "resume-1")
        await receive_until_turn_ends(first, "resume-1")
        await finish_turn(self.thread.pk, "resume-1")
        await first.disconnect()
        await second.disconnect()
        self.assertEqual(frames[-1]["data"]["status"], "completed")
        deltas = [frame for frame in frames if frame["type"] == "message_delta"]
        self.assertTrue(deltas)
        self.assertLessEqual(deltas[0]["data"]["offset"], len(start["content"]))
        assert_contiguous(frames, message_id, start=deltas[0]["data"]["offset"])
        final = (await Message.objects.aget(pk=message_id)).content
        self.assertEqual(final, answer)
        self.assertEqual(rebuild(start["content"], frames, message_id), final)

    async def test_turn_completes_with_every_socket_closed(self):
        """Closing the only socket mid-answer does not stop the turn: it completes in the database, usage stored."""
        content, answer = self.arrange_held_answer()
        communicator, _ = await connect(self.user, self.thread.pk)
        await self.send(communicator, content, "gone-1")
        message_id = await self.first_delta(communicator)
        await communicator.disconnect()
        self.release_answer()
        await finish_turn(self.thread.pk, "gone-1")
        message = await Message.objects.aget(pk=message_id)
        self.assertEqual((message.status, message.metadata["streaming"], message.content), ("completed", False, answer))
        self.assertEqual(await TokenUsage.objects.filter(message_id=message_id).acount(), 1)

    async def test_two_sockets_of_one_user_both_get_every_event(self):
        """Both sockets of the owner get the same events of a turn and rebuild the same, stored text."""
        first, _ = await connect(self.user, self.thread.pk)
        second, _ = await connect(self.user, self.thread.pk)
        await self.send(first, self.arrange_answer(), "two-1")
        mine = await receive_until_turn_ends(first, "two-1")
        other = await receive_until_turn_ends(second, "two-1")
        await finish_turn(self.thread.pk, "two-1")
        await first.disconnect()
        await second.disconnect()
        message_id = self.assert_turn_shape(mine, "completed")
        self.assertEqual(self.assert_turn_shape(other, "completed"), message_id)

        def events(frames):
            return [(frame["type"], frame.get("data")) for frame in frames if frame["type"] != "message_delta"]

        self.assertEqual(events(mine), events(other))
        stored = (await Message.objects.aget(pk=message_id)).content
        self.assertEqual((rebuild("", mine, message_id), rebuild("", other, message_id)), (stored, stored))

    async def test_repeated_turn_id_starts_nothing_and_stores_nothing(self):
        """The same turn_id again: the stored user_message comes back, no turn runs, no row is added."""
        communicator, _ = await connect(self.user, self.thread.pk)
        await self.send(communicator, self.arrange_answer(), "same-1")
        frames = await receive_until_turn_ends(communicator, "same-1")
        await finish_turn(self.thread.pk, "same-1")
        await self.send(communicator, "something else", "same-1")
        answer = await communicator.receive_json_from(timeout=FRAME_TIMEOUT)
        self.assertEqual((answer["type"], answer["turn_id"]), ("user_message", "same-1"))
        stored = frames[0]["data"]["message"]
        self.assertEqual(answer["data"]["message"], stored | {"updated_at": answer["data"]["message"]["updated_at"]})
        # A turn the repeat had started would show on this socket before the next turn starts (it cancels it first).
        await self.send(communicator, self.arrange_answer(), "after-1")
        after = await receive_until_turn_ends(communicator, "after-1")
        await finish_turn(self.thread.pk, "after-1")
        await communicator.disconnect()
        self.assertEqual({frame.get("turn_id") for frame in after}, {"after-1"})
        self.assert_turn_shape(after, "completed")
        self.assertEqual(await Message.objects.filter(turn_id="same-1").acount(), 2)
        self.assertEqual((await Message.objects.aget(turn_id="same-1", role="user")).content, stored["content"])
        self.assertEqual(await Message.objects.acount(), 4)
        self.assertEqual(await TokenUsage.objects.acount(), 2)
        self.assert_model_calls(2)

    async def test_new_message_mid_stream_cancels_the_running_turn_first(self):
        """A user_message during an answer ends that turn `cancelled`, text kept, before the new turn starts."""
        endless = self.arrange_endless_answer()
        answer = self.arrange_answer()
        communicator, _ = await connect(self.user, self.thread.pk)
        await self.send(communicator, endless, "old-1")
        old_id = await self.first_delta(communicator)
        await self.send(communicator, answer, "new-1")
        frames = await receive_until_turn_ends(communicator, "new-1")
        await finish_turn(self.thread.pk, "old-1")
        await finish_turn(self.thread.pk, "new-1")
        await communicator.disconnect()
        kinds = [(frame["type"], frame.get("turn_id")) for frame in frames]
        self.assertEqual(kinds.count(("agent_completed", "old-1")), 1)
        self.assertLess(kinds.index(("agent_completed", "old-1")), kinds.index(("agent_started", "new-1")))
        old_end = frames[kinds.index(("agent_completed", "old-1"))]
        self.assertEqual(old_end["data"]["status"], "cancelled")
        old = await Message.objects.aget(pk=old_id)
        self.assertEqual((old.status, old.metadata["cancelled"], old.metadata["streaming"]), ("cancelled", True, False))
        self.assertTrue(old.content.strip())
        await self.assert_model_call_closed()
        new_frames = [frame for frame in frames if frame.get("turn_id") == "new-1"]
        new_id = self.assert_turn_shape(new_frames, "completed")
        self.assertNotEqual(new_id, old_id)
        self.assertEqual(rebuild("", new_frames, new_id), (await Message.objects.aget(pk=new_id)).content)

    async def test_tool_events_come_in_the_contract_order(self):
        """A calculator turn: agent_started first, tool_executing before tool_completed, agent_completed last."""
        frames = await self.turn(self.arrange_calculation(), "order-1")
        message_id = self.assert_turn_shape(frames, "completed")
        kinds = [frame["type"] for frame in frames if frame["type"] not in ("message_delta", "agent_thinking")]
        self.assertEqual(
            kinds, ["user_message", "agent_started", "tool_executing", "tool_completed", "agent_completed"]
        )
        for frame in frames[1:]:
            ids = (frame["thread_id"], frame["turn_id"], frame["message_id"])
            self.assertEqual(ids, (self.thread.pk, "order-1", message_id))
        executing = next(frame["data"] for frame in frames if frame["type"] == "tool_executing")
        completed = next(frame["data"] for frame in frames if frame["type"] == "tool_completed")
        self.assertEqual((completed["action_id"], completed["call_id"]), (executing["action_id"], executing["call_id"]))


class StreamsStarted:
    """The async generators that one async generator function starts on this thread's event loop from now on.

    It sees the provider's own streams through the loop's async-generator
    hooks (chained to the loop's, which the loop puts back when it stops)
    and keeps a reference to each, so a stream that nobody closed stays
    visibly open instead of being closed by the garbage collector.
    """

    def __init__(self, function: Callable[..., AsyncGenerator[Any, None]]) -> None:
        self.code = function.__code__
        self.started: list[AsyncGenerator[Any, None]] = []
        self._firstiter, finalizer = sys.get_asyncgen_hooks()
        sys.set_asyncgen_hooks(firstiter=self._record, finalizer=finalizer)

    def _record(self, stream: AsyncGenerator[Any, None]) -> None:
        if stream.ag_code is self.code:
            self.started.append(stream)
        if self._firstiter is not None:
            self._firstiter(stream)

    def still_open(self) -> list[str]:
        """The state of each started stream that is not closed."""
        states = [inspect.getasyncgenstate(stream) for stream in self.started]
        return [state for state in states if state != inspect.AGEN_CLOSED]


class LocalProviderContractTests(ProviderContract, ChatTransactionTestCase):
    agent = "local"
    model = "local"
    # /fail reports its words' usage before failing: one token per word.
    usage_after_failure = {"completion_tokens": len(FIVE_WORDS)}

    def setUp(self) -> None:
        self.enterContext(override_settings(AGENT_PROVIDER="local", LOCAL_MODEL_DELAY_MS=0))
        super().setUp()

    def arrange_answer(self) -> str:
        return "hello there"

    def arrange_calculation(self) -> str:
        return "what is 2+3*4"

    def arrange_failing_calculation(self) -> str:
        return "1/0"

    def arrange_failure_after_five_words(self) -> str:
        return "/fail 5"

    def arrange_endless_answer(self) -> str:
        # Called inside the async test, on the loop that will run the turn.
        self.streams = StreamsStarted(LocalProvider.stream)
        self.enterContext(override_settings(LOCAL_MODEL_DELAY_MS=20))
        return "/lorem 100000"

    async def assert_model_call_closed(self) -> None:
        """Every stream of the local model started since arrange_endless_answer() has been closed."""
        self.assertTrue(self.streams.started, "no stream of the local model was started")
        self.assertEqual(self.streams.still_open(), [], "the local model's stream was left open")

    def arrange_held_answer(self) -> tuple[str, str]:
        # The local model cannot be held; paced at 20 ms a word, 100 words outlast a reconnect by far.
        self.enterContext(override_settings(LOCAL_MODEL_DELAY_MS=20))
        return "/lorem 100", "".join(f"{LOREM[n % len(LOREM)]} " for n in range(100))


class OpenAIProviderContractTests(ProviderContract, ChatTransactionTestCase):
    """The OpenAI provider against the scripted server, plus what only a real model can do."""

    agent = "openai"
    model = "gpt-4o-mini"
    # The connection drops before the usage chunk: the server reported no usage, so none is stored.
    usage_after_failure = None

    def setUp(self) -> None:
        self.server = FakeOpenAI().start()
        self.addCleanup(self.server.stop)
        self.enterContext(
            override_settings(
                AGENT_PROVIDER="openai",
                OPENAI_BASE_URL=self.server.url,
                OPENAI_API_KEY=API_KEY,
                OPENAI_MODEL=self.model,
                AGENT_MAX_RETRIES=0,
                AGENT_READ_TIMEOUT=10.0,
            )
        )
        super().setUp()

    def script(self, *replies: Stream | Status) -> None:
        self.server.script.extend(replies)

    def arrange_answer(self) -> str:
        self.script(Stream(chat_chunks(["Hello", ", ", "world."], usage=(12, 3))))
        return "hello there"

    def arrange_calculation(self) -> str:
        self.script(
            Stream(
                chat_chunks(
                    tool_calls=[tool_call("call_1", "calculator", '{"expression":', ' "2+3*4"}')], usage=(40, 8)
                )
            ),
            Stream(chat_chunks(["2+3*4 ", "is ", "14."], usage=(60, 4))),
        )
        return "what is 2+3*4"

    def arrange_failing_calculation(self) -> str:
        self.script(
            Stream(chat_chunks(tool_calls=[tool_call("call_1", "calculator", '{"expression": "1/0"}')])),
            Stream(chat_chunks(["I ", "could not compute that."])),
        )
        return "1/0"

    def arrange_failure_after_five_words(self) -> str:
        self.script(Stream(chat_chunks(FIVE_WORDS + ["never"]), drop_after=1 + len(FIVE_WORDS)))
        return "write five words"

    def arrange_endless_answer(self) -> str:
        self.script(Stream(chat_chunks(["first ", "second "]), stall_after=2))
        return "go on forever"

    def arrange_held_answer(self) -> tuple[str, str]:
        words = ["Once ", "upon ", "a ", "time ", "there ", "was ", "a ", "held ", "stream."]
        self.held = Stream(chat_chunks(words, usage=(9, 9)), hold_after=3)  # role chunk and two words, then wait
        self.script(self.held)
        return "tell a story", "".join(words)

    def release_answer(self) -> None:
        self.held.release.set()

    async def assert_model_call_closed(self) -> None:
        self.assertTrue(await to_thread(self.server.wait_disconnected, 5))

    def assert_model_calls(self, count: int) -> None:
        self.assertEqual(len(self.server.requests), count)

    async def test_tool_round_is_sent_back_to_the_model(self):
        """The second model call carries the assistant's tool call and the tool's result."""
        await self.turn(self.arrange_calculation(), "calc-2")
        first, second = (request.body for request in self.server.requests)
        self.assertEqual([tool["function"]["name"] for tool in first["tools"]], ["calculator", "clock"])
        assistant, result = second["messages"][-2:]
        self.assertEqual(assistant["tool_calls"][0]["id"], "call_1")
        self.assertEqual(assistant["tool_calls"][0]["function"]["name"], "calculator")
        self.assertEqual((result["role"], result["tool_call_id"]), ("tool", "call_1"))
        self.assertEqual(json.loads(result["content"])["result"], 14)

    async def test_usage_of_every_call_is_summed_and_priced(self):
        """Usage of both model calls of a tool round is stored once, summed, with its cost."""
        frames = await self.turn(self.arrange_calculation(), "calc-3")
        usage = frames[-1]["data"]["usage"]
        self.assertEqual((usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]), (100, 12, 112))
        self.assertEqual(usage["cost_micros"], price_micros("gpt-4o-mini", 40, 8) + price_micros("gpt-4o-mini", 60, 4))
        self.assertGreater(usage["cost_micros"], 0)
        row = await TokenUsage.objects.aget(message_id=frames[-1]["message_id"])
        self.assertEqual((row.prompt_tokens, row.completion_tokens, row.cost_micros), (100, 12, usage["cost_micros"]))

    async def test_unknown_model_costs_nothing(self):
        """A model missing from the price table stores its tokens with cost 0."""
        with override_settings(OPENAI_MODEL="my-local-llama"):
            self.model = "my-local-llama"
            frames = await self.turn(self.arrange_answer(), "free-1")
        self.assertEqual(frames[-1]["data"]["usage"]["cost_micros"], 0)
        self.assertEqual(frames[-1]["data"]["usage"]["total_tokens"], 15)

    async def test_reasoning_becomes_agent_thinking(self):
        """Reasoning text streams as agent_thinking frames and is not part of the content."""
        self.script(Stream(chat_chunks(["42"], reasoning=["Adding ", "up."])))
        frames = await self.turn("the answer?", "think-1")
        message_id = self.assert_turn_shape(frames, "completed")
        thinking = "".join(frame["data"]["text"] for frame in frames if frame["type"] == "agent_thinking")
        self.assertEqual(thinking, "Adding up.")
        self.assertEqual((await Message.objects.aget(pk=message_id)).content, "42")

    async def test_unknown_tool_is_an_error_the_model_is_told(self):
        """A call to a tool that does not exist: an `error` action, the model told, the turn completes."""
        self.script(
            Stream(chat_chunks(tool_calls=[tool_call("call_w", "weather", '{"city": "Oslo"}')])),
            Stream(chat_chunks(["No weather tool."])),
        )
        frames = await self.turn("weather in Oslo?", "unknown-1")
        message_id = self.assert_turn_shape(frames, "completed")
        completed = next(frame for frame in frames if frame["type"] == "tool_completed")
        self.assertEqual((completed["data"]["tool"], completed["data"]["status"]), ("weather", "error"))
        action = await AgentAction.objects.aget(message_id=message_id)
        self.assertEqual((action.tool, action.status), ("weather", "error"))
        told = self.server.requests[1].body["messages"][-1]
        self.assertEqual((told["role"], told["tool_call_id"]), ("tool", "call_w"))
        self.assertIn("weather", told["content"])

    async def test_invalid_arguments_are_an_error_the_model_is_told(self):
        """Arguments that are not JSON: an `error` action holding the raw text, the turn completes."""
        self.script(
            Stream(chat_chunks(tool_calls=[tool_call("call_b", "calculator", '{"expression": 2+')])),
            Stream(chat_chunks(["Sorry."])),
        )
        frames = await self.turn("2+2?", "badjson-1")
        message_id = self.assert_turn_shape(frames, "completed")
        action = await AgentAction.objects.aget(message_id=message_id)
        self.assertEqual(action.status, "error")
        self.assertIn('{"expression": 2+', str(action.input))
        told = self.server.requests[1].body["messages"][-1]
        self.assertEqual((told["role"], told["tool_call_id"]), ("tool", "call_b"))
        self.assertIn("error", json.loads(told["content"]))

    async def test_step_limit_stops_the_turn(self):
        """A model that keeps calling tools is stopped after AGENT_MAX_STEPS calls with a clear error."""
        self.script(*[Stream(chat_chunks(tool_calls=[tool_call(f"call_{n}", "clock", "{}")])) for n in range(3)])
        with override_settings(AGENT_MAX_STEPS=2):
            frames = await self.turn("loop", "steps-1")
        message_id = self.assert_turn_shape(frames, "failed")
        error = frames[-1]["data"]["error"]
        self.assertEqual(error["code"], "step_limit")
        self.assertEqual(len(self.server.requests), 2)
        self.assertEqual(await AgentAction.objects.filter(message_id=message_id).acount(), 2)

    async def test_history_of_earlier_turns_is_sent(self):
        """The next turn sends the earlier user message, tool round and answer, then the new message."""
        await self.turn(self.arrange_calculation(), "hist-1")
        self.script(Stream(chat_chunks(["Yes."])))
        await self.turn("and again?", "hist-2")
        messages = self.server.requests[-1].body["messages"]
        conversation = [m for m in messages if m["role"] != "system"]
        self.assertEqual([m["role"] for m in conversation], ["user", "assistant", "tool", "assistant", "user"])
        self.assertEqual(conversation[0]["content"], "what is 2+3*4")
        self.assertEqual(conversation[1]["tool_calls"][0]["function"]["name"], "calculator")
        self.assertEqual(conversation[3]["content"], "2+3*4 is 14.")
        self.assertEqual(conversation[-1]["content"], "and again?")

    async def test_history_is_trimmed_to_the_budget(self):
        """With a small AGENT_HISTORY_CHARS only the newest messages are sent."""
        self.script(Stream(chat_chunks(["a" * 50])))
        await self.turn("first " * 10, "trim-1")
        self.script(Stream(chat_chunks(["ok"])))
        with override_settings(AGENT_HISTORY_CHARS=30):
            await self.turn("second", "trim-2")
        conversation = [m for m in self.server.requests[-1].body["messages"] if m["role"] != "system"]
        self.assertEqual(conversation, [{"role": "user", "content": "second"}])

    async def test_rate_limit_before_the_first_token_is_retried(self):
        """A 429 before anything streamed is retried; the client sees one clean answer."""
        self.script(Status(429, "slow down", "rate_limit_exceeded", headers={"retry-after": "0"}))
        with override_settings(AGENT_MAX_RETRIES=1):
            frames = await self.turn(self.arrange_answer(), "retry-1")
        message_id = self.assert_turn_shape(frames, "completed")
        self.assertEqual((await Message.objects.aget(pk=message_id)).content, "Hello, world.")
        self.assertEqual(len(self.server.requests), 2)

    async def test_connect_that_never_completes_fails_the_turn_after_the_retries(self):
        """A server whose connect hangs: each try gives up after AGENT_CONNECT_TIMEOUT, is retried
        AGENT_MAX_RETRIES times, then the turn ends `failed` with `provider_timeout`."""
        connect_timeout, retries = 0.3, 1
        with (
            hanging_connect_port() as port,
            override_settings(
                OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1",
                AGENT_CONNECT_TIMEOUT=connect_timeout,
                AGENT_MAX_RETRIES=retries,
                AGENT_READ_TIMEOUT=30.0,
            ),
            self.assertLogs("agents.providers.openai", "WARNING") as logs,
        ):
            started = time.monotonic()
            frames = await self.turn("hello", "connect-1")
            elapsed = time.monotonic() - started
        message_id = self.assert_turn_shape(frames, "failed")
        error = frames[-1]["data"]["error"]
        self.assertEqual(error, {
            "code": "provider_timeout", "message": "connecting to the model server timed out", "retryable": True,
        })  # fmt: skip
        self.assertEqual(sum("retry" in line and "provider_timeout" in line for line in logs.output), retries)
        # Every try waited its whole connect timeout; the read timeout (30 s) did not govern the connect.
        self.assertGreaterEqual(elapsed, (retries + 1) * connect_timeout)
        self.assertLess(elapsed, 30.0)
        message = await Message.objects.aget(pk=message_id)
        self.assertEqual((message.status, message.content), ("failed", "(no text response)"))

    async def test_rejected_key_fails_without_showing_it(self):
        """A 401 that echoes the key: `failed` with `authentication_failed`; the key is in no frame or row."""
        self.script(Status(401, f"Incorrect API key provided: {API_KEY}", "invalid_request_error"))
        frames = await self.turn("hello", "auth-1")
        message_id = self.assert_turn_shape(frames, "failed")
        self.assertEqual(frames[-1]["data"]["error"]["code"], "authentication_failed")
        message = await Message.objects.aget(pk=message_id)
        stored = json.dumps([message.content, message.metadata], default=str)
        self.assertNotIn(API_KEY, json.dumps(frames) + stored)

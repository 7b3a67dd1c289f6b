"""TurnPublisher: every event leaves after its write is committed, deltas batch under load (agents.events)."""

from __future__ import annotations

import asyncio
import time

from channels.layers import get_channel_layer
from django.test import override_settings

from agents.events import EVENT_TYPE, TurnPublisher, thread_group
from chat import turns
from chat.models import AgentAction, Message
from tests.base import ChatTransactionTestCase, read_committed
from tests.layers import Sent

TIMEOUT = 10
SENTINEL = "test.sentinel"


class PublisherTestCase(ChatTransactionTestCase):
    def setUp(self) -> None:
        self.user = self.make_user("alice")
        self.thread = self.make_thread(self.user)
        self.publisher = TurnPublisher(self.thread.pk, "t-1")

    # --- a listener on the thread's group, through the real channel layer ---

    async def listen(self) -> str:
        """Join the thread's group as a socket would; return the channel to receive on."""
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(thread_group(self.thread.pk), channel)
        return channel

    async def next_frame(self, channel: str) -> dict:
        message = await asyncio.wait_for(get_channel_layer().receive(channel), TIMEOUT)
        if message["type"] == SENTINEL:
            return {"type": SENTINEL}
        self.assertEqual(message["type"], EVENT_TYPE)
        return message["frame"]

    async def frames_until_quiet(self, channel: str) -> list[dict]:
        """Every frame sent so far: send a marker to the group and read up to it."""
        await get_channel_layer().group_send(thread_group(self.thread.pk), {"type": SENTINEL})
        frames = []
        while (frame := await self.next_frame(channel))["type"] != SENTINEL:
            frames.append(frame)
        return frames

    # --- reads through another connection: they see only committed rows ---

    async def committed(self, read):
        return await read_committed(read)

    async def committed_text(self, message_id: int) -> str:
        return await self.committed(lambda: self.full_text(message_id))

    async def committed_message(self, message_id: int) -> Message:
        return await self.committed(lambda: Message.objects.get(pk=message_id))

    def assertContiguous(self, deltas: list[dict], text: str) -> None:
        """The deltas' offsets follow each other from 0 and their pieces make `text`."""
        offset = 0
        for frame in deltas:
            self.assertEqual(frame["data"]["offset"], offset, deltas)
            offset += len(frame["data"]["delta"])
        self.assertEqual("".join(f["data"]["delta"] for f in deltas), text)


@override_settings(CHANNEL_LAYERS={"default": {"BACKEND": "tests.layers.CommitCheckingLayer"}})
class DatabaseFirstTests(PublisherTestCase):
    """Each event's state is read through another connection inside group_send, before the frame is delivered."""

    def setUp(self) -> None:
        super().setUp()
        self.layer = get_channel_layer()
        self.layer.sent.clear()

    def committed_when_sent(self, type_: str) -> list[Sent]:
        sent = self.layer.sent_of(type_)
        self.assertTrue(sent, f"no {type_} was sent")
        return sent

    async def test_agent_started_after_the_shell_is_committed(self) -> None:
        """When agent_started is sent, its assistant message is committed, streaming, for this turn."""
        channel = await self.listen()
        message_id = await self.publisher.started("local", "local-model")
        frame = await self.next_frame(channel)
        self.assertEqual(
            frame,
            {
                "type": "agent_started",
                "thread_id": self.thread.pk,
                "turn_id": "t-1",
                "message_id": message_id,
                "data": {"agent": "local", "model": "local-model"},
            },
        )
        [sent] = self.committed_when_sent("agent_started")
        self.assertIsNotNone(sent.committed, "agent_started sent before its message was committed")
        self.assertEqual(
            (sent.committed["role"], sent.committed["status"], sent.committed["turn_id"], sent.committed["streaming"]),
            ("assistant", "streaming", "t-1", True),
        )

    async def test_message_delta_after_its_text_is_committed(self) -> None:
        """When each message_delta is sent, the committed text already holds it: offset + len(delta) characters."""
        channel = await self.listen()
        message_id = await self.publisher.started("local", "local")
        await self.next_frame(channel)
        words = [f"wörd{i} " for i in range(40)]
        for word in words:
            self.publisher.push_delta(word)
            await asyncio.sleep(0)  # lets the writer take some pieces alone and batch others
        await self.publisher.flush()
        frames = [f for f in await self.frames_until_quiet(channel) if f["type"] == "message_delta"]
        self.assertTrue(all(f["message_id"] == message_id for f in frames))
        self.assertContiguous(frames, "".join(words))
        sent = self.committed_when_sent("message_delta")
        self.assertEqual([s.frame for s in sent], frames)
        for each in sent:
            offset, delta = each.frame["data"]["offset"], each.frame["data"]["delta"]
            text = each.committed["text"]
            self.assertGreaterEqual(len(text), offset + len(delta), f"delta at {offset} sent before its commit")
            self.assertEqual(text[offset : offset + len(delta)], delta)

    async def test_a_delta_says_when_its_first_character_was_produced(self) -> None:
        """message_delta.data.emitted_at is the server time (ms) the first piece it carries was pushed."""
        channel = await self.listen()
        await self.publisher.started("local", "local")
        await self.next_frame(channel)
        before = time.time_ns() // 1_000_000
        self.publisher.push_delta("one ")
        self.publisher.push_delta("two ")
        await self.publisher.flush()
        after = time.time_ns() // 1_000_000
        frames = [f for f in await self.frames_until_quiet(channel) if f["type"] == "message_delta"]
        self.assertTrue(frames)
        for frame in frames:
            self.assertIsInstance(frame["data"]["emitted_at"], int)
            self.assertTrue(before <= frame["data"]["emitted_at"] <= after, frame)

    async def test_tool_events_after_their_action_rows_are_committed(self) -> None:
        """When tool_executing is sent its action is committed pending; when tool_completed is sent, with its result."""
        channel = await self.listen()
        message_id = await self.publisher.started("local", "local")
        await self.next_frame(channel)
        action_id = await self.publisher.tool_executing("call-1", "calculator", {"expression": "1+1"})
        executing = await self.next_frame(channel)
        self.assertEqual(executing["type"], "tool_executing")
        self.assertEqual(
            executing["data"],
            {
                "action_id": action_id,
                "call_id": "call-1",
                "tool": "calculator",
                "input": {"expression": "1+1"},
                "position": 0,
            },
        )
        [sent] = self.committed_when_sent("tool_executing")
        self.assertIsNotNone(sent.committed, "tool_executing sent before its action was committed")
        self.assertEqual((sent.committed["message_id"], sent.committed["status"]), (message_id, "pending"))

        await self.publisher.tool_completed(action_id, "success", {"expression": "1+1", "result": 2})
        completed = await self.next_frame(channel)
        self.assertEqual(completed["type"], "tool_completed")
        data = completed["data"]
        self.assertEqual(
            {k: data[k] for k in ("action_id", "call_id", "tool", "status", "output")},
            {
                "action_id": action_id,
                "call_id": "call-1",
                "tool": "calculator",
                "status": "success",
                "output": {"expression": "1+1", "result": 2},
            },
        )
        self.assertGreaterEqual(data["duration_ms"], 0)
        [sent] = self.committed_when_sent("tool_completed")
        self.assertEqual(
            (sent.committed["status"], sent.committed["output"]), ("success", {"expression": "1+1", "result": 2})
        )

    async def test_agent_completed_after_the_message_is_final(self) -> None:
        """When agent_completed is sent, the final status, full text and usage are committed."""
        channel = await self.listen()
        await self.publisher.started("local", "local")
        self.publisher.push_delta("hello ")
        self.publisher.push_delta("world ")
        usage = {"model": "local", "prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5, "cost_micros": 0}
        self.assertEqual(await self.publisher.completed("completed", usage), "completed")
        frames = await self.frames_until_quiet(channel)
        self.assertEqual([f["type"] for f in frames][-1], "agent_completed")
        final = frames[-1]["data"]
        self.assertEqual((final["status"], final["usage"], final["error"]), ("completed", usage, None))
        self.assertContiguous([f for f in frames if f["type"] == "message_delta"], "hello world ")
        [sent] = self.committed_when_sent("agent_completed")
        self.assertEqual(
            {k: sent.committed[k] for k in ("status", "text", "streaming", "usage")},
            {"status": "completed", "text": "hello world ", "streaming": False, "usage": usage},
        )

    async def test_user_message_announced_once_after_commit(self) -> None:
        """When user_message is sent its row is committed; repeating the turn_id announces nothing."""
        channel = await self.listen()
        message, created = await self.publisher.user_message("hi there")
        self.assertTrue(created)
        frame = await self.next_frame(channel)
        self.assertEqual((frame["type"], frame["turn_id"]), ("user_message", "t-1"))
        self.assertEqual(frame["data"]["message"], message)
        [sent] = self.committed_when_sent("user_message")
        self.assertIsNotNone(sent.committed, "user_message sent before its row was committed")
        self.assertEqual(
            (sent.committed["role"], sent.committed["turn_id"], sent.committed["text"]), ("user", "t-1", "hi there")
        )

        again, created = await TurnPublisher(self.thread.pk, "t-1").user_message("hi there")
        self.assertFalse(created)
        self.assertEqual(again["id"], message["id"])
        self.assertEqual(await self.frames_until_quiet(channel), [])
        self.assertEqual(len(self.layer.sent_of("user_message")), 1)


class DeltaBatchingTests(PublisherTestCase):
    async def test_deltas_pushed_during_a_commit_go_in_the_next_one(self) -> None:
        """While the first delta is being committed, the next ones gather into one commit and one event."""
        channel = await self.listen()
        message_id = await self.publisher.started("local", "local")
        self.publisher.push_delta("a")
        await asyncio.sleep(0)  # the writer takes "a" and starts committing it
        for piece in "bcdefghij":
            self.publisher.push_delta(piece)
        await self.publisher.flush()
        deltas = [f for f in await self.frames_until_quiet(channel) if f["type"] == "message_delta"]
        self.assertEqual([(f["data"]["offset"], f["data"]["delta"]) for f in deltas], [(0, "a"), (1, "bcdefghij")])
        self.assertEqual(await self.committed_text(message_id), "abcdefghij")

    async def test_fast_pushes_are_batched_contiguously(self) -> None:
        """Many deltas pushed faster than commits give fewer events, contiguous, whose text is the pushes."""
        channel = await self.listen()
        message_id = await self.publisher.started("local", "local")
        pushes = [f"{i}€ " for i in range(300)]
        for index, piece in enumerate(pushes):
            self.publisher.push_delta(piece)
            if index % 7 == 0:
                await asyncio.sleep(0)
        await self.publisher.flush()
        deltas = [f for f in await self.frames_until_quiet(channel) if f["type"] == "message_delta"]
        self.assertLess(len(deltas), len(pushes))
        self.assertContiguous(deltas, "".join(pushes))
        self.assertEqual(await self.committed_text(message_id), "".join(pushes))

    async def test_idle_deltas_go_at_once(self) -> None:
        """When the writer is idle, each delta is committed and sent on its own."""
        channel = await self.listen()
        await self.publisher.started("local", "local")
        await self.next_frame(channel)
        for piece in ("one ", "two ", "three "):
            self.publisher.push_delta(piece)
            frame = await self.next_frame(channel)
            self.assertEqual(frame["data"]["delta"], piece)
        self.assertEqual(await self.frames_until_quiet(channel), [])

    async def test_empty_delta_is_ignored(self) -> None:
        """An empty delta writes and sends nothing."""
        channel = await self.listen()
        await self.publisher.started("local", "local")
        self.publisher.push_delta("")
        await self.publisher.flush()
        self.assertEqual([f["type"] for f in await self.frames_until_quiet(channel)], ["agent_started"])

    async def test_thinking_and_tools_come_after_earlier_deltas(self) -> None:
        """agent_thinking and tool_executing wait for the deltas pushed before them."""
        channel = await self.listen()
        await self.publisher.started("local", "local")
        self.publisher.push_delta("before ")
        await self.publisher.thinking("hmm")
        self.publisher.push_delta("tool ")
        await self.publisher.tool_executing("call-1", "clock", {})
        frames = await self.frames_until_quiet(channel)
        types = [f["type"] for f in frames]
        self.assertEqual(types, ["agent_started", "message_delta", "agent_thinking", "message_delta", "tool_executing"])
        self.assertEqual(frames[-1]["data"]["position"], len("before tool "))  # where the call sits in the text

    async def test_streams_of_the_process_share_commits(self) -> None:
        """Pieces of two turns pushed while a commit is in flight go in one transaction; each message gets one delta."""
        from agents.writer import writer

        channel = await self.listen()
        other = TurnPublisher(self.thread.pk, "t-2")
        await self.publisher.started("local", "local")
        await other.started("local", "local")
        before = writer().commits
        self.publisher.push_delta("a ")
        other.push_delta("x ")
        await asyncio.sleep(0)  # one commit takes "a " and "x "
        for text in ("b ", "c "):
            self.publisher.push_delta(text)
            other.push_delta(text.upper())
        await self.publisher.flush()
        await other.flush()
        self.assertEqual(writer().commits - before, 2)
        self.assertEqual(await self.committed_text(self.publisher.message_id), "a b c ")
        self.assertEqual(await self.committed_text(other.message_id), "x B C ")
        deltas = [f for f in await self.frames_until_quiet(channel) if f["type"] == "message_delta"]
        self.assertEqual(len(deltas), 4)  # two commits, one delta per message each

    @override_settings(DELTA_COMMIT_INTERVAL_MS=300)
    async def test_commits_start_at_most_once_per_interval(self) -> None:
        """Pieces pushed soon after a commit wait for the interval and go together in the next commit."""
        from agents.writer import writer

        channel = await self.listen()
        await self.publisher.started("local", "local")
        before = writer().commits
        self.publisher.push_delta("one ")
        await self.publisher.flush()  # committed at once: the writer was idle
        for text in ("two ", "three ", "four "):
            self.publisher.push_delta(text)
            await asyncio.sleep(0.01)  # the model's pace, far under the interval
        await self.publisher.flush()
        self.assertEqual(writer().commits - before, 2)
        deltas = [f["data"]["delta"] for f in await self.frames_until_quiet(channel) if f["type"] == "message_delta"]
        self.assertEqual(deltas, ["one ", "two three four "])

    @override_settings(DELTA_COMMIT_INTERVAL_MS=40, DELTA_EVENTS_PER_SECOND=2000, DELTA_COMMIT_INTERVAL_MAX_MS=100)
    async def test_the_interval_grows_with_the_streams_a_commit_carried_up_to_its_bound(self) -> None:
        """40 ms with few streams; past 80 streams (2,000 events/s) longer, at most 100 ms, whatever the load."""
        from agents.writer import writer

        intervals = {}
        for streams in (1, 80, 120, 200, 5_000):
            writer().streams = streams
            intervals[streams] = round(writer().interval() * 1000)
        self.assertEqual(intervals, {1: 40, 80: 40, 120: 60, 200: 100, 5_000: 100})

    async def test_by_default_a_process_with_many_streams_commits_every_70_ms(self) -> None:
        """The shipped settings: 40 ms for up to 10 streams, 70 ms from 18 on (250 events/s), never longer."""
        from agents.writer import writer

        intervals = {}
        for streams in (1, 10, 14, 18, 20, 313, 5_000):
            writer().streams = streams
            intervals[streams] = round(writer().interval() * 1000)
        self.assertEqual(intervals, {1: 40, 10: 40, 14: 56, 18: 70, 20: 70, 313: 70, 5_000: 70})

    @override_settings(DELTA_COMMIT_INTERVAL_MS=60_000)
    async def test_a_turns_first_delta_does_not_wait_for_the_interval(self) -> None:
        """While the writer waits out its interval for one stream, another turn's first piece is committed at once."""
        other = TurnPublisher(self.thread.pk, "t-2")
        await self.publisher.started("local", "local")
        await other.started("local", "local")
        self.publisher.push_delta("one ")
        await self.publisher.flush()  # the writer was idle: at once; its next commit waits a minute
        self.publisher.push_delta("two ")
        other.push_delta("first ")
        await asyncio.wait_for(other.flush(), TIMEOUT)
        self.assertEqual(await self.committed_text(other.message_id), "first ")
        self.assertEqual(await self.committed_text(self.publisher.message_id), "one two ")  # it rode along

    async def test_delta_to_a_closed_message_surfaces_on_flush(self) -> None:
        """A delta pushed after the message was finalized is not stored, and flush() raises."""
        await self.publisher.started("local", "local")
        await self.publisher.completed("completed")
        self.publisher.push_delta("late ")
        with self.assertRaises(turns.MessageClosed):
            await self.publisher.flush()


class CompletedOnceTests(PublisherTestCase):
    async def test_agent_completed_exactly_once(self) -> None:
        """Calling completed() twice finalizes once and sends one agent_completed; both return the stored status."""
        channel = await self.listen()
        message_id = await self.publisher.started("local", "local")
        self.publisher.push_delta("partial ")
        first = await self.publisher.completed("cancelled")
        second = await self.publisher.completed("failed", error={"code": "x", "message": "y", "retryable": False})
        self.assertEqual((first, second), ("cancelled", "cancelled"))
        frames = await self.frames_until_quiet(channel)
        completed = [f for f in frames if f["type"] == "agent_completed"]
        self.assertEqual(len(completed), 1)
        self.assertIs(frames[-1], completed[0])
        self.assertEqual(completed[0]["data"]["status"], "cancelled")
        message = await self.committed_message(message_id)
        self.assertEqual((message.status, message.content), ("cancelled", "partial "))
        self.assertTrue(message.metadata["cancelled"])

    async def test_completed_after_another_finalizer_sends_nothing_more(self) -> None:
        """The sweeper finalized (and announced) the message first: completed() returns its status, sends nothing."""
        channel = await self.listen()
        message_id = await self.publisher.started("local", "local")
        await self.committed(lambda: turns.finalize_assistant_turn(message_id, "interrupted"))
        self.assertEqual(await self.publisher.completed("completed"), "interrupted")
        completed = [f for f in await self.frames_until_quiet(channel) if f["type"] == "agent_completed"]
        self.assertEqual(completed, [])

    async def test_completed_before_started(self) -> None:
        """A turn that failed before its shell existed still sends one agent_completed (no message id)."""
        channel = await self.listen()
        error = {"code": "server_error", "message": "boom", "retryable": True}
        self.assertEqual(await self.publisher.completed("failed", None, error), "failed")
        frames = await self.frames_until_quiet(channel)
        self.assertEqual(
            [(f["type"], f["message_id"], f["data"]["error"]) for f in frames], [("agent_completed", None, error)]
        )


@override_settings(CHANNEL_LAYERS={"default": {"BACKEND": "tests.layers.BrokenChannelLayer"}})
class FailingLayerTests(PublisherTestCase):
    async def test_a_failing_channel_layer_does_not_stop_the_turn(self) -> None:
        """With group_send raising, every step still writes its rows, failures are logged, and completed() returns."""
        await self.listen()  # someone in the group: each event is sent, and fails
        with self.assertLogs("agents.events", level="ERROR") as logs:
            message, created = await self.publisher.user_message("what is 1+1")
            message_id = await self.publisher.started("local", "local")
            await self.publisher.thinking("Calling the calculator tool.")
            action_id = await self.publisher.tool_executing("call-1", "calculator", {"expression": "1+1"})
            await self.publisher.tool_completed(action_id, "success", {"expression": "1+1", "result": 2})
            for word in ("The ", "result ", "is ", "2. "):
                self.publisher.push_delta(word)
            await self.publisher.flush()
            status = await self.publisher.completed("completed")
        self.assertTrue(created)
        self.assertEqual(status, "completed")
        self.assertTrue(all("broadcast failed" in line for line in logs.output))
        self.assertGreaterEqual(len(logs.output), 7)
        assistant = await self.committed_message(message_id)
        self.assertEqual((assistant.status, assistant.content), ("completed", "The result is 2. "))
        self.assertEqual((await self.committed_message(message["id"])).content, "what is 1+1")
        action = await self.committed(lambda: AgentAction.objects.get(pk=action_id))
        self.assertEqual(action.status, "success")

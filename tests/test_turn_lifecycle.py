"""How a turn ends when its message is closed under it or its finalize fails; appends keyed by offset."""

from __future__ import annotations

import asyncio

from channels.layers import get_channel_layer
from django.db import connection
from django.test import override_settings

from agents import runtime
from agents.events import EVENT_TYPE, thread_group
from chat import turns
from chat.models import Message
from tests.base import ChatTransactionTestCase, read_committed

TIMEOUT = 10


@override_settings(LOCAL_MODEL_DELAY_MS=10)
class TurnLifecycleTestCase(ChatTransactionTestCase):
    def setUp(self) -> None:
        self.user = self.make_user("alice")
        self.thread = self.make_thread(self.user)

    async def listen(self) -> str:
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(thread_group(self.thread.pk), channel)
        return channel

    async def frames(self, channel: str, until: str) -> list[dict]:
        """Frames on `channel` up to the first of type `until`."""
        frames: list[dict] = []
        while not frames or frames[-1]["type"] != until:
            message = await asyncio.wait_for(get_channel_layer().receive(channel), TIMEOUT)
            if message["type"] == EVENT_TYPE:
                frames.append(message["frame"])
        return frames

    async def committed(self, read):
        return await read_committed(read)


class ClosedMessageTests(TurnLifecycleTestCase):
    async def test_turn_stops_at_once_when_its_message_is_closed(self) -> None:
        """The sweeper closes a live turn's message: the model call stops at once and the text stays as closed."""
        channel = await self.listen()
        start = await runtime.start_turn(self.thread.pk, "/lorem 1500", "t-1")
        frames = await self.frames(channel, "message_delta")
        message_id = frames[-1]["message_id"]
        await self.committed(lambda: turns.finalize_assistant_turn(message_id, "interrupted"))
        closed = await self.committed(lambda: Message.objects.get(pk=message_id))
        # 1500 words at 10 ms would take 15 s more.
        self.assertEqual(await asyncio.wait_for(start.task, 3), "interrupted")
        final = await self.committed(lambda: Message.objects.get(pk=message_id))
        self.assertEqual((final.status, final.content), ("interrupted", closed.content))
        self.assertLess(len(final.content.split()), 1500)


REFUSE_SQLITE = (
    "CREATE TRIGGER refuse_finalize BEFORE UPDATE OF status ON chat_message WHEN NEW.status != 'streaming'"
    " BEGIN SELECT RAISE(ABORT, 'finalize refused'); END"
)
REFUSE_PG = (
    "CREATE FUNCTION refuse_finalize() RETURNS trigger LANGUAGE plpgsql AS"
    " $$ BEGIN RAISE EXCEPTION 'finalize refused'; END $$;"
    " CREATE TRIGGER refuse_finalize BEFORE UPDATE OF status ON chat_message"
    " FOR EACH ROW WHEN (NEW.status <> 'streaming') EXECUTE FUNCTION refuse_finalize()"
)


class FailedFinalizeTests(TurnLifecycleTestCase):
    def refuse_finalize(self, refuse: bool) -> None:
        """Make the database refuse (or accept again) every change of a message's status: a real DatabaseError."""
        with connection.cursor() as cursor:
            if not refuse:
                cursor.execute(
                    "DROP TRIGGER refuse_finalize" + (" ON chat_message" if connection.vendor != "sqlite" else "")
                )
                if connection.vendor != "sqlite":
                    cursor.execute("DROP FUNCTION refuse_finalize()")
            else:
                cursor.execute(REFUSE_SQLITE if connection.vendor == "sqlite" else REFUSE_PG)

    async def test_failed_finalize_announces_nothing_and_leaves_the_turn_streaming(self) -> None:
        """The database refuses the finalize: no agent_completed is sent, the row stays streaming for the sweeper."""
        channel = await self.listen()
        await self.committed(lambda: self.refuse_finalize(True))
        try:
            start = await runtime.start_turn(self.thread.pk, "/lorem 5", "t-1")
            with self.assertLogs("chat.endings", "ERROR"):
                await asyncio.wait_for(start.task, TIMEOUT)
        finally:
            await self.committed(lambda: self.refuse_finalize(False))
        frames = await self.frames_until_quiet(channel)
        self.assertEqual([f["type"] for f in frames if f["type"] == "agent_completed"], [])
        self.assertEqual(len([f for f in frames if f["type"] == "message_delta"]) > 0, True)
        message_id = frames[-1]["message_id"]
        stored = await self.committed(lambda: Message.objects.get(pk=message_id))
        self.assertEqual(stored.status, "streaming")

    async def frames_until_quiet(self, channel: str) -> list[dict]:
        await get_channel_layer().group_send(thread_group(self.thread.pk), {"type": "test.sentinel"})
        frames = []
        while (message := await asyncio.wait_for(get_channel_layer().receive(channel), TIMEOUT))[
            "type"
        ] != "test.sentinel":
            frames.append(message["frame"])
        return frames


class AppendByOffsetTests(TurnLifecycleTestCase):
    def test_a_retried_append_that_had_committed_adds_nothing(self) -> None:
        """The same append at the same offset again (a retry after a lost reply) stores the piece once."""
        message_id = turns.persist_assistant_shell(self.thread.pk, "t-1").id
        self.assertEqual(turns.append_content(message_id, "one ", 0), 4)
        self.assertEqual(turns.append_content(message_id, "one ", 0), 4)
        self.assertEqual(turns.append_content(message_id, "two ", 4), 8)
        self.assertEqual(self.full_text(message_id), "one two ")
        self.assertEqual(Message.objects.get(pk=message_id).content_length, 8)

    def test_an_append_at_a_wrong_offset_is_refused(self) -> None:
        """An append whose offset is not the stored length (another writer) stores nothing."""
        message_id = turns.persist_assistant_shell(self.thread.pk, "t-1").id
        turns.append_content(message_id, "one ", 0)
        with self.assertRaises(turns.MessageClosed):
            turns.append_content(message_id, "two ", 2)
        self.assertEqual(self.full_text(message_id), "one ")


class LostStartTests(TurnLifecycleTestCase):
    def stored_user_message(self, turn_id: str, age: float) -> None:
        """A user message committed `age` seconds ago whose turn never started (its process died in between)."""
        from datetime import timedelta

        from django.utils import timezone

        message_id = turns.persist_user_turn(self.thread.pk, turn_id, "/lorem 3").id
        Message.objects.filter(pk=message_id).update(created_at=timezone.now() - timedelta(seconds=age))

    @override_settings(TURN_REDISPATCH_SECONDS=5, TURN_START_DEADLINE_SECONDS=30)
    async def test_a_lost_start_is_run_again(self) -> None:
        """The latest user message of a thread, unanswered for 10 s, gets its turn: it runs to completed."""
        from agents.recovery import recover_unstarted

        await self.committed(lambda: self.stored_user_message("lost-1", 10))
        channel = await self.listen()
        self.assertEqual(await recover_unstarted(), 1)
        frames = await self.frames(channel, "agent_completed")
        self.assertEqual((frames[0]["type"], frames[-1]["data"]["status"]), ("agent_started", "completed"))
        self.assertEqual(await recover_unstarted(), 0)

    @override_settings(TURN_REDISPATCH_SECONDS=5, TURN_START_DEADLINE_SECONDS=30)
    async def test_a_start_lost_too_long_ago_ends_interrupted(self) -> None:
        """An unanswered message past TURN_START_DEADLINE_SECONDS ends interrupted: agent_started, agent_completed."""
        from agents.recovery import recover_unstarted

        await self.committed(lambda: self.stored_user_message("old-1", 60))
        channel = await self.listen()
        self.assertEqual(await recover_unstarted(), 1)
        frames = await self.frames(channel, "agent_completed")
        self.assertEqual([f["type"] for f in frames], ["agent_started", "agent_completed"])
        self.assertEqual((frames[-1]["turn_id"], frames[-1]["data"]["status"]), ("old-1", "interrupted"))
        stored = await self.committed(lambda: Message.objects.get(pk=frames[-1]["message_id"]))
        self.assertEqual((stored.status, stored.metadata["has_error"]), ("interrupted", True))


class WorkerStartTests(TurnLifecycleTestCase):
    """A turn sent to a worker (begin_turn with only its question): agent, shell and history in one hop."""

    def question(self, turn_id: str) -> int:
        return turns.persist_user_turn(self.thread.pk, turn_id, "/lorem 3").id

    async def test_a_started_turn_runs_once_and_a_repeated_start_runs_nothing(self) -> None:
        question = await self.committed(lambda: self.question("w-1"))
        channel = await self.listen()
        status = await asyncio.wait_for(runtime.begin_turn(self.thread.pk, "w-1", question), TIMEOUT)
        frames = await self.frames(channel, "agent_completed")
        self.assertEqual(
            (status, frames[0]["type"], frames[-1]["data"]["status"]), ("completed", "agent_started", "completed")
        )
        again = await asyncio.wait_for(runtime.begin_turn(self.thread.pk, "w-1", question), TIMEOUT)
        self.assertEqual(again, "cancelled", "the turn had its shell: this start announces and runs nothing")
        answers = await self.committed(lambda: list(Message.objects.filter(turn_id="w-1", role="assistant")))
        self.assertEqual([(a.status, a.content) for a in answers], [("completed", "lorem ipsum dolor ")])

    async def test_a_misconfigured_agent_ends_the_turn_failed_with_no_answer_stored(self) -> None:
        from chat.models import Agent

        def broken() -> int:
            self.thread.agent = Agent.objects.create(name="broken", provider="nope")
            self.thread.save()
            return self.question("w-2")

        question = await self.committed(broken)
        channel = await self.listen()
        with self.assertLogs("agents.runtime", "ERROR"):
            status = await asyncio.wait_for(runtime.begin_turn(self.thread.pk, "w-2", question), TIMEOUT)
        frames = await self.frames(channel, "agent_completed")
        self.assertEqual(status, "failed")
        self.assertEqual([f["type"] for f in frames], ["agent_completed"])
        self.assertEqual((frames[0]["message_id"], frames[0]["data"]["error"]["code"]), (None, "server_error"))
        answers = await self.committed(lambda: Message.objects.filter(turn_id="w-2", role="assistant").count())
        self.assertEqual(answers, 0)

"""The sweeper: turns whose process died end `interrupted` with their partial text (agents.sweeper, recover_turns)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from io import StringIO

from channels.layers import get_channel_layer
from django.core.management import call_command
from django.utils import timezone

from agents.events import EVENT_TYPE, thread_group
from agents.registry import registry
from agents.sweeper import INTERRUPTED_ERROR, asweep, sweep
from chat import turns
from chat.models import AgentAction, Message
from tests.base import ChatTestCase, ChatTransactionTestCase


class SweeperHelpers:
    def register_turn(self, message_id: int) -> None:
        """Put turn t-1 of self.thread, writing `message_id`, in this process's registry for the test."""
        turn, _ = registry.register(self.thread.pk, "t-1")
        turn.message_id = message_id
        self.addCleanup(registry.cleanup_completed, 0)
        self.addCleanup(registry.mark_completed, self.thread.pk, "t-1")

    def streaming_turn(self, thread, turn_id: str, text: str = "", stale_seconds: float | None = None) -> int:
        """A streaming assistant message with `text` appended; its heartbeat `stale_seconds` old if given."""
        message_id = turns.persist_assistant_shell(thread.pk, turn_id, agent="local", model="local").id
        for word in text.split(" "):
            if word:
                turns.append_content(message_id, word + " ")
        if stale_seconds is not None:
            Message.objects.filter(pk=message_id).update(heartbeat_at=timezone.now() - timedelta(seconds=stale_seconds))
        return message_id


class SweepTests(SweeperHelpers, ChatTestCase):
    def setUp(self) -> None:
        self.user = self.make_user("alice")
        self.thread = self.make_thread(self.user)

    def test_stale_turn_ends_interrupted_with_its_partial_text(self) -> None:
        """A streaming message with a stale heartbeat becomes interrupted, keeps its text, and has_error is set."""
        message_id = self.streaming_turn(self.thread, "t-1", "partial answer", stale_seconds=120)
        finalized = sweep(stale_after=30)
        self.assertEqual([t["id"] for t in finalized], [message_id])
        self.assertEqual(
            finalized[0],
            {
                "id": message_id,
                "thread_id": self.thread.pk,
                "turn_id": "t-1",
                "status": "interrupted",
                "content_length": len("partial answer "),
            },
        )
        message = Message.objects.get(pk=message_id)
        self.assertEqual((message.status, message.content), ("interrupted", "partial answer "))
        self.assertFalse(message.chunks.exists())
        self.assertTrue(message.metadata["has_error"])
        self.assertFalse(message.metadata["streaming"])
        self.assertFalse(message.metadata["cancelled"])
        self.assertEqual(message.metadata["error"], INTERRUPTED_ERROR)

    def test_stale_turn_without_text_stores_no_text_response(self) -> None:
        """An interrupted turn that had produced nothing stores "(no text response)"."""
        message_id = self.streaming_turn(self.thread, "t-1", stale_seconds=120)
        sweep(stale_after=30)
        self.assertEqual(Message.objects.get(pk=message_id).content, turns.NO_TEXT)

    def test_pending_tool_of_a_stale_turn_ends_in_error(self) -> None:
        """A tool call left pending by the dead process ends `error`."""
        message_id = self.streaming_turn(self.thread, "t-1", "calling", stale_seconds=120)
        action_id = turns.start_action(message_id, "call-1", "clock", {}).id
        sweep(stale_after=30)
        self.assertEqual(AgentAction.objects.get(pk=action_id).status, "error")

    def test_fresh_turn_is_left_streaming(self) -> None:
        """A streaming message with a recent heartbeat is not touched."""
        fresh = self.streaming_turn(self.thread, "t-1", "still going")
        other_thread = self.make_thread(self.user, "other")
        stale = self.streaming_turn(other_thread, "t-2", "dead", stale_seconds=120)
        finalized = sweep(stale_after=30)
        self.assertEqual([t["id"] for t in finalized], [stale])
        message = Message.objects.get(pk=fresh)
        self.assertEqual(message.status, "streaming")
        self.assertTrue(message.metadata["streaming"])
        self.assertEqual(self.full_text(fresh), "still going ")

    def test_turn_running_in_this_process_is_left_streaming(self) -> None:
        """A stale heartbeat of a turn this process's registry runs is left alone (a slow loop, not a dead one)."""
        message_id = self.streaming_turn(self.thread, "t-1", "slow", stale_seconds=120)
        self.register_turn(message_id)
        self.assertEqual(sweep(stale_after=30), [])
        self.assertEqual(Message.objects.get(pk=message_id).status, "streaming")

    def test_turn_completed_in_the_registry_is_swept(self) -> None:
        """A turn the registry knows as completed does not protect a still-streaming message."""
        message_id = self.streaming_turn(self.thread, "t-1", "x", stale_seconds=120)
        self.register_turn(message_id)
        registry.mark_completed(self.thread.pk, "t-1")
        self.assertEqual([t["id"] for t in sweep(stale_after=30)], [message_id])

    def test_final_messages_are_left_alone(self) -> None:
        """Completed messages with an old heartbeat keep their status and text."""
        message_id = self.streaming_turn(self.thread, "t-1", "done", stale_seconds=120)
        turns.finalize_assistant_turn(message_id, "completed")
        self.assertEqual(sweep(stale_after=30), [])
        self.assertEqual(Message.objects.get(pk=message_id).status, "completed")

    def test_second_sweep_finds_nothing(self) -> None:
        """Sweeping again does not finalize the same turn twice."""
        self.streaming_turn(self.thread, "t-1", "x", stale_seconds=120)
        self.assertEqual(len(sweep(stale_after=30)), 1)
        self.assertEqual(sweep(stale_after=30), [])


class RecoverTurnsCommandTests(SweeperHelpers, ChatTransactionTestCase):
    """Real commits: the command sweeps through Channels' database wrapper, which closes connections inside atomic()."""

    def setUp(self) -> None:
        self.user = self.make_user("alice")
        self.thread = self.make_thread(self.user)

    def test_recover_turns_stale_after_zero(self) -> None:
        """`manage.py recover_turns --stale-after 0` finalizes every streaming turn as interrupted and says how many."""
        first = self.streaming_turn(self.thread, "t-1", "one two")
        second = self.streaming_turn(self.make_thread(self.user, "b"), "t-2", "three")
        out = StringIO()
        call_command("recover_turns", "--stale-after", "0", stdout=out)
        self.assertIn("finalized 2 interrupted turn(s)", out.getvalue())
        self.assertEqual(
            list(Message.objects.filter(pk__in=[first, second]).order_by("pk").values_list("status", "content")),
            [("interrupted", "one two "), ("interrupted", "three ")],
        )

    def test_recover_turns_default_leaves_fresh_turns(self) -> None:
        """Without --stale-after, a turn with a fresh heartbeat is left streaming."""
        message_id = self.streaming_turn(self.thread, "t-1", "fresh")
        out = StringIO()
        call_command("recover_turns", stdout=out)
        self.assertIn("finalized 0 interrupted turn(s)", out.getvalue())
        self.assertEqual(Message.objects.get(pk=message_id).status, "streaming")


class AnnounceTests(SweeperHelpers, ChatTransactionTestCase):
    def setUp(self) -> None:
        self.thread = self.make_thread(self.make_user("alice"))
        self.message_id = self.streaming_turn(self.thread, "t-1", "partial", stale_seconds=120)

    async def test_asweep_announces_agent_completed_to_the_thread(self) -> None:
        """asweep() sends agent_completed (interrupted, with the error and length) to the thread's sockets."""
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(thread_group(self.thread.pk), channel)
        finalized = await asweep(stale_after=30)
        self.assertEqual([t["id"] for t in finalized], [self.message_id])
        message = await asyncio.wait_for(layer.receive(channel), 10)
        self.assertEqual(message["type"], EVENT_TYPE)
        self.assertEqual(
            message["frame"],
            {
                "type": "agent_completed",
                "thread_id": self.thread.pk,
                "turn_id": "t-1",
                "message_id": self.message_id,
                "data": {"status": "interrupted", "usage": None, "error": INTERRUPTED_ERROR, "content_length": 8},
            },
        )

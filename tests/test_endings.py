"""chat.endings: the answers of one database hop ended together, each as close_assistant_turn would end it alone."""

from __future__ import annotations

import asyncio
from unittest import mock

from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from chat import endings, hops, turns
from chat.models import AgentAction, Message, MessageChunk, TokenUsage
from tests.base import ChatTestCase, ChatTransactionTestCase, read_committed

USAGE = {"model": "local", "prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


class EndingTestCase(ChatTestCase):
    def setUp(self) -> None:
        self.user = self.make_user("alice")

    def streaming(self, pieces: tuple[str, ...] = ("Hello ", "wörld")) -> int:
        """A streaming answer of a thread of its own, its text stored as pieces."""
        thread = self.make_thread(self.user)
        turns.persist_user_turn(thread.pk, "t-1", "hi")
        message_id = turns.persist_assistant_shell(thread.pk, "t-1").id
        for piece in pieces:
            turns.append_content(message_id, piece)
        return message_id

    def end(self, calls: list[tuple]) -> list[tuple[bool, object]]:
        """close_assistant_turns as a hop runs it: in a transaction of its own."""
        with transaction.atomic():
            return endings.close_assistant_turns([(args, {}) for args in calls])


class EndingsTests(EndingTestCase):
    def test_each_answer_ends_with_its_text_status_flags_and_usage(self) -> None:
        completed, cancelled, failed = self.streaming(), self.streaming(("Hi",)), self.streaming(())
        error = {"code": "provider_unavailable", "message": "down", "retryable": True}
        outcomes = self.end(
            [(completed, "completed", USAGE), (cancelled, "cancelled"), (failed, "failed", None, error)]
        )
        self.assertEqual(
            outcomes,
            [
                (True, turns.Finalized("completed", True, 11)),
                (True, turns.Finalized("cancelled", True, 2)),
                (True, turns.Finalized("failed", True, len(turns.NO_TEXT))),
            ],
        )
        stored = {m.pk: m for m in Message.objects.filter(pk__in=[completed, cancelled, failed])}
        self.assertEqual(
            [(stored[m].status, stored[m].content, stored[m].content_length) for m in (completed, cancelled, failed)],
            [("completed", "Hello wörld", 11), ("cancelled", "Hi", 2), ("failed", turns.NO_TEXT, len(turns.NO_TEXT))],
        )
        self.assertEqual(
            [(stored[m].metadata["streaming"], stored[m].metadata["cancelled"], stored[m].metadata["has_error"])
             for m in (completed, cancelled, failed)],
            [(False, False, False), (False, True, False), (False, False, True)],
        )  # fmt: skip
        self.assertEqual(stored[failed].metadata["error"], error)
        self.assertFalse(MessageChunk.objects.filter(message_id__in=[completed, cancelled]).exists())
        self.assertEqual(list(TokenUsage.objects.values_list("message_id", "total_tokens")), [(completed, 5)])

    def test_a_running_tool_ends_as_an_error_of_its_turn_only(self) -> None:
        with_tool, without = self.streaming(), self.streaming()
        turns.start_action(with_tool, "call-1", "clock", {})
        self.end([(with_tool, "cancelled"), (without, "completed")])
        action = AgentAction.objects.get(message_id=with_tool)
        self.assertEqual(action.status, "error")
        self.assertEqual(action.output, {"error": "turn ended (cancelled) before the tool finished"})

    def test_ended_missing_invalid_and_repeated_calls_answer_as_alone(self) -> None:
        """An answer ended before keeps its status; the second call for one message finds it ended by the first."""
        ended, fresh = self.streaming(), self.streaming(("abc",))
        turns.finalize_assistant_turn(ended, "completed", USAGE)
        outcomes = self.end(
            [
                (ended, "cancelled", USAGE),
                (fresh, "completed"),
                (fresh, "cancelled"),
                (10**9, "completed"),
                (fresh, "x"),
            ]
        )
        self.assertEqual(outcomes[:4], [
            (True, turns.Finalized("completed", False, 11)),
            (True, turns.Finalized("completed", True, 3)),
            (True, turns.Finalized("completed", False, 3)),
            (True, None),
        ])  # fmt: skip
        self.assertFalse(outcomes[4][0])
        self.assertIsInstance(outcomes[4][1], ValueError)
        self.assertEqual(TokenUsage.objects.filter(message_id=ended).count(), 1)

    def test_the_statements_do_not_grow_with_the_answers_ended(self) -> None:
        counts = []
        for number in (2, 8):
            calls = [(self.streaming(), "completed", USAGE) for _ in range(number)]
            with CaptureQueriesContext(connection) as queries:
                self.end(calls)
            counts.append(len(queries))
        self.assertEqual(counts[0], counts[1])

    def test_a_usage_the_database_refuses_leaves_the_others_recorded(self) -> None:
        """As alone: usage that cannot be stored is logged, and never keeps an answer from ending."""
        good, bad = self.streaming(), self.streaming()
        with self.assertLogs("chat.turns", "ERROR"):
            outcomes = self.end([(good, "completed", USAGE), (bad, "completed", {**USAGE, "total_tokens": 2**80})])
        self.assertEqual([outcome[1].status for outcome in outcomes], ["completed", "completed"])
        self.assertEqual(list(TokenUsage.objects.values_list("message_id", flat=True)), [good])


class EndingsOfOneHopTests(ChatTransactionTestCase):
    async def test_answers_ending_at_once_share_one_batch(self) -> None:
        """The finalizes of turns that end at the same moment go to the database together."""
        user = await read_committed(self.make_user)

        def streaming() -> int:
            thread = self.make_thread(user)
            turns.persist_user_turn(thread.pk, "t-1", "hi")
            message_id = turns.persist_assistant_shell(thread.pk, "t-1").id
            turns.append_content(message_id, "text")
            return message_id

        message_ids = [await read_committed(streaming) for _ in range(8)]
        spy = mock.Mock(wraps=hops._run_batches)
        with mock.patch.object(hops, "_run_batches", spy):
            finalized = await asyncio.gather(*(endings.afinalize_assistant_turn(m, "completed") for m in message_ids))
        self.assertEqual([(f.status, f.closed) for f in finalized], [("completed", True)] * 8)
        together = [sum(call[5] is endings.close_assistant_turns for call in args[0]) for args, _ in spy.call_args_list]
        self.assertGreaterEqual(max(together), 7, together)  # the first hop's one, then all that waited for it


class EndingLocksTests(ChatTransactionTestCase):
    """On PostgreSQL a finalize locks its message's row only: never its thread's, which a turn's start holds."""

    def test_a_finalize_does_not_wait_for_a_start_that_holds_its_thread(self) -> None:
        """A start holds the thread's row while it inserts a message under the answer; the finalize must not wait
        for that row, or the insert's foreign key check and the finalize wait for each other (a deadlock)."""
        import threading
        import unittest

        from django.db import connections

        from chat.models import Thread

        if connection.vendor != "postgresql":
            raise unittest.SkipTest("row locks: PostgreSQL (SQLite has one writer at a time)")
        user = self.make_user("alice")
        thread = self.make_thread(user)
        answers = []
        for turn_id in ("t-1", "t-2"):
            turns.persist_user_turn(thread.pk, turn_id, "hi")
            answers.append(turns.persist_assistant_shell(thread.pk, turn_id).id)
            turns.append_content(answers[-1], "text")
        held, release = threading.Event(), threading.Event()

        def start_holding_the_thread() -> None:
            try:
                with transaction.atomic():
                    Thread.objects.select_for_update().get(pk=thread.pk)
                    held.set()
                    release.wait(30)
            finally:
                connections.close_all()

        holder = threading.Thread(target=start_holding_the_thread)
        holder.start()
        self.addCleanup(holder.join, 30)
        self.addCleanup(release.set)
        self.assertTrue(held.wait(30))
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '5s'")  # a bound: the finalize must not wait at all
            alone = turns.close_assistant_turn(answers[0], "completed")
            together = endings.close_assistant_turns([((answers[1], "cancelled"), {}), ((answers[0], "failed"), {})])
        self.assertTrue(holder.is_alive(), "the start still holds its thread")
        self.assertEqual(alone, turns.Finalized("completed", True, 4))
        self.assertEqual(
            together, [(True, turns.Finalized("cancelled", True, 4)), (True, turns.Finalized("completed", False, 4))]
        )

"""Shared hops to the database thread: calls made together travel together, each with its own outcome."""

from __future__ import annotations

import asyncio
import threading
from unittest import mock

from django.db import connection

from chat import hops
from chat.models import Thread
from tests.base import ChatTransactionTestCase, to_thread


class HopTests(ChatTransactionTestCase):
    async def test_calls_made_together_share_hops_in_order(self) -> None:
        """100 calls at once: each gets its own answer, they run in call order, in far fewer hops than calls."""
        ran: list[int] = []
        threads: set[int] = set()

        def record(n: int) -> int:
            ran.append(n)
            threads.add(threading.get_ident())
            return n * 2

        spy = mock.AsyncMock(wraps=hops._run_hop)
        with mock.patch.object(hops, "_run_hop", spy):
            answers = await asyncio.gather(*(hops.hop(record)(n) for n in range(100)))
        self.assertEqual(answers, [n * 2 for n in range(100)])
        self.assertEqual(ran, list(range(100)))
        self.assertEqual(len(threads), 1, "every call ran on the one database thread")
        self.assertNotIn(threading.get_ident(), threads)
        self.assertLessEqual(spy.await_count, 2, "the first call's hop, then everything that waited for it")

    async def test_a_failing_call_fails_alone(self) -> None:
        def check(n: int) -> int:
            if n == 3:
                raise ValueError("three")
            return n

        outcomes = await asyncio.gather(*(hops.hop(check)(n) for n in range(6)), return_exceptions=True)
        self.assertEqual([o for o in outcomes if not isinstance(o, Exception)], [0, 1, 2, 4, 5])
        self.assertIsInstance(outcomes[3], ValueError)

    async def test_a_caller_that_stops_waiting_leaves_the_others_their_answers(self) -> None:
        started = threading.Event()
        release = threading.Event()

        def slow() -> str:
            started.set()
            release.wait(10)
            return "slow"

        first = asyncio.ensure_future(hops.hop(slow)())
        await to_thread(started.wait, 10)
        waiting = [asyncio.ensure_future(hops.hop(str)(n)) for n in range(3)]
        queue = hops._queues[asyncio.get_running_loop()]
        async with asyncio.timeout(10):
            while len(queue.calls) < 3:  # until the three calls wait for the next hop
                await asyncio.sleep(0)
        waiting[1].cancel()
        release.set()
        self.assertEqual(await first, "slow")
        self.assertEqual(await waiting[0], "0")
        self.assertEqual(await waiting[2], "2")
        self.assertTrue(waiting[1].cancelled())

    async def test_the_calls_of_a_hop_commit_and_a_failing_one_leaves_nothing_on_postgresql(self) -> None:
        """20 calls that each store a thread; one fails after storing it. On PostgreSQL, one commit for the hop
        and that call's savepoint rolled back; on SQLite each call commits on its own, as Django's autocommit does."""
        user = await to_thread(self.make_user)

        def store(n: int) -> int:
            thread = Thread.objects.create(owner=user, title=f"t{n}")
            if n == 4:
                raise ValueError("after its insert")
            return thread.pk

        outcomes = await asyncio.gather(
            *(hops.hop(store, shared_commit=True)(n) for n in range(20)), return_exceptions=True
        )
        self.assertIsInstance(outcomes[4], ValueError)
        titles = set(await to_thread(lambda: list(Thread.objects.values_list("title", flat=True))))
        self.assertTrue({f"t{n}" for n in range(20) if n != 4} <= titles)
        self.assertEqual("t4" in titles, connection.vendor != "postgresql")

    async def test_shared_calls_of_a_hop_run_in_thread_order_on_postgresql(self) -> None:
        """Shared writes lock their threads in id order, whatever order they were made in: no two hops deadlock."""
        ran: list[int] = []

        def lock(thread_id: int) -> None:
            ran.append(thread_id)

        await asyncio.gather(*(hops.hop(lock, shared_commit=True)(n) for n in (5, 3, 9, 1, 7)))
        expected = [1, 3, 5, 7, 9] if connection.vendor == "postgresql" else [5, 3, 9, 1, 7]
        # The first call goes alone in the first hop; the rest wait together for the second.
        self.assertEqual(ran[1:], [n for n in expected if n != ran[0]])


class HeartbeatBatchTests(ChatTransactionTestCase):
    async def test_heartbeats_of_one_hop_go_together_and_each_learns_its_own_cancel_flag(self) -> None:
        from chat import turns
        from chat.models import Message

        user = await to_thread(self.make_user)

        def streaming(n: int) -> int:
            thread = self.make_thread(user)
            asked = turns.persist_user_turn(thread.pk, f"t{n}", "question")
            return turns.persist_assistant_shell(thread.pk, f"t{n}", parent_id=asked.id).id

        answers = await to_thread(lambda: [streaming(n) for n in range(20)])
        await to_thread(lambda: Message.objects.filter(pk=answers[3]).update(cancel_requested=True))
        await to_thread(lambda: Message.objects.filter(pk__in=answers).update(heartbeat_at=None))
        await to_thread(lambda: Message.objects.filter(pk=answers[5]).update(status="completed"))
        with mock.patch.object(turns, "touch_turns", wraps=turns.touch_turns) as batch:
            flags = await asyncio.gather(*(turns.atouch_turn(answer) for answer in answers))
        self.assertIn(batch.call_count, (1, 2), "the first heartbeat's hop, then all that waited for it")
        self.assertEqual([n for n, flag in enumerate(flags) if flag], [3])
        beats = await to_thread(lambda: dict(Message.objects.filter(pk__in=answers).values_list("pk", "heartbeat_at")))
        self.assertIsNone(beats[answers[5]], "a finished answer keeps no heartbeat")
        self.assertTrue(all(beats[a] is not None for n, a in enumerate(answers) if n != 5))

    def test_a_heartbeat_skips_an_answer_the_delta_writer_holds_on_postgresql(self) -> None:
        """Waiting for the writer's row lock while holding others deadlocked with it: the held row is skipped."""
        import unittest

        from django.db import connections, transaction

        from chat import turns
        from chat.models import Message

        if connection.vendor != "postgresql":
            raise unittest.SkipTest("row locks: PostgreSQL")
        user = self.make_user()
        answers = []
        for n in range(2):
            thread = self.make_thread(user)
            asked = turns.persist_user_turn(thread.pk, f"t{n}", "question")
            answers.append(turns.persist_assistant_shell(thread.pk, f"t{n}", parent_id=asked.id).id)
        Message.objects.filter(pk__in=answers).update(heartbeat_at=None, cancel_requested=True)
        locked, released = threading.Event(), threading.Event()

        def writer_holds_the_first() -> None:
            try:
                with transaction.atomic():
                    Message.objects.select_for_update().get(pk=answers[0])
                    locked.set()
                    released.wait(30)
            finally:
                connections.close_all()

        holder = threading.Thread(target=writer_holds_the_first, daemon=True)
        holder.start()
        self.assertTrue(locked.wait(30))
        try:
            with transaction.atomic():
                flagged = turns.touch_turns(answers)  # returns at once: nothing to wait for
        finally:
            released.set()
            holder.join(30)
        self.assertEqual(flagged, set(answers), "both cancel flags are read, the held row's too")
        beats = dict(Message.objects.filter(pk__in=answers).values_list("pk", "heartbeat_at"))
        self.assertIsNone(beats[answers[0]])
        self.assertIsNotNone(beats[answers[1]])

    def test_a_heartbeat_of_many_turns_locks_each_row_once_on_postgresql(self) -> None:
        """Statistics taken with no answer streaming must not make the heartbeat rescan its locking subquery.

        As `id IN (SELECT ... FOR UPDATE SKIP LOCKED)` the planner ran the
        subquery again for every streaming message (50 ms for 626 turns,
        holding the rows the delta writer waits for); the ids are now
        gathered once.
        """
        import json
        import unittest

        from django.test.utils import CaptureQueriesContext

        from chat import turns

        if connection.vendor != "postgresql":
            raise unittest.SkipTest("PostgreSQL's plans")
        user = self.make_user()
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE chat_message")  # no answer is streaming yet
        answers = []
        for n in range(40):
            thread = self.make_thread(user)
            asked = turns.persist_user_turn(thread.pk, f"t{n}", "question")
            answers.append(turns.persist_assistant_shell(thread.pk, f"t{n}", parent_id=asked.id).id)
        with CaptureQueriesContext(connection) as queries:
            turns.touch_turns(answers)
        beat = next(q["sql"] for q in queries.captured_queries if "heartbeat_at" in q["sql"])

        def loops(node: dict) -> list[int]:
            own = [node["Actual Loops"]] if node["Node Type"] == "LockRows" else []
            return own + [n for child in node.get("Plans", ()) for n in loops(child)]

        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {beat}")
            (plan,) = cursor.fetchone()
        plan = json.loads(plan) if isinstance(plan, str) else plan
        self.assertEqual(loops(plan[0]["Plan"]), [1], "the locking subquery runs once")

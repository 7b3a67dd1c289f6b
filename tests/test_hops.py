"""Shared hops to the database thread: calls made together travel together, each with its own outcome."""

from __future__ import annotations

import asyncio
import threading
from unittest import mock

from django.test import SimpleTestCase

from chat import hops


class HopTests(SimpleTestCase):
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
        await asyncio.to_thread(started.wait, 10)
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

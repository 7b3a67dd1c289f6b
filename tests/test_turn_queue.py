"""Turns queued for worker processes: a burst goes in few messages, and a worker starts each of its turns."""

from __future__ import annotations

import asyncio
from unittest import mock

from channels.layers import get_channel_layer
from channels.testing import ApplicationCommunicator

from agents import runtime, turn_queue, worker
from tests.base import ChatTestCase

TIMEOUT = 10


class TurnQueueTests(ChatTestCase):
    async def receive_all(self) -> list[dict]:
        layer, messages = get_channel_layer(), []
        while True:
            try:
                messages.append(await asyncio.wait_for(layer.receive(turn_queue.TURNS_CHANNEL), 0.2))
            except TimeoutError:
                return messages

    async def test_a_burst_of_starts_goes_in_few_messages_in_order(self) -> None:
        await asyncio.gather(*(runtime.dispatch(n, f"t{n}", n * 10, wait_for_previous=False) for n in range(120)))
        messages = await self.receive_all()
        starts = [m for message in messages for m in (message["turns"] if "turns" in message else [message])]
        self.assertEqual([s["turn_id"] for s in starts], [f"t{n}" for n in range(120)])
        self.assertEqual(starts[7], {"type": "turn.start", "thread_id": 7, "turn_id": "t7", "parent_id": 70,
                                     "wait_for_previous": False})  # fmt: skip
        self.assertLessEqual(len(messages), 1 + 119 // turn_queue.BATCH + 1)
        self.assertTrue(all(len(m.get("turns", [m])) <= turn_queue.BATCH for m in messages))

    async def test_a_lone_start_goes_alone(self) -> None:
        await runtime.dispatch(1, "t1", 10)
        self.assertEqual(
            await self.receive_all(), [{"type": "turn.start", "thread_id": 1, "turn_id": "t1", "parent_id": 10}]
        )

    async def test_each_caller_learns_that_the_layer_refused_its_start(self) -> None:
        with mock.patch.object(type(get_channel_layer()), "send", side_effect=ConnectionError("redis is down")):
            outcomes = await asyncio.gather(
                *(runtime.dispatch(n, f"t{n}", None) for n in range(5)), return_exceptions=True
            )
        self.assertTrue(all(isinstance(o, ConnectionError) for o in outcomes), outcomes)
        await runtime.dispatch(9, "t9", None)  # the queue goes on once the layer is back
        self.assertEqual([m["turn_id"] for m in await self.receive_all()], ["t9"])

    async def test_a_worker_starts_every_turn_of_a_message(self) -> None:
        started = []
        begin = mock.patch.object(worker.runtime, "begin_turn", lambda *args, **kwargs: started.append((args, kwargs)))
        with begin, mock.patch.object(worker.sweeper, "ensure_started"):
            app = ApplicationCommunicator(worker.TurnWorkerConsumer.as_asgi(), {"type": "channel", "channel": "x"})
            turns = [{"type": "turn.start", "thread_id": n, "turn_id": f"t{n}", "parent_id": n} for n in range(3)]
            await app.send_input({"type": "turn.starts", "turns": turns})
            await app.send_input({"type": "turn.start", "thread_id": 9, "turn_id": "t9", "parent_id": 9})
            async with asyncio.timeout(TIMEOUT):
                while len(started) < 4:
                    await asyncio.sleep(0.01)
            app.stop()
        self.assertEqual([args[1] for args, _ in started], ["t0", "t1", "t2", "t9"])

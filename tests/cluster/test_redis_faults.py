"""A daphne process on a Redis channel layer: idle sockets stay open, a Redis restart is ridden out."""

from __future__ import annotations

import asyncio
import json

from django.test import tag

from tests.base import ChatTransactionTestCase, to_thread
from tests.live import DaphneServer
from tests.services import start_redis
from tests.sockets import assert_contiguous, rebuild
from tests.test_e2e import Client, completed, first_delta, recv, recv_until

# Six times channels-redis's blocking pop and twice REDIS_SOCKET_TIMEOUT.
IDLE_SECONDS = 30


def redis_port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


@tag("cluster")
class RedisFaultTests(ChatTransactionTestCase):
    server_env = {"LOCAL_MODEL_DELAY_MS": "20", "SOCKET_REJOIN_SECONDS": "0.5"}

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.redis_url, cls.stop_redis = start_redis()
        cls.server = DaphneServer({**cls.server_env, "REDIS_URL": cls.redis_url}, name=cls.__name__).start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()
        cls.stop_redis()
        super().tearDownClass()

    async def alice(self) -> tuple[Client, int]:
        await to_thread(self.make_user, "alice")
        client = await Client(self.server, "alice").login()
        return client, await client.new_thread()

    async def restart_redis(self, down_seconds: float = 0) -> None:
        """Stop Redis, stay down `down_seconds`, start it again on the same port: every pooled connection is dead."""
        cls = type(self)
        await to_thread(cls.stop_redis)
        await asyncio.sleep(down_seconds)  # the outage itself
        _, cls.stop_redis = await to_thread(start_redis, redis_port(cls.redis_url))

    async def test_idle_socket_stays_open_past_the_blocking_pop(self) -> None:
        """A socket on which nothing happens for 30 s is still open and answers a ping."""
        alice, thread_id = await self.alice()
        async with alice.socket(thread_id) as ws:
            await recv(ws)
            with self.assertRaises(TimeoutError):  # nothing arrives, and above all no close frame
                await asyncio.wait_for(ws.recv(), IDLE_SECONDS)
            await ws.send(json.dumps({"type": "ping"}))
            self.assertEqual((await recv(ws))["type"], "pong")

    async def test_first_socket_and_frame_after_a_redis_restart_work(self) -> None:
        """After Redis restarts, the very next socket gets its snapshot and its first message runs a turn."""
        alice, thread_id = await self.alice()
        async with alice.socket(thread_id) as ws:
            await recv(ws)
            await ws.send(json.dumps({"type": "user_message", "content": "/lorem 2", "turn_id": "before"}))
            await recv_until(ws, completed("before"))
        await self.restart_redis()
        async with alice.socket(thread_id) as ws:
            self.assertEqual((await recv(ws))["type"], "snapshot")
            await ws.send(json.dumps({"type": "user_message", "content": "/lorem 2", "turn_id": "after"}))
            frames = await recv_until(ws, completed("after"))
        self.assertEqual(frames[-1]["data"]["status"], "completed")
        self.assertFalse([f for f in frames if f["type"] == "error"])

    async def test_turn_and_its_socket_ride_out_a_5_s_redis_outage(self) -> None:
        """Redis down for 5 s mid-turn (under REDIS_OUTAGE_SECONDS): the turn completes, the socket keeps up."""
        alice, thread_id = await self.alice()
        async with alice.socket(thread_id) as ws:
            await recv(ws)
            await ws.send(json.dumps({"type": "user_message", "content": "/lorem 400", "turn_id": "out"}))
            frames = await recv_until(ws, first_delta)
            await self.restart_redis(down_seconds=5)
            frames = await recv_until(ws, completed("out"), frames)
        message_id = frames[-1]["message_id"]
        final = await alice.content(thread_id, message_id)
        self.assertEqual((final["status"], len(final["content"].split())), ("completed", 400))
        last = max(i for i, f in enumerate(frames) if f["type"] == "snapshot")
        start = next(m for m in frames[last]["messages"] if m["id"] == message_id)["content"]
        self.assertEqual(rebuild(start, frames[last + 1 :], message_id), final["content"])

    async def test_turn_and_its_socket_ride_out_a_redis_restart(self) -> None:
        """Redis restarts mid-turn: the socket stays open, gets a fresh snapshot, and rebuilds the exact final text."""
        alice, thread_id = await self.alice()
        async with alice.socket(thread_id) as ws:
            await recv(ws)
            await ws.send(json.dumps({"type": "user_message", "content": "/lorem 300", "turn_id": "mid"}))
            frames = await recv_until(ws, first_delta)
            await self.restart_redis()
            frames = await recv_until(ws, completed("mid"), frames)
        message_id = frames[-1]["message_id"]
        final = await alice.content(thread_id, message_id)
        self.assertEqual((final["status"], len(final["content"].split())), ("completed", 300))
        # Redis forgot the group: the socket joined again and was sent a snapshot to resume from.
        last = max(i for i, f in enumerate(frames) if f["type"] == "snapshot")
        start = next(m for m in frames[last]["messages"] if m["id"] == message_id)["content"]
        after = frames[last + 1 :]
        assert_contiguous(after, message_id, next(f["data"]["offset"] for f in after if f["type"] == "message_delta"))
        self.assertEqual(rebuild(start, after, message_id), final["content"])

"""Two daphne processes sharing the database and a Redis channel layer (REDIS_URL)."""

from __future__ import annotations

import asyncio
import json

from tests.base import ChatTransactionTestCase, to_thread
from tests.clients import Client, completed, first_delta, recv, recv_until
from tests.live import DaphneServer
from tests.services import start_redis
from tests.sockets import assert_contiguous, rebuild


class TwoProcessTestCase(ChatTransactionTestCase):
    # A heartbeat far longer than any turn here: a cancel that arrives in time
    # came through the channel layer, not through the database flag.
    server_env = {"LOCAL_MODEL_DELAY_MS": "20", "TURN_HEARTBEAT_SECONDS": "60", "CHAT_MESSAGES_PER_MINUTE": "3"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis_url, cls.stop_redis = start_redis()
        env = {**cls.server_env, "REDIS_URL": cls.redis_url}
        cls.a = DaphneServer(env, name=f"{cls.__name__}-a").start()
        cls.b = DaphneServer(env, name=f"{cls.__name__}-b").start()

    @classmethod
    def tearDownClass(cls):
        cls.a.stop()
        cls.b.stop()
        cls.stop_redis()
        super().tearDownClass()

    async def both(self) -> tuple[Client, Client, int]:
        """The same user logged in on both servers, and a new thread."""
        await to_thread(self.make_user, "alice")
        on_a, on_b = await Client(self.a, "alice").login(), await Client(self.b, "alice").login()
        return on_a, on_b, await on_a.new_thread()

    async def send(self, ws, content: str, turn_id: str) -> None:
        await ws.send(json.dumps({"type": "user_message", "content": content, "turn_id": turn_id}))


class ScaleOutTests(TwoProcessTestCase):
    async def test_a_turn_started_on_one_process_streams_to_sockets_on_the_other(self):
        """Every event of a turn running in process A reaches a socket of process B, contiguously."""
        on_a, on_b, thread_id = await self.both()
        async with on_a.socket(thread_id) as wa, on_b.socket(thread_id) as wb:
            await recv(wa)
            await recv(wb)
            await self.send(wa, "/lorem 60", "x-1")
            frames_a = await recv_until(wa, completed("x-1"))
            frames_b = await recv_until(wb, completed("x-1"))
        message_id = frames_a[-1]["message_id"]
        assert_contiguous(frames_b, message_id)
        final = await on_b.content(thread_id, message_id)
        self.assertEqual(rebuild("", frames_b, message_id), final["content"])
        self.assertEqual(rebuild("", frames_a, message_id), final["content"])
        kinds = lambda frames: [f["type"] for f in frames if f["type"] != "message_delta"]  # noqa: E731
        self.assertEqual(kinds(frames_a), kinds(frames_b))

    async def test_cancel_on_one_process_stops_the_turn_running_on_the_other(self):
        """A cancel sent to process B stops the turn running in process A: cancelled, partial text kept."""
        on_a, on_b, thread_id = await self.both()
        async with on_a.socket(thread_id) as wa, on_b.socket(thread_id) as wb:
            await recv(wa)
            await recv(wb)
            await self.send(wa, "/lorem 400", "x-2")
            frames = await recv_until(wb, first_delta)
            await wb.send(json.dumps({"type": "cancel", "turn_id": "x-2"}))
            frames = await recv_until(wb, completed("x-2"), frames)
        self.assertEqual(frames[-1]["data"]["status"], "cancelled")
        final = await on_a.content(thread_id, frames[-1]["message_id"])
        self.assertEqual((final["status"], final["metadata"]["cancelled"]), ("cancelled", True))
        self.assertTrue(0 < len(final["content"].split()) < 400)

    async def test_cancel_reaches_the_runner_process_at_once_without_a_socket_there(self):
        """A holds no socket of the thread: a cancel on B still stops A's turn at once, through A's own channel."""
        on_a, on_b, thread_id = await self.both()
        async with on_a.socket(thread_id) as wa:
            await recv(wa)
            await self.send(wa, "/lorem 2000", "c-1")
            await recv_until(wa, first_delta)
        async with on_b.socket(thread_id) as wb:
            await recv(wb)
            await wb.send(json.dumps({"type": "cancel", "turn_id": "c-1"}))
            # The heartbeat (and so the database flag) is 60 s away: only the channel can be this fast.
            frames = await asyncio.wait_for(recv_until(wb, completed("c-1")), 10)
        self.assertEqual(frames[-1]["data"]["status"], "cancelled")

    async def test_new_message_on_one_process_cancels_the_turn_running_on_the_other(self):
        """A user_message sent to B while A runs a turn of the thread ends A's turn cancelled."""
        on_a, on_b, thread_id = await self.both()
        async with on_a.socket(thread_id) as wa, on_b.socket(thread_id) as wb:
            await recv(wa)
            await recv(wb)
            await self.send(wa, "/lorem 400", "n-1")
            await recv_until(wb, first_delta)
            await self.send(wb, "/lorem 3", "n-2")
            frames = await recv_until(wb, completed("n-2"))
        ends = {f["turn_id"]: f["data"]["status"] for f in frames if f["type"] == "agent_completed"}
        self.assertEqual(ends, {"n-1": "cancelled", "n-2": "completed"})

    async def test_message_rate_is_shared_by_both_processes(self):
        """The per-user limit counts messages sent through either process."""
        on_a, on_b, thread_id = await self.both()
        async with on_a.socket(thread_id) as wa, on_b.socket(thread_id) as wb:
            await recv(wa)
            await recv(wb)
            for turn_id, ws in (("r-1", wa), ("r-2", wa), ("r-3", wb)):
                await self.send(ws, "/lorem 1", turn_id)
                await recv_until(ws, completed(turn_id))
            await self.send(wb, "/lorem 1", "r-4")
            refusal = await recv_until(wb, lambda f: f["type"] == "error")
        self.assertEqual((refusal[-1]["code"], refusal[-1]["turn_id"]), ("rate_limited", "r-4"))


class HeartbeatTests(TwoProcessTestCase):
    server_env = {"LOCAL_MODEL_DELAY_MS": "20", "TURN_HEARTBEAT_SECONDS": "0.5"}

    async def test_cancel_reaches_a_turn_whose_process_has_no_socket_left(self):
        """With no socket of the thread left on process A, a cancel on B still stops A's turn (database flag)."""
        on_a, on_b, thread_id = await self.both()
        async with on_a.socket(thread_id) as wa:
            await recv(wa)
            await self.send(wa, "/lorem 1000", "h-1")
            frames = await recv_until(wa, first_delta)
        async with on_b.socket(thread_id) as wb:
            snapshot = await recv(wb)
            self.assertEqual(snapshot["active_turn"]["turn_id"], "h-1")
            await wb.send(json.dumps({"type": "cancel", "turn_id": "h-1"}))
            frames = await recv_until(wb, completed("h-1"))
        self.assertEqual(frames[-1]["data"]["status"], "cancelled")
        final = await on_b.content(thread_id, frames[-1]["message_id"])
        self.assertTrue(0 < len(final["content"].split()) < 1000)

    async def test_new_message_waits_for_the_turn_of_a_process_without_a_socket_to_end(self):
        """A user_message on B while A (no socket of the thread left) runs a turn: A's turn ends before B's starts."""
        on_a, on_b, thread_id = await self.both()
        async with on_a.socket(thread_id) as wa:
            await recv(wa)
            await self.send(wa, "/lorem 1000", "w-1")
            await recv_until(wa, first_delta)
        async with on_b.socket(thread_id) as wb:
            snapshot = await recv(wb)
            self.assertEqual(snapshot["active_turn"]["turn_id"], "w-1")
            await self.send(wb, "/lorem 3", "w-2")
            frames = await recv_until(wb, completed("w-2"))
        order = [(f["type"], f["turn_id"]) for f in frames if f["type"] in ("agent_started", "agent_completed")]
        self.assertEqual(order, [("agent_completed", "w-1"), ("agent_started", "w-2"), ("agent_completed", "w-2")])
        ended = next(f for f in frames if f["type"] == "agent_completed" and f["turn_id"] == "w-1")
        self.assertEqual(ended["data"]["status"], "cancelled")


class CrashOverProcessesTests(TwoProcessTestCase):
    server_env = {
        "LOCAL_MODEL_DELAY_MS": "30",
        "TURN_HEARTBEAT_SECONDS": "0.5",
        "TURN_STALE_SECONDS": "3",
        "TURN_SWEEP_SECONDS": "1",
    }

    async def test_turn_of_a_killed_process_is_ended_by_the_other(self):
        """Kill process A mid-turn: process B's sweeper ends it `interrupted` and tells B's sockets."""
        on_a, on_b, thread_id = await self.both()
        async with on_a.socket(thread_id) as wa, on_b.socket(thread_id) as wb:
            await recv(wa)
            await recv(wb)
            await self.send(wa, "/lorem 1000", "k-1")
            frames = await recv_until(wb, first_delta)
            await to_thread(self.a.kill)
            try:
                frames = await asyncio.wait_for(recv_until(wb, completed("k-1"), frames), 60)
            finally:
                await to_thread(self.a.start)
        message_id = frames[-1]["message_id"]
        self.assertEqual(frames[-1]["data"]["status"], "interrupted")
        final = await on_b.content(thread_id, message_id)
        self.assertEqual((final["status"], final["metadata"]["has_error"]), ("interrupted", True))
        self.assertEqual(rebuild("", frames, message_id), final["content"])


class SocketBurstTests(ChatTransactionTestCase):
    """Many sockets connect to one process on Redis at the same moment."""

    SOCKETS = 150

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.redis_url, cls.stop_redis = start_redis()
        env = {"REDIS_URL": cls.redis_url, "CHAT_MAX_SOCKETS_PER_USER": str(cls.SOCKETS)}
        cls.server = DaphneServer(env, name=cls.__name__).start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.stop_redis()
        super().tearDownClass()

    async def test_every_socket_of_a_burst_gets_its_snapshot(self):
        """150 sockets at once: more Redis commands in flight than redis-py's default pool (100) allows."""
        await to_thread(self.make_user, "alice")
        client = await Client(self.server, "alice").login()
        thread_id = await client.new_thread()

        async def snapshot() -> str:
            async with client.socket(thread_id) as ws:
                return (await recv(ws))["type"]

        kinds = await asyncio.gather(*(snapshot() for _ in range(self.SOCKETS)), return_exceptions=True)
        failed = [kind for kind in kinds if kind != "snapshot"]
        self.assertEqual(failed, [], f"{len(failed)} of {self.SOCKETS} sockets got no snapshot")

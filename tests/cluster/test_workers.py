"""Agent workers: two web processes and a worker (`run_agent_worker`) on one Redis and the test database."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import redis
import websockets
from django.test import tag

from chat.models import Message
from tests.base import ChatTransactionTestCase, to_thread
from tests.live import DaphneServer, WorkerProcess
from tests.services import start_redis, wait_until
from tests.sockets import assert_contiguous, rebuild
from tests.test_e2e import Client, completed, first_delta, recv, recv_until, stored_status

TURNS_KEY = "asgi:agent-turns"  # channels-redis's sorted set behind the agent-turns channel


@tag("cluster")
class WorkerTestCase(ChatTransactionTestCase):
    env = {
        "AGENT_WORKERS": "1",
        "LOCAL_MODEL_DELAY_MS": "20",
        "TURN_HEARTBEAT_SECONDS": "0.5",
        "TURN_STALE_SECONDS": "3",
        "TURN_SWEEP_SECONDS": "1",
        "TURN_REDISPATCH_SECONDS": "2",
        "TURN_DRAIN_SECONDS": "1",
        "CHAT_MESSAGES_PER_MINUTE": "100",
        "SOCKET_REJOIN_SECONDS": "0.5",
    }

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.redis_url, cls.stop_redis = start_redis()
        env = {**cls.env, "REDIS_URL": cls.redis_url}
        cls.a = DaphneServer(env, name=f"{cls.__name__}-a").start()
        cls.b = DaphneServer(env, name=f"{cls.__name__}-b").start()
        cls.worker = WorkerProcess(env, name=f"{cls.__name__}-worker").start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.worker.kill()
        cls.a.stop()
        cls.b.stop()
        cls.stop_redis()
        super().tearDownClass()

    def setUp(self) -> None:
        self.make_user("alice")
        if not self.worker.process or self.worker.process.poll() is not None:
            self.worker.start()
        for server in (self.a, self.b):
            if not server.is_running():
                server.start()

    async def clients(self) -> tuple[Client, Client, int]:
        on_a, on_b = await Client(self.a, "alice").login(), await Client(self.b, "alice").login()
        return on_a, on_b, await on_a.new_thread()

    async def send(self, ws, content: str, turn_id: str) -> None:
        await ws.send(json.dumps({"type": "user_message", "content": content, "turn_id": turn_id}))


class WorkerTests(WorkerTestCase):
    async def test_turn_runs_on_the_worker_and_outlives_a_web_restart(self) -> None:
        """SIGTERM the web process holding the socket mid-turn: the turn goes on in the worker; B's socket gets all."""
        on_a, on_b, thread_id = await self.clients()
        async with on_a.socket(thread_id) as ws:
            await recv(ws)
            await self.send(ws, "/lorem 200", "w-1")
            await recv_until(ws, first_delta)
            self.a.process.send_signal(signal.SIGTERM)
            with self.assertRaises(websockets.ConnectionClosed) as closed:
                await recv_until(ws, lambda f: False)
        self.assertEqual(closed.exception.rcvd.code, 4012)
        async with on_b.socket(thread_id) as ws:
            snapshot = await recv(ws)
            message = next(m for m in snapshot["messages"] if m["role"] == "assistant")
            self.assertEqual(message["status"], "streaming")
            frames = await recv_until(ws, completed("w-1"))
        final = await on_b.content(thread_id, message["id"])
        self.assertEqual((final["status"], len(final["content"].split())), ("completed", 200))
        self.assertEqual(rebuild(message["content"], frames, message["id"]), final["content"])

    async def test_cancel_through_a_web_process_reaches_the_worker_at_once(self) -> None:
        """A cancel sent on B stops the worker's turn: cancelled, its partial text kept."""
        on_a, on_b, thread_id = await self.clients()
        async with on_b.socket(thread_id) as ws:
            await recv(ws)
            await self.send(ws, "/lorem 1000", "c-1")
            await recv_until(ws, first_delta)
            sent = time.monotonic()
            await ws.send(json.dumps({"type": "cancel", "turn_id": "c-1"}))
            frames = await recv_until(ws, completed("c-1"))
            print(f"cancel across processes: {time.monotonic() - sent:.3f} s")
        self.assertEqual(frames[-1]["data"]["status"], "cancelled")
        final = await on_b.content(thread_id, frames[-1]["message_id"])
        self.assertTrue(0 < len(final["content"].split()) < 1000)

    async def test_delete_during_a_worker_turn_cancels_it_first(self) -> None:
        """DELETE on B while the worker streams: agent_completed `cancelled`, then thread_deleted and a 4404 close."""
        on_a, on_b, thread_id = await self.clients()
        async with on_a.socket(thread_id) as ws:
            await recv(ws)
            await self.send(ws, "/lorem 1500", "d-1")
            await recv_until(ws, first_delta)
            status, _ = await on_b.api("DELETE", f"/api/threads/{thread_id}/")
            self.assertEqual(status, 204)
            frames = await recv_until(ws, completed("d-1"))
            self.assertEqual(frames[-1]["data"]["status"], "cancelled")
            self.assertEqual(await recv(ws), {"type": "thread_deleted", "thread_id": thread_id})
            with self.assertRaises(websockets.ConnectionClosed) as closed:
                await recv(ws)
        self.assertEqual(closed.exception.rcvd.code, 4404)

    async def test_killed_worker_turn_ends_interrupted(self) -> None:
        """kill -9 of the worker mid-turn: a web process's sweeper ends the turn interrupted, with its text."""
        on_a, on_b, thread_id = await self.clients()
        async with on_a.socket(thread_id) as ws:
            await recv(ws)
            await self.send(ws, "/lorem 1000", "k-1")
            frames = await recv_until(ws, first_delta)
            await to_thread(self.worker.kill)
            killed = time.monotonic()
            frames = await asyncio.wait_for(recv_until(ws, completed("k-1"), frames), 60)
            print(f"kill -9 of a worker to interrupted: {time.monotonic() - killed:.3f} s")
        self.assertEqual(frames[-1]["data"]["status"], "interrupted")
        final = await on_a.content(thread_id, frames[-1]["message_id"])
        self.assertEqual(rebuild("", frames, frames[-1]["message_id"]), final["content"])

    async def test_worker_killed_between_taking_a_turn_and_starting_it(self) -> None:
        """The worker takes the queued start and dies before running it: the turn is sent again and completes."""
        on_a, on_b, thread_id = await self.clients()
        queue = redis.Redis.from_url(self.redis_url)
        try:
            async with on_a.socket(thread_id) as ws:
                await recv(ws)
                self.worker.signal(signal.SIGSTOP)  # blocked in its pop: Redis hands it the start, it never runs it
                await self.send(ws, "/lorem 5", "lost-1")
                await recv_until(ws, lambda f: f["type"] == "user_message")
                await to_thread(wait_until, lambda: queue.zcard(TURNS_KEY) == 0, 5, "the worker to take it")
                await to_thread(self.worker.kill)
                await to_thread(self.worker.start)
                frames = await asyncio.wait_for(recv_until(ws, completed("lost-1")), 30)
        finally:
            queue.close()
        self.assertEqual(frames[-1]["data"]["status"], "completed")
        self.assertEqual(await to_thread(stored_status, frames[-1]["message_id"]), "completed")

    async def test_sigterm_of_a_worker_ends_its_turn_interrupted_and_announced(self) -> None:
        """SIGTERM of the worker mid-turn (drain 1 s): the socket hears interrupted, the worker exits cleanly."""
        on_a, on_b, thread_id = await self.clients()
        async with on_a.socket(thread_id) as ws:
            await recv(ws)
            await self.send(ws, "/lorem 1000", "t-1")
            await recv_until(ws, first_delta)
            self.worker.signal(signal.SIGTERM)
            sent = time.monotonic()
            frames = await recv_until(ws, completed("t-1"))
            print(f"SIGTERM of a worker to interrupted: {time.monotonic() - sent:.3f} s")
        self.assertEqual(frames[-1]["data"]["status"], "interrupted")
        self.assertEqual(await to_thread(self.worker.process.wait, 15), 0)
        stored = await to_thread(lambda: Message.objects.get(pk=frames[-1]["message_id"]).status)
        self.assertEqual(stored, "interrupted")


class WorkerEventsTests(WorkerTestCase):
    async def test_events_of_the_worker_to_both_web_processes(self) -> None:
        """A worker's turn streams to a socket on each web process: both rebuild the exact text, offsets contiguous."""
        on_a, on_b, thread_id = await self.clients()
        async with on_a.socket(thread_id) as ws_a, on_b.socket(thread_id) as ws_b:
            await recv(ws_a)
            await recv(ws_b)
            await self.send(ws_a, "/lorem 60", "both-1")
            frames_a, frames_b = await asyncio.gather(
                recv_until(ws_a, completed("both-1")), recv_until(ws_b, completed("both-1"))
            )
        message_id = frames_a[-1]["message_id"]
        final = await on_a.content(thread_id, message_id)
        for frames in (frames_a, frames_b):
            assert_contiguous(frames, message_id)
            self.assertEqual(rebuild("", frames, message_id), final["content"])
            self.assertTrue(
                all(isinstance(f["data"]["emitted_at"], int) for f in frames if f["type"] == "message_delta")
            )

    async def test_a_redis_restart_mid_turn_resyncs_the_sockets_of_a_web_process(self) -> None:
        """Redis restarts while the worker streams to a socket on web A: the socket is sent a fresh snapshot and
        rebuilds the exact final text from it."""
        on_a, _, thread_id = await self.clients()
        async with on_a.socket(thread_id) as ws:
            await recv(ws)
            await self.send(ws, "/lorem 300", "w-redis")
            frames = await recv_until(ws, first_delta)
            cls = type(self)
            port = int(cls.redis_url.rsplit(":", 1)[1].split("/")[0])
            await to_thread(cls.stop_redis)
            _, cls.stop_redis = await to_thread(start_redis, port)
            frames = await asyncio.wait_for(recv_until(ws, completed("w-redis"), frames), 60)
        message_id = frames[-1]["message_id"]
        final = await on_a.content(thread_id, message_id)
        self.assertEqual((final["status"], len(final["content"].split())), ("completed", 300))
        snapshots = [i for i, f in enumerate(frames) if f["type"] == "snapshot"]
        self.assertTrue(snapshots, "no fresh snapshot after the restart")
        last = snapshots[-1]
        start = next(m for m in frames[last]["messages"] if m["id"] == message_id)["content"]
        after = frames[last + 1 :]
        self.assertEqual(rebuild(start, after, message_id), final["content"])

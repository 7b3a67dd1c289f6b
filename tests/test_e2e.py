"""End to end: a real daphne process, real WebSocket clients (`websockets`), logged in through /accounts/login/."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import websockets
from django.conf import settings
from django.db import connections
from django.test import SimpleTestCase

from chat.models import Message
from tests.base import ChatTransactionTestCase, to_thread
from tests.clients import Client, completed, first_delta, recv, recv_until
from tests.live import DaphneServer
from tests.services import wait_until
from tests.sockets import assert_contiguous, rebuild


class LiveServerTestCase(ChatTransactionTestCase):
    server_env = {"LOCAL_MODEL_DELAY_MS": "15"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.server = DaphneServer(cls.server_env, name=cls.__name__).start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        super().tearDownClass()

    def setUp(self):
        self.make_user("alice")
        self.make_user("bob")

    async def login_as(self, username: str = "alice") -> Client:
        return await Client(self.server, username).login()

    async def send_message(self, ws, content: str, turn_id: str) -> None:
        await ws.send(json.dumps({"type": "user_message", "content": content, "turn_id": turn_id}))


class StreamingTests(LiveServerTestCase):
    async def test_reconnect_rebuilds_the_exact_final_text(self):
        """`/lorem 300`: drop the socket a few deltas in, reconnect mid-turn: snapshot + deltas give the stored text."""
        alice = await self.login_as()
        thread_id = await alice.new_thread()
        async with alice.socket(thread_id) as ws:
            await recv(ws)  # snapshot
            # 300 words at 15 ms: the turn streams for about 4.5 s, the reconnect takes milliseconds.
            await self.send_message(ws, "/lorem 300", "re-1")
            frames = await recv_until(ws, first_delta)
            for _ in range(3):
                frames.append(await recv(ws))
        message_id = frames[-1]["message_id"]
        async with alice.socket(thread_id) as ws:
            snapshot = await recv(ws)
            self.assertEqual(snapshot["type"], "snapshot")
            start = next(m for m in snapshot["messages"] if m["id"] == message_id)
            self.assertEqual(start["status"], "streaming")
            self.assertEqual(snapshot["active_turn"], {"turn_id": "re-1", "message_id": message_id})
            rest = await recv_until(ws, completed("re-1"))
        deltas = [f for f in rest if f["type"] == "message_delta"]
        self.assertLessEqual(deltas[0]["data"]["offset"], len(start["content"]))
        assert_contiguous(rest, message_id, deltas[0]["data"]["offset"])
        final = await alice.content(thread_id, message_id)
        self.assertEqual(final["status"], "completed")
        self.assertEqual(rebuild(start["content"], rest, message_id), final["content"])
        self.assertEqual(len(final["content"].split()), 300)

    async def test_every_delta_is_committed_before_it_arrives(self):
        """After each of several deltas, GET of the thread already shows offset + len(delta) characters."""
        alice = await self.login_as()
        thread_id = await alice.new_thread()
        async with alice.socket(thread_id) as ws:
            await recv(ws)
            await self.send_message(ws, "/lorem 40", "db-1")
            checked = 0
            while checked < 8:
                frame = await recv(ws)
                if frame["type"] != "message_delta":
                    continue
                stored = await alice.content(thread_id, frame["message_id"])
                self.assertGreaterEqual(len(stored["content"]), frame["data"]["offset"] + len(frame["data"]["delta"]))
                checked += 1
            await recv_until(ws, completed("db-1"))

    async def test_turn_completes_after_every_socket_closed(self):
        """Closing every socket mid-turn: the turn still completes in the database."""
        alice = await self.login_as()
        thread_id = await alice.new_thread()
        async with alice.socket(thread_id) as first, alice.socket(thread_id) as second:
            await recv(first)
            await recv(second)
            await self.send_message(first, "/lorem 50", "close-1")
            frames = await recv_until(first, first_delta)
        message_id = frames[-1]["message_id"]
        async with alice.socket(thread_id) as ws:  # wait for the end without polling
            snapshot = await recv(ws)
            if snapshot["active_turn"]:
                await recv_until(ws, completed("close-1"))
        final = await alice.content(thread_id, message_id)
        self.assertEqual(final["status"], "completed")
        self.assertEqual(len(final["content"].split()), 50)

    async def test_cancel_mid_stream(self):
        """Cancel mid-stream: cancelled, the partial text kept, in the events and over HTTP."""
        alice = await self.login_as()
        thread_id = await alice.new_thread()
        async with alice.socket(thread_id) as ws:
            await recv(ws)
            await self.send_message(ws, "/lorem 400", "cancel-1")
            frames = await recv_until(ws, first_delta)
            await ws.send(json.dumps({"type": "cancel", "turn_id": "cancel-1"}))
            frames = await recv_until(ws, completed("cancel-1"), frames)
        message_id = frames[-1]["message_id"]
        self.assertEqual(frames[-1]["data"]["status"], "cancelled")
        final = await alice.content(thread_id, message_id)
        self.assertEqual(final["status"], "cancelled")
        self.assertEqual((final["metadata"]["cancelled"], final["metadata"]["streaming"]), (True, False))
        self.assertEqual(rebuild("", frames, message_id), final["content"])
        self.assertTrue(0 < len(final["content"].split()) < 400)

    async def test_new_message_mid_stream_cancels_the_running_turn(self):
        """A new message mid-stream ends the running turn cancelled, then answers the new one."""
        alice = await self.login_as()
        thread_id = await alice.new_thread()
        async with alice.socket(thread_id) as ws:
            await recv(ws)
            await self.send_message(ws, "/lorem 400", "first")
            frames = await recv_until(ws, first_delta)
            await self.send_message(ws, "what is 6*7", "second")
            frames = await recv_until(ws, completed("second"), frames)
        ends = {f["turn_id"]: f["data"]["status"] for f in frames if f["type"] == "agent_completed"}
        self.assertEqual(ends, {"first": "cancelled", "second": "completed"})
        status, thread = await alice.api("GET", f"/api/threads/{thread_id}/")
        self.assertEqual([m["seq"] for m in thread["messages"]], [1, 2, 3, 4])
        self.assertEqual(
            [m["status"] for m in thread["messages"]], ["completed", "cancelled", "completed", "completed"]
        )
        self.assertIn("42", thread["messages"][3]["content"])

    async def test_failing_model_and_failing_tool(self):
        """`/fail 5` ends failed with five words; `1/0` ends with an error action and an answer saying so."""
        alice = await self.login_as()
        thread_id = await alice.new_thread()
        async with alice.socket(thread_id) as ws:
            await recv(ws)
            await self.send_message(ws, "/fail 5", "fail-1")
            frames = await recv_until(ws, completed("fail-1"))
            await self.send_message(ws, "1/0", "div-1")
            frames += await recv_until(ws, completed("div-1"))
        status, thread = await alice.api("GET", f"/api/threads/{thread_id}/")
        failed, divided = thread["messages"][1], thread["messages"][3]
        self.assertEqual((failed["status"], failed["metadata"]["has_error"]), ("failed", True))
        self.assertEqual(len(failed["content"].split()), 5)
        self.assertEqual(failed["metadata"]["error"]["code"], "provider_unavailable")
        self.assertEqual(divided["status"], "completed")
        self.assertEqual(divided["actions"][0]["status"], "error")
        self.assertIn("could not compute", divided["content"])
        self.assertIsNotNone(failed["usage"])

    async def test_two_sockets_of_one_user_get_every_event(self):
        """Two sockets of the owner receive the same events and rebuild the same text."""
        alice = await self.login_as()
        thread_id = await alice.new_thread()
        async with alice.socket(thread_id) as first, alice.socket(thread_id) as second:
            await recv(first)
            await recv(second)
            await self.send_message(first, "what is 1+1", "both-1")
            a = await recv_until(first, completed("both-1"))
            b = await recv_until(second, completed("both-1"))
        message_id = a[-1]["message_id"]
        kinds = lambda frames: [f["type"] for f in frames if f["type"] != "message_delta"]  # noqa: E731
        self.assertEqual(kinds(a), kinds(b))
        self.assertEqual(rebuild("", a, message_id), rebuild("", b, message_id))


class IsolationTests(LiveServerTestCase):
    async def test_users_cannot_reach_each_others_threads(self):
        """Bob can neither open, read, rename, delete nor cancel Alice's thread, by socket or HTTP."""
        alice, bob = await self.login_as("alice"), await self.login_as("bob")
        thread_id = await alice.new_thread()
        async with bob.socket(thread_id) as ws:
            with self.assertRaises(websockets.ConnectionClosed) as closed:
                await recv(ws)
            self.assertEqual(closed.exception.rcvd.code, 4404)
        for method in ("GET", "PATCH", "DELETE"):
            status, body = await bob.api(
                method, f"/api/threads/{thread_id}/", {"title": "x"} if method == "PATCH" else None
            )
            self.assertEqual(status, 404, method)
        status, listing = await bob.api("GET", "/api/threads/")
        self.assertEqual(listing["threads"], [])
        async with alice.socket(thread_id) as ws:
            await recv(ws)
            await self.send_message(ws, "/lorem 300", "mine")
            await recv_until(ws, first_delta)
            bobs_thread = await bob.new_thread()
            async with bob.socket(bobs_thread) as bws:
                await recv(bws)
                await bws.send(json.dumps({"type": "cancel", "turn_id": "mine"}))
                refusal = await recv(bws)
                self.assertEqual((refusal["type"], refusal["code"]), ("error", "turn_not_found"))
            await ws.send(json.dumps({"type": "cancel", "turn_id": "mine"}))
            frames = await recv_until(ws, completed("mine"))
        self.assertTrue(all(f["thread_id"] == thread_id for f in frames))

    async def test_anonymous_socket_and_api_are_refused(self):
        """Without a login the socket closes 4401 and the API answers 401."""
        alice = await self.login_as()
        thread_id = await alice.new_thread()
        anonymous = Client(self.server, "nobody")
        async with anonymous.socket(thread_id) as ws:
            with self.assertRaises(websockets.ConnectionClosed) as closed:
                await recv(ws)
            self.assertEqual(closed.exception.rcvd.code, 4401)
        status, body = await anonymous.api("GET", "/api/threads/")
        self.assertEqual(status, 401)


class SlowReaderTests(LiveServerTestCase):
    server_env = {"LOCAL_MODEL_DELAY_MS": "0"}

    async def test_fast_stream_to_a_slow_reader(self):
        """`/lorem 5000` at full speed to a client that reads slowly: contiguous offsets, exact final text."""
        alice = await self.login_as()
        thread_id = await alice.new_thread()
        async with alice.socket(thread_id) as ws:
            await recv(ws)
            await self.send_message(ws, "/lorem 5000", "fast-1")
            frames = []
            while not frames or not completed("fast-1")(frames[-1]):
                frames.append(await recv(ws))
                if len(frames) % 25 == 0:
                    await asyncio.sleep(0.05)  # a slow reader, not a synchronization
        message_id = frames[-1]["message_id"]
        assert_contiguous(frames, message_id)
        final = await alice.content(thread_id, message_id)
        self.assertEqual(rebuild("", frames, message_id), final["content"])
        self.assertEqual(len(final["content"].split()), 5000)


class CrashTests(ChatTransactionTestCase):
    server_env = {"LOCAL_MODEL_DELAY_MS": "30", "TURN_HEARTBEAT_SECONDS": "0.5", "TURN_SWEEP_SECONDS": "1"}

    async def start_server(self, stale_seconds: float) -> DaphneServer:
        env = {**self.server_env, "TURN_STALE_SECONDS": str(stale_seconds)}
        return await to_thread(DaphneServer(env, name="crash").start)

    async def kill_mid_turn(self, server: DaphneServer, turn_id: str) -> tuple[Client, int, int, list[dict]]:
        """Start `/lorem 1000` (30 s) as alice; kill the server six frames in."""
        alice = await Client(server, "alice").login()
        thread_id = await alice.new_thread()
        async with alice.socket(thread_id) as ws:
            await recv(ws)
            await self.send_message(ws, "/lorem 1000", turn_id)
            frames = await recv_until(ws, first_delta)
            for _ in range(5):
                frames.append(await recv(ws))
            await to_thread(server.kill)
        return alice, thread_id, frames[-1]["message_id"], frames

    def assertInterruptedWithPartialText(self, final: dict, frames: list[dict]) -> None:
        self.assertEqual(final["status"], "interrupted")
        self.assertEqual((final["metadata"]["streaming"], final["metadata"]["has_error"]), (False, True))
        received = rebuild("", frames, final["id"])
        self.assertTrue(received)
        self.assertTrue(final["content"].startswith(received), (final["content"], received))
        self.assertLess(len(final["content"].split()), 1000)

    async def test_killed_server_turn_ends_interrupted_after_restart(self):
        """Kill the server mid-turn, restart, reconnect: the snapshot shows it streaming, then it ends `interrupted`."""
        await to_thread(self.make_user, "alice")
        # Stale after 12 s: long enough for the restart and reconnect to see the dead turn still streaming.
        server = await self.start_server(stale_seconds=12)
        try:
            alice, thread_id, message_id, frames = await self.kill_mid_turn(server, "crash-1")
            await to_thread(server.start)
            async with alice.socket(thread_id) as ws:
                snapshot = await recv(ws)
                self.assertEqual(snapshot["active_turn"], {"turn_id": "crash-1", "message_id": message_id})
                start = next(m for m in snapshot["messages"] if m["id"] == message_id)
                self.assertEqual(start["status"], "streaming")
                # The sweeper of the new process finalizes it and announces the end.
                end = await asyncio.wait_for(recv_until(ws, completed("crash-1")), 60)
            self.assertEqual(end[-1]["data"]["status"], "interrupted")
            final = await alice.content(thread_id, message_id)
            self.assertInterruptedWithPartialText(final, frames)
            self.assertEqual(final["content"], start["content"])
        finally:
            await to_thread(server.stop)

    async def test_restarted_server_ends_a_dead_turn_with_nobody_connected(self):
        """After a crash and restart with no request at all, the new process alone ends the turn `interrupted`."""
        await to_thread(self.make_user, "alice")
        server = await self.start_server(stale_seconds=3)
        try:
            alice, thread_id, message_id, frames = await self.kill_mid_turn(server, "crash-2")
            self.assertEqual(await to_thread(stored_status, message_id), "streaming")
            await to_thread(server.start, request=False)  # waits for the port only: no request
            await to_thread(
                wait_until, lambda: stored_status(message_id) != "streaming", 30, "the sweeper to end the turn", 0.2
            )
            self.assertTrue(server.is_running())
            final = await alice.content(thread_id, message_id)  # the first request, once it has ended
            self.assertInterruptedWithPartialText(final, frames)
        finally:
            await to_thread(server.stop)

    async def send_message(self, ws, content: str, turn_id: str) -> None:
        await ws.send(json.dumps({"type": "user_message", "content": content, "turn_id": turn_id}))


def stored_status(message_id: int) -> str:
    """The message's committed status, read through a connection of this thread that is closed again."""
    try:
        return Message.objects.values_list("status", flat=True).get(pk=message_id)
    finally:
        connections.close_all()


class SweepDeadlineTests(SimpleTestCase):
    def test_default_timings_end_a_dead_turn_within_60_seconds(self):
        """With the default timings a dead turn goes stale and is swept within 60 s of a server starting."""
        names = ("TURN_HEARTBEAT_SECONDS", "TURN_STALE_SECONDS", "TURN_SWEEP_SECONDS")
        env = {key: value for key, value in os.environ.items() if key not in names}
        env["DJANGO_SETTINGS_MODULE"] = "chatproject.settings"
        code = "from django.conf import settings; print(" + ", ".join(f"settings.{n}" for n in names) + ")"
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, check=True
        ).stdout
        heartbeat, stale, sweep = map(float, out.split())
        self.assertLess(heartbeat + stale + sweep, 60)

"""The Live turns socket: staff only; a snapshot, then starts, ends and progress once a second, across processes."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime

import websockets
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser, Permission
from django.test import override_settings

from agents import ratelimit, runtime
from agents.livefeed import feed as live_feed
from chat import turns
from chat.models import Message
from tests.base import ChatTransactionTestCase, finish_turn, to_thread
from tests.clients import Client, completed, first_delta, recv, recv_until
from tests.live import ws_headers
from tests.sockets import FRAME_TIMEOUT
from tests.test_scale_out import TwoProcessTestCase
from web import sessions
from web.routing import websocket_application, websocket_urlpatterns

PATH = "/ws/staff/live/"


async def open_live(user, origin: bytes = b"http://127.0.0.1") -> tuple[WebsocketCommunicator, dict]:
    """Open the Live turns socket as `user` (None: anonymous); return it and its first output."""
    communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), PATH, headers=[(b"origin", origin)])
    communicator.scope["user"] = user if user is not None else AnonymousUser()
    connected, _ = await communicator.connect(timeout=FRAME_TIMEOUT)
    assert connected
    first = await communicator.receive_output(timeout=FRAME_TIMEOUT)
    return communicator, json.loads(first["text"]) if first["type"] == "websocket.send" else first


def cards(frames: list[dict], message_id: int) -> list[dict]:
    """The cards of one message pushed in these frames, in order."""
    return [t for f in frames for t in f.get("turns", []) if t["message_id"] == message_id]


def rebuild(start: dict, frames: list[dict], message_id: int) -> str:
    """The text a page shows: a card's text, then each progress piece beyond what it already has."""
    text, length = start["text"], start["length"]
    for frame in frames:
        for item in frame.get("progress", []):
            if item["message_id"] == message_id:
                assert item["offset"] <= length, f"gap: progress at {item['offset']} after {length}"
                text += item["text"][length - item["offset"] :]
                length = max(length, item["offset"] + len(item["text"]))
    return text


class LiveSocketTestCase(ChatTransactionTestCase):
    def setUp(self) -> None:
        ratelimit.reset()
        live_feed.reset()
        self.alice = self.make_user("alice")
        self.root = self.make_user("root", is_staff=True, is_superuser=True)

    def tearDown(self) -> None:
        live_feed.reset()
        super().tearDown()


class AccessTests(LiveSocketTestCase):
    async def test_nobody_logged_in_is_closed_4401(self):
        """An anonymous socket is accepted, then closed 4401 before any frame."""
        _, first = await open_live(None)
        self.assertEqual(first, {"type": "websocket.close", "code": 4401})

    async def test_users_who_are_not_staff_or_lack_the_permission_are_closed_4403(self):
        """A chat user, and a staff member without `view_message`, are closed 4403 with nothing sent."""
        clerk = await sync_to_async(self.make_user)("clerk", is_staff=True)
        for user in (self.alice, clerk):
            _, first = await open_live(user)
            self.assertEqual(first, {"type": "websocket.close", "code": 4403}, user.username)

    async def test_staff_with_the_permission_get_a_snapshot(self):
        """A staff member granted `view_message` (not a superuser) gets the snapshot."""

        def viewer_with_permission():
            viewer = self.make_user("viewer", is_staff=True)
            viewer.user_permissions.add(Permission.objects.get(codename="view_message"))
            return type(viewer).objects.get(pk=viewer.pk)  # no cached permissions

        viewer = await sync_to_async(viewer_with_permission)()
        communicator, first = await open_live(viewer)
        self.assertEqual(first["type"], "live_snapshot")
        await communicator.disconnect()

    async def test_the_socket_closes_4401_when_the_staff_member_logs_out(self):
        """A logout (web.sessions' close to the user's group) closes the Live turns socket 4401."""
        communicator, first = await open_live(self.root)
        self.assertEqual(first["type"], "live_snapshot")
        await get_channel_layer().group_send(sessions.user_group(self.root.pk), {"type": sessions.CLOSE_EVENT})
        closed = await communicator.receive_output(timeout=FRAME_TIMEOUT)
        self.assertEqual(closed, {"type": "websocket.close", "code": 4401})

    async def test_foreign_origin_is_refused_at_the_handshake(self):
        """The served application refuses a Live turns socket from another site's page."""
        communicator = WebsocketCommunicator(
            websocket_application(), PATH, headers=[(b"origin", b"http://evil.example")]
        )
        connected, _ = await communicator.connect(timeout=FRAME_TIMEOUT)
        self.assertFalse(connected)

    async def test_snapshot_lists_running_turns_with_their_text(self):
        """The first frame holds every running turn: user, question, text so far."""
        thread = await sync_to_async(self.make_thread)(self.alice)

        def running() -> int:
            turns.persist_user_turn(thread.pk, "t-1", "/lorem 9")
            message_id = turns.persist_assistant_shell(thread.pk, "t-1", agent="local", model="local").id
            turns.append_content(message_id, "lorem ")
            turns.append_content(message_id, "ipsum")
            return message_id

        message_id = await sync_to_async(running)()
        communicator, snapshot = await open_live(self.root)
        [card] = snapshot["turns"]
        self.assertEqual(
            (card["message_id"], card["user"], card["question"], card["text"], card["running"]),
            (message_id, "alice", "/lorem 9", "lorem ipsum", True),
        )
        await communicator.send_json_to({"type": "ping"})
        self.assertEqual(await communicator.receive_json_from(timeout=FRAME_TIMEOUT), {"type": "pong"})
        await communicator.disconnect()


@override_settings(LOCAL_MODEL_DELAY_MS=50)
class PushTests(LiveSocketTestCase):
    async def test_starts_ends_and_progress_of_two_turns_reach_the_socket(self):
        """Two turns: their starts and ends as cards, their text once a second in shared frames, rebuilt exactly."""
        threads = [await sync_to_async(self.make_thread)(self.alice) for _ in range(2)]
        communicator, snapshot = await open_live(self.root)
        self.assertEqual(snapshot["turns"], [])
        # 50 words at 50 ms: each turn streams for about 2.5 s, so several progress ticks.
        starts = [await runtime.start_turn(t.pk, "/lorem 50", f"p-{i}") for i, t in enumerate(threads)]
        frames, ended = [], set()
        async with asyncio.timeout(60):
            while len(ended) < 2:
                frame = await communicator.receive_json_from(timeout=FRAME_TIMEOUT)
                frames.append(frame)
                ended |= {t["message_id"] for t in frame["turns"] if not t["running"]}
        for thread, start in zip(threads, starts, strict=True):
            await finish_turn(thread.pk, start.turn_id)
        stored = await sync_to_async(lambda: dict(Message.objects.filter(pk__in=ended).values_list("id", "content")))()
        for message_id, content in stored.items():
            pushed = cards(frames, message_id)
            self.assertTrue(pushed[0]["running"], "the start is pushed while the turn runs")
            self.assertEqual((pushed[-1]["status"], pushed[-1]["text"]), ("completed", content))
            end = frames.index(next(f for f in frames if pushed[-1] in f["turns"]))
            shown = rebuild(pushed[0], frames[:end], message_id)
            self.assertTrue(content.startswith(shown), "progress pieces continue the text without gap or repeat")
            self.assertGreater(len(shown), len(pushed[0]["text"]), "progress added text before the end")
            ticks = [
                datetime.fromisoformat(f["now"])
                for f in frames
                if any(p["message_id"] == message_id for p in f["progress"])
            ]
            self.assertGreaterEqual(len(ticks), 1, "progress is pushed while the turn runs")
            gaps = [(b - a).total_seconds() for a, b in zip(ticks, ticks[1:], strict=False)]
            self.assertTrue(all(gap >= 0.9 for gap in gaps), f"progress more often than once a second: {gaps}")
        shared = [f for f in frames if {p["message_id"] for p in f["progress"]} == set(stored)]
        self.assertTrue(shared, "the progress of both turns of this process goes in one frame")
        await communicator.disconnect()

    async def test_a_tool_call_updates_the_card(self):
        """A turn that calls the calculator shows the call on its card before it ends."""
        thread = await sync_to_async(self.make_thread)(self.alice)
        communicator, _ = await open_live(self.root)
        start = await runtime.start_turn(thread.pk, "what is 2+3*4", "tool-1")
        frames = []
        async with asyncio.timeout(60):
            while not any(not t["running"] for f in frames for t in f["turns"]):
                frames.append(await communicator.receive_json_from(timeout=FRAME_TIMEOUT))
        await finish_turn(thread.pk, start.turn_id)
        final = [t for f in frames for t in f["turns"]][-1]
        self.assertEqual([(a["tool"], a["status"]) for a in final["actions"]], [("calculator", "success")])
        self.assertIn("14", final["text"])
        await communicator.disconnect()


class ClusterTests(TwoProcessTestCase):
    server_env = {"LOCAL_MODEL_DELAY_MS": "20", "TURN_HEARTBEAT_SECONDS": "60"}

    async def test_staff_on_one_process_see_and_cancel_a_turn_running_on_the_other(self):
        """A turn runs on A; staff's socket on B gets its start and progress, Cancel on B ends it cancelled there."""
        await to_thread(self.make_user, "alice")
        await to_thread(self.make_user, "root", is_staff=True, is_superuser=True)
        alice, staff = await Client(self.a, "alice").login(), await Client(self.b, "root").login()
        thread_id = await alice.new_thread()
        live = websockets.connect(
            f"{self.b.ws_url}{PATH}", additional_headers=ws_headers(self.b, staff.http.cookie_header), open_timeout=60
        )
        async with alice.socket(thread_id) as ws, live as staff_ws:
            self.assertEqual((await recv(staff_ws))["type"], "live_snapshot")
            await recv(ws)
            # Long enough (200 s at 20 ms a word) to be running when the cancel comes, however slow the machine.
            await self.send(ws, "/lorem 10000", "c-1")
            await recv_until(ws, first_delta)
            frames = await recv_until(staff_ws, lambda f: any(t["running"] for t in f.get("turns", [])))
            message_id = frames[-1]["turns"][0]["message_id"]
            frames = await recv_until(staff_ws, lambda f: any(p["message_id"] == message_id for p in f["progress"]))
            status, body = await staff.api("POST", f"/admin/chat/message/live/{message_id}/cancel/")
            self.assertEqual((status, body["cancelled"]), (200, True))
            ended = await recv_until(staff_ws, lambda f: any(not t["running"] for t in f.get("turns", [])))
            await recv_until(ws, completed("c-1"))
        [card] = ended[-1]["turns"]
        self.assertEqual((card["message_id"], card["status"]), (message_id, "cancelled"))
        stored = await alice.content(thread_id, message_id)
        self.assertEqual(card["text"], stored["content"][-len(card["text"]) :])

"""Hostile text and oversize requests: refused with documented codes, nothing stored, every thread still opens."""

from __future__ import annotations

import json

from asgiref.sync import sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.db import connection
from django.test import Client, override_settings

from agents import ratelimit, socket_leases
from chat.models import Message, Thread
from tests.base import PASSWORD, ChatTestCase
from tests.sockets import FRAME_TIMEOUT, connect, receive_until_turn_ends
from tests.test_socket import SocketTestCase, finish_turn
from web.routing import websocket_application, websocket_urlpatterns

SURROGATE = "\ud800"
NUL = "\x00"
# Text frames as an attacker writes them: JSON escapes that decode to a lone surrogate or NUL.
ATTACK_FRAMES = {
    "surrogate in mentioned_documents": '{"type":"user_message","content":"hi","mentioned_documents":'
    '[{"id":1,"title":"\\ud800","document_type":"pdf"}]}',
    "surrogate in turn_id": '{"type":"user_message","content":"hi","turn_id":"\\ud800"}',
    "surrogate in content": '{"type":"user_message","content":"hi \\udfff"}',
    "surrogate in a key": '{"type":"user_message","content":"hi","mentioned_documents":[{"\\ud800":1}]}',
    "NUL in content": '{"type":"user_message","content":"a\\u0000b"}',
    "NUL in mentioned_documents": '{"type":"user_message","content":"hi","mentioned_documents":'
    '[{"id":"\\u0000","title":"t","document_type":"pdf"}]}',
    "surrogate in a cancel turn_id": '{"type":"cancel","turn_id":"\\ud800"}',
    "surrogate in type": '{"type":"\\ud800"}',
}


def encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class SocketTextTests(SocketTestCase):
    async def test_invalid_text_anywhere_is_invalid_message_and_stores_nothing(self):
        """Lone surrogates and NUL in any string of a frame get `invalid_message`, never echoed; no row; still pings."""
        communicator, _ = await self.connect()
        for name, text in ATTACK_FRAMES.items():
            with self.subTest(name):
                await communicator.send_to(text_data=text)
                output = await communicator.receive_output(timeout=FRAME_TIMEOUT)
                self.assertEqual(output["type"], "websocket.send", output)
                self.assertTrue(encodes(output["text"]), "the error frame cannot be sent as UTF-8")
                error = json.loads(output["text"])
                self.assertEqual((error["type"], error["code"]), ("error", "invalid_message"))
                self.assertNotIn("turn_id", error)
                await self.assert_still_open(communicator)
        self.assertEqual(await Message.objects.acount(), 0)
        await communicator.disconnect()

    async def test_a_thread_holding_unencodable_text_still_opens(self):
        """A row with a lone surrogate (stored before these checks) still gives a snapshot that encodes."""
        if connection.vendor != "sqlite":
            self.skipTest("only SQLite can store a lone surrogate")
        await sync_to_async(self._store_surrogate_row)()
        communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/threads/{self.thread.pk}/")
        communicator.scope["user"] = self.user
        self.assertTrue((await communicator.connect(timeout=FRAME_TIMEOUT))[0])
        output = await communicator.receive_output(timeout=FRAME_TIMEOUT)
        self.assertTrue(encodes(output["text"]), "the snapshot cannot be sent as UTF-8")
        snapshot = json.loads(output["text"])
        self.assertEqual(snapshot["messages"][0]["metadata"]["mentioned_documents"][0]["title"], SURROGATE)
        await communicator.disconnect()

    def _store_surrogate_row(self) -> None:
        from chat import turns

        turns.persist_user_turn(self.thread.pk, "t-old", "hi", [{"id": 1, "title": SURROGATE, "document_type": "pdf"}])

    @override_settings(CHAT_MAX_MESSAGE_CHARS=10)
    async def test_message_over_the_length_cap_is_message_too_large(self):
        """A message longer than CHAT_MAX_MESSAGE_CHARS is `message_too_large` naming its turn_id; nothing stored."""
        communicator, _ = await self.connect()
        await self.send(communicator, {"type": "user_message", "content": "x" * 11, "turn_id": "long-1"})
        error = await communicator.receive_json_from(timeout=FRAME_TIMEOUT)
        self.assertEqual((error["code"], error["turn_id"]), ("message_too_large", "long-1"))
        self.assertEqual(await Message.objects.acount(), 0)
        await communicator.disconnect()

    @override_settings(CHAT_MAX_RUNNING_TURNS=1, LOCAL_MODEL_DELAY_MS=30)
    async def test_running_turns_per_user_are_capped(self):
        """With one turn running, a message in another thread is `too_many_turns` and stores nothing; later it runs."""
        other = await sync_to_async(self.make_thread)(self.user, "other")
        first, _ = await self.connect()
        second, _ = await self.connect(thread_id=other.pk)
        await self.send(first, {"type": "user_message", "content": "/lorem 200", "turn_id": "long"})
        while (await first.receive_json_from(timeout=FRAME_TIMEOUT))["type"] != "message_delta":
            pass
        await self.send(second, {"type": "user_message", "content": "hi", "turn_id": "second"})
        error = await second.receive_json_from(timeout=FRAME_TIMEOUT)
        self.assertEqual((error["code"], error["turn_id"]), ("too_many_turns", "second"))
        self.assertEqual(await Message.objects.filter(thread=other).acount(), 0)
        await self.send(first, {"type": "cancel", "turn_id": "long"})
        await receive_until_turn_ends(first, "long")
        await finish_turn(self.thread.pk, "long")
        await self.send(second, {"type": "user_message", "content": "hi", "turn_id": "second"})
        await receive_until_turn_ends(second, "second")
        await finish_turn(other.pk, "second")
        await first.disconnect()
        await second.disconnect()


@override_settings(CHAT_MAX_SOCKETS_PER_USER=2)
class SocketCapTests(SocketTestCase):
    def setUp(self) -> None:
        super().setUp()
        socket_leases.reset()

    async def test_sockets_past_the_cap_are_closed_4429(self):
        """A user's third socket is closed 4429 before any frame; closing one makes room again."""
        first, _ = await self.connect()
        second, _ = await self.connect()
        _, refused = await connect(self.user, self.thread.pk)
        self.assertEqual(refused, {"type": "websocket.close", "code": 4429})
        bob = await sync_to_async(self.make_user)("bob")
        bobs, snapshot = await connect(bob, await sync_to_async(lambda: self.make_thread(bob).pk)())
        self.assertEqual(snapshot["type"], "snapshot", "the cap is per user")
        await first.disconnect()
        third, snapshot = await self.connect()
        self.assertEqual(snapshot["type"], "snapshot")
        for communicator in (second, third, bobs):
            await communicator.disconnect()


class OriginTests(SocketTestCase):
    async def handshake(self, origin: bytes, host: bytes = b"127.0.0.1:8000", scheme: str = "ws") -> bool:
        communicator = WebsocketCommunicator(
            websocket_application(), f"/ws/threads/{self.thread.pk}/", headers=[(b"host", host), (b"origin", origin)]
        )
        communicator.scope["scheme"] = scheme
        connected, _ = await communicator.connect(timeout=FRAME_TIMEOUT)
        await communicator.disconnect()
        return connected

    async def test_only_the_full_own_origin_is_accepted(self):
        """Another port, scheme or host of the same machine is refused; the page's own origin is accepted."""
        self.assertTrue(await self.handshake(b"http://127.0.0.1:8000"))
        for origin in (b"http://127.0.0.1:1", b"https://127.0.0.1:8000", b"http://localhost:8000", b"null", b"x"):
            with self.subTest(origin=origin):
                self.assertFalse(await self.handshake(origin))
        self.assertTrue(await self.handshake(b"https://127.0.0.1:8000", scheme="wss"))
        self.assertFalse(await self.handshake(b"http://127.0.0.1:8000", scheme="wss"))
        self.assertFalse(await self.handshake(b"http://evil.example:8000", host=b"evil.example:8000"))

    @override_settings(ALLOWED_ORIGINS=["https://app.example.com"])
    async def test_allowed_origins_are_accepted_exactly(self):
        """An origin listed in ALLOWED_ORIGINS may open sockets; the same host on another port may not."""
        self.assertTrue(await self.handshake(b"https://app.example.com"))
        self.assertTrue(await self.handshake(b"https://app.example.com:443"))
        self.assertFalse(await self.handshake(b"https://app.example.com:8443"))
        self.assertFalse(await self.handshake(b"http://app.example.com"))


class HttpBodyTests(ChatTestCase):
    def setUp(self) -> None:
        ratelimit.reset()
        self.alice = self.make_user("alice")
        self.http = Client()
        self.assertTrue(self.http.login(username="alice", password=PASSWORD))
        self.thread = self.make_thread(self.alice, "kept")

    def send(self, method: str, path: str, raw: str | bytes):
        return getattr(self.http, method)(path, raw, content_type="application/json")

    def test_deep_nesting_is_invalid_json(self):
        """100,000 nested arrays or objects on POST and PATCH answer 400 invalid_json, not a server error."""
        bodies = ["[" * 100_000 + "]" * 100_000, '{"a":' * 100_000 + "1" + "}" * 100_000]
        for body in bodies:
            for method, path in (("post", "/api/threads/"), ("patch", f"/api/threads/{self.thread.pk}/")):
                with self.subTest(method=method, body=body[:5]):
                    response = self.send(method, path, body)
                    self.assertEqual(response.status_code, 400)
                    self.assertEqual(response.json()["error"]["code"], "invalid_json")

    def test_unencodable_text_is_refused(self):
        """A lone surrogate or NUL in a title (or in any string of the body) answers 400 and changes nothing."""
        bodies = [
            '{"title": "\\ud800"}',
            '{"title": "a\\u0000b"}',
            '{"title": "ok", "x": ["\\udfff"]}',
            b'{"title": "\xed\xa0\x80"}',
        ]
        for body in bodies:
            for method, path in (("post", "/api/threads/"), ("patch", f"/api/threads/{self.thread.pk}/")):
                with self.subTest(method=method, body=body):
                    response = self.send(method, path, body)
                    self.assertEqual(response.status_code, 400)
                    self.assertIn(response.json()["error"]["code"], {"invalid_json", "invalid_title"})
        self.assertEqual(list(Thread.objects.values_list("title", flat=True)), ["kept"])
        self.assertEqual(self.http.get(f"/api/threads/{self.thread.pk}/").status_code, 200)

    @override_settings(CHAT_MAX_TITLE_CHARS=5)
    def test_title_over_the_cap_is_invalid_title(self):
        """A title longer than CHAT_MAX_TITLE_CHARS is 400 invalid_title on create and rename."""
        for method, path in (("post", "/api/threads/"), ("patch", f"/api/threads/{self.thread.pk}/")):
            response = self.send(method, path, json.dumps({"title": "x" * 6}))
            self.assertEqual((response.status_code, response.json()["error"]["code"]), (400, "invalid_title"))
        self.assertEqual(self.send("post", "/api/threads/", json.dumps({"title": "x" * 5})).status_code, 201)

    @override_settings(CHAT_MAX_THREADS_PER_USER=2)
    def test_threads_per_user_are_capped(self):
        """Past CHAT_MAX_THREADS_PER_USER threads, creating one answers 403 too_many_threads; deleting makes room."""
        self.assertEqual(self.send("post", "/api/threads/", "{}").status_code, 201)
        response = self.send("post", "/api/threads/", "{}")
        self.assertEqual((response.status_code, response.json()["error"]["code"]), (403, "too_many_threads"))
        self.assertEqual(Thread.objects.filter(owner=self.alice).count(), 2)
        self.http.delete(f"/api/threads/{self.thread.pk}/")
        self.assertEqual(self.send("post", "/api/threads/", "{}").status_code, 201)

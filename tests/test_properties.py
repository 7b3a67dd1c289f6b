"""Property tests over hostile client frames and API bodies (Hypothesis; example counts in tests/properties.py)."""

from __future__ import annotations

import json

from asgiref.sync import SyncToAsync, async_to_sync
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.test import Client, override_settings
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.django import TestCase as HypothesisTestCase
from hypothesis.extra.django import TransactionTestCase as HypothesisTransactionTestCase

from agents import ratelimit, socket_leases
from agents.registry import registry
from chat import turns
from chat.models import Message, Thread
from tests.base import FAST_HASHING, PASSWORD, ChatHelpers
from tests.properties import FRAME_EXAMPLES, api_bodies, client_frames
from tests.sockets import FRAME_TIMEOUT
from web.routing import websocket_urlpatterns

# Every `error` code of docs/protocol.md a frame may get.
FRAME_CODES = {
    "invalid_json",
    "message_too_large",
    "invalid_message",
    "unknown_type",
    "binary_not_supported",
    "rate_limited",
    "turn_not_found",
    "not_found",
    "too_many_turns",
}
# Every API refusal code a thread body may get (README, docs/SECURITY.md).
BODY_CODES = {"invalid_json", "invalid_title", "too_many_threads", "invalid_agent", "invalid_system_prompt"}

# The attacks of issue 11, as the text frames an attacker sent.
FRAME_ATTACKS = [
    '{"type":"user_message","content":"hi","mentioned_documents":[{"id":1,"title":"\\ud800","document_type":"pdf"}]}',
    '{"type":"user_message","content":"hi","turn_id":"\\ud800"}',
    '{"type":"user_message","content":"\\ud800"}',
    '{"type":"user_message","content":"a\\u0000b"}',
    '{"type":"user_message","content":"hi","mentioned_documents":[{"id":"\\u0000","title":"x","document_type":"y"}]}',
    "[" * 4000 + "]" * 4000,
]


def encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@FAST_HASHING
@override_settings(LOCAL_MODEL_DELAY_MS=0, CHAT_MESSAGES_PER_MINUTE=100_000)
class FramePropertyTests(ChatHelpers, HypothesisTransactionTestCase):
    """Real commits (the consumer closes old connections between frames); tables are flushed after each example."""

    def _post_teardown(self) -> None:
        # As ChatTransactionTestCase: close asgiref's database thread's connection before the flush.
        SyncToAsync.single_thread_executor.submit(connections.close_all).result()
        turns.APPEND_THREAD.submit(connections.close_all).result()
        super()._post_teardown()

    async def open(self, thread_id: int) -> tuple[WebsocketCommunicator, str]:
        communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/threads/{thread_id}/")
        communicator.scope["user"] = self.user
        connected, _ = await communicator.connect(timeout=FRAME_TIMEOUT)
        assert connected
        first = await communicator.receive_output(timeout=FRAME_TIMEOUT)
        assert first["type"] == "websocket.send", f"the thread no longer opens: {first}"
        return communicator, first["text"]

    @settings(max_examples=FRAME_EXAMPLES)
    @given(text=client_frames())
    @example(text=FRAME_ATTACKS[0])
    @example(text=FRAME_ATTACKS[1])
    @example(text=FRAME_ATTACKS[2])
    @example(text=FRAME_ATTACKS[3])
    @example(text=FRAME_ATTACKS[4])
    @example(text=FRAME_ATTACKS[5])
    def test_any_frame_gets_documented_codes_and_leaves_every_thread_readable(self, text: str) -> None:
        """Any frame: only documented error codes, the socket still pongs, no row when refused, the thread reopens."""
        ratelimit.reset()
        socket_leases.reset()
        self.user = self.make_user("alice")
        thread = Thread.objects.create(owner=self.user, title="p")
        async_to_sync(self.check_frame)(thread.pk, text)
        self.assert_reads(thread.pk)

    async def check_frame(self, thread_id: int, text: str) -> None:
        communicator, _ = await self.open(thread_id)
        await communicator.send_input({"type": "websocket.receive", "text": text})  # "" included
        await communicator.send_json_to({"type": "ping"})
        frames = []
        while True:
            output = await communicator.receive_output(timeout=FRAME_TIMEOUT)
            assert output["type"] == "websocket.send", f"the socket closed: {output}"
            assert encodes(output["text"]), "a frame that cannot be sent as UTF-8"
            frame = json.loads(output["text"])
            frames.append(frame)
            if frame["type"] == "pong":
                break
        errors = [f for f in frames if f["type"] == "error"]
        for error in errors:
            assert error["code"] in FRAME_CODES, error
        started = [f["data"]["message"]["turn_id"] for f in frames if f["type"] == "user_message"]
        for turn_id in started:  # a valid message runs its turn to the end
            turn = registry.get(thread_id, turn_id)
            if turn is not None and turn.task is not None:
                await turn.task
        if errors and not started:
            assert await Message.objects.filter(thread_id=thread_id).acount() == 0, "a refused frame stored a row"
        await communicator.disconnect()
        again, snapshot = await self.open(thread_id)
        assert json.loads(snapshot)["type"] == "snapshot"
        await again.disconnect()

    def assert_reads(self, thread_id: int) -> None:
        client = Client()
        client.force_login(self.user)
        response = client.get(f"/api/threads/{thread_id}/")
        assert response.status_code == 200
        assert encodes(response.content.decode())


@FAST_HASHING
class BodyPropertyTests(ChatHelpers, HypothesisTestCase):
    @classmethod
    def setUpTestData(cls) -> None:
        cls.user = cls().make_user("alice")

    def setUp(self) -> None:
        self.http = Client()
        self.assertTrue(self.http.login(username="alice", password=PASSWORD))
        self.thread = Thread.objects.create(owner=self.user, title="kept")

    @given(body=api_bodies(), method=st.sampled_from(["post", "patch"]))
    @example(body=b"[" * 100_000, method="post")
    @example(body=b'{"title":' * 50_000, method="patch")
    @example(body=b'{"title": "\\ud800"}', method="post")
    @example(body=b'{"title": "\\ud800"}', method="patch")
    @example(body=b'{"title": "a\\u0000"}', method="post")
    def test_any_body_is_answered_with_a_documented_code_and_threads_stay_readable(self, body: bytes, method: str):
        """Any POST/PATCH body: 200/201 or a documented 4xx code (never 500); a refusal changes nothing."""
        path = "/api/threads/" if method == "post" else f"/api/threads/{self.thread.pk}/"
        before = list(Thread.objects.order_by("pk").values_list("pk", "title"))
        response = getattr(self.http, method)(path, body, content_type="application/json")
        assert response.status_code in (200, 201, 400, 403), (response.status_code, response.content[:200])
        if response.status_code >= 400:
            assert response.json()["error"]["code"] in BODY_CODES, response.json()
            assert list(Thread.objects.order_by("pk").values_list("pk", "title")) == before
        for thread_id in Thread.objects.values_list("pk", flat=True):
            read = self.http.get(f"/api/threads/{thread_id}/")
            assert read.status_code == 200
            assert encodes(read.content.decode())
        assert self.http.get("/api/threads/").status_code == 200

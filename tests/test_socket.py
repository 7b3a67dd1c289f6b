"""The thread socket of docs/protocol.md, through Channels' communicator against the real database."""

from __future__ import annotations

import json
from unittest.mock import patch

from asgiref.sync import sync_to_async
from django.test import override_settings

from agents import ratelimit
from chat.models import AgentAction, Message, TokenUsage
from tests.base import ChatTransactionTestCase, finish_turn
from tests.sockets import (
    FRAME_TIMEOUT,
    assert_contiguous,
    connect,
    rebuild,
    receive_until,
    receive_until_turn_ends,
)

TURN_EVENTS = (
    "agent_started",
    "agent_thinking",
    "message_delta",
    "tool_executing",
    "tool_completed",
    "agent_completed",
)


def piece(frame: dict) -> tuple[int, str]:
    """A delta's (offset, delta), whatever else its data carries (emitted_at)."""
    return frame["data"]["offset"], frame["data"]["delta"]


@override_settings(LOCAL_MODEL_DELAY_MS=0)
class SocketTestCase(ChatTransactionTestCase):
    def setUp(self) -> None:
        ratelimit.reset()
        self.user = self.make_user("alice")
        self.thread = self.make_thread(self.user)

    async def connect(self, user=None, thread_id=None):
        communicator, snapshot = await connect(user or self.user, thread_id or self.thread.pk)
        return communicator, snapshot

    async def send(self, communicator, frame: dict) -> None:
        await communicator.send_json_to(frame)

    async def turn(self, communicator, content: str, turn_id: str, **extra) -> list[dict]:
        await self.send(communicator, {"type": "user_message", "content": content, "turn_id": turn_id, **extra})
        frames = await receive_until_turn_ends(communicator, turn_id)
        await finish_turn(self.thread.pk, turn_id)
        return frames

    async def assert_still_open(self, communicator) -> None:
        await self.send(communicator, {"type": "ping"})
        self.assertEqual((await communicator.receive_json_from(timeout=FRAME_TIMEOUT))["type"], "pong")


class ConnectTests(SocketTestCase):
    async def test_anonymous_socket_is_closed_with_4401_and_nothing_sent(self):
        """A socket without a logged-in user is accepted, then closed 4401 before any frame."""
        communicator, first = await connect(None, self.thread.pk)
        self.assertEqual(first, {"type": "websocket.close", "code": 4401})

    async def test_other_users_thread_is_closed_with_4404(self):
        """Another user's thread looks exactly like a missing one: closed 4404, nothing sent."""
        bob = await sync_to_async(self.make_user)("bob")
        _, first = await connect(bob, self.thread.pk)
        self.assertEqual(first, {"type": "websocket.close", "code": 4404})
        for missing in (999_999, 2**63, 10**30):  # the last two fit no id column
            _, first = await connect(self.user, missing)
            self.assertEqual(first, {"type": "websocket.close", "code": 4404})

    async def test_origin_not_in_allowed_hosts_is_refused(self):
        """A socket from a foreign Origin is refused by the origin check of the served application."""
        from channels.testing import WebsocketCommunicator

        from web.routing import websocket_application

        communicator = WebsocketCommunicator(
            websocket_application(), f"/ws/threads/{self.thread.pk}/", headers=[(b"origin", b"http://evil.example")]
        )
        connected, _ = await communicator.connect(timeout=FRAME_TIMEOUT)
        self.assertFalse(connected)

    async def test_session_cookie_logs_the_socket_in_through_the_served_application(self):
        """The served ASGI application reads the session cookie: the owner gets a snapshot, a stranger 4401."""
        from channels.testing import WebsocketCommunicator
        from django.test import Client

        from chatproject.asgi import application

        client = Client()
        await sync_to_async(client.force_login)(self.user)
        cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
        path = f"/ws/threads/{self.thread.pk}/"
        for headers, expected in (
            ([(b"host", b"127.0.0.1:8000"), (b"origin", b"http://127.0.0.1:8000"), (b"cookie", cookie)], "snapshot"),
            ([(b"host", b"127.0.0.1:8000"), (b"origin", b"http://127.0.0.1:8000"), (b"cookie", b"sessionid=x")], 4401),
        ):
            communicator = WebsocketCommunicator(application, path, headers=headers)
            connected, _ = await communicator.connect(timeout=FRAME_TIMEOUT)
            self.assertTrue(connected)
            first = await communicator.receive_output(timeout=FRAME_TIMEOUT)
            if expected == "snapshot":
                self.assertEqual(json.loads(first["text"])["thread_id"], self.thread.pk)
            else:
                self.assertEqual(first, {"type": "websocket.close", "code": expected})
            await communicator.disconnect()

    async def test_frames_sent_to_a_served_socket_never_look_at_a_session_object(self):
        """The socket reads its session key from the cookie; nothing per frame sent asks a session store anything."""
        from django.contrib.sessions.backends.base import SessionBase

        await self.log_in()
        asked = []
        original = SessionBase.is_empty

        def is_empty(session: SessionBase) -> bool:
            asked.append(session)
            return original(session)

        with patch.object(SessionBase, "is_empty", is_empty):
            communicator = await self.served_socket(self.thread.pk)
            self.assertEqual(
                json.loads((await communicator.receive_output(timeout=FRAME_TIMEOUT))["text"])["type"], "snapshot"
            )
            for _ in range(3):
                await communicator.send_to(text_data='{"type": "ping"}')
                self.assertEqual(json.loads(await communicator.receive_from(FRAME_TIMEOUT))["type"], "pong")
            await communicator.disconnect()
        self.assertEqual(asked, [])

    async def test_a_repeated_turn_id_after_the_session_ended_closes_4401_and_answers_nothing(self):
        """Once the session row is gone, even a repeat of a stored turn_id gets a 4401 close, not its stored message."""
        from django.contrib.sessions.models import Session

        await self.log_in()
        communicator = await self.served_socket(self.thread.pk)
        await communicator.receive_from(FRAME_TIMEOUT)  # the snapshot
        await communicator.send_to(text_data=json.dumps({"type": "user_message", "content": "hi", "turn_id": "t-1"}))
        await receive_until_turn_ends(communicator, "t-1")
        await finish_turn(self.thread.pk, "t-1")
        stored = await Message.objects.acount()
        await Session.objects.filter(session_key=self.session_key).adelete()
        await communicator.send_to(text_data=json.dumps({"type": "user_message", "content": "hi", "turn_id": "t-1"}))
        self.assertEqual(await communicator.receive_output(FRAME_TIMEOUT), {"type": "websocket.close", "code": 4401})
        self.assertEqual(await Message.objects.acount(), stored)

    async def test_other_frames_after_the_session_ended_close_4401(self):
        """A cancel on an ended session closes 4401 too."""
        from django.contrib.sessions.models import Session

        await self.log_in()
        communicator = await self.served_socket(self.thread.pk)
        await communicator.receive_from(FRAME_TIMEOUT)
        await Session.objects.filter(session_key=self.session_key).adelete()
        await communicator.send_to(text_data=json.dumps({"type": "cancel"}))
        self.assertEqual(await communicator.receive_output(FRAME_TIMEOUT), {"type": "websocket.close", "code": 4401})

    async def log_in(self) -> None:
        """A login of alice: its session key (the cookie a browser would send)."""
        from django.test import Client

        client = Client()
        await sync_to_async(client.force_login)(self.user)
        self.session_key = client.cookies["sessionid"].value

    async def served_socket(self, thread_id: int | str):
        """A socket through the served ASGI application, with the session cookie of log_in()."""
        from channels.testing import WebsocketCommunicator

        from chatproject.asgi import application

        headers = [(b"host", b"127.0.0.1:8000"), (b"origin", b"http://127.0.0.1:8000")]
        headers.append((b"cookie", f"sessionid={self.session_key}".encode()))
        communicator = WebsocketCommunicator(application, f"/ws/threads/{thread_id}/", headers=headers)
        connected, _ = await communicator.connect(timeout=FRAME_TIMEOUT)
        self.assertTrue(connected)
        return communicator

    async def first_output(self, thread_id: int | str) -> dict:
        """What a served socket (see served_socket) gets first: a close, or its snapshot's text frame."""
        communicator = await self.served_socket(thread_id)
        return await communicator.receive_output(timeout=FRAME_TIMEOUT)

    async def test_served_socket_opens_in_five_queries(self):
        """A socket on a new thread reads the session and user once (Django's check), then one query to recheck it.

        With Channels' AuthMiddleware in front of the socket's own session
        check, the same socket took nine: the session and the user twice;
        then six, while the first check read its fingerprint again.
        """
        from unittest import mock

        from django.db.backends.utils import CursorWrapper

        statements: list[str] = []
        execute = CursorWrapper.execute

        def counted(cursor, sql, params=None):
            if not sql.startswith("BEGIN"):  # SQLite's transactions begin with a statement of their own
                statements.append(sql)
            return execute(cursor, sql, params)

        await self.log_in()
        warm_up = await self.served_socket(self.thread.pk)  # the process's first socket starts its sweeper
        await warm_up.receive_json_from(timeout=FRAME_TIMEOUT)
        await warm_up.disconnect()
        with mock.patch.object(CursorWrapper, "execute", counted):
            communicator = await self.served_socket(self.thread.pk)
            first = await communicator.receive_json_from(timeout=FRAME_TIMEOUT)
        await communicator.disconnect()
        self.assertEqual((first["type"], first["messages"]), ("snapshot", []))
        self.assertLessEqual(len(statements), 5, "\n".join(statements))

    async def test_session_ended_while_the_socket_joins_closes_it_4401(self):
        """A logout between the session check and the snapshot closes the socket 4401 before any frame."""
        from unittest import mock

        from django.contrib.sessions.models import Session

        from agents import fanout

        join = fanout.join

        async def logout_meanwhile(thread_id, subscriber):
            await sync_to_async(Session.objects.filter(session_key=self.session_key).delete)()
            await join(thread_id, subscriber)

        await self.log_in()
        with mock.patch.object(fanout, "join", logout_meanwhile):
            first = await self.first_output(self.thread.pk)
        self.assertEqual(first, {"type": "websocket.close", "code": 4401})

    async def test_password_changed_just_after_the_session_check_closes_the_socket_4401(self):
        """A password change committed just after the socket's first session check closes it once it has joined.

        The change comes without the save signal (no close event to the
        user's group): only the recheck after joining can catch it, by the
        fingerprint of what the first check read.
        """
        from unittest import mock

        from django.contrib.auth.hashers import make_password
        from django.contrib.auth.models import User

        from web import sessions

        check = sessions.checked_session

        def password_changed_meanwhile(session_key):
            checked = check(session_key)
            User.objects.filter(pk=self.user.pk).update(password=make_password("changed meanwhile"))
            return checked

        await self.log_in()
        with mock.patch.object(sessions, "checked_session", password_changed_meanwhile):
            first = await self.first_output(self.thread.pk)
        self.assertEqual(first, {"type": "websocket.close", "code": 4401})

    async def test_a_path_no_route_takes_is_closed_4404(self):
        """A thread id of 5,000 digits (more than int() takes) or an unknown socket path: closed 4404, no error."""
        await self.log_in()
        for path in ("9" * 5000, "abc"):
            first = await self.first_output(path)
            self.assertEqual(first, {"type": "websocket.close", "code": 4404})

    async def test_served_socket_to_another_users_thread_is_closed_4404(self):
        """Through the served application, a logged-in user asking for someone else's thread gets 4404."""
        bob = await sync_to_async(self.make_user)("bob")
        theirs = await sync_to_async(self.make_thread)(bob)
        await self.log_in()
        first = await self.first_output(theirs.pk)
        self.assertEqual(first, {"type": "websocket.close", "code": 4404})

    async def test_snapshot_is_the_first_frame(self):
        """The first frame holds the thread's messages in seq order and no active turn when idle."""
        communicator, snapshot = await self.connect()
        self.assertEqual(
            snapshot, {"type": "snapshot", "thread_id": self.thread.pk, "messages": [], "active_turn": None}
        )
        await self.turn(communicator, "hello", "t-1")
        _, snapshot = await self.connect()
        self.assertEqual([m["seq"] for m in snapshot["messages"]], [1, 2])
        self.assertEqual([m["role"] for m in snapshot["messages"]], ["user", "assistant"])
        self.assertEqual(snapshot["messages"][1]["status"], "completed")
        self.assertIsNone(snapshot["active_turn"])

    async def test_snapshot_holds_the_latest_50_messages(self):
        """A long thread's snapshot carries only its latest 50 messages, in seq order."""
        from chat import turns

        def fill():
            for i in range(30):
                turns.persist_user_turn(self.thread.pk, f"u{i}", f"message {i}")
                shell = turns.persist_assistant_shell(self.thread.pk, f"u{i}")
                turns.finalize_assistant_turn(shell.id, "completed")

        await sync_to_async(fill)()
        _, snapshot = await self.connect()
        self.assertEqual([m["seq"] for m in snapshot["messages"]], list(range(11, 61)))

    async def test_ping_is_answered_with_pong(self):
        """`ping` gets `pong` with the thread id."""
        communicator, _ = await self.connect()
        await self.send(communicator, {"type": "ping"})
        self.assertEqual(await communicator.receive_json_from(), {"type": "pong", "thread_id": self.thread.pk})


class RefusalTests(SocketTestCase):
    async def assert_refused(self, communicator, code: str, turn_id: str | None = None) -> dict:
        frame = await communicator.receive_json_from(timeout=FRAME_TIMEOUT)
        self.assertEqual(frame["type"], "error", frame)
        self.assertEqual(frame["code"], code, frame)
        self.assertEqual(frame["thread_id"], self.thread.pk)
        self.assertTrue(frame["message"])
        self.assertEqual(frame.get("turn_id"), turn_id)
        await self.assert_still_open(communicator)
        return frame

    async def assert_nothing_stored(self) -> None:
        self.assertEqual(await Message.objects.acount(), 0)

    async def test_invalid_json(self):
        """Text that is not JSON is refused with invalid_json."""
        communicator, _ = await self.connect()
        await communicator.send_to(text_data="{not json")
        await self.assert_refused(communicator, "invalid_json")
        await self.assert_nothing_stored()

    async def test_frame_over_8192_bytes_is_refused_before_parsing(self):
        """A frame over 8192 UTF-8 bytes is message_too_large even if it is valid JSON (and even if not)."""
        communicator, _ = await self.connect()
        content = "é" * 4090  # 8180 bytes of content: the whole frame is over 8192 bytes, under 8192 characters
        await self.send(communicator, {"type": "user_message", "content": content, "turn_id": "big"})
        await self.assert_refused(communicator, "message_too_large", "big")
        await communicator.send_to(text_data="{" * 9000)
        await self.assert_refused(communicator, "message_too_large")
        await self.assert_nothing_stored()

    async def test_invalid_message(self):
        """Wrong or missing fields are invalid_message, with the frame's turn_id echoed."""
        communicator, _ = await self.connect()
        bad_frames = [
            ([], None),
            ({"content": "no type"}, None),
            ({"type": "user_message", "turn_id": "t1"}, "t1"),
            ({"type": "user_message", "content": "   ", "turn_id": "t2"}, "t2"),
            ({"type": "user_message", "content": 42, "turn_id": "t3"}, "t3"),
            ({"type": "user_message", "content": "hi", "turn_id": "bad id!"}, "bad id!"),
            ({"type": "user_message", "content": "hi", "turn_id": "x" * 65}, "x" * 65),
            ({"type": "user_message", "content": "hi", "turn_id": "t4", "extra": 1}, "t4"),
            ({"type": "cancel", "turn_id": 5}, None),
        ]
        for frame, turn_id in bad_frames:
            with self.subTest(frame=frame):
                await communicator.send_to(text_data=json.dumps(frame))
                await self.assert_refused(communicator, "invalid_message", turn_id)
        await self.assert_nothing_stored()

    async def test_unknown_type(self):
        """A frame of an unknown type is unknown_type."""
        communicator, _ = await self.connect()
        await self.send(communicator, {"type": "dance", "turn_id": "t9"})
        await self.assert_refused(communicator, "unknown_type", "t9")

    async def test_binary_frames_are_not_supported(self):
        """Binary frames are refused with binary_not_supported."""
        communicator, _ = await self.connect()
        await communicator.send_to(bytes_data=b'{"type": "ping"}')
        await self.assert_refused(communicator, "binary_not_supported")

    async def test_cancel_of_unknown_turn(self):
        """Cancelling a turn that is not running is turn_not_found."""
        communicator, _ = await self.connect()
        await self.send(communicator, {"type": "cancel", "turn_id": "nope"})
        await self.assert_refused(communicator, "turn_not_found", "nope")
        await self.send(communicator, {"type": "cancel"})
        await self.assert_refused(communicator, "turn_not_found")

    @override_settings(CHAT_MESSAGES_PER_MINUTE=2)
    async def test_rate_limit_counts_messages_over_all_sockets(self):
        """The per-user limit spans sockets; the refusal says when to retry and stores nothing."""
        first, _ = await self.connect()
        second, _ = await self.connect()
        await self.turn(first, "one", "r1")
        await self.turn(second, "two", "r2")
        await receive_until_turn_ends(first, "r2")
        await self.send(first, {"type": "user_message", "content": "three", "turn_id": "r3"})
        frame = await self.assert_refused(first, "rate_limited", "r3")
        self.assertGreaterEqual(frame["retry_after"], 1)
        self.assertFalse(await Message.objects.filter(turn_id="r3").aexists())

    @override_settings(CHAT_MESSAGES_PER_MINUTE=1)
    async def test_a_retry_is_answered_even_when_rate_limited(self):
        """A repeated turn_id gets its stored user_message, not rate_limited, and costs no message of the limit."""
        communicator, _ = await self.connect()
        frames = await self.turn(communicator, "one", "once")
        await self.send(communicator, {"type": "user_message", "content": "one", "turn_id": "once"})
        answer = await communicator.receive_json_from(timeout=FRAME_TIMEOUT)
        self.assertEqual(
            (answer["type"], answer["data"]["message"]["id"]), ("user_message", frames[0]["data"]["message"]["id"])
        )
        await self.send(communicator, {"type": "user_message", "content": "two", "turn_id": "new"})
        await self.assert_refused(communicator, "rate_limited", "new")
        self.assertEqual(await Message.objects.acount(), 2)

    @override_settings(AGENT_PROVIDER="no-such-provider")
    async def test_server_error_keeps_the_socket_open(self):
        """A server failure while handling a frame is server_error; nothing is stored and the socket stays open."""
        communicator, _ = await self.connect()
        with self.assertLogs("web.consumers", "ERROR"):
            await self.send(communicator, {"type": "user_message", "content": "hi", "turn_id": "s1"})
            await self.assert_refused(communicator, "server_error", "s1")
        await self.assert_nothing_stored()


class TurnTests(SocketTestCase):
    async def test_calculator_turn_events_in_order(self):
        """Arithmetic: user_message, agent_started, thinking, tool_executing, tool_completed, deltas, completed."""
        communicator, _ = await self.connect()
        frames = await self.turn(communicator, "what is 2+3*4", "calc-1")
        kinds = [f["type"] for f in frames]
        self.assertEqual(
            [k for k in kinds if k != "message_delta"],
            [
                "user_message",
                "agent_started",
                "agent_thinking",  # before the tool call
                "tool_executing",
                "tool_completed",
                "agent_thinking",  # before the answer
                "agent_completed",
            ],
        )
        self.assertLess(kinds.index("tool_completed"), kinds.index("message_delta"))
        message_id = frames[1]["message_id"]
        for frame in frames[1:]:
            self.assertEqual(
                (frame["thread_id"], frame["turn_id"], frame["message_id"]), (self.thread.pk, "calc-1", message_id)
            )
        executing = frames[kinds.index("tool_executing")]["data"]
        completed = frames[kinds.index("tool_completed")]["data"]
        self.assertEqual(executing["tool"], "calculator")
        self.assertEqual(executing["input"], {"expression": "2+3*4"})
        self.assertEqual(executing["position"], 0)  # no text came before the call
        self.assertEqual((completed["status"], completed["output"]["result"]), ("success", 14))
        self.assertEqual(completed["action_id"], executing["action_id"])
        self.assertGreaterEqual(completed["duration_ms"], 0)
        end = frames[-1]["data"]
        self.assertEqual(end["status"], "completed")
        self.assertIsNone(end["error"])
        self.assertEqual(end["usage"]["model"], "local")
        text = rebuild("", frames, message_id)
        self.assertIn("14", text)
        message = await Message.objects.aget(pk=message_id)
        self.assertEqual(message.content, text)
        self.assertEqual(message.status, "completed")
        self.assertEqual(message.metadata["streaming"], False)
        action = await AgentAction.objects.aget(message_id=message_id)
        self.assertEqual((action.status, action.output["result"]), ("success", 14))
        self.assertEqual(await TokenUsage.objects.filter(message_id=message_id).acount(), 1)

    async def test_user_message_event_carries_the_stored_message(self):
        """The user_message event holds the committed user message with its seq and turn_id."""
        communicator, _ = await self.connect()
        frames = await self.turn(
            communicator,
            "hello",
            "u-1",
            mentioned_documents=[{"id": 1, "title": "Spec", "document_type": "pdf"}, {"id": 2, "title": "No type"}],
        )
        message = frames[0]["data"]["message"]
        self.assertEqual(
            (message["role"], message["seq"], message["turn_id"], message["content"]), ("user", 1, "u-1", "hello")
        )
        self.assertEqual(
            message["metadata"]["mentioned_documents"], [{"id": 1, "title": "Spec", "document_type": "pdf"}]
        )

    async def test_server_makes_a_turn_id_when_absent(self):
        """Without turn_id the server makes one and uses it on every event of the turn."""
        communicator, _ = await self.connect()
        await self.send(communicator, {"type": "user_message", "content": "hello"})
        first = await communicator.receive_json_from(timeout=FRAME_TIMEOUT)
        turn_id = first["turn_id"]
        self.assertTrue(turn_id)
        frames = await receive_until_turn_ends(communicator, turn_id)
        await finish_turn(self.thread.pk, turn_id)
        self.assertTrue(all(f["turn_id"] == turn_id for f in frames))

    async def test_repeated_turn_id_starts_and_stores_nothing(self):
        """Sending a turn_id again answers with the existing user_message and runs no second turn."""
        communicator, _ = await self.connect()
        frames = await self.turn(communicator, "hello", "same")
        await self.send(communicator, {"type": "user_message", "content": "hello again", "turn_id": "same"})
        answer = await communicator.receive_json_from(timeout=FRAME_TIMEOUT)
        self.assertEqual(answer["type"], "user_message")
        self.assertEqual(
            answer["data"]["message"],
            frames[0]["data"]["message"] | {"updated_at": answer["data"]["message"]["updated_at"]},
        )
        await self.assert_still_open(communicator)
        self.assertEqual(await Message.objects.acount(), 2)
        self.assertEqual(await TokenUsage.objects.acount(), 1)

    async def test_failing_model_keeps_partial_text(self):
        """`/fail 5`: five words kept, status failed, has_error, error object with code and retryable."""
        communicator, _ = await self.connect()
        frames = await self.turn(communicator, "/fail 5", "f-1")
        end = frames[-1]["data"]
        self.assertEqual(end["status"], "failed")
        self.assertEqual(set(end["error"]), {"code", "message", "retryable"})
        message = await Message.objects.aget(pk=frames[-1]["message_id"])
        self.assertEqual(message.content.split(), ["lorem", "ipsum", "dolor", "sit", "amet"])
        self.assertEqual(
            (message.status, message.metadata["has_error"], message.metadata["streaming"]), ("failed", True, False)
        )
        self.assertEqual(await TokenUsage.objects.filter(message=message).acount(), 1)

    async def test_tool_error_is_stored_and_told(self):
        """`1/0`: the calculator action ends error and the answer says it could not compute."""
        communicator, _ = await self.connect()
        frames = await self.turn(communicator, "1/0", "z-1")
        completed = next(f for f in frames if f["type"] == "tool_completed")
        self.assertEqual(completed["data"]["status"], "error")
        self.assertEqual(frames[-1]["data"]["status"], "completed")
        message = await Message.objects.aget(pk=frames[-1]["message_id"])
        self.assertIn("could not compute", message.content)
        self.assertEqual((await AgentAction.objects.aget(message=message)).status, "error")

    async def test_clock_tool_for_time(self):
        """A message about the time calls the clock tool."""
        communicator, _ = await self.connect()
        frames = await self.turn(communicator, "what time is it?", "c-1")
        executing = next(f for f in frames if f["type"] == "tool_executing")
        self.assertEqual(executing["data"]["tool"], "clock")

    async def test_lorem_streams_exactly_n_words(self):
        """`/lorem 40` streams 40 words with contiguous offsets and stores them."""
        communicator, _ = await self.connect()
        frames = await self.turn(communicator, "/lorem 40", "l-1")
        message_id = frames[-1]["message_id"]
        assert_contiguous(frames, message_id)
        text = rebuild("", frames, message_id)
        self.assertEqual(len(text.split()), 40)
        self.assertEqual((await Message.objects.aget(pk=message_id)).content, text)


@override_settings(LOCAL_MODEL_DELAY_MS=20)
class LiveTurnTests(SocketTestCase):
    async def start(self, communicator, content: str, turn_id: str) -> int:
        """Send a message and return the assistant message id once its first delta arrived."""
        await self.send(communicator, {"type": "user_message", "content": content, "turn_id": turn_id})
        frames = await receive_until(communicator, "message_delta")
        return frames[-1]["message_id"]

    async def test_two_sockets_of_one_user_get_every_event(self):
        """Every socket of the owner receives the same events of a turn."""
        first, _ = await self.connect()
        second, _ = await self.connect()
        frames = await self.turn(first, "/lorem 20", "two-1")
        other = await receive_until_turn_ends(second, "two-1")
        strip = lambda fs: [(f["type"], f.get("data")) for f in fs if f["type"] != "message_delta"]  # noqa: E731
        self.assertEqual(strip(frames), strip(other))
        message_id = frames[-1]["message_id"]
        self.assertEqual(rebuild("", frames, message_id), rebuild("", other, message_id))

    async def test_cancel_from_another_socket_keeps_partial_text(self):
        """A cancel from any socket of the owner stops the turn: cancelled, partial text kept, flags set."""
        first, _ = await self.connect()
        second, _ = await self.connect()
        message_id = await self.start(first, "/lorem 500", "cx-1")
        await self.send(second, {"type": "cancel", "turn_id": "cx-1"})
        frames = await receive_until_turn_ends(first, "cx-1")
        await finish_turn(self.thread.pk, "cx-1")
        self.assertEqual(frames[-1]["data"]["status"], "cancelled")
        message = await Message.objects.aget(pk=message_id)
        self.assertEqual(message.status, "cancelled")
        self.assertEqual((message.metadata["cancelled"], message.metadata["streaming"]), (True, False))
        self.assertLess(len(message.content.split()), 500)
        self.assertGreater(len(message.content.split()), 0)

    async def test_cancel_without_turn_id_stops_the_running_turn(self):
        """`cancel` with no turn_id stops whatever turn of the thread is running."""
        communicator, _ = await self.connect()
        await self.start(communicator, "/lorem 500", "cx-2")
        await self.send(communicator, {"type": "cancel"})
        frames = await receive_until_turn_ends(communicator, "cx-2")
        await finish_turn(self.thread.pk, "cx-2")
        self.assertEqual(frames[-1]["data"]["status"], "cancelled")

    async def test_new_message_cancels_the_running_turn_first(self):
        """A user_message during a turn ends that turn cancelled before the new one starts."""
        communicator, _ = await self.connect()
        old_id = await self.start(communicator, "/lorem 500", "old")
        await self.send(communicator, {"type": "user_message", "content": "/lorem 3", "turn_id": "new"})
        frames = await receive_until_turn_ends(communicator, "new")
        await finish_turn(self.thread.pk, "new")
        kinds = [(f["type"], f.get("turn_id")) for f in frames]
        self.assertLess(kinds.index(("agent_completed", "old")), kinds.index(("agent_started", "new")))
        old_end = next(f for f in frames if f["type"] == "agent_completed" and f["turn_id"] == "old")
        self.assertEqual(old_end["data"]["status"], "cancelled")
        self.assertEqual((await Message.objects.aget(pk=old_id)).status, "cancelled")
        self.assertEqual(frames[-1]["data"]["status"], "completed")

    async def test_turn_completes_with_every_socket_closed(self):
        """Closing every socket mid-turn does not stop the turn: it completes in the database."""
        communicator, _ = await self.connect()
        message_id = await self.start(communicator, "/lorem 30", "gone")
        await communicator.disconnect()
        await finish_turn(self.thread.pk, "gone")
        message = await Message.objects.aget(pk=message_id)
        self.assertEqual(message.status, "completed")
        self.assertEqual(len(message.content.split()), 30)

    async def test_reconnect_resumes_exactly_once(self):
        """A socket opened mid-turn: snapshot plus deltas rebuild the final text with no gap and no duplicate."""
        first, _ = await self.connect()
        message_id = await self.start(first, "/lorem 60", "resume")
        await receive_until(first, "message_delta")
        second, snapshot = await self.connect()
        self.assertEqual(snapshot["active_turn"], {"turn_id": "resume", "message_id": message_id})
        start = next(m for m in snapshot["messages"] if m["id"] == message_id)
        self.assertEqual((start["status"], start["metadata"]["streaming"]), ("streaming", True))
        frames = await receive_until_turn_ends(second, "resume")
        await finish_turn(self.thread.pk, "resume")
        deltas = [f for f in frames if f["type"] == "message_delta"]
        self.assertLessEqual(deltas[0]["data"]["offset"], len(start["content"]))
        assert_contiguous(frames, message_id, start=deltas[0]["data"]["offset"])
        final = (await Message.objects.aget(pk=message_id)).content
        self.assertEqual(rebuild(start["content"], frames, message_id), final)
        self.assertEqual(len(final.split()), 60)


class DroppedEventTests(SocketTestCase):
    """Channel layers drop events when a channel is full; the socket must still see a contiguous text."""

    async def stream(self, *pieces: str) -> tuple[int, list[dict]]:
        """Commit pieces to a streaming message and build the delta frames the publisher would send."""
        from agents.events import TurnPublisher
        from chat import turns

        def write():
            turns.persist_user_turn(self.thread.pk, "drop", "hi")
            shell = turns.persist_assistant_shell(self.thread.pk, "drop")
            frames = []
            for piece in pieces:
                end = turns.append_content(shell.id, piece)
                frames.append({"offset": end - len(piece), "delta": piece})
            return shell.id, frames

        message_id, deltas = await sync_to_async(write)()
        publisher = TurnPublisher(self.thread.pk, "drop")
        publisher.message_id = message_id
        return message_id, [publisher._frame("message_delta", d) for d in deltas]

    async def publish(self, frame: dict) -> None:
        from agents.events import broadcast

        await broadcast(self.thread.pk, frame)

    async def test_gap_is_filled_from_the_database(self):
        """A lost delta is recovered from the database before the next one; offsets stay contiguous."""
        communicator, _ = await self.connect()
        message_id, frames = await self.stream("abc ", "def ", "ghi ", "jkl ")
        started = dict(frames[0], type="agent_started", data={"agent": "local", "model": "local"})
        await self.publish(started)
        await self.publish(frames[0])
        await self.publish(frames[2])  # frames[1] was dropped by the layer
        await self.publish(frames[3])
        received = [await communicator.receive_json_from(timeout=FRAME_TIMEOUT) for _ in range(3)]
        self.assertEqual(received[0]["type"], "agent_started")
        deltas = [(f["data"]["offset"], f["data"]["delta"]) for f in received[1:]]
        # The gap is filled with everything committed by then; the last delta adds nothing new.
        self.assertEqual(deltas, [(0, "abc "), (4, "def ghi jkl ")])
        await self.assert_still_open(communicator)

    async def test_deltas_already_in_the_snapshot_are_not_sent_again(self):
        """Deltas committed before the snapshot but delivered after it are trimmed to what the client lacks."""
        message_id, frames = await self.stream("abc ", "def ", "ghi ")
        communicator, snapshot = await self.connect()
        content = next(m for m in snapshot["messages"] if m["id"] == message_id)["content"]
        self.assertEqual(content, "abc def ghi ")
        message_id_2, more = await self.stream("jkl ")  # same turn: the same shell, appended
        self.assertEqual(message_id_2, message_id)
        for frame in [*frames, *more]:
            await self.publish(frame)
        frame = await communicator.receive_json_from(timeout=FRAME_TIMEOUT)
        self.assertEqual(piece(frame), (12, "jkl "))
        await self.assert_still_open(communicator)

    async def test_lost_tail_is_sent_before_agent_completed(self):
        """If the last deltas were lost, the socket sends them before agent_completed."""
        from chat import turns

        communicator, _ = await self.connect()
        message_id, frames = await self.stream("abc ", "def ")
        await self.publish(dict(frames[0], type="agent_started", data={"agent": "local", "model": "local"}))
        await self.publish(frames[0])
        await sync_to_async(turns.finalize_assistant_turn)(message_id, "completed")
        end = dict(
            frames[0],
            type="agent_completed",
            data={"status": "completed", "usage": None, "error": None, "content_length": 8},
        )
        await self.publish(end)
        received = [await communicator.receive_json_from(timeout=FRAME_TIMEOUT) for _ in range(4)]
        self.assertEqual(
            [f["type"] for f in received], ["agent_started", "message_delta", "message_delta", "agent_completed"]
        )
        self.assertEqual(piece(received[2]), (4, "def "))

    async def test_lost_start_and_deltas_are_sent_before_agent_completed(self):
        """If agent_started and every delta were lost, agent_completed still comes after the whole text."""
        from chat import turns

        communicator, _ = await self.connect()
        message_id, frames = await self.stream("abc ", "def ")
        await sync_to_async(turns.finalize_assistant_turn)(message_id, "completed")
        end = dict(
            frames[0],
            type="agent_completed",
            data={"status": "completed", "usage": None, "error": None, "content_length": 8},
        )
        await self.publish(end)
        received = [await communicator.receive_json_from(timeout=FRAME_TIMEOUT) for _ in range(2)]
        self.assertEqual([f["type"] for f in received], ["message_delta", "agent_completed"])
        self.assertEqual(piece(received[0]), (0, "abc def "))

    async def test_events_of_another_process_lost_on_the_way_resync_the_socket(self):
        """Another process's turn arrives without agent_started and every third delta: at the first gap the
        socket is sent a fresh snapshot, and what it was sent rebuilds the exact text."""
        from agents import fanout

        communicator, _ = await self.connect()
        pieces = [f"w{i} " for i in range(30)]
        message_id, frames = await self.stream(*pieces)
        started = dict(frames[0], type="agent_started", data={"agent": "local", "model": "local"})
        subscription = fanout._subscription()
        for seq, frame in enumerate([started, *frames], start=1):
            if frame["type"] == "agent_started" or seq % 3 == 0:
                continue  # lost by the layer
            message = {"type": fanout.EVENT_TYPE, "thread_id": self.thread.pk, "frame": frame}
            subscription.received({**message, "origin": "another-process", "seq": seq})
        received = [await communicator.receive_json_from(timeout=FRAME_TIMEOUT)]
        while received[-1]["type"] != "snapshot":  # the resync
            received.append(await communicator.receive_json_from(timeout=FRAME_TIMEOUT))
        await communicator.send_json_to({"type": "ping"})
        while received[-1]["type"] != "pong":
            received.append(await communicator.receive_json_from(timeout=FRAME_TIMEOUT))
        kinds = [f["type"] for f in received]
        self.assertEqual(kinds.count("snapshot"), 1)  # one resync, however many gaps
        self.assertEqual(piece(received[0]), (0, "w0 "))  # relayed before the gap showed
        last = max(i for i, kind in enumerate(kinds) if kind == "snapshot")
        start = next(m for m in received[last]["messages"] if m["id"] == message_id)["content"]
        self.assertEqual(rebuild(start, received[last + 1 : -1], message_id), "".join(pieces))

    async def test_tool_events_already_in_the_snapshot_are_not_sent_again(self):
        """A tool call the snapshot shows finished is not announced again by events delivered after it."""
        from agents.events import TurnPublisher
        from chat import turns

        message_id, _ = await self.stream("abc ")
        action = await sync_to_async(turns.start_action)(message_id, "c1", "clock", {})
        await sync_to_async(turns.finish_action)(action.id, "success", {"now": "noon"})
        communicator, snapshot = await self.connect()
        shown = next(m for m in snapshot["messages"] if m["id"] == message_id)["actions"]
        self.assertEqual([(a["id"], a["status"]) for a in shown], [(action.id, "success")])
        publisher = TurnPublisher(self.thread.pk, "drop")
        publisher.message_id = message_id
        data = {"action_id": action.id, "call_id": "c1", "tool": "clock"}
        await self.publish(publisher._frame("tool_executing", {**data, "input": {}, "position": 4}))
        await self.publish(
            publisher._frame("tool_completed", {**data, "status": "success", "output": {}, "duration_ms": 1})
        )
        await self.assert_still_open(communicator)  # the pong is the next frame: nothing was relayed


class FastStreamTests(SocketTestCase):
    async def test_fast_stream_has_contiguous_offsets(self):
        """`/lorem 5000` with no delay: batched deltas, contiguous offsets, the exact final text."""
        communicator, _ = await self.connect()
        await self.send(communicator, {"type": "user_message", "content": "/lorem 5000", "turn_id": "fast"})
        frames = await receive_until_turn_ends(communicator, "fast", timeout=120)
        await finish_turn(self.thread.pk, "fast")
        message_id = frames[-1]["message_id"]
        assert_contiguous(frames, message_id)
        final = (await Message.objects.aget(pk=message_id)).content
        self.assertEqual(rebuild("", frames, message_id), final)
        self.assertEqual(len(final.split()), 5000)

    @override_settings(CHANNEL_LAYERS={"default": {"BACKEND": "tests.layers.BrokenChannelLayer"}})
    async def test_a_turn_of_this_process_reaches_its_sockets_without_the_channel_layer(self):
        """With group_send failing, a turn run here still streams every event to this process's sockets."""
        from channels.layers import get_channel_layer

        from agents.fanout import thread_group

        communicator, _ = await self.connect()
        layer = get_channel_layer()  # a listener in the group, so that each event is sent, and fails
        await layer.group_add(thread_group(self.thread.pk), await layer.new_channel())
        with self.assertLogs("agents.events", level="ERROR"):
            await self.send(communicator, {"type": "user_message", "content": "/lorem 50", "turn_id": "direct"})
            frames = await receive_until_turn_ends(communicator, "direct", timeout=60)
        await finish_turn(self.thread.pk, "direct")
        message_id = frames[-1]["message_id"]
        self.assertIn("agent_started", [f["type"] for f in frames])
        assert_contiguous(frames, message_id)
        final = (await Message.objects.aget(pk=message_id)).content
        self.assertEqual(rebuild("", frames, message_id), final)
        self.assertEqual(len(final.split()), 50)

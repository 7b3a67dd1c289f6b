"""The thread socket (docs/protocol.md): authorize, snapshot, relay events, delegate frames.

Parsing is `web.frames`; what a frame asks is checked and carried out by
`agents.intake`; which events this socket still needs after its snapshot is
decided by `agents.resume.SocketFeed`. Turn events arrive through
`agents.fanout` (a call in this process, not a channel-layer message) into a
bounded queue that one relay task drains in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from agents import fanout, groups, intake, socket_leases
from agents.process import DirectDispatch
from agents.resume import SocketFeed
from chat import selectors
from chat.hops import hop

from . import sessions
from .frames import (
    CancelFrame,
    ClientFrame,
    FrameError,
    PingFrame,
    RegenerateFrame,
    SwitchVersionFrame,
    UserMessageFrame,
    parse_frame,
)
from .text import encode_frame

logger = logging.getLogger(__name__)

CLOSE_NOT_AUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_MANY_SOCKETS = 4429

# Sockets of this process, so that a stopping server can close them all.
open_sockets: weakref.WeakSet[ThreadConsumer] = weakref.WeakSet()
CLOSE_SECONDS = 2.0
# Turn events waiting for one socket; past this the socket resyncs from a snapshot instead.
EVENT_QUEUE = 1000


def who_and_thread(check: sessions.SessionCheck, user: Any, thread_id: int) -> tuple[int | None, bool]:
    """The user the socket's session logs in (Django's own check), and whether thread `thread_id` is theirs; one hop.

    A socket without a session key brings the scope's user instead: in-process
    tests set one; a served thread socket has none (no middleware in front of
    it sets a user), so without a session key it logs nobody in.
    (None, False) when nobody is logged in.
    """
    if check.session_key:
        user_id = check.current_user_id()
    else:
        user_id = user.pk if user is not None and user.is_authenticated else None
    return user_id, user_id is not None and selectors.owns_thread(user_id, thread_id)


def snapshot_if_logged_in(check: sessions.SessionCheck, user_id: int, thread_id: int) -> dict | None:
    """The thread's snapshot, or None when the session stopped logging `user_id` in (one query if it did not)."""
    if check.session_key and check.current_user_id() != user_id:
        return None
    return selectors.thread_snapshot(thread_id)


def snapshots_if_logged_in(calls: list[tuple[tuple, dict]]) -> list[tuple[bool, Any]]:
    """snapshot_if_logged_in() of each call of one database hop, their session checks read in two queries.

    A snapshot reads in a savepoint of its own (thread_snapshot's atomic
    block), so one that fails fails alone.
    """
    checks = [args[0] for args, _ in calls if args[0].session_key]
    now_logged_in = dict(zip(map(id, checks), sessions.SessionCheck.current_user_ids(checks), strict=True))
    outcomes: list[tuple[bool, Any]] = []
    for (check, user_id, thread_id), _ in calls:
        if check.session_key and now_logged_in[id(check)] != user_id:
            outcomes.append((True, None))
            continue
        try:
            outcomes.append((True, selectors.thread_snapshot(thread_id)))
        except Exception as exc:
            outcomes.append((False, exc))
    return outcomes


awho_and_thread = hop(who_and_thread)
asnapshot_if_logged_in = hop(snapshot_if_logged_in, batch=snapshots_if_logged_in)
asnapshot = hop(selectors.thread_snapshot)
asession_user_id = hop(sessions.SessionCheck.current_user_id, batch=sessions.check_sessions_in_one_hop)


class NotFoundConsumer(AsyncJsonWebsocketConsumer):
    """A socket path no route takes (a thread id too long for any integer among them): accepted, closed 4404.

    Without it the router raises, and the handshake ends with a logged
    traceback instead of the close a missing thread gets.
    """

    async def connect(self) -> None:
        await self.accept()
        await self.close(code=CLOSE_NOT_FOUND)


class ThreadConsumer(DirectDispatch, AsyncJsonWebsocketConsumer):
    thread_id: int | None = None
    user_id: int | None = None
    session_key: str | None = None
    session_check: sessions.SessionCheck
    lease: asyncio.Task | None = None
    groups_joined: tuple[str, ...] = ()
    feed: SocketFeed
    rejoining: asyncio.Task | None = None
    relay: asyncio.Task | None = None
    joined_thread: int | None = None  # the thread whose events agents.fanout hands this socket
    resync_queued = False
    closing: asyncio.Future | None = None

    async def connect(self) -> None:
        await self.accept()
        open_sockets.add(self)
        self.session_key = sessions.cookie_session_key(self.scope)
        self.session_check = sessions.SessionCheck(self.session_key)
        thread_id = self.scope["url_route"]["kwargs"]["thread_id"]
        user_id, owned = await awho_and_thread(self.session_check, self.scope.get("user"), thread_id)
        if user_id is None:
            await self.close(code=CLOSE_NOT_AUTHENTICATED)
            return
        if not owned:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        if not await socket_leases.acquire(user_id, self.channel_name):
            await self.close(code=CLOSE_TOO_MANY_SOCKETS)
            return
        self.lease = asyncio.create_task(socket_leases.hold(user_id, self.channel_name))
        self.user_id, self.thread_id = user_id, thread_id
        # Join the session's groups first: a logout from here on closes this socket.
        joined = [sessions.user_group(user_id)]
        if self.session_key:
            joined.append(sessions.session_group(self.session_key))
        await groups.join(self.channel_layer, joined, self.channel_name)
        self.groups_joined = tuple(joined)
        # Take the thread's events before reading the snapshot: an event
        # committed in between is then queued, and the feed drops what the snapshot holds.
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(EVENT_QUEUE)
        await fanout.join(thread_id, self)
        self.joined_thread = thread_id
        snapshot = await asnapshot_if_logged_in(self.session_check, user_id, thread_id)
        if snapshot is None:
            await self.close(code=CLOSE_NOT_AUTHENTICATED)  # the session ended while this socket was joining
            return
        self.feed = SocketFeed(snapshot)
        await self.send_json(snapshot)
        self.relay = asyncio.create_task(self._relay())
        if groups.can_forget(self.channel_layer):
            self.rejoining = asyncio.create_task(self.keep_membership())

    async def keep_membership(self) -> None:
        """Join the session's groups again, and resync, whenever the layer forgot this socket (a Redis restart)."""
        assert self.user_id is not None
        group = sessions.user_group(self.user_id)
        while True:
            await asyncio.sleep(settings.SOCKET_REJOIN_SECONDS)
            try:
                if await groups.is_member(self.channel_layer, group, self.channel_name):
                    continue
                await groups.join(self.channel_layer, self.groups_joined, self.channel_name)  # Redis forgot them all
                self.resync()
                logger.warning("socket %s joined its groups again after the layer forgot it", self.channel_name)
            except Exception:
                logger.exception("membership check of socket %s failed", self.channel_name)

    async def disconnect(self, code: int) -> None:
        open_sockets.discard(self)
        for task in (self.rejoining, self.relay):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self.joined_thread is not None:
            await fanout.leave(self.joined_thread, self)
        await groups.leave(self.channel_layer, self.groups_joined, self.channel_name)
        if self.lease is not None:
            self.lease.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.lease
            assert self.user_id is not None
            await socket_leases.release(self.user_id, self.channel_name)

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return encode_frame(content)

    async def session_close(self, event: dict) -> None:
        """The session or the user's login ended (web.sessions): close at once."""
        self.thread_id = None  # no frame is handled from here on
        await self.close(code=CLOSE_NOT_AUTHENTICATED)

    async def send_error(self, code: str, message: str, turn_id: str | None = None, **extra: Any) -> None:
        frame = {"type": "error", "thread_id": self.thread_id, "code": code, "message": message, **extra}
        if turn_id:
            frame["turn_id"] = turn_id
        await self.send_json(frame)

    # --- client frames ------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        if self.thread_id is None:
            return
        if text_data is None:
            await self.send_error("binary_not_supported", "Send JSON in text frames.")
            return
        try:
            frame = parse_frame(text_data)
        except FrameError as exc:
            await self.send_error(exc.code, exc.message, exc.turn_id)
            return
        if not isinstance(frame, PingFrame) and not await self.session_still_valid():
            return
        try:
            await self.handle(frame)
        except intake.Refused as exc:
            await self.send_error(exc.code, exc.message, getattr(frame, "turn_id", None), **exc.extra)
        except Exception:
            logger.exception("frame %s on thread %s failed", type(frame).__name__, self.thread_id)
            await self.send_error(
                "server_error", "The server could not handle this frame.", getattr(frame, "turn_id", None)
            )

    async def session_still_valid(self) -> bool:
        """Whether this socket's session still logs its user in; if not, close 4401 and refuse the frame."""
        if self.session_key is None:
            return True  # a scope without a session (in-process tests); served sockets always have one
        if await asession_user_id(self.session_check) == self.user_id:
            return True
        self.thread_id = None
        await self.close(code=CLOSE_NOT_AUTHENTICATED)
        return False

    async def handle(self, frame: ClientFrame) -> None:
        """Delegate one valid frame and send this socket its direct answer, if any."""
        assert self.thread_id is not None and self.user_id is not None
        if isinstance(frame, UserMessageFrame):
            parent = intake.ACTIVE_LEAF if frame.follows_active_leaf else frame.parent_id
            reply = await intake.user_message(
                self.user_id, self.thread_id, frame.content, frame.turn_id, frame.mentioned_documents, parent
            )
            if reply is not None:
                await self.send_json(reply)
        elif isinstance(frame, RegenerateFrame):
            await intake.regenerate(self.user_id, self.thread_id, frame.message_id, frame.turn_id)
        elif isinstance(frame, SwitchVersionFrame):
            await intake.switch_version(self.thread_id, frame.message_id)
        elif isinstance(frame, CancelFrame):
            await intake.cancel(self.thread_id, frame.turn_id)
        elif isinstance(frame, PingFrame):
            await self.send_json({"type": "pong", "thread_id": self.thread_id})

    # --- turn events of the thread (agents.fanout) and this process --------

    def deliver(self, event: dict) -> None:
        """Queue a turn event; when too many wait, drop them all for a resync from a fresh snapshot."""
        try:
            self.events.put_nowait(("event", event))
        except asyncio.QueueFull:
            logger.warning("socket %s fell %d events behind: resync", self.channel_name, EVENT_QUEUE)
            while not self.events.empty():
                self.events.get_nowait()
            self.resync_queued = False
            self.resync()

    def resync(self) -> None:
        """Queue a fresh snapshot (events may have been lost); one is enough however often it is asked."""
        if not self.resync_queued:
            self.resync_queued = True
            self.events.put_nowait(("resync", None))

    def close_after_events(self, code: int) -> None:
        """Close with `code` once the events already queued were relayed."""
        try:
            self.events.put_nowait(("close", code))
        except asyncio.QueueFull:
            self.closing = asyncio.ensure_future(self.close(code=code))

    async def _relay(self) -> None:
        while True:
            kind, value = await self.events.get()
            if self.thread_id is None:
                continue  # closing
            try:
                await self._relay_one(kind, value)
            except Exception:
                logger.exception("%s not relayed to a socket of thread %s", kind, self.thread_id)

    async def _relay_one(self, kind: str, value: Any) -> None:
        assert self.thread_id is not None
        if kind == "close":
            await self.close(code=value)
        elif kind == "resync":
            self.resync_queued = False
            snapshot = await asnapshot(self.thread_id)
            self.feed.reset(snapshot)
            await self.send_json(snapshot)
        else:
            for frame in await self.feed.frames(value):
                await self.send_json(frame)
            if value["type"] == "thread_deleted":
                self.thread_id = None
                await self.close(code=CLOSE_NOT_FOUND)


async def close_all(code: int) -> None:
    """Close every socket of this process with `code` and wait (bounded) until their clients answered.

    Each socket closes behind the events already queued for it, so it
    relays the last `agent_completed` before it closes.
    """
    for consumer in list(open_sockets):
        if consumer.relay is not None:
            consumer.close_after_events(code)
        else:  # still connecting
            with contextlib.suppress(Exception):
                await consumer.close(code=code)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CLOSE_SECONDS
    while open_sockets and loop.time() < deadline:
        await asyncio.sleep(0.02)

"""The thread socket (docs/protocol.md): authorize, snapshot, relay events, delegate frames.

Parsing is `web.frames`; what a frame asks is checked and carried out by
`agents.intake`; which events this socket still needs after its snapshot is
decided by `agents.resume.SocketFeed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from agents import intake, socket_leases
from agents.events import thread_group
from agents.resume import SocketFeed
from chat import selectors

from . import membership, sessions
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

aown_thread = database_sync_to_async(selectors.own_thread)
asnapshot = database_sync_to_async(selectors.thread_snapshot)
asession_user_id = database_sync_to_async(sessions.session_user_id)


class ThreadConsumer(AsyncJsonWebsocketConsumer):
    thread_id: int | None = None
    user_id: int | None = None
    session_key: str | None = None
    lease: asyncio.Task | None = None
    groups_joined: tuple[str, ...] = ()
    feed: SocketFeed
    rejoining: asyncio.Task | None = None

    async def connect(self) -> None:
        await self.accept()
        open_sockets.add(self)
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_NOT_AUTHENTICATED)
            return
        thread = await aown_thread(user, self.scope["url_route"]["kwargs"]["thread_id"])
        if thread is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        if not await socket_leases.acquire(user.pk, self.channel_name):
            await self.close(code=CLOSE_TOO_MANY_SOCKETS)
            return
        self.lease = asyncio.create_task(socket_leases.hold(user.pk, self.channel_name))
        self.user_id, self.thread_id = user.pk, thread.pk
        session = self.scope.get("session")
        self.session_key = session.session_key if session is not None else None
        # Join the session's groups first: a logout from here on closes this socket.
        groups = [sessions.user_group(user.pk)]
        if self.session_key:
            groups.append(sessions.session_group(self.session_key))
        # Join before reading the snapshot: an event committed in between is
        # then queued for this socket, and the feed drops what the snapshot holds.
        groups.append(thread_group(thread.pk))
        for group in groups:
            await self.channel_layer.group_add(group, self.channel_name)
        self.groups_joined = tuple(groups)
        if self.session_key and await asession_user_id(self.session_key) != user.pk:
            await self.close(code=CLOSE_NOT_AUTHENTICATED)  # it ended while this socket was joining
            return
        snapshot = await asnapshot(thread.pk)
        self.feed = SocketFeed(snapshot)
        await self.send_json(snapshot)
        if membership.can_forget(self.channel_layer):
            self.rejoining = asyncio.create_task(self.keep_membership())

    async def keep_membership(self) -> None:
        """Join the group again, with a fresh snapshot, whenever the layer forgot this socket (a Redis restart)."""
        assert self.thread_id is not None
        group = thread_group(self.thread_id)
        while True:
            await asyncio.sleep(settings.SOCKET_REJOIN_SECONDS)
            try:
                if await membership.is_member(self.channel_layer, group, self.channel_name):
                    continue
                for joined in self.groups_joined:  # Redis forgot all of them
                    await self.channel_layer.group_add(joined, self.channel_name)
                snapshot = await asnapshot(self.thread_id)
                self.feed.reset(snapshot)
                await self.send_json(snapshot)
                logger.warning("socket %s rejoined thread %s after the layer forgot it", self.channel_name, group)
            except Exception:
                logger.exception("membership check of socket %s failed", self.channel_name)

    async def disconnect(self, code: int) -> None:
        open_sockets.discard(self)
        if self.rejoining is not None:
            self.rejoining.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.rejoining
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)
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
        if await asession_user_id(self.session_key) == self.user_id:
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

    # --- events from the thread's group and this process --------------------

    async def socket_close(self, event: dict) -> None:
        """The server is stopping (see close_all): close with its code."""
        await self.close(code=event["code"])

    async def thread_event(self, event: dict) -> None:
        if self.thread_id is None:
            return  # closing
        for frame in await self.feed.frames(event["frame"]):
            await self.send_json(frame)
        if event["frame"]["type"] == "thread_deleted":
            await self.close(code=CLOSE_NOT_FOUND)

    async def thread_switched(self, event: dict) -> None:
        """The active path changed: send a fresh snapshot and resume from it, as after a reconnect."""
        if self.thread_id is None:
            return  # closing
        snapshot = await asnapshot(self.thread_id)
        self.feed.reset(snapshot)
        await self.send_json(snapshot)


async def close_all(code: int) -> None:
    """Close every socket of this process with `code` and wait (bounded) until their clients answered.

    The close goes through each socket's own channel, behind the events
    already queued there, so a socket relays the last `agent_completed`
    before it closes.
    """
    for consumer in list(open_sockets):
        try:
            await consumer.channel_layer.send(consumer.channel_name, {"type": "socket.close", "code": code})
        except Exception:
            logger.exception("socket %s was not asked to close", consumer.channel_name)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CLOSE_SECONDS
    while open_sockets and loop.time() < deadline:
        await asyncio.sleep(0.02)

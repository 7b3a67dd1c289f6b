"""The thread socket (docs/protocol.md): authorize, snapshot, relay events, delegate frames.

Parsing is `web.frames`; what a frame asks is checked and carried out by
`agents.intake`; which events this socket still needs after its snapshot is
decided by `agents.resume.SocketFeed`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from agents import intake
from agents.events import thread_group
from agents.resume import SocketFeed
from chat import selectors

from .frames import CancelFrame, ClientFrame, FrameError, PingFrame, UserMessageFrame, parse_frame

logger = logging.getLogger(__name__)

CLOSE_NOT_AUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404

aown_thread = database_sync_to_async(selectors.own_thread)
asnapshot = database_sync_to_async(selectors.thread_snapshot)


class ThreadConsumer(AsyncJsonWebsocketConsumer):
    thread_id: int | None = None
    user_id: int | None = None
    feed: SocketFeed

    async def connect(self) -> None:
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_NOT_AUTHENTICATED)
            return
        thread = await aown_thread(user, self.scope["url_route"]["kwargs"]["thread_id"])
        if thread is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.user_id, self.thread_id = user.pk, thread.pk
        # Join before reading the snapshot: an event committed in between is
        # then queued for this socket, and the feed drops what the snapshot holds.
        await self.channel_layer.group_add(thread_group(thread.pk), self.channel_name)
        snapshot = await asnapshot(thread.pk)
        self.feed = SocketFeed(snapshot)
        await self.send_json(snapshot)

    async def disconnect(self, code: int) -> None:
        if self.thread_id is not None:
            await self.channel_layer.group_discard(thread_group(self.thread_id), self.channel_name)

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return json.dumps(content, ensure_ascii=False)

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
        try:
            await self.handle(frame)
        except intake.Refused as exc:
            await self.send_error(exc.code, exc.message, getattr(frame, "turn_id", None), **exc.extra)
        except Exception:
            logger.exception("frame %s on thread %s failed", type(frame).__name__, self.thread_id)
            await self.send_error(
                "server_error", "The server could not handle this frame.", getattr(frame, "turn_id", None)
            )

    async def handle(self, frame: ClientFrame) -> None:
        """Delegate one valid frame and send this socket its direct answer, if any."""
        assert self.thread_id is not None and self.user_id is not None
        if isinstance(frame, UserMessageFrame):
            reply = await intake.user_message(
                self.user_id, self.thread_id, frame.content, frame.turn_id, frame.mentioned_documents
            )
            if reply is not None:
                await self.send_json(reply)
        elif isinstance(frame, CancelFrame):
            await intake.cancel(self.thread_id, frame.turn_id)
        elif isinstance(frame, PingFrame):
            await self.send_json({"type": "pong", "thread_id": self.thread_id})

    # --- events from the thread's group --------------------------------------

    async def thread_event(self, event: dict) -> None:
        for frame in await self.feed.frames(event["frame"]):
            await self.send_json(frame)

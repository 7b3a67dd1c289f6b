"""The thread socket of PROTOCOL.md: authorize, snapshot, relay events, delegate frames.

The consumer keeps one piece of state beyond the connection: how much of
each streaming message it has sent. Channel layers drop events when a
channel is full, so before relaying a delta it fills any gap from the
database and trims what the client already has; offsets on a socket are
therefore contiguous and never repeat.
"""

from __future__ import annotations

import json
import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from agents import control, runtime

from . import ratelimit, selectors
from .events import thread_group, user_message_frame
from .frames import CancelFrame, FrameError, PingFrame, UserMessageFrame, parse_frame

logger = logging.getLogger(__name__)

CLOSE_NOT_AUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404

aown_thread = database_sync_to_async(selectors.own_thread)
asnapshot = database_sync_to_async(selectors.thread_snapshot)
amessage_tail = database_sync_to_async(selectors.message_tail)
astored_user_message = database_sync_to_async(selectors.turn_user_message)


class ThreadConsumer(AsyncWebsocketConsumer):
    thread_id: int | None = None

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
        self.user_id = user.pk
        self.thread_id = thread.pk
        # Join before reading the snapshot: an event committed in between is
        # then queued for this socket, and the offsets below drop what the
        # snapshot already holds.
        await self.channel_layer.group_add(thread_group(self.thread_id), self.channel_name)
        snapshot = await asnapshot(self.thread_id)
        self.sent: dict[int, int] = {}
        self.snapshot_ids = {m["id"] for m in snapshot["messages"]}
        # Tool calls the snapshot already shows, with their status then.
        self.snapshot_actions = {a["id"]: a["status"] for m in snapshot["messages"] for a in m["actions"]}
        for message in snapshot["messages"]:
            if message["status"] == "streaming":
                self.sent[message["id"]] = len(message["content"])
        await self.send_json(snapshot)

    async def disconnect(self, code: int) -> None:
        if self.thread_id is not None:
            await self.channel_layer.group_discard(thread_group(self.thread_id), self.channel_name)

    async def send_json(self, frame: dict) -> None:
        await self.send(text_data=json.dumps(frame, ensure_ascii=False))

    async def send_error(self, code: str, message: str, turn_id: str | None = None, **extra) -> None:
        frame = {"type": "error", "thread_id": self.thread_id, "code": code, "message": message, **extra}
        if turn_id:
            frame["turn_id"] = turn_id
        await self.send_json(frame)

    # --- client frames ------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
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
            if isinstance(frame, UserMessageFrame):
                await self.on_user_message(frame)
            elif isinstance(frame, CancelFrame):
                await self.on_cancel(frame)
            elif isinstance(frame, PingFrame):
                await self.send_json({"type": "pong", "thread_id": self.thread_id})
        except Exception:
            logger.exception("frame %s on thread %s failed", type(frame).__name__, self.thread_id)
            await self.send_error("server_error", "The server could not handle this frame.", getattr(frame, "turn_id", None))

    async def on_user_message(self, frame: UserMessageFrame) -> None:
        if frame.turn_id and await self.answer_retry(frame.turn_id):
            return
        retry_after = await ratelimit.check_user_message(self.user_id)
        if retry_after is not None:
            await self.send_error(
                "rate_limited", "Too many messages; wait before sending more.", frame.turn_id, retry_after=retry_after
            )
            return
        start = await runtime.start_turn(self.thread_id, frame.content, frame.turn_id, frame.mentioned_documents)
        if not start.started:
            # A retry that raced its first send: answer this socket only, start nothing.
            await self.send_json(user_message_frame(self.thread_id, start.turn_id, start.user_message))

    async def answer_retry(self, turn_id: str) -> bool:
        """Answer a repeated turn_id with its stored user message (before any rate limit); False if new."""
        stored = await astored_user_message(self.thread_id, turn_id)
        if stored is None:
            return False
        await self.send_json(user_message_frame(self.thread_id, turn_id, stored))
        return True

    async def on_cancel(self, frame: CancelFrame) -> None:
        if not await control.acancel_turn(self.thread_id, frame.turn_id):
            await self.send_error("turn_not_found", "No such turn is running in this thread.", frame.turn_id)

    # --- events from the thread's group --------------------------------------

    async def thread_event(self, event: dict) -> None:
        frame = event["frame"]
        kind = frame["type"]
        if kind == "message_delta":
            await self.relay_delta(frame)
            return
        if kind == "user_message" and frame["data"]["message"]["id"] in self.snapshot_ids:
            return
        if kind == "agent_started":
            if frame["message_id"] in self.snapshot_ids:
                return
            self.sent.setdefault(frame["message_id"], 0)
        if kind in ("tool_executing", "tool_completed") and self.in_snapshot(frame):
            return
        if kind == "agent_completed":
            if frame["message_id"] not in self.snapshot_ids:
                self.sent.setdefault(frame["message_id"], 0)  # its agent_started and deltas were all lost
            await self.catch_up(frame, frame["data"].get("content_length", 0))
            self.sent.pop(frame["message_id"], None)
        await self.send_json(frame)

    def in_snapshot(self, frame: dict) -> bool:
        """Whether the snapshot already showed this tool event (the action, or its result)."""
        status = self.snapshot_actions.get(frame["data"]["action_id"])
        if frame["type"] == "tool_executing":
            return status is not None
        return status in ("success", "error")

    async def thread_cancel(self, event: dict) -> None:
        """A cancel made in another process: stop the turn if it runs in this one."""
        control.cancel_here(event["message_id"])

    async def relay_delta(self, frame: dict) -> None:
        """Send the part of a delta the client lacks, filling a gap from the database first."""
        message_id = frame["message_id"]
        if message_id not in self.sent:
            if message_id in self.snapshot_ids:
                return  # final in the snapshot already
            self.sent[message_id] = 0  # its agent_started was lost
        offset, delta = frame["data"]["offset"], frame["data"]["delta"]
        sent = self.sent[message_id]
        end = offset + len(delta)
        if end <= sent:
            return
        if offset > sent:
            await self.catch_up(frame, end)
            return
        piece = delta[sent - offset :]
        self.sent[message_id] = end
        await self.send_json({**frame, "data": {"offset": sent, "delta": piece}})

    async def catch_up(self, frame: dict, length: int) -> None:
        """Send, as one delta, what the database holds beyond what this socket has sent."""
        message_id = frame["message_id"]
        sent = self.sent.get(message_id)
        if sent is None or length <= sent:
            return
        tail = await amessage_tail(message_id, sent)
        if not tail or not tail[0]:
            return
        self.sent[message_id] = sent + len(tail[0])
        delta_frame = {**frame, "type": "message_delta", "data": {"offset": sent, "delta": tail[0]}}
        await self.send_json(delta_frame)

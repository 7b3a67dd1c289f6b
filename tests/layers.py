"""Channel layers for tests, named in override_settings(CHANNEL_LAYERS=...)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from channels.layers import InMemoryChannelLayer
from django.db import connections

from agents.events import EVENT_TYPE
from chat.models import AgentAction, Message
from chat.selectors import usage_dict
from tests.base import ChatHelpers


class BrokenChannelLayer(InMemoryChannelLayer):
    """A layer whose group_send always fails, as when Redis has gone away."""

    async def group_send(self, group: str, message: dict) -> None:
        raise ConnectionError("the channel layer is down")


class LossyChannelLayer(InMemoryChannelLayer):
    """A layer that loses events the way a full channel does: every agent_started and every third delta."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.dropped = 0
        self._deltas = 0

    async def group_send(self, group: str, message: dict) -> None:
        kind = message.get("frame", {}).get("type") if message.get("type") == EVENT_TYPE else None
        if kind == "message_delta":
            self._deltas += 1
        if kind == "agent_started" or (kind == "message_delta" and self._deltas % 3 == 0):
            self.dropped += 1
            return
        await super().group_send(group, message)


@dataclass
class Sent:
    """A turn event as it was handed to group_send, and the committed rows it described at that moment."""

    frame: dict
    committed: dict | None  # None: the row the frame names was not there


class CommitCheckingLayer(InMemoryChannelLayer):
    """An in-memory layer that reads the database before delivering each turn event.

    The read goes through a fresh connection in another thread, so it sees
    only what is committed, and happens inside group_send, before the frame
    reaches anyone: a publisher that broadcasts before its write commits is
    caught here, whatever the caller awaits afterwards. `sent` keeps every
    event with what was read.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sent: list[Sent] = []

    async def group_send(self, group: str, message: dict) -> None:
        if message.get("type") == EVENT_TYPE:
            frame = message["frame"]
            self.sent.append(Sent(frame, await asyncio.to_thread(_read_committed, frame)))
        await super().group_send(group, message)

    def sent_of(self, type_: str) -> list[Sent]:
        return [sent for sent in self.sent if sent.frame["type"] == type_]


def _read_committed(frame: dict) -> dict | None:
    try:
        return _committed_state(frame)
    finally:
        connections.close_all()


def _committed_state(frame: dict) -> dict | None:
    """The committed fields of the row the frame is about (a message or an action), or None if it is absent."""
    kind = frame["type"]
    if kind in ("tool_executing", "tool_completed"):
        action = AgentAction.objects.filter(pk=frame["data"]["action_id"]).first()
        if action is None:
            return None
        return {"message_id": action.message_id, "status": action.status, "output": action.output}
    message_id = frame["data"]["message"]["id"] if kind == "user_message" else frame["message_id"]
    message = Message.objects.filter(pk=message_id).first()
    if message is None:
        return None
    return {
        "role": message.role,
        "status": message.status,
        "turn_id": message.turn_id,
        "text": ChatHelpers().full_text(message_id),
        "streaming": message.metadata.get("streaming"),
        "usage": usage_dict(message.usage_records.first()),
    }


class DownChannelLayer(InMemoryChannelLayer):
    """A layer that cannot send or receive at all, as when Redis is stopped."""

    async def send(self, channel: str, message: dict) -> None:
        raise ConnectionError("the channel layer is down")

    async def receive(self, channel: str) -> dict:
        raise ConnectionError("the channel layer is down")

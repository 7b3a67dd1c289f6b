"""The daphne direct-send peer of bench/streams.py: a Channels consumer that streams, no database.

Run by the bench as `daphne direct_app:application` from this folder. On the
client's first text frame it sends WORDS `message_delta`-shaped frames, one
every DELAY_MS (sleeping before each, as the local model does), straight to
its own socket: no channel layer, no database. It measures what daphne and
Channels cost without this project's durability.

With HEAD_FRAMES=3 (the `frames` target) it first sends, at once, the three
frames the contract puts before a turn's first delta (`user_message`,
`agent_started`, `agent_thinking`, at their usual sizes): what those frames
alone cost a burst of turn starts on daphne, with nothing stored.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import django
from django.conf import settings

if not settings.configured:
    settings.configure(INSTALLED_APPS=["channels"], SECRET_KEY="bench-direct-peer", USE_TZ=True)
    django.setup()

from autobahn import util as autobahn_util  # noqa: E402
from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402

autobahn_util._HAS_CLICK = False  # as chatproject.asgi does: the peers pay for daphne what the server pays

DELAY = int(os.environ.get("DELAY_MS", "20")) / 1000
WORDS = int(os.environ.get("WORDS", "200"))
HEAD_FRAMES = int(os.environ.get("HEAD_FRAMES", "0"))
_TURN = {"thread_id": 123456, "turn_id": "b-0123456789ab", "message_id": 1234568}
_MESSAGE = {
    "id": 1234567, "seq": 1, "parent_id": None, "versions": [], "role": "user", "turn_id": _TURN["turn_id"],
    "status": "completed", "content": "/lorem 200", "metadata": {}, "actions": [], "usage": None,
    "created_at": "2026-12-07T13:40:00.123456+00:00", "updated_at": "2026-12-07T13:40:00.123456+00:00",
}  # fmt: skip
CONTRACT_HEAD = [
    {
        "type": "user_message",
        "thread_id": _TURN["thread_id"],
        "turn_id": _TURN["turn_id"],
        "data": {"message": _MESSAGE},
    },
    {"type": "agent_started", **_TURN, "data": {"agent": "Assistant", "model": "local"}},
    {"type": "agent_thinking", **_TURN, "data": {"text": "Writing placeholder text."}},
]
HEAD = CONTRACT_HEAD[:HEAD_FRAMES]
LOREM = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor".split()


class DirectConsumer(AsyncWebsocketConsumer):
    task: asyncio.Task | None = None

    async def connect(self) -> None:
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.task is None:
            for frame in HEAD:
                await self.send(json.dumps(frame))
            self.task = asyncio.create_task(self.stream())

    async def stream(self) -> None:
        offset = 0
        for i in range(WORDS):
            await asyncio.sleep(DELAY)
            word = LOREM[i % len(LOREM)] + " "
            frame = {"type": "message_delta", "data": {"offset": offset, "delta": word, "emitted_at": _ms()}}
            await self.send(json.dumps(frame))
            offset += len(word)
        await self.send(json.dumps({"type": "agent_completed", "data": {"status": "completed"}}))

    async def disconnect(self, code: int) -> None:
        if self.task is not None:
            self.task.cancel()


def _ms() -> int:
    return int(time.time() * 1000)


application = DirectConsumer.as_asgi()

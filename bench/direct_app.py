"""The daphne direct-send peer of bench/streams.py: a Channels consumer that streams, no database.

Run by the bench as `daphne direct_app:application` from this folder. On the
client's first text frame it sends WORDS `message_delta`-shaped frames, one
every DELAY_MS (sleeping before each, as the local model does), straight to
its own socket: no channel layer, no database. It measures what daphne and
Channels cost without this project's durability.
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

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402

DELAY = int(os.environ.get("DELAY_MS", "20")) / 1000
WORDS = int(os.environ.get("WORDS", "200"))
LOREM = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor".split()


class DirectConsumer(AsyncWebsocketConsumer):
    task: asyncio.Task | None = None

    async def connect(self) -> None:
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.task is None:
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

"""Helpers for socket tests through Channels' WebsocketCommunicator (in-process, real database)."""

from __future__ import annotations

import asyncio

from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator

from web.routing import websocket_urlpatterns

FRAME_TIMEOUT = 20


async def connect(user, thread_id: int, origin: bytes = b"http://127.0.0.1") -> tuple[WebsocketCommunicator, dict]:
    """Open the thread socket as `user` (None: anonymous); return the communicator and the snapshot frame."""
    communicator = WebsocketCommunicator(
        URLRouter(websocket_urlpatterns), f"/ws/threads/{thread_id}/", headers=[(b"origin", origin)]
    )
    if user is not None:
        communicator.scope["user"] = user
    else:
        from django.contrib.auth.models import AnonymousUser

        communicator.scope["user"] = AnonymousUser()
    connected, _ = await communicator.connect(timeout=FRAME_TIMEOUT)
    assert connected, "the server did not accept the socket"
    first = await communicator.receive_output(timeout=FRAME_TIMEOUT)
    if first["type"] == "websocket.close":
        return communicator, first
    import json

    return communicator, json.loads(first["text"])


async def receive_until(
    communicator: WebsocketCommunicator, frame_type: str, timeout: float = FRAME_TIMEOUT
) -> list[dict]:
    """Frames up to and including the first of `frame_type`."""
    frames = []
    while True:
        frame = await communicator.receive_json_from(timeout=timeout)
        frames.append(frame)
        if frame["type"] == frame_type:
            return frames


async def receive_until_turn_ends(communicator: WebsocketCommunicator, turn_id: str, timeout: float = 60) -> list[dict]:
    """Frames up to and including `agent_completed` of `turn_id`."""
    frames = []
    async with asyncio.timeout(timeout):
        while True:
            frame = await communicator.receive_json_from(timeout=timeout)
            frames.append(frame)
            if frame["type"] == "agent_completed" and frame.get("turn_id") == turn_id:
                return frames


def rebuild(start: str, frames: list[dict], message_id: int) -> str:
    """Apply deltas as the contract tells a client to: keep only the part beyond the current length."""
    text = start
    for frame in frames:
        if frame["type"] == "message_delta" and frame["message_id"] == message_id:
            offset, delta = frame["data"]["offset"], frame["data"]["delta"]
            assert offset <= len(text), f"gap: delta at {offset} but only {len(text)} characters known"
            text += delta[len(text) - offset :]
    return text


def assert_contiguous(frames: list[dict], message_id: int, start: int = 0) -> None:
    """Deltas of a message on one socket start at `start` and each begins where the last ended."""
    position = start
    for frame in frames:
        if frame["type"] == "message_delta" and frame["message_id"] == message_id:
            assert frame["data"]["offset"] == position, (frame["data"]["offset"], position)
            position += len(frame["data"]["delta"])

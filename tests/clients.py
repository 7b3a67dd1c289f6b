"""Clients of a real daphne process for end-to-end tests: a logged-in user's HTTP session and sockets (`websockets`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import websockets

from tests.base import PASSWORD
from tests.live import DaphneServer, HttpSession, ws_headers

TIMEOUT = 60


class Client:
    """One logged-in user against the server: HTTP session plus sockets."""

    def __init__(self, server: DaphneServer, username: str):
        self.server = server
        self.http = HttpSession(server.base_url)
        self.username = username

    async def login(self) -> Client:
        await asyncio.to_thread(self.http.login, self.username, PASSWORD)
        return self

    async def api(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict | None]:
        return await asyncio.to_thread(self.http.request, method, path, body)

    async def new_thread(self) -> int:
        status, thread = await self.api("POST", "/api/threads/", {"title": "e2e"})
        assert status == 201, (status, thread)
        return thread["id"]

    async def content(self, thread_id: int, message_id: int) -> dict:
        status, thread = await self.api("GET", f"/api/threads/{thread_id}/")
        assert status == 200, status
        return next(m for m in thread["messages"] if m["id"] == message_id)

    def socket(self, thread_id: int):
        return websockets.connect(
            f"{self.server.ws_url}/ws/threads/{thread_id}/",
            additional_headers=ws_headers(self.server, self.http.cookie_header),
            open_timeout=TIMEOUT,
        )


async def recv(ws) -> dict:
    """The next frame of a socket, within TIMEOUT."""
    return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


async def recv_until(ws, predicate, frames: list | None = None) -> list[dict]:
    """Frames up to and including the first that `predicate` accepts, appended to `frames` when given."""
    frames = [] if frames is None else frames
    while True:
        frame = await recv(ws)
        frames.append(frame)
        if predicate(frame):
            return frames


def completed(turn_id: str) -> Callable[[dict], bool]:
    """A recv_until predicate: the turn's agent_completed."""
    return lambda f: f["type"] == "agent_completed" and f["turn_id"] == turn_id


def first_delta(f: dict) -> bool:
    """A recv_until predicate: any message_delta."""
    return f["type"] == "message_delta"

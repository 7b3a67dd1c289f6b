"""What one socket has been sent of its thread, so that relayed turn events stay exact.

Channel layers drop events when a channel is full, and a socket joins the
thread's group just before it reads its snapshot. `SocketFeed` turns each
event of the group into the frames this socket should get: a delta is
trimmed to what the client lacks, a gap is filled from the database first,
and an event the snapshot already showed is dropped. Offsets on a socket are
therefore contiguous and never repeat. It holds no socket and sends nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from channels.db import database_sync_to_async

from chat import selectors

from .events import now_ms

# (message_id, start) -> (the message's text from `start` on, its status), or None when it is gone.
TailReader = Callable[[int, int], Awaitable[tuple[str, str] | None]]

aread_tail: TailReader = database_sync_to_async(selectors.message_tail)


class SocketFeed:
    """The resume point of one socket: per streaming message, how much text it has been sent."""

    def __init__(self, snapshot: dict, read_tail: TailReader = aread_tail) -> None:
        self.read_tail = read_tail
        self.reset(snapshot)

    def reset(self, snapshot: dict) -> None:
        """Start again from a snapshot the socket has just been sent."""
        messages = snapshot["messages"]
        self.snapshot_ids = {m["id"] for m in messages}
        # Tool calls the snapshot already shows, with their status then.
        self.snapshot_actions = {a["id"]: a["status"] for m in messages for a in m["actions"]}
        self.sent = {m["id"]: len(m["content"]) for m in messages if m["status"] == "streaming"}
        # Per message, the `emitted_at` of the last piece sent: a filled gap was produced no earlier.
        self.emitted: dict[int, int] = {}

    async def frames(self, frame: dict) -> list[dict]:
        """The frames to send this socket for one event of its thread, in order (possibly none)."""
        kind = frame["type"]
        if kind == "message_delta":
            return await self._delta(frame)
        if kind == "user_message" and frame["data"]["message"]["id"] in self.snapshot_ids:
            return []
        if kind == "agent_started":
            if frame["message_id"] in self.snapshot_ids:
                return []
            self.sent.setdefault(frame["message_id"], 0)
        if kind in ("tool_executing", "tool_completed") and self._in_snapshot(frame):
            return []
        if kind == "agent_completed":
            if frame["message_id"] not in self.snapshot_ids:
                self.sent.setdefault(frame["message_id"], 0)  # its agent_started and deltas were all lost
            out = await self._catch_up(frame, frame["data"].get("content_length", 0))
            self.sent.pop(frame["message_id"], None)
            self.emitted.pop(frame["message_id"], None)
            return [*out, frame]
        return [frame]

    def _in_snapshot(self, frame: dict) -> bool:
        """Whether the snapshot already showed this tool event (the action, or its result)."""
        status = self.snapshot_actions.get(frame["data"]["action_id"])
        if frame["type"] == "tool_executing":
            return status is not None
        return status in ("success", "error")

    async def _delta(self, frame: dict) -> list[dict]:
        """The part of a delta the client lacks, after filling a gap from the database."""
        message_id = frame["message_id"]
        if message_id not in self.sent:
            if message_id in self.snapshot_ids:
                return []  # final in the snapshot already
            self.sent[message_id] = 0  # its agent_started was lost
        offset, delta = frame["data"]["offset"], frame["data"]["delta"]
        sent = self.sent[message_id]
        end = offset + len(delta)
        if end <= sent:
            return []
        if offset > sent:
            return await self._catch_up(frame, end)
        self.sent[message_id] = end
        self.emitted[message_id] = frame["data"].get("emitted_at") or now_ms()
        return [{**frame, "data": {**frame["data"], "offset": sent, "delta": delta[sent - offset :]}}]

    async def _catch_up(self, frame: dict, length: int) -> list[dict]:
        """One delta with what the database holds beyond what this socket has been sent."""
        message_id = frame["message_id"]
        sent = self.sent.get(message_id)
        if sent is None or length <= sent:
            return []
        tail = await self.read_tail(message_id, sent)
        if not tail or not tail[0]:
            return []
        self.sent[message_id] = sent + len(tail[0])
        emitted_at = self.emitted.get(message_id) or frame["data"].get("emitted_at") or now_ms()
        data = {"offset": sent, "delta": tail[0], "emitted_at": emitted_at}
        return [{**frame, "type": "message_delta", "data": data}]

"""The Live turns feed: what the staff sockets of every process hear of the turns running in this one.

Every turn event leaves through `agents.events.broadcast`, after its commit,
and is shown to `feed.observe` there. The feed keeps what staff need and
sends it to the staff group of the channel layer (every staff socket of
the cluster is in it), from one task per process:

- a turn's start and end at once: its Live turns card, read from the
  database (chat.reports, bounded) in a thread of its own, so it holds what
  was committed and never waits behind, or delays, the turns' writes;
- the text committed since the last push, at most once a second per turn
  and for all of this process's turns in one message, kept in memory from
  the `message_delta` events (no database read; capped at the card's text
  limit); a changed tool call makes its card be read again on that tick.

`observe` only records and wakes the task: the turn's own path never waits
for the feed, the database or the layer on its account. While no staff
socket is in the group (checked for each start or end, and at most once
per WATCH_CHECK_SECONDS for text), the task reads and sends nothing: a
staff socket starts from a snapshot of its own.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connections
from django.utils import timezone

from chat import reports

from . import groups

logger = logging.getLogger(__name__)

STAFF_GROUP = "staff-live"
EVENT_TYPE = "live.event"  # the staff consumer's handler: live_event()
PROGRESS_SECONDS = 1.0
WATCH_CHECK_SECONDS = 1.0


def _rows_off_the_writers_thread(message_ids: list[int]) -> list[dict]:
    """Cards read in a thread of their own, on a connection closed after: never queued behind a turn's writes.

    Channels runs every `database_sync_to_async` call of a process on one
    thread, the one that commits each append; a read there would hold back
    the next append (and so the next delta) of every turn of the process.
    """
    try:
        return reports.live_turn_rows(message_ids)
    finally:
        connections.close_all()


_arows = sync_to_async(_rows_off_the_writers_thread, thread_sensitive=False)


@dataclass
class _Progress:
    """Text of one turn committed since the last push: it starts at code point `offset`."""

    offset: int
    length: int
    pieces: list[str] = field(default_factory=list)
    size: int = 0

    def add(self, offset: int, delta: str) -> None:
        end = offset + len(delta)
        if end <= self.length:
            return  # already held
        if offset > self.length:  # a gap (never from one publisher): the page reads the card again
            self.offset, self.length, self.pieces, self.size = offset, offset, [], 0
        piece = delta[self.length - offset :]
        self.pieces.append(piece)
        self.size += len(piece)
        self.length = end
        if self.size > 2 * reports.LIVE_TEXT_LIMIT:
            text = "".join(self.pieces)[-reports.LIVE_TEXT_LIMIT :]
            self.pieces, self.size = [text], len(text)

    def as_dict(self, message_id: int) -> dict:
        text = "".join(self.pieces)[-reports.LIVE_TEXT_LIMIT :]
        return {"message_id": message_id, "offset": self.length - len(text), "text": text, "length": self.length}


class LiveFeed:
    """This process's feed (`feed`); see the module's docstring."""

    def __init__(self) -> None:
        self._due: set[int] = set()  # started or ended: cards to read and send at once
        self._changed: set[int] = set()  # tool calls changed: cards to read on the next tick
        self._progress: dict[int, _Progress] = {}
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._watched = True
        self._watch_checked = -WATCH_CHECK_SECONDS  # loop time of the last check

    def observe(self, frame: dict) -> None:
        """Record what a turn event (already committed) changes on the Live turns page; never blocks."""
        kind, message_id = frame.get("type"), frame.get("message_id")
        if not isinstance(message_id, int):
            return
        if kind == "message_delta":
            data = frame["data"]
            progress = self._progress.get(message_id)
            if progress is None:
                progress = self._progress[message_id] = _Progress(data["offset"], data["offset"])
            progress.add(data["offset"], data["delta"])
            self._ensure_task()
        elif kind in ("tool_executing", "tool_completed"):
            self._changed.add(message_id)
            self._ensure_task()
        elif kind in ("agent_started", "agent_completed"):
            if kind == "agent_completed":
                self._progress.pop(message_id, None)  # its card is read whole, with the final text
                self._changed.discard(message_id)
            self._due.add(message_id)
            self._ensure_task()
            assert self._wake is not None
            self._wake.set()

    def _ensure_task(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run(), name="live-feed")

    async def _run(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + PROGRESS_SECONDS
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_tick - loop.time()))
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                # Fresh for a start or an end: a staff socket joins the group
                # before it reads its snapshot, so no card falls between the two.
                if not await self._anyone_watching(fresh=bool(self._due)):
                    self._due, self._changed, self._progress = set(), set(), {}
                    next_tick = max(next_tick, loop.time() + PROGRESS_SECONDS)
                    continue
                if self._due:
                    due, self._due = self._due, set()
                    await self._send(await _arows(sorted(due)), [])
                if loop.time() >= next_tick:
                    next_tick = loop.time() + PROGRESS_SECONDS
                    await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("live feed push failed")

    async def _anyone_watching(self, fresh: bool) -> bool:
        """Whether a staff socket of any process is in the group; asked at most once a second unless `fresh`."""
        loop = asyncio.get_running_loop()
        if fresh or loop.time() - self._watch_checked >= WATCH_CHECK_SECONDS:
            self._watch_checked = loop.time()
            try:
                self._watched = await groups.has_members(get_channel_layer(), STAFF_GROUP)
            except Exception:
                logger.exception("live feed could not tell who watches")
                self._watched = True
        return self._watched

    async def _tick(self) -> None:
        changed, self._changed = self._changed, set()
        progress, self._progress = self._progress, {}
        rows = await _arows(sorted(changed)) if changed else []
        items = [entry.as_dict(message_id) for message_id, entry in progress.items() if entry.pieces]
        if rows or items:
            await self._send(rows, items)

    async def _send(self, turns: list[dict], progress: list[dict]) -> None:
        frame = {"type": "live_update", "now": timezone.now().isoformat(), "turns": turns, "progress": progress}
        await get_channel_layer().group_send(STAFF_GROUP, {"type": EVENT_TYPE, "frame": frame})

    def reset(self) -> None:
        """Stop the task and forget everything (tests swap loops and layers)."""
        if self._task is not None and not self._task.done() and not self._task.get_loop().is_closed():
            self._task.cancel()
        self._due, self._changed, self._progress = set(), set(), {}
        self._wake, self._task = None, None
        self._watched, self._watch_checked = True, -WATCH_CHECK_SECONDS


feed = LiveFeed()

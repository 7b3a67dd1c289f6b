"""The process's delta writer: group-commits the answer pieces of every streaming message.

Each `TurnPublisher` queues its pieces here. While one commit is in flight,
the pieces of every stream of the process gather, and the next commit
stores them all in one transaction (`chat.turns.append_contents`, keyed by
offset, so a retry through a database outage adds nothing twice); each
message it touched then gets one `message_delta` holding everything
committed since its last one. Commits start at most every
`DELTA_COMMIT_INTERVAL_MS`, so under load a commit carries many pieces and
the commit rate stays flat however many streams run; an idle writer
commits a piece at once, and so does a busy one for a message's first
piece (a turn's first delta waits for no interval). With more streams than
`DELTA_EVENTS_PER_SECOND` allows at that interval, the interval grows (up to
`DELTA_COMMIT_INTERVAL_MAX_MS`): each stream then gets fewer, larger deltas,
so the events, socket frames and stored pieces per second stay flat too.
`kill -USR1` logs the process's totals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Awaitable
from typing import Protocol

from django.conf import settings

from chat import turns

logger = logging.getLogger(__name__)


class Stream(Protocol):
    """What the writer needs of a publisher: its message, its committed length, its queued pieces."""

    message_id: int | None
    length: int  # committed length: where the next piece goes
    pending: list[str]
    pending_since: int  # emitted_at (ms since the epoch) of the first queued piece

    def committed(self, offset: int, text: str, emitted_at: int) -> Awaitable[None]: ...

    def failed(self, error: BaseException) -> None: ...


# This process's commits and committed pieces, over all its writers.
totals = {"commits": 0, "pieces": 0}


class DeltaWriter:
    """One per event loop: the streams with pieces waiting, and the task that commits them."""

    def __init__(self) -> None:
        self.waiting: dict[int, Stream] = {}
        self.in_flight: set[int] = set()
        self.task: asyncio.Task | None = None
        self.round: asyncio.Future = asyncio.get_running_loop().create_future()
        self.last_start = 0.0
        self.first_piece = asyncio.Event()
        self.commits = 0
        self.streams = 0  # messages in the last commit

    def queue(self, stream: Stream) -> None:
        """Schedule the stream's pending pieces for the next commit; a message's first piece does not wait."""
        assert stream.message_id is not None
        self.waiting[stream.message_id] = stream
        if stream.length == 0 and stream.message_id not in self.in_flight:
            self.first_piece.set()
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run(), name="delta-writer")

    def busy(self, stream: Stream) -> bool:
        return stream.message_id in self.waiting or stream.message_id in self.in_flight

    async def settled(self, stream: Stream) -> None:
        """Return once none of the stream's pieces is waiting or being committed (and announced)."""
        while self.busy(stream):
            await asyncio.shield(self.round)

    def interval(self) -> float:
        """Seconds from one commit's start to the next: longer as more streams share this writer, within bounds."""
        shortest = settings.DELTA_COMMIT_INTERVAL_MS / 1000
        longest = max(shortest, settings.DELTA_COMMIT_INTERVAL_MAX_MS / 1000)
        return min(longest, max(shortest, self.streams / settings.DELTA_EVENTS_PER_SECOND))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.waiting:
                pause = self.last_start + self.interval() - loop.time()
                if pause > 0 and not self.first_piece.is_set():
                    # A first piece (a turn's first delta) cuts the pause short.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.first_piece.wait(), pause)
                self.first_piece.clear()
                self.last_start = loop.time()
                await self._commit_once()
                self._next_round()
        finally:
            self.in_flight.clear()
            self._next_round()

    async def _commit_once(self) -> None:
        batch, self.waiting = self.waiting, {}
        self.in_flight = set(batch)
        self.streams = len(batch)
        pieces = []
        for message_id, stream in batch.items():
            pieces.append((message_id, "".join(stream.pending), stream.length, stream.pending_since))
            stream.pending.clear()
        try:
            lengths = await turns.aappend_contents([(m, text, start) for m, text, start, _ in pieces])
        except Exception as exc:  # the database stayed away: each of these turns fails
            logger.exception("commit of %d deltas failed", len(pieces))
            for message_id, stream in batch.items():
                self.waiting.pop(message_id, None)  # pieces queued meanwhile go nowhere
                stream.failed(exc)
            return
        self.commits += 1
        totals["commits"] += 1
        totals["pieces"] += len(pieces)
        for (message_id, text, start, emitted_at), length in zip(pieces, lengths, strict=True):
            stream = batch[message_id]
            if length is None:
                self.waiting.pop(message_id, None)
                stream.failed(turns.MessageClosed(f"message {message_id} is not streaming at length {start}"))
            else:
                # One after another, not gathered: an announcement hands the event over without waiting,
                # and a task per stream per commit cost more than the announcements themselves.
                await stream.committed(length - len(text), text, emitted_at)

    def _next_round(self) -> None:
        if not self.round.done():
            self.round.set_result(None)
        self.round = asyncio.get_running_loop().create_future()


def log_totals(*_: object) -> None:
    """Log the process's totals (on SIGUSR1; bench/streams.py reads them to count commits)."""
    logger.warning("delta writer: %d commits, %d pieces", totals["commits"], totals["pieces"])


_writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, DeltaWriter] = weakref.WeakKeyDictionary()


def writer() -> DeltaWriter:
    """This event loop's writer (tests run many loops; a server has one)."""
    loop = asyncio.get_running_loop()
    found = _writers.get(loop)
    if found is None:
        found = _writers[loop] = DeltaWriter()
    return found


def now_ms() -> int:
    """The server clock in milliseconds since the epoch, as `emitted_at` carries it."""
    return time.time_ns() // 1_000_000

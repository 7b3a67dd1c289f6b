"""The turns running in this process, so that any socket (or the admin) can cancel them.

The registry owns references to the turn tasks: a turn belongs to the
process, not to the socket that started it. Thread-safe, because the admin's
sync views and Channels' worker threads reach it too.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class RunningTurn:
    thread_id: int
    turn_id: str
    message_id: int | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event)
    task: asyncio.Task | None = None
    # Called (from any thread) when the turn is cancelled, to interrupt what it awaits.
    on_cancel: Callable[[], None] | None = None
    completed_at: float | None = None

    @property
    def running(self) -> bool:
        return self.completed_at is None

    def cancel(self) -> None:
        self.cancel_event.set()
        callback = self.on_cancel  # read once: another thread may clear it
        if callback is not None:
            callback()


class AgentTaskRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._turns: dict[tuple[int, str], RunningTurn] = {}
        # Each thread's turns, in the order registered: a start looks at its thread's
        # alone (a scan of every turn cost a burst of 442 starts a share of its loop).
        self._by_thread: dict[int, dict[str, RunningTurn]] = {}

    def register(self, thread_id: int, turn_id: str) -> tuple[RunningTurn, list[RunningTurn]]:
        """Add a turn; cancel and return the thread's turns that were still running."""
        with self._lock:
            of_thread = self._by_thread.setdefault(thread_id, {})
            previous = [t for t in of_thread.values() if t.running]
            turn = RunningTurn(thread_id=thread_id, turn_id=turn_id)
            self._turns[(thread_id, turn_id)] = turn
            of_thread.pop(turn_id, None)  # a turn registered again is its thread's latest
            of_thread[turn_id] = turn
        for old in previous:
            old.cancel()
        return turn, previous

    def get(self, thread_id: int, turn_id: str) -> RunningTurn | None:
        with self._lock:
            return self._turns.get((thread_id, turn_id))

    def running_in_thread(self, thread_id: int) -> RunningTurn | None:
        with self._lock:
            running = [t for t in self._by_thread.get(thread_id, {}).values() if t.running]
        return running[-1] if running else None  # the latest registered (dicts keep insertion order)

    def running(self) -> list[RunningTurn]:
        with self._lock:
            return [t for t in self._turns.values() if t.running]

    def cancel(self, thread_id: int, turn_id: str | None = None) -> bool:
        """Cancel a running turn (the thread's latest when turn_id is None); False if none."""
        turn = self.get(thread_id, turn_id) if turn_id else self.running_in_thread(thread_id)
        if turn is None or not turn.running:
            return False
        turn.cancel()
        return True

    def cancel_message(self, message_id: int) -> bool:
        """Cancel the running turn writing this assistant message; False if none here."""
        with self._lock:
            turn = next((t for t in self._turns.values() if t.message_id == message_id and t.running), None)
        if turn is None:
            return False
        turn.cancel()
        return True

    def mark_completed(self, thread_id: int, turn_id: str) -> None:
        with self._lock:
            turn = self._turns.get((thread_id, turn_id))
            if turn is not None and turn.completed_at is None:
                turn.completed_at = time.monotonic()
                turn.on_cancel = None

    def cleanup_completed(self, older_than: float) -> int:
        """Forget completed turns finished more than `older_than` seconds ago; never running ones."""
        cutoff = time.monotonic() - older_than
        with self._lock:
            old = [k for k, t in self._turns.items() if t.completed_at is not None and t.completed_at <= cutoff]
            for key in old:
                del self._turns[key]
                of_thread = self._by_thread[key[0]]
                del of_thread[key[1]]
                if not of_thread:
                    del self._by_thread[key[0]]
        return len(old)


registry = AgentTaskRegistry()

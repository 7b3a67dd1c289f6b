"""The one way turn events leave the server: commit first, then broadcast.

`TurnPublisher` pairs each step of a turn with its write in chat.turns and
sends the event only after that write returned (committed); the pieces of
the answer go through the process's group-committing writer
(agents.writer). The sweeper announces the turns it ends through
`announce_completed`. Events reach this process's sockets directly and the
other processes through the events layer (agents.fanout); a failing layer
is logged and never stops the turn, since sockets rebuild from the database.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from chat import endings, selectors, turns

from . import fanout
from .fanout import EVENT_TYPE, thread_group
from .livefeed import feed as live_feed
from .writer import now_ms, writer

logger = logging.getLogger(__name__)

__all__ = ["EVENT_TYPE", "TurnPublisher", "announce_completed", "broadcast", "now_ms", "thread_group"]


async def broadcast(thread_id: int, frame: dict, seq: int | None = None) -> None:
    """Send a frame to every socket of the thread, in every process, and show it to the Live turns feed.

    Errors are logged, not raised. `seq` numbers the events of one turn sent
    by this process, so that a receiving process can tell a gap.
    """
    fanout.deliver(thread_id, frame)
    try:
        await fanout.publish(thread_id, frame, seq)
    except Exception:
        logger.exception("broadcast failed: thread=%s type=%s", thread_id, frame.get("type"))
    try:
        live_feed.observe(frame)
    except Exception:
        logger.exception("live feed missed: thread=%s type=%s", thread_id, frame.get("type"))


async def announce_completed(turn: dict, error: dict | None) -> None:
    """Send `agent_completed` for a turn finalized outside its runtime (a `chat.turns.turn_summary`)."""
    frame = completed_frame(
        turn["thread_id"], turn["turn_id"], turn["id"], turn["status"], None, error, turn["content_length"]
    )
    await broadcast(turn["thread_id"], frame)


async def announce_thread_deleted(thread_id: int) -> None:
    """Tell the sockets of a thread that was just deleted (committed); each closes with 4404."""
    await broadcast(thread_id, {"type": "thread_deleted", "thread_id": thread_id})


async def announce_switch(thread_id: int) -> None:
    """Tell every socket of the thread that its active path changed (committed): each sends a fresh snapshot."""
    try:
        await fanout.publish_switch(thread_id)
    except Exception:
        logger.exception("broadcast failed: thread=%s type=switched", thread_id)


class TurnPublisher:
    """Writes and announces the steps of one turn, in order, each after its commit.

    Deltas are batched by the process's writer: while one commit is in
    flight, newer pieces of every stream gather and go together in the next
    commit, and each message gets one `message_delta` per commit, so a slow
    database or layer never falls behind a fast model.
    """

    def __init__(self, thread_id: int, turn_id: str):
        self.thread_id = thread_id
        self.turn_id = turn_id
        self.message_id: int | None = None
        self.pending: list[str] = []  # pieces queued in the writer, not yet committed
        self.pending_since = 0  # when the model produced the first of them (ms since the epoch)
        self.length = 0  # committed length of the answer
        self.history: list | None = None  # selectors.history_entries() of the answer, read with its shell
        self._sent = 0  # events this publisher has sent: their sequence numbers
        self._flush_error: BaseException | None = None
        self._completed = False
        self._stored_status: str | None = None
        # Called when an append fails (the message was closed, the database
        # is gone): the runtime stops the model call at once.
        self.on_write_error: Callable[[BaseException], None] | None = None

    def _frame(self, type_: str, data: dict) -> dict:
        return turn_frame(self.thread_id, self.turn_id, self.message_id, type_, data)

    async def _send(self, frame: dict) -> None:
        self._sent += 1
        await broadcast(self.thread_id, frame, self._sent)

    async def user_message(
        self, text: str, mentioned_documents: object = None, parent: int | None | turns.Follow = turns.ACTIVE_LEAF
    ) -> tuple[dict, bool]:
        """Store the user's message after `parent` and read it back, in one hop; announce it only when created."""
        message, created = await turns.astore_user_message(
            self.thread_id, self.turn_id, text, mentioned_documents, parent
        )
        await self.user_message_stored(message, created)
        return message, created

    async def user_message_stored(self, message: dict, created: bool) -> None:
        """Announce a user message that `turns.store_user_message` returned (committed), when it created it."""
        if created:
            await self._send(user_message_frame(self.thread_id, self.turn_id, message))

    async def started(
        self,
        agent: str,
        model: str,
        runner: str = "",
        parent_id: int | None | turns.Follow = turns.ACTIVE_LEAF,
        activate: bool | None = None,
    ) -> int | None:
        """Store the assistant shell answering `parent_id` (run by the process behind `runner`); announce it.

        None when the turn already had its shell (it started after all), and
        nothing is announced. The history the answer follows is read in the
        same hop (`history`). A turn that runs opens its shell with
        agents.opening instead, its agent resolved in the same hop.
        """
        persisted, history = await turns.aopen_answer(
            self.thread_id,
            self.turn_id,
            agent=agent,
            model=model,
            runner=runner,
            parent_id=parent_id,
            activate=activate,
        )
        return await self.opened(persisted, history, agent, model)

    async def opened(self, persisted: turns.Persisted, history: list | None, agent: str, model: str) -> int | None:
        """Take the shell `turns.open_answer` returned (committed) and announce it; None when it existed before."""
        if not persisted.created:
            self._completed = True
            return None
        self.message_id, self.history = persisted.id, history
        await self._send(self._frame("agent_started", {"agent": agent, "model": model}))
        return persisted.id

    async def thinking(self, text: str) -> None:
        await self.flush()
        await self._send(self._frame("agent_thinking", {"text": text}))

    def push_delta(self, text: str) -> None:
        """Queue a piece of the answer, produced now; it is committed and sent with the writer's next commit."""
        if not text or self._flush_error is not None:
            return  # after a failed append nothing more is written
        assert self.message_id is not None, "push_delta() before started()"
        if not self.pending:
            self.pending_since = now_ms()
        self.pending.append(text)
        writer().queue(self)

    async def committed(self, offset: int, text: str, emitted_at: int) -> None:
        """Called by the writer once `text` is committed at `offset`: announce it."""
        self.length = offset + len(text)
        await self._send(self._frame("message_delta", {"offset": offset, "delta": text, "emitted_at": emitted_at}))

    def failed(self, error: BaseException) -> None:
        """Called by the writer when an append failed; flush() raises it and the runtime stops the model."""
        self._flush_error = error
        self.pending.clear()
        if self.on_write_error is not None:
            self.on_write_error(error)

    async def flush(self) -> None:
        """Wait until every queued delta is committed and sent; raise if a write failed."""
        if self.message_id is not None:
            await writer().settled(self)
        if self._flush_error is not None:
            error, self._flush_error = self._flush_error, None
            raise error

    async def tool_executing(self, call_id: str, tool: str, tool_input: Any) -> int:
        await self.flush()
        assert self.message_id is not None, "tool_executing() before started()"
        persisted = await turns.astart_action(self.message_id, call_id, tool, tool_input)
        await self._send(
            self._frame(
                "tool_executing",
                {
                    "action_id": persisted.id,
                    "call_id": call_id,
                    "tool": tool,
                    "input": tool_input,
                    "position": self.length,
                },
            ),
        )
        return persisted.id

    async def tool_completed(self, action_id: int, status: str, output: Any) -> None:
        action = await turns.afinish_action(action_id, status, output)
        await self._send(
            self._frame(
                "tool_completed",
                {
                    "action_id": action.pk,
                    "call_id": action.call_id,
                    "tool": action.tool,
                    "status": action.status,
                    "output": action.output,
                    "duration_ms": selectors.duration_ms(action) or 0,
                },
            ),
        )

    async def completed(self, status: str, usage: dict | None = None, error: dict | None = None) -> str:
        """Finalize the message and send `agent_completed`, once; return the status stored.

        The event is built from what the database holds after the finalize
        committed, and sent only by the call that closed the message: when
        another finalizer (the sweeper) closed it first, it announced it;
        when the finalize fails, nothing is sent and the sweeper ends the
        turn later.
        """
        if self._completed:
            return self._stored_status or status
        self._completed = True
        self._stored_status = status
        try:
            await self.flush()
        except Exception:
            logger.exception("last deltas of message %s were not stored", self.message_id)
        if self.message_id is None:  # no shell: nothing to finalize, only the end to announce
            await self._send(completed_frame(self.thread_id, self.turn_id, None, status, usage, error, 0))
            return status
        finalized = await endings.afinalize_assistant_turn(self.message_id, status, usage, error)
        if finalized is None:
            logger.error("message %s was not finalized; the sweeper will end it", self.message_id)
            return status
        self._stored_status = finalized.status
        if finalized.closed:
            frame = completed_frame(
                self.thread_id, self.turn_id, self.message_id, finalized.status, usage, error, finalized.content_length
            )
            await self._send(frame)
        return finalized.status


def turn_frame(thread_id: int, turn_id: str, message_id: int | None, type_: str, data: dict) -> dict:
    return {"type": type_, "thread_id": thread_id, "turn_id": turn_id, "message_id": message_id, "data": data}


def completed_frame(
    thread_id: int,
    turn_id: str,
    message_id: int | None,
    status: str,
    usage: dict | None,
    error: dict | None,
    length: int,
) -> dict:
    """The `agent_completed` event; `content_length` lets a socket that is behind catch up first."""
    data = {"status": status, "usage": selectors.usage_dict(usage), "error": error, "content_length": length}
    return turn_frame(thread_id, turn_id, message_id, "agent_completed", data)


def user_message_frame(thread_id: int, turn_id: str, message: dict) -> dict:
    return {"type": "user_message", "thread_id": thread_id, "turn_id": turn_id, "data": {"message": message}}

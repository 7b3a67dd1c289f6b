"""The first writes of many turns at once: batched twins of turns.store_user_message and turns.open_answer.

A burst of users who send at the same moment fills one database hop with
starts (chat.hops). Written one by one, each start took about fifteen
statements and a commit of its own: 313 starts held Channels' database
thread for 330 ms, and every first delta waited behind them. Here the same
rows take a handful of statements for the whole hop, in the caller's
transaction. Only plain starts are taken: a new turn_id after the thread's
active leaf, its thread once in the batch. The caller stores any other one
alone, through chat.turns, which stays the reference for what a start
writes and returns. A worker process opens the answers of the turns it is
sent with `open_new_answers` (through agents.opening), which batches the
same way.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, NamedTuple

from django.db import connection
from django.utils import timezone

from . import selectors, turns
from .models import Message
from .turns import Persisted, db_time, insert_message_rows, message_values, shell_metadata, user_metadata

STREAMING = Message.Status.STREAMING.value


class NewTurn(NamedTuple):
    """A turn to start: its user message and, for an idle thread, its answer's shell (agent, model, runner)."""

    thread_id: int
    turn_id: str
    text: str
    mentioned_documents: Any
    answer: tuple[str, str, str] | None  # (agent, model, runner): open the answer here when nothing streams


class StoredTurn(NamedTuple):
    """What store_user_message and open_answer would have returned for a NewTurn."""

    message: dict  # the user message, as the contract's object
    running: bool  # an answer of the thread was streaming: no shell was opened
    answer: Persisted | None
    history: list | None


def store_new_turns(new: list[NewTurn]) -> list[StoredTurn | None]:
    """Store each new turn's user message, and its shell when asked and nothing streams; None for one not taken.

    Call inside a transaction. A turn is not taken when its thread comes
    twice in `new`, its turn_id names a message of the thread already, or
    its thread is gone: the caller stores it alone (and finds the error).
    """
    stored: list[StoredTurn | None] = [None] * len(new)
    twice = Counter(turn.thread_id for turn in new)
    taken = [i for i, turn in enumerate(new) if turn.turn_id and twice[turn.thread_id] == 1]
    if not taken:
        return stored
    now = timezone.now()
    with connection.cursor() as cursor:
        taken = _unused_turn_ids(cursor, new, taken)
        streaming = _streaming_threads(cursor, [new[i].thread_id for i in taken])
        opens = {i for i in taken if new[i].answer is not None and new[i].thread_id not in streaming}
        seqs = _take_seqs(cursor, new, taken, opens, now)
        taken = [i for i in taken if new[i].thread_id in seqs]
        if not taken:
            return stored
        stamp = db_time(now)
        metadata = {i: user_metadata(new[i].mentioned_documents) for i in taken}
        user_rows = [
            message_values(
                new[i].thread_id, new[i].turn_id, Message.Role.USER, seqs[new[i].thread_id][0],
                seqs[new[i].thread_id][1], new[i].text, Message.Status.COMPLETED, metadata[i], None, "", stamp,
            )
            for i in taken
        ]  # fmt: skip
        user_ids = _insert(cursor, user_rows)
        shell_rows = []
        for i in sorted(opens & set(taken)):
            agent, model, runner = new[i].answer or ("", "", "")
            shell_meta = shell_metadata(agent, model)
            thread_id = new[i].thread_id
            shell_rows.append(
                message_values(
                    thread_id, new[i].turn_id, Message.Role.ASSISTANT, seqs[thread_id][0] + 1, user_ids[thread_id],
                    "", STREAMING, shell_meta, stamp, runner, stamp,
                )
            )  # fmt: skip
        shell_ids = _insert(cursor, shell_rows)
        leaves = {thread_id: shell_ids.get(thread_id, message_id) for thread_id, message_id in user_ids.items()}
        _set_leaves(cursor, leaves)
        versions = _versions(cursor, {(new[i].thread_id, seqs[new[i].thread_id][1]) for i in taken})
    histories = selectors.histories(list(shell_ids.values()))
    stamp_text = now.isoformat()
    for i in taken:
        thread_id, parent_id = new[i].thread_id, seqs[new[i].thread_id][1]
        message = {
            "id": user_ids[thread_id],
            "seq": seqs[thread_id][0],
            "parent_id": parent_id,
            "versions": versions.get((thread_id, parent_id), []),
            "role": Message.Role.USER.value,
            "turn_id": new[i].turn_id,
            "status": Message.Status.COMPLETED.value,
            "content": new[i].text,
            "metadata": metadata[i],
            "actions": [],
            "usage": None,
            "created_at": stamp_text,
            "updated_at": stamp_text,
        }
        shell_id = shell_ids.get(thread_id)
        answer = Persisted(shell_id, True) if shell_id is not None else None
        history = histories[shell_id] if shell_id is not None else None
        stored[i] = StoredTurn(message, thread_id in streaming, answer, history)
    return stored


class NewAnswer(NamedTuple):
    """The shell of an answer to open: turns.open_answer()'s arguments, by the same names and defaults."""

    thread_id: int
    turn_id: str
    parent_id: Any = turns.ACTIVE_LEAF  # an id; ACTIVE_LEAF (to be found) is left to turns.open_answer
    activate: bool | None = None
    agent: str = ""
    model: str = ""
    runner: str = ""


def open_new_answers(new: list[NewAnswer]) -> list[tuple[Persisted, list] | None]:
    """Open each answer's shell after its parent and read its history; None for one not taken.

    Call inside a transaction. Not taken: a thread twice in `new`, a parent
    to be found, a turn that has its shell already, a thread gone.
    """
    opened: list[tuple[Persisted, list] | None] = [None] * len(new)
    twice = Counter(answer.thread_id for answer in new)
    taken = [
        i
        for i, answer in enumerate(new)
        if answer.turn_id and isinstance(answer.parent_id, int) and twice[answer.thread_id] == 1
    ]
    if not taken:
        return opened
    now = timezone.now()
    stamp = db_time(now)
    with connection.cursor() as cursor:
        taken = _unused_turn_ids(cursor, new, taken, role=Message.Role.ASSISTANT)
        seqs = _take_seqs(cursor, new, taken, set(), now)
        taken = [i for i in taken if new[i].thread_id in seqs]
        rows = []
        for i in taken:
            answer = new[i]
            meta = {
                "streaming": True,
                "cancelled": False,
                "has_error": False,
                "agent": answer.agent,
                "model": answer.model,
            }
            rows.append(
                message_values(
                    answer.thread_id, answer.turn_id, Message.Role.ASSISTANT, seqs[answer.thread_id][0],
                    answer.parent_id, "", STREAMING, meta, stamp, answer.runner, stamp,
                )
            )  # fmt: skip
        shell_ids = _insert(cursor, rows)
        leaves = {
            new[i].thread_id: shell_ids[new[i].thread_id]
            for i in taken
            if new[i].activate or (new[i].activate is None and seqs[new[i].thread_id][1] == new[i].parent_id)
        }
        if leaves:
            _set_leaves(cursor, leaves)
    histories = selectors.histories(list(shell_ids.values()))
    for i in taken:
        shell_id = shell_ids[new[i].thread_id]
        opened[i] = (Persisted(shell_id, True), histories[shell_id])
    return opened


def _marks(values: list) -> str:
    return ", ".join(["%s"] * len(values))


def _unused_turn_ids(cursor: Any, new: list, taken: list[int], role: str | None = None) -> list[int]:
    """The turns of `taken` whose turn_id names no message (of `role`, if given) of their thread yet."""
    threads, turn_ids = [new[i].thread_id for i in taken], [new[i].turn_id for i in taken]
    by_role = " AND role = %s" if role else ""
    cursor.execute(
        f"SELECT thread_id, turn_id FROM chat_message WHERE thread_id IN ({_marks(threads)})"
        f" AND turn_id IN ({_marks(turn_ids)}){by_role}",
        [*threads, *turn_ids, *([role] if role else [])],
    )
    used = set(cursor.fetchall())
    return [i for i in taken if (new[i].thread_id, new[i].turn_id) not in used]


def _streaming_threads(cursor: Any, threads: list[int]) -> set[int]:
    """The threads, of these, with an answer streaming (turns.is_streaming for each)."""
    if not threads:
        return set()
    cursor.execute(
        f"SELECT DISTINCT thread_id FROM chat_message WHERE thread_id IN ({_marks(threads)})"
        " AND role = 'assistant' AND status = 'streaming'",
        threads,
    )
    return {row[0] for row in cursor.fetchall()}


def _take_seqs(cursor: Any, new: list, taken: list[int], opens: set[int], now: Any) -> dict:
    """Per thread: the user message's seq and the active leaf it follows, with one seq more for a shell.

    The thread rows are locked in id order first (PostgreSQL), as the hop's
    other starts lock them (chat.hops), so that concurrent hops never wait
    on each other in a cycle.
    """
    threads = sorted(new[i].thread_id for i in taken)
    if not threads:
        return {}
    if connection.vendor == "postgresql":
        cursor.execute(f"SELECT id FROM chat_thread WHERE id IN ({_marks(threads)}) ORDER BY id FOR UPDATE", threads)
    seqs: dict[int, tuple[int, int | None]] = {}
    for step, group in ((2, [i for i in taken if i in opens]), (1, [i for i in taken if i not in opens])):
        ids = [new[i].thread_id for i in group]
        if not ids:
            continue
        cursor.execute(
            f"UPDATE chat_thread SET last_seq = last_seq + {step}, updated_at = %s WHERE id IN ({_marks(ids)})"
            " RETURNING id, last_seq, active_leaf_id",
            [db_time(now), *ids],
        )
        for thread_id, last_seq, leaf in cursor.fetchall():
            seqs[thread_id] = (last_seq - step + 1, leaf)
    return seqs


def _insert(cursor: Any, rows: list[list]) -> dict[int, int]:
    """Insert message rows (one per thread) in one statement; their ids by thread."""
    if not rows:
        return {}
    cursor.execute(insert_message_rows(len(rows)), [value for row in rows for value in row])
    return {thread_id: message_id for message_id, thread_id in cursor.fetchall()}


def _set_leaves(cursor: Any, leaves: dict[int, int]) -> None:
    """Make each thread's new message its active leaf, in one statement."""
    cases = " ".join(["WHEN %s THEN %s"] * len(leaves))
    cursor.execute(
        f"UPDATE chat_thread SET active_leaf_id = CASE id {cases} END WHERE id IN ({_marks(list(leaves))})",
        [value for pair in leaves.items() for value in pair] + list(leaves),
    )


def _versions(cursor: Any, followed: set[tuple[int, int | None]]) -> dict[tuple[int, int | None], list[int]]:
    """selectors.sibling_ids() for each (thread, parent), in one statement."""
    threads = sorted({thread_id for thread_id, _ in followed})
    parents = sorted({parent for _, parent in followed if parent is not None})
    parent_test = f"parent_id IN ({_marks(parents)}) OR parent_id IS NULL" if parents else "parent_id IS NULL"
    cursor.execute(
        f"SELECT thread_id, parent_id, id FROM chat_message WHERE thread_id IN ({_marks(threads)})"
        f" AND ({parent_test}) ORDER BY seq",
        [*threads, *parents],
    )
    versions: dict[tuple[int, int | None], list[int]] = {}
    for thread_id, parent_id, message_id in cursor.fetchall():
        if (thread_id, parent_id) in followed:
            versions.setdefault((thread_id, parent_id), []).append(message_id)
    return versions

"""Every write of a turn: user message, assistant shell, content, actions, final state.

This module owns the writes of Message, MessageChunk, AgentAction and
TokenUsage rows; chat.starts and chat.endings hold the batched twins of a
turn's start and end for the turns one database hop starts or ends together
(chat.threads writes messages only when it imports a thread). Each function
is one transaction; the `a`-prefixed twins run it in Channels' database
thread. Callers publish events only after these
return, which is what makes events "database first" (see agents.events).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import timedelta
from enum import Enum
from typing import Any, NamedTuple

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from . import selectors
from .hops import hop
from .models import AgentAction, Message, TokenUsage
from .retry import aretrying, own_thread

logger = logging.getLogger(__name__)

NO_TEXT = "(no text response)"
FINAL_STATUSES = {
    Message.Status.COMPLETED,
    Message.Status.CANCELLED,
    Message.Status.FAILED,
    Message.Status.INTERRUPTED,
}
DOCUMENT_FIELDS = ("id", "title", "document_type")


class Persisted(NamedTuple):
    """A row id and whether this call inserted it (False: it already existed)."""

    id: int
    created: bool


class Follow(Enum):
    """Where a new user message goes when the client names no parent."""

    ACTIVE_LEAF = "active_leaf"


ACTIVE_LEAF = Follow.ACTIVE_LEAF


class MessageClosed(Exception):
    """The message is no longer streaming: its content is final."""


# --- sequence numbers ------------------------------------------------------


def _next_seq(thread_id: int, now: Any = None) -> tuple[int, int | None]:
    """Take the thread's next seq, and read its active leaf. Call inside the transaction that inserts the message.

    The UPDATE locks the thread row (PostgreSQL) or holds the write lock
    (SQLite), so concurrent writers get consecutive numbers and the leaf
    stays current until the commit; a rollback returns the number.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE chat_thread SET last_seq = last_seq + 1, updated_at = %s WHERE id = %s"
            " RETURNING last_seq, active_leaf_id",
            [db_time(now or timezone.now()), thread_id],
        )
        row = cursor.fetchone()
    if row is None:
        raise ValueError(f"thread {thread_id} does not exist")
    return row[0], row[1]


def db_time(value: Any) -> Any:
    """A datetime as the ORM stores it (naive UTC text on SQLite), for hand-written SQL."""
    return connection.ops.adapt_datetimefield_value(value)


def _insert_once(find: Callable[[], int | None], insert: Callable[[], int]) -> Persisted:
    """Insert a row unless `find` sees it already; later calls return the first id.

    A concurrent writer that inserts the same row first makes `insert` break
    a unique constraint (chat_message_unique_turn_role,
    chat_action_unique_call); its row is then the answer.
    """
    existing = find()
    if existing is not None:
        return Persisted(existing, False)
    try:
        with transaction.atomic():
            return Persisted(insert(), True)
    except IntegrityError:
        existing = find()
        if existing is None:
            raise
        return Persisted(existing, False)


class Inserted(NamedTuple):
    """A message row this call inserted, as stored: what the contract's object needs without reading it back."""

    id: int
    seq: int
    parent_id: int | None
    created_at: Any  # an aware datetime


# Every column of chat_message but its id; Django keeps defaults in Python, so each is given.
MESSAGE_COLUMNS = (
    "thread_id",
    "turn_id",
    "role",
    "seq",
    "parent_id",
    "content",
    "content_length",
    "status",
    "metadata",
    "heartbeat_at",
    "cancel_requested",
    "runner",
    "created_at",
    "updated_at",
)
INSERT_MESSAGE = (
    f"INSERT INTO chat_message ({', '.join(MESSAGE_COLUMNS)})"
    f" VALUES ({', '.join(['%s'] * len(MESSAGE_COLUMNS))}) RETURNING id"
)


def insert_message_rows(count: int) -> str:
    """INSERT_MESSAGE for `count` rows, returning each row's id and thread."""
    row = f"({', '.join(['%s'] * len(MESSAGE_COLUMNS))})"
    rows = ", ".join([row] * count)
    return f"INSERT INTO chat_message ({', '.join(MESSAGE_COLUMNS)}) VALUES {rows} RETURNING id, thread_id"


def message_values(
    thread_id: int,
    turn_id: str,
    role: str,
    seq: int,
    parent_id: int | None,
    content: str,
    status: str,
    metadata: dict,
    heartbeat_at: Any,
    runner: str,
    stored_at: Any,
) -> list:
    """The values of a new message row, in MESSAGE_COLUMNS order (times already as db_time() gives them)."""
    return [
        thread_id,
        turn_id,
        role,
        seq,
        parent_id,
        content,
        len(content),
        status,
        _METADATA.get_db_prep_save(metadata, connection),
        heartbeat_at,
        False,
        runner,
        stored_at,
        stored_at,
    ]


def _insert_turn_message(
    thread_id: int,
    turn_id: str,
    role: str,
    parent: int | None | Follow,
    activate: bool | None,
    content: str = "",
    status: str = Message.Status.COMPLETED,
    metadata: dict | None = None,
    heartbeat_at: Any = None,
    runner: str = "",
) -> tuple[Persisted, Inserted | None]:
    """Insert the (thread, turn_id, role) message once; later calls return the first id (and no Inserted).

    `parent` ACTIVE_LEAF means the thread's active leaf at insert time. The
    new message becomes the active leaf when `activate` is True, or (None)
    when the active path ends at its parent: an answer then extends the
    path, and does not pull it back from a version the user switched to.
    Hand-written SQL: a turn start is on every stream's critical path.
    """
    if not turn_id:
        raise ValueError("turn_id must not be empty")
    inserted: list[Inserted] = []

    def insert() -> int:
        now = timezone.now()
        seq, leaf = _next_seq(thread_id, now)  # locks the thread row: the leaf stays current
        parent_id = leaf if parent is ACTIVE_LEAF else parent
        beat = None if heartbeat_at is None else db_time(heartbeat_at)
        values = message_values(
            thread_id, turn_id, role, seq, parent_id, content, status, metadata or {}, beat, runner, db_time(now)
        )
        with connection.cursor() as cursor:
            cursor.execute(INSERT_MESSAGE, values)
            message_id = cursor.fetchone()[0]
            if activate or (activate is None and leaf == parent_id):
                cursor.execute("UPDATE chat_thread SET active_leaf_id = %s WHERE id = %s", [message_id, thread_id])
        inserted.append(Inserted(message_id, seq, parent_id, now))
        return message_id

    persisted = _insert_once(lambda: _find_turn_message(thread_id, turn_id, role), insert)
    return persisted, inserted[0] if persisted.created else None


_METADATA = Message._meta.get_field("metadata")


def _find_turn_message(thread_id: int, turn_id: str, role: str) -> int | None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM chat_message WHERE thread_id = %s AND turn_id = %s AND role = %s",
            [thread_id, turn_id, role],
        )
        row = cursor.fetchone()
    return row[0] if row is not None else None


def clean_documents(documents: object) -> list[dict]:
    """Keep the mentioned documents that have all of id, title and document_type (null counts as missing)."""
    if not isinstance(documents, list):
        return []
    kept = []
    for doc in documents:
        if isinstance(doc, dict) and all(doc.get(key) is not None for key in DOCUMENT_FIELDS):
            kept.append({key: doc[key] for key in DOCUMENT_FIELDS})
    return kept


# --- turn writes -------------------------------------------------------------


def persist_user_turn(
    thread_id: int,
    turn_id: str,
    text: str,
    mentioned_documents: Any = None,
    parent: int | None | Follow = ACTIVE_LEAF,
) -> Persisted:
    """Store the user's message of a turn after `parent` and make it the active leaf.

    The same turn_id returns the first id and stores nothing.
    """
    return _insert_user_message(thread_id, turn_id, text, mentioned_documents, parent)[0]


def user_metadata(mentioned_documents: Any) -> dict[str, Any]:
    """The metadata of a new user message: its flags, and the documents it mentions, when any is complete."""
    metadata: dict[str, Any] = {"streaming": False, "cancelled": False, "has_error": False}
    documents = clean_documents(mentioned_documents)
    if documents:
        metadata["mentioned_documents"] = documents
    return metadata


def _insert_user_message(
    thread_id: int, turn_id: str, text: str, mentioned_documents: Any, parent: int | None | Follow
) -> tuple[Persisted, Inserted | None, dict]:
    metadata = user_metadata(mentioned_documents)
    persisted, inserted = _insert_turn_message(
        thread_id, turn_id, Message.Role.USER, parent, True, content=text, metadata=metadata
    )
    return persisted, inserted, metadata


def store_user_message(
    thread_id: int, turn_id: str, text: str, mentioned_documents: Any = None, parent: int | None | Follow = ACTIVE_LEAF
) -> tuple[dict, bool]:
    """persist_user_turn(), then the stored message as the contract's dict, in one database hop.

    A message this call stored is described from what it wrote (only its
    versions are read); one stored before is read back.
    """
    persisted, inserted, metadata = _insert_user_message(thread_id, turn_id, text, mentioned_documents, parent)
    if inserted is None:
        message = selectors.user_message_dict(persisted.id)
        assert message is not None  # found; a user message lives as long as its thread
        return message, False
    stored_at = inserted.created_at.isoformat()
    message = {
        "id": inserted.id,
        "seq": inserted.seq,
        "parent_id": inserted.parent_id,
        "versions": selectors.sibling_ids(thread_id, inserted.parent_id),
        "role": Message.Role.USER.value,
        "turn_id": turn_id,
        "status": Message.Status.COMPLETED.value,
        "content": text,
        "metadata": metadata,
        "actions": [],
        "usage": None,
        "created_at": stored_at,
        "updated_at": stored_at,
    }
    return message, True


def shell_metadata(agent: str, model: str) -> dict[str, Any]:
    """The metadata of a new answer's shell: streaming, and the agent and model that answer."""
    return {"streaming": True, "cancelled": False, "has_error": False, "agent": agent, "model": model}


def persist_assistant_shell(
    thread_id: int,
    turn_id: str,
    agent: str = "",
    model: str = "",
    runner: str = "",
    parent_id: int | None | Follow = ACTIVE_LEAF,
    activate: bool | None = None,
) -> Persisted:
    """Create the empty streaming assistant message of a turn, once per turn_id (`runner`: its process's channel).

    It answers `parent_id` (the turn's user message; for a regenerate, the
    user message of the answer it is a version of). A regenerate passes
    `activate=True`: its answer becomes the active leaf whatever the path.
    """
    return _insert_turn_message(
        thread_id,
        turn_id,
        Message.Role.ASSISTANT,
        parent_id,
        activate,
        status=Message.Status.STREAMING,
        metadata=shell_metadata(agent, model),
        heartbeat_at=timezone.now(),
        runner=runner,
    )[0]


INSERT_PIECE = "INSERT INTO chat_messagechunk (message_id, start, text) VALUES (%s, %s, %s)"


def open_answer(thread_id: int, turn_id: str, **shell: Any) -> tuple[Persisted, list | None]:
    """persist_assistant_shell(), then, when it created the shell, the history it answers, in one database hop."""
    persisted = persist_assistant_shell(thread_id, turn_id, **shell)
    history = selectors.history_entries(thread_id, persisted.id) if persisted.created else None
    return persisted, history


def append_content(message_id: int, delta: str, start: int | None = None) -> int:
    """Append `delta` to a streaming message and return the new length; MessageClosed once it is final.

    With `start` (the length the caller last committed) the append is keyed
    by offset, as in append_contents(); without it, it goes at the end.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        appended = _append(cursor, message_id, delta, start, db_time(timezone.now()))
        if appended is None:
            raise MessageClosed(f"message {message_id} is not streaming at length {start}")
        length, fresh = appended
        if fresh and delta:
            cursor.execute(INSERT_PIECE, [message_id, length - len(delta), delta])
    return length


def append_contents(pieces: list[tuple[int, str, int]]) -> list[int | None]:
    """Append each (message_id, delta, start) to its streaming message, all in one transaction.

    Returns each message's new length, or None for a message that is no
    longer streaming at `start` (its piece is not stored). Per piece, an
    update of fixed-size columns and an inserted row, so the cost does not
    grow with the message; a batch of messages takes one UPDATE and one
    INSERT statement, and on PostgreSQL one statement holding both (a
    transaction of its own, one round trip). Keyed by offset: a retry whose
    first attempt did commit finds its pieces (chat_chunk_unique_start) and
    adds nothing again.
    """
    if len({message_id for message_id, _, _ in pieces}) < len(pieces):
        return _append_one_by_one(pieces)  # one message twice: each piece must see the one before
    now = db_time(timezone.now())
    if connection.vendor == "postgresql":
        return _append_in_one_statement(pieces, now)
    lengths: list[int | None] = []
    inserts: list[tuple[int, int, str]] = []
    with transaction.atomic(), connection.cursor() as cursor:
        grown: dict[int, int] = {}
        for at in range(0, len(pieces), STATEMENT_ROWS):
            grown.update(_grow(cursor, pieces[at : at + STATEMENT_ROWS], now))
        for message_id, delta, start in pieces:
            length = grown.get(message_id)
            if length is not None:
                lengths.append(length)
                if delta:
                    inserts.append((message_id, start, delta))
            elif _has_piece(cursor, message_id, start, delta):  # stored by an attempt that did commit
                lengths.append(start + len(delta))
            else:
                lengths.append(None)
        for at in range(0, len(inserts), STATEMENT_ROWS):
            _insert_pieces(cursor, inserts[at : at + STATEMENT_ROWS])
    return lengths


# On PostgreSQL a commit's appends are one statement, a transaction of its
# own: the messages grow, and the UPDATE returns each grown message's piece
# for the data-modifying WITH clause that inserts it; the rows come as four
# arrays (a short statement that psycopg quotes once, not four placeholders
# per message). Against BEGIN, UPDATE, INSERT and COMMIT, four round trips,
# it took a commit of 20 messages from 0.47 to 0.33 ms of the writer's CPU
# and from 1.1 to 0.95 ms of PostgreSQL's (a micro-run, not kept). Reading
# the arrays once, in the UPDATE, rather than as a WITH query that the
# INSERT joins again took a commit of 626 messages from 5-6 to 4 ms of
# execution (EXPLAIN ANALYZE).
_APPEND = (
    "WITH grown AS (UPDATE chat_message SET content_length = chat_message.content_length + v.grow, {beats}"
    " FROM unnest(%s::bigint[], %s::integer[], %s::integer[], %s::text[]) AS v(message_id, grow, start, piece)"
    " WHERE chat_message.id = v.message_id"
    " AND chat_message.status = 'streaming' AND chat_message.content_length = v.start"
    " RETURNING chat_message.id, chat_message.content_length, v.grow, v.start, v.piece),"
    " stored AS (INSERT INTO chat_messagechunk (message_id, start, text)"
    " SELECT id, start, piece FROM grown WHERE grow > 0)"
    " SELECT id, content_length FROM grown"
)


def _append_in_one_statement(pieces: list[tuple[int, str, int]], now: Any) -> list[int | None]:
    """append_contents() on PostgreSQL: one statement, committed on its own (see _APPEND)."""
    params: list[Any] = [
        [m for m, _, _ in pieces],
        [len(d) for _, d, _ in pieces],
        [s for _, _, s in pieces],
        [d for _, d, _ in pieces],
    ]
    with connection.cursor() as cursor:
        cursor.execute(_APPEND.format(beats=_BEATS), [*_beats(now), *params])
        grown = dict(cursor.fetchall())
        return [
            grown[m] if m in grown else start + len(d) if _has_piece(cursor, m, start, d) else None
            for m, d, start in pieces
        ]


# An append moves heartbeat_at and updated_at only when they are older than
# TURN_HEARTBEAT_SECONDS. Both columns are indexed: on PostgreSQL an update
# that changes no indexed column's value is a HOT update, with no new entry
# in any index of chat_message, where setting them on every append had
# written one into each (about 30 us a row in a commit, most of the writer's
# time in the database). Within a heartbeat they stay as they were.
_BEATS = (
    "heartbeat_at = CASE WHEN chat_message.heartbeat_at IS NULL OR chat_message.heartbeat_at < %s"
    " THEN %s ELSE chat_message.heartbeat_at END,"
    " updated_at = CASE WHEN chat_message.updated_at < %s THEN %s ELSE chat_message.updated_at END"
)


def _beats(now: Any) -> list[Any]:
    """_BEATS's parameters for an append at `now` (as db_time gives it)."""
    due = db_time(timezone.now() - timedelta(seconds=settings.TURN_HEARTBEAT_SECONDS))
    return [due, now, due, now]


# Rows one statement of append_contents carries at most on SQLite (3 parameters each).
STATEMENT_ROWS = 500


def _grow(cursor: Any, pieces: list[tuple[int, str, int]], now: Any) -> dict[int, int]:
    """Grow each streaming message at its `start` by its delta's length, in one statement: {id: new length}."""
    values = ", ".join(["(CAST(%s AS bigint), CAST(%s AS integer), CAST(%s AS integer))"] * len(pieces))
    cursor.execute(
        f"UPDATE chat_message SET content_length = chat_message.content_length + v.column2, {_BEATS}"
        f" FROM (VALUES {values}) AS v WHERE chat_message.id = v.column1"
        " AND chat_message.status = 'streaming' AND chat_message.content_length = v.column3"
        " RETURNING chat_message.id, chat_message.content_length",
        [*_beats(now), *(value for message_id, delta, start in pieces for value in (message_id, len(delta), start))],
    )
    return dict(cursor.fetchall())


def _insert_pieces(cursor: Any, rows: list[tuple[int, int, str]]) -> None:
    """Store (message_id, start, text) pieces in one statement."""
    cursor.execute(
        "INSERT INTO chat_messagechunk (message_id, start, text) VALUES " + ", ".join(["(%s, %s, %s)"] * len(rows)),
        [value for row in rows for value in row],
    )


def _append_one_by_one(pieces: list[tuple[int, str, int]]) -> list[int | None]:
    """append_contents() for a batch that holds a message more than once: a statement per piece."""
    lengths: list[int | None] = []
    with transaction.atomic(), connection.cursor() as cursor:
        now = db_time(timezone.now())
        for message_id, delta, start in pieces:
            appended = _append(cursor, message_id, delta, start, now)
            lengths.append(None if appended is None else appended[0])
            if appended is not None and appended[1] and delta:
                cursor.execute(INSERT_PIECE, [message_id, appended[0] - len(delta), delta])
    return lengths


def _append(cursor: Any, message_id: int, delta: str, start: int | None, now: Any) -> tuple[int, bool] | None:
    """Grow the message's length by `delta` (at `start`, if given): (new length, whether this call grew it).

    None when the message is not streaming at `start` and the piece is not
    already stored there by an earlier attempt.
    """
    at_start = "" if start is None else " AND content_length = %s"
    cursor.execute(
        f"UPDATE chat_message SET content_length = content_length + %s, {_BEATS}"
        " WHERE id = %s AND status = 'streaming'" + at_start + " RETURNING content_length",
        [len(delta), *_beats(now), message_id, *([] if start is None else [start])],
    )
    row = cursor.fetchone()
    if row is not None:
        return row[0], True
    if start is not None and _has_piece(cursor, message_id, start, delta):
        return start + len(delta), False
    return None


def _has_piece(cursor: Any, message_id: int, start: int, delta: str) -> bool:
    """True when the piece `delta` at `start` is already stored: an earlier attempt of this append committed."""
    cursor.execute("SELECT text FROM chat_messagechunk WHERE message_id = %s AND start = %s", [message_id, start])
    row = cursor.fetchone()
    return row is not None and row[0] == delta


def start_action(message_id: int, call_id: str, tool: str, tool_input: Any) -> Persisted:
    """Store a tool call as `pending`; the same call_id returns the first row."""

    def insert() -> int:
        position = Message.objects.filter(pk=message_id).values_list("content_length", flat=True).first() or 0
        action = AgentAction.objects.create(
            message_id=message_id, call_id=call_id, tool=tool, input=tool_input, position=position
        )
        return action.pk

    return _insert_once(lambda: _find_action(message_id, call_id), insert)


def _find_action(message_id: int, call_id: str) -> int | None:
    return AgentAction.objects.filter(message_id=message_id, call_id=call_id).values_list("pk", flat=True).first()


def finish_action(action_id: int, status: str, output: Any) -> AgentAction:
    """Record a tool call's result; only the first finish of a pending action counts."""
    if status not in (AgentAction.Status.SUCCESS, AgentAction.Status.ERROR):
        raise ValueError(f"invalid action status {status!r}")
    AgentAction.objects.filter(pk=action_id, status=AgentAction.Status.PENDING).update(
        status=status, output=output, finished_at=timezone.now()
    )
    return AgentAction.objects.get(pk=action_id)


class Finalized(NamedTuple):
    """What the database holds once a finalize committed: the message's status and length.

    `closed` is True only for the call that ended the message; that caller
    alone announces `agent_completed`.
    """

    status: str
    closed: bool
    content_length: int


def finalize_assistant_turn(
    message_id: int, status: str, usage: dict | None = None, error: dict | None = None
) -> Finalized | None:
    """Give a streaming message its final status, text and usage; return what it ends with.

    Safe to call twice: only the first call changes the message; usage is
    inserted once per message (unique chat_usage_unique_message). Never
    raises: a missing message or a database error is logged and gives None.
    """
    try:
        return close_assistant_turn(message_id, status, usage, error)
    except Exception:
        logger.exception("finalize_assistant_turn failed: message=%s status=%s", message_id, status)
        return None


def close_assistant_turn(
    message_id: int, status: str, usage: dict | None = None, error: dict | None = None
) -> Finalized | None:
    """See finalize_assistant_turn(); raises database errors, so that an async caller can retry them.

    Hand-written SQL: every turn ends here, often many at once.
    """
    if status not in FINAL_STATUSES:
        raise ValueError(f"invalid final status {status!r}")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT m.status, m.content, m.content_length, m.metadata, m.thread_id, t.owner_id"
            " FROM chat_message m JOIN chat_thread t ON t.id = m.thread_id"
            " WHERE m.id = %s AND m.role = 'assistant'" + message_lock(),
            [message_id],
        )
        row = cursor.fetchone()
        if row is None:
            logger.warning("finalize_assistant_turn: no assistant message %s", message_id)
            return None
        stored_status, content, length, metadata, thread_id, owner_id = row
        closed = stored_status == Message.Status.STREAMING
        if closed:
            stored_status = status
            length = _close_message(cursor, message_id, content, metadata, status, error)
        if usage:
            record_usage_once(message_id, thread_id, owner_id, usage)
        return Finalized(stored_status, closed, length)


def message_lock() -> str:
    """The locking clause of a finalize's read of its message: that row only, as its own UPDATE would lock it.

    Not the thread's row (a plain FOR UPDATE of the join locked it too): a
    turn's start holds its thread's row while it inserts a message whose
    parent is the answer being finalized, and that insert's foreign key
    check takes a KEY SHARE lock of the answer, which FOR UPDATE blocks and
    FOR NO KEY UPDATE does not. The two had waited for each other until
    PostgreSQL broke the deadlock. SQLite has one writer at a time.
    """
    return " FOR NO KEY UPDATE OF m" if connection.features.has_select_for_no_key_update else ""


def _close_message(cursor: Any, message_id: int, content: str, metadata: Any, status: str, error: dict | None) -> int:
    """Fold the pieces into content, set the final flags, end pending actions; return the length. Holds the row lock."""
    cursor.execute("SELECT text FROM chat_messagechunk WHERE message_id = %s ORDER BY start", [message_id])
    text, metadata = closed_values(content, [row[0] for row in cursor.fetchall()], metadata, status, error)
    cursor.execute("DELETE FROM chat_messagechunk WHERE message_id = %s", [message_id])
    now = db_time(timezone.now())
    cursor.execute(
        "UPDATE chat_message SET content = %s, content_length = %s, status = %s, metadata = %s, updated_at = %s"
        " WHERE id = %s",
        [text, len(text), status, metadata, now, message_id],
    )
    cursor.execute(
        "UPDATE chat_agentaction SET status = %s, output = %s, finished_at = %s WHERE message_id = %s AND status = %s",
        [AgentAction.Status.ERROR, ended_action_output(status), now, message_id, AgentAction.Status.PENDING],
    )
    return len(text)


def closed_values(content: str, pieces: list[str], metadata: Any, status: str, error: dict | None) -> tuple[str, Any]:
    """The final text of a message closed with `status` (its content and pieces, in order) and its metadata to store."""
    text = content + "".join(pieces)
    if not text:
        text = NO_TEXT
    metadata = dict(json.loads(metadata) if isinstance(metadata, str) else metadata or {})
    metadata.update(
        streaming=False,
        cancelled=status == Message.Status.CANCELLED,
        has_error=status in (Message.Status.FAILED, Message.Status.INTERRUPTED),
    )
    if error:
        metadata["error"] = _storable_error(error)
    return text, _METADATA.get_db_prep_save(metadata, connection)


def ended_action_output(status: str) -> Any:
    """The output stored for a tool still running when its turn ended: it did not finish, and says so."""
    return _ACTION_OUTPUT.get_db_prep_save({"error": f"turn ended ({status}) before the tool finished"}, connection)


_ACTION_OUTPUT = AgentAction._meta.get_field("output")


def _storable_error(error: object) -> dict:
    """The error object of the contract, with values the JSON column can always store."""
    if not isinstance(error, dict):
        error = {"message": error}
    return {
        "code": str(error.get("code", "server_error")),
        "message": str(error.get("message", "")),
        "retryable": bool(error.get("retryable", False)),
    }


def usage_row(message_id: int, thread_id: int, owner_id: int, usage: dict) -> TokenUsage:
    """The (unsaved) TokenUsage row of an answer's usage report."""
    return TokenUsage(
        message_id=message_id,
        thread_id=thread_id,
        user_id=owner_id,
        usage_type=usage.get("usage_type", "turn"),
        model=usage.get("model", ""),
        prompt_tokens=usage.get("prompt_tokens", 0),
        completion_tokens=usage.get("completion_tokens", 0),
        total_tokens=usage.get("total_tokens", 0),
        cost_micros=usage.get("cost_micros", 0),
        estimated=bool(usage.get("estimated", False)),
        model_breakdown=usage.get("model_breakdown", {}),
        call_details=usage.get("call_details", []),
    )


def record_usage_once(message_id: int, thread_id: int, owner_id: int, usage: dict) -> None:
    if not isinstance(usage, dict):
        logger.error("usage of message %s is not a dict, not recorded: %r", message_id, usage)
        return
    if TokenUsage.objects.filter(message_id=message_id).exists():
        return
    try:
        with transaction.atomic():
            usage_row(message_id, thread_id, owner_id, usage).save(force_insert=True)
    except IntegrityError:
        if TokenUsage.objects.filter(message_id=message_id).exists():
            return  # Another finalizer recorded it first; its row stands.
        logger.exception("usage of message %s refused by the database: %r", message_id, usage)
    except (DatabaseError, TypeError, ValueError, OverflowError):
        # Usage that cannot be stored must not keep the turn from ending:
        # the savepoint is rolled back and the message keeps its final status.
        logger.exception("usage of message %s not recorded: %r", message_id, usage)


# --- liveness and cancellation ---------------------------------------------


def touch_turn(message_id: int) -> bool:
    """Refresh a running turn's heartbeat; return True when a cancel was requested for it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE chat_message SET heartbeat_at = %s WHERE id = %s AND status = 'streaming'",
            [db_time(timezone.now()), message_id],
        )
        cursor.execute("SELECT cancel_requested FROM chat_message WHERE id = %s", [message_id])
        row = cursor.fetchone()
    return bool(row and row[0])


def touch_turns(message_ids: list[int]) -> set[int]:
    """touch_turn() for many turns in two statements; the ids of those asked to cancel.

    On PostgreSQL a row locked at that moment is skipped: it is the delta
    writer's, whose append sets the heartbeat too once it is older than
    TURN_HEARTBEAT_SECONDS (_BEATS). Waiting for it instead,
    holding the rows locked before it, deadlocked with the writer, which
    locks its rows in an order of its own (a 1 s stall each time).

    The locked ids are gathered once (`ARRAY(...)`), then updated through
    the primary key. As `id IN (SELECT ... FOR UPDATE SKIP LOCKED)` the
    planner, whose statistics rarely see a streaming row, ran the locking
    subquery again for each streaming message: 50 ms for 626 turns with the
    table otherwise idle, 100-270 ms in a burst, holding the rows the delta
    writer was waiting for.
    """
    marks = ", ".join(["%s"] * len(message_ids))
    if connection.vendor == "postgresql":
        beat = (
            "UPDATE chat_message SET heartbeat_at = %s WHERE id = ANY(ARRAY("
            f"SELECT id FROM chat_message WHERE id IN ({marks}) AND status = 'streaming' FOR UPDATE SKIP LOCKED))"
        )
    else:
        beat = f"UPDATE chat_message SET heartbeat_at = %s WHERE id IN ({marks}) AND status = 'streaming'"
    with connection.cursor() as cursor:
        cursor.execute(beat, [db_time(timezone.now()), *message_ids])
        cursor.execute(f"SELECT id FROM chat_message WHERE id IN ({marks}) AND cancel_requested", message_ids)
        return {row[0] for row in cursor.fetchall()}


def _touch_in_one_hop(calls: list[tuple[tuple, dict]]) -> list[tuple[bool, Any]]:
    """The touch_turn() calls of one hop (chat.hops) as one touch_turns(): every streaming turn beats at once."""
    message_ids = [args[0] if args else kwargs["message_id"] for args, kwargs in calls]
    flagged = touch_turns(message_ids)
    return [(True, message_id in flagged) for message_id in message_ids]


def request_cancel(thread_id: int, turn_id: str | None = None) -> int | None:
    """Flag the thread's streaming assistant message (of `turn_id`, if given) to stop.

    Returns its id, or None when no such turn is running. The flag reaches a
    turn running in any server process through its heartbeat.
    """
    flagged = flag_running(thread_id, turn_id)
    return flagged[0] if flagged is not None else None


def is_streaming(thread_id: int) -> bool:
    """Whether an assistant message of the thread is streaming (a read: nothing is flagged)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM chat_message WHERE thread_id = %s AND role = 'assistant' AND status = 'streaming' LIMIT 1",
            [thread_id],
        )
        return cursor.fetchone() is not None


def flag_running(thread_id: int, turn_id: str | None = None) -> tuple[int, str] | None:
    """request_cancel(), returning the flagged message's id and its runner (the channel of its process)."""
    by_turn = " AND turn_id = %s" if turn_id else ""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, runner FROM chat_message WHERE thread_id = %s AND role = 'assistant'"
            " AND status = 'streaming'" + by_turn + " ORDER BY seq DESC LIMIT 1",
            [thread_id, turn_id] if turn_id else [thread_id],
        )
        row = cursor.fetchone()
        if row is None:
            return None
        cursor.execute("UPDATE chat_message SET cancel_requested = %s WHERE id = %s", [True, row[0]])
    return row[0], row[1]


def stale_turns(stale_after: float) -> list[int]:
    """Ids of streaming messages whose heartbeat is older than `stale_after` seconds."""
    cutoff = timezone.now() - timedelta(seconds=stale_after)
    return list(
        Message.objects.filter(status=Message.Status.STREAMING, heartbeat_at__lt=cutoff).values_list("pk", flat=True)
    )


def turn_summary(message_id: int) -> dict[str, Any] | None:
    """id, thread_id, turn_id, status and content_length of a message."""
    fields = ("id", "thread_id", "turn_id", "status", "content_length")
    row = Message.objects.filter(pk=message_id).values(*fields).first()
    return dict(row) if row is not None else None


# Async twins. The writes are idempotent (keyed by turn_id, call_id, offset
# or state), so the retried ones ride out a database restart (chat.retry).
apersist_user_turn = aretrying(persist_user_turn)
astore_user_message = aretrying(store_user_message, shared_commit=True)
aopen_answer = aretrying(open_answer, shared_commit=True)
apersist_assistant_shell = aretrying(persist_assistant_shell)
aappend_content = aretrying(append_content)
# The delta writer's commits have a thread and connection of their own: a
# stream's next delta never waits behind other turns' starts and reads.
APPEND_THREAD = own_thread("delta-append")
aappend_contents = aretrying(append_contents, thread=APPEND_THREAD)
astart_action = aretrying(start_action)
afinish_action = aretrying(finish_action)
atouch_turn = hop(touch_turn, batch=_touch_in_one_hop)

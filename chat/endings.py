"""The end of answers: turns.close_assistant_turn for every turn of a database hop at once, and its async twin.

Streams started together end together: a burst of K answers ended in K
transactions of ten statements each (and, on PostgreSQL, K commits waiting
for the disk). `close_assistant_turns` ends the turns of one hop in one
transaction and a few statements, each with the outcome
close_assistant_turn would have given it; when it fails as a whole, the
hop runs each call alone (chat.hops).
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from . import turns
from .hops import in_savepoint
from .models import AgentAction, Message, TokenUsage
from .retry import aretrying

logger = logging.getLogger(__name__)


def close_assistant_turns(calls: list[tuple[tuple, dict]]) -> list[tuple[bool, Any]]:
    """close_assistant_turn() of each call, (True, result) or (False, exception), in one transaction.

    Each message row is locked first (turns.message_lock: not its thread's),
    in the order of its thread and then of its id. A message asked for twice ends with
    the first call, and the second one, after it, answers as a second call
    would.
    """
    outcomes: list[tuple[bool, Any] | None] = [None] * len(calls)
    ending: dict[int, tuple[int, str, dict | None, dict | None]] = {}  # message id: (call, status, usage, error)
    again: list[int] = []
    for i, (args, kwargs) in enumerate(calls):
        message_id, status, usage, error = _arguments(*args, **kwargs)
        if status not in turns.FINAL_STATUSES:
            outcomes[i] = (False, ValueError(f"invalid final status {status!r}"))
        elif message_id in ending:
            again.append(i)
        else:
            ending[message_id] = (i, status, usage, error)
    with transaction.atomic(), connection.cursor() as cursor:
        rows = _locked_rows(cursor, list(ending))
        closing = [m for m, row in rows.items() if row[0] == Message.Status.STREAMING]
        lengths = _close_messages(cursor, {m: (rows[m], *ending[m][1:]) for m in closing})
        _record_usages({m: (rows[m], ending[m][2]) for m in rows if ending[m][2]})
    for message_id, (i, status, _, _) in ending.items():
        row = rows.get(message_id)
        if row is None:
            logger.warning("finalize_assistant_turn: no assistant message %s", message_id)
            outcomes[i] = (True, None)
        elif message_id in lengths:
            outcomes[i] = (True, turns.Finalized(status, True, lengths[message_id]))
        else:
            outcomes[i] = (True, turns.Finalized(row[0], False, row[2]))
    for i in again:
        outcomes[i] = in_savepoint(turns.close_assistant_turn, *calls[i][0], **calls[i][1])
    return [outcome for outcome in outcomes if outcome is not None]


def _arguments(
    message_id: int, status: str, usage: dict | None = None, error: dict | None = None
) -> tuple[int, str, dict | None, dict | None]:
    return message_id, status, usage, error


def _locked_rows(cursor: Any, message_ids: list[int]) -> dict[int, tuple]:
    """Lock the assistant messages of `message_ids`: id -> (status, content, length, metadata, thread, owner)."""
    if not message_ids:
        return {}
    cursor.execute(
        "SELECT m.id, m.status, m.content, m.content_length, m.metadata, m.thread_id, t.owner_id"
        " FROM chat_message m JOIN chat_thread t ON t.id = m.thread_id"
        f" WHERE m.id IN ({', '.join(['%s'] * len(message_ids))}) AND m.role = 'assistant'"
        " ORDER BY m.thread_id, m.id" + turns.message_lock(),
        message_ids,
    )
    return {row[0]: row[1:] for row in cursor.fetchall()}


def _close_messages(cursor: Any, closing: dict[int, tuple[tuple, str, dict | None, dict | None]]) -> dict[int, int]:
    """turns._close_message for each (row, status, usage, error) of `closing`, in four statements; id -> length."""
    if not closing:
        return {}
    marks = ", ".join(["%s"] * len(closing))
    ids = list(closing)
    cursor.execute(f"SELECT message_id, text FROM chat_messagechunk WHERE message_id IN ({marks}) ORDER BY start", ids)
    pieces: dict[int, list[str]] = {m: [] for m in ids}
    for message_id, text in cursor.fetchall():
        pieces[message_id].append(text)
    cursor.execute(f"DELETE FROM chat_messagechunk WHERE message_id IN ({marks})", ids)
    now = turns.db_time(timezone.now())
    lengths, updates = {}, []
    for message_id, (row, status, _, error) in closing.items():
        text, metadata = turns.closed_values(row[1], pieces[message_id], row[3], status, error)
        lengths[message_id] = len(text)
        updates.append([text, len(text), status, metadata, now, message_id])
    cursor.executemany(
        "UPDATE chat_message SET content = %s, content_length = %s, status = %s, metadata = %s, updated_at = %s"
        " WHERE id = %s",
        updates,
    )
    cursor.execute(
        f"SELECT DISTINCT message_id FROM chat_agentaction WHERE message_id IN ({marks}) AND status = %s",
        [*ids, AgentAction.Status.PENDING],
    )
    running = [row[0] for row in cursor.fetchall()]
    for message_id in running:  # a tool still running when its turn ended (rare): it did not finish
        status = closing[message_id][1]
        cursor.execute(
            "UPDATE chat_agentaction SET status = %s, output = %s, finished_at = %s"
            " WHERE message_id = %s AND status = %s",
            [AgentAction.Status.ERROR, turns.ended_action_output(status), now, message_id, AgentAction.Status.PENDING],
        )
    return lengths


def _record_usages(reports: dict[int, tuple[tuple, Any]]) -> None:
    """turns.record_usage_once for each message's (row, usage): the new ones in one insert, else one at a time."""
    if not reports:
        return
    recorded = set(TokenUsage.objects.filter(message_id__in=list(reports)).values_list("message_id", flat=True))
    new = {m: report for m, report in reports.items() if m not in recorded and isinstance(report[1], dict)}
    try:
        with transaction.atomic():
            TokenUsage.objects.bulk_create(
                [turns.usage_row(m, row[4], row[5], usage) for m, (row, usage) in new.items()]
            )
    except (DatabaseError, TypeError, ValueError, OverflowError):
        for message_id, (row, usage) in reports.items():  # each on its own, as a single finalize stores it
            turns.record_usage_once(message_id, row[4], row[5], usage)
        return
    for message_id, (row, usage) in reports.items():
        if not isinstance(usage, dict):
            turns.record_usage_once(message_id, row[4], row[5], usage)  # logs why it is not recorded


# A turn that gave up on its appends still ends with its text once the
# database is back: its finalize waits as long as the sweeper would.
_aclose_assistant_turn = aretrying(turns.close_assistant_turn, window="TURN_STALE_SECONDS", batch=close_assistant_turns)


async def afinalize_assistant_turn(
    message_id: int, status: str, usage: dict | None = None, error: dict | None = None
) -> turns.Finalized | None:
    """See turns.finalize_assistant_turn(); retried through a database outage, then logged and None."""
    try:
        return await _aclose_assistant_turn(message_id, status, usage, error)
    except Exception:
        logger.exception("finalize_assistant_turn failed: message=%s status=%s", message_id, status)
        return None

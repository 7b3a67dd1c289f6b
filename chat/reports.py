"""Reads for the staff pages of the admin: running turns, bounded message lists and token usage over time.

Queries only; every write of a turn row stays in chat.turns. Each read here
is bounded by what the page shows, never by how many rows are stored: texts
are cut in SQL (the tail of a running answer, the head of a list preview),
lists are read through the indexes named in chat.models.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.db import connection
from django.db.models import Count, OuterRef, Prefetch, QuerySet, Subquery, Sum, Value
from django.db.models.expressions import RawSQL
from django.db.models.functions import Greatest, Length, Substr, TruncDate
from django.utils import timezone

from .models import AgentAction, Message, MessageChunk, Thread, TokenUsage
from .selectors import action_dict, usage_dict

# How long a finished turn stays on the Live turns page, so staff see how it ended.
RECENT_SECONDS = 120
# At most this many finished turns are listed (the newest), however busy the system.
RECENT_LIMIT = 100
# Code points of an answer sent to the Live turns page (its end, where it grows).
LIVE_TEXT_LIMIT = 2000
# Code points of the question shown above a live answer.
QUESTION_CHARS = 300
# Code points of a message shown in a list (the admin's message list, the thread's inline).
PREVIEW_CHARS = 80

# The last pieces of a streaming message that hold its final LIVE_TEXT_LIMIT
# code points, joined in order: from the last piece starting at or before
# that point, through an index range on (message_id, start). The piece
# bound is evaluated once per message (an InitPlan on PostgreSQL), so the
# cost follows the tail, not the message's length. SQLite before 3.44 has no
# ORDER BY inside an aggregate: it joins the rows of an ordered subquery,
# which SQLite does not flatten into an aggregate (its rule 16).
_LOW_SQL = (
    "COALESCE((SELECT MAX(b.start) FROM chat_messagechunk b"
    " WHERE b.message_id = chat_message.id AND b.start <= chat_message.content_length - %s), 0)"
)
_TAIL_SQL = {
    "postgresql": (
        "(SELECT STRING_AGG(c.text, '' ORDER BY c.start) FROM chat_messagechunk c"
        f" WHERE c.message_id = chat_message.id AND c.start >= {_LOW_SQL})"
    ),
    "sqlite": (
        "(SELECT GROUP_CONCAT(t.text, '') FROM (SELECT c.text FROM chat_messagechunk c"
        f" WHERE c.message_id = chat_message.id AND c.start >= {_LOW_SQL} ORDER BY c.start) t)"
    ),
}


def _chunk_tail(limit: int) -> RawSQL:
    return RawSQL(_TAIL_SQL[connection.vendor], [limit])


def _question() -> Subquery:
    """The start of the user message of the same turn (unique index chat_message_unique_turn_role)."""
    user_message = Message.objects.filter(
        thread_id=OuterRef("thread_id"), turn_id=OuterRef("turn_id"), role=Message.Role.USER
    ).values(text=Substr("content", 1, QUESTION_CHARS))[:1]
    return Subquery(user_message)


def _live_queryset() -> QuerySet[Message]:
    """Assistant messages with what a Live turns card shows, texts cut in SQL; content itself is never read."""
    return (
        Message.objects.select_related("thread__owner")
        .only(
            "id",
            "thread_id",
            "turn_id",
            "status",
            "cancel_requested",
            "metadata",
            "content_length",
            "heartbeat_at",
            "created_at",
            "updated_at",
            "thread__title",
            "thread__owner__username",
        )
        .annotate(
            content_chars=Length("content"),
            content_tail=Substr("content", Greatest(Length("content") - LIVE_TEXT_LIMIT + 1, Value(1))),
            chunk_tail=_chunk_tail(LIVE_TEXT_LIMIT),
            question=_question(),
        )
        .prefetch_related(
            Prefetch("actions", queryset=AgentAction.objects.order_by("id")),
            "usage_records",
        )
    )


def _text_tail(message: Any) -> str:
    """The last LIVE_TEXT_LIMIT code points: the tail of `content`, then the tail of the pieces."""
    text = (message.content_tail or "") + (message.chunk_tail or "")
    return text[-LIVE_TEXT_LIMIT:]


def live_row(message: Any, now: datetime) -> dict:
    """One card of the Live turns page (a message of `_live_queryset`)."""
    text = _text_tail(message)
    running = message.status == Message.Status.STREAMING
    end = now if running else message.updated_at
    usage = next(iter(message.usage_records.all()), None)
    metadata = message.metadata or {}
    length = message.content_length
    words = len(text.split())
    if length > len(text) > 0:
        words = round(words * length / len(text))  # an estimate from the tail
    return {
        "message_id": message.pk,
        "thread_id": message.thread_id,
        "thread_title": message.thread.title,
        "user": message.thread.owner.get_username(),
        "turn_id": message.turn_id,
        "status": message.status,
        "running": running,
        "cancel_requested": message.cancel_requested,
        "agent": metadata.get("agent", ""),
        "model": metadata.get("model", ""),
        "question": message.question or "",
        "started_at": message.created_at.isoformat(),
        "updated_at": message.updated_at.isoformat(),
        "elapsed_seconds": max(0.0, (end - message.created_at).total_seconds()),
        "heartbeat_at": message.heartbeat_at.isoformat() if message.heartbeat_at else None,
        "length": length,
        # Models report tokens only at the end; words show progress meanwhile.
        "words": words,
        "text": text,
        "truncated": length > len(text),
        "actions": [action_dict(a) for a in message.actions.all()],
        "usage": usage_dict(usage),
    }


def live_turns(recent_seconds: float = RECENT_SECONDS, recent_limit: int = RECENT_LIMIT) -> list[dict]:
    """Every running turn across users, oldest first (a stuck one stays on top), then the newest finished ones.

    Finished means in the last `recent_seconds`, at most `recent_limit` of
    them. Two reads, one per index: chat_message_streaming_start and
    chat_message_role_updated.
    """
    now = timezone.now()
    since = now - timedelta(seconds=recent_seconds)
    running = _live_queryset().filter(status=Message.Status.STREAMING).order_by("created_at")
    finished = (
        _live_queryset()
        .filter(role=Message.Role.ASSISTANT, updated_at__gte=since)
        .exclude(status=Message.Status.STREAMING)
        .order_by("-updated_at")[:recent_limit]
    )
    return [live_row(m, now) for m in running] + [live_row(m, now) for m in finished]


def live_turn_rows(message_ids: list[int]) -> list[dict]:
    """The Live turns cards of these assistant messages (for the pushes of agents.livefeed)."""
    if not message_ids:
        return []
    now = timezone.now()
    messages = _live_queryset().filter(pk__in=message_ids, role=Message.Role.ASSISTANT).order_by("created_at")
    return [live_row(m, now) for m in messages]


def turn_of_message(message_id: int) -> tuple[int, str] | None:
    """(thread id, turn id) of an assistant message, for cancelling its turn; None if it is gone."""
    row = Message.objects.filter(pk=message_id, role=Message.Role.ASSISTANT).values_list("thread_id", "turn_id").first()
    return (row[0], row[1]) if row else None


# --- bounded lists -------------------------------------------------------------


def with_previews(messages: QuerySet[Message]) -> QuerySet[Message]:
    """Messages for a list: the first PREVIEW_CHARS code points of their text, cut in SQL, content not read.

    A streaming message's head may lie in its first pieces; only the pieces
    starting before PREVIEW_CHARS are read (index chat_chunk_unique_start).
    """
    head_chunks = MessageChunk.objects.filter(start__lt=PREVIEW_CHARS + 1).order_by("start")
    return (
        messages.defer("content")
        .annotate(head=Substr("content", 1, PREVIEW_CHARS + 1))
        .prefetch_related(Prefetch("chunks", queryset=head_chunks, to_attr="head_chunks"))
    )


def preview(message: Any) -> str:
    """The start of a message of `with_previews`, cut at PREVIEW_CHARS with an ellipsis."""
    text = message.head or ""
    if message.status == Message.Status.STREAMING:
        text += "".join(chunk.text for chunk in message.head_chunks)
    if len(text) > PREVIEW_CHARS or message.content_length > PREVIEW_CHARS:
        return text[: PREVIEW_CHARS - 1].rstrip() + "…"
    return text


def with_message_counts(threads: QuerySet[Thread]) -> QuerySet[Thread]:
    """Threads with `message_count`, counted per listed thread (index chat_message_unique_seq), not grouped over all."""
    count = (
        Message.objects.filter(thread_id=OuterRef("pk"))
        .order_by()
        .values("thread_id")
        .annotate(n=Count("id"))
        .values("n")
    )
    return threads.annotate(message_count=Subquery(count))


def thread_messages(thread_id: int, limit: int) -> QuerySet[Message]:
    """The latest `limit` messages of a thread, newest first, with previews."""
    return with_previews(Message.objects.filter(thread_id=thread_id).order_by("-seq"))[:limit]


def message_count(thread_id: int) -> int:
    return Message.objects.filter(thread_id=thread_id).count()


# --- usage -------------------------------------------------------------------

_SUMS = {
    "turns": Count("id"),
    "prompt_tokens": Sum("prompt_tokens"),
    "completion_tokens": Sum("completion_tokens"),
    "total_tokens": Sum("total_tokens"),
    "cost_micros": Sum("cost_micros"),
}


def _clean(row: Mapping[str, Any]) -> dict:
    """Zeros for the sums of empty groups, and the cost in dollars as text."""
    row = {key: (value if value is not None else 0) for key, value in row.items()}
    if "cost_micros" in row:
        row["cost"] = dollars(row["cost_micros"])
    return row


def dollars(micros: int) -> str:
    return f"{micros / 1_000_000:.6f}".rstrip("0").rstrip(".") if micros else "0"


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def usage_report(start: date, end: date) -> dict:
    """Tokens and cost per day, per model and per user for the days start..end (inclusive, UTC).

    Summed in SQL over a range of index chat_usage_created (a half-open
    range of times, so the index serves it). `days` lists every day of the
    range, zero when nothing was used, so a chart has no holes.
    """
    usage = TokenUsage.objects.filter(
        created_at__gte=_day_start(start), created_at__lt=_day_start(end + timedelta(days=1))
    ).order_by()
    per_day = {
        row["day"]: _clean(row)
        for row in usage.annotate(day=TruncDate("created_at")).values("day").annotate(**_SUMS).order_by("day")
    }
    per_day_model = [
        _clean(row)
        for row in usage.annotate(day=TruncDate("created_at"))
        .values("day", "model")
        .annotate(total_tokens=Sum("total_tokens"), cost_micros=Sum("cost_micros"))
        .order_by("day", "model")
    ]
    per_model = [_clean(row) for row in usage.values("model").annotate(**_SUMS).order_by("-total_tokens", "model")]
    per_user = [
        _clean(row)
        for row in usage.values("user__username").annotate(**_SUMS).order_by("-total_tokens", "user__username")
    ]
    empty = {key: 0 for key in _SUMS}
    days = []
    day = start
    while day <= end:
        days.append(_clean({"day": day, **{key: per_day.get(day, empty)[key] for key in _SUMS}}))
        day += timedelta(days=1)
    totals = _clean({key: sum(row[key] for row in days) for key in _SUMS})
    return {
        "start": start,
        "end": end,
        "days": days,
        "per_day_model": per_day_model,
        "per_model": per_model,
        "per_user": per_user,
        "totals": totals,
    }

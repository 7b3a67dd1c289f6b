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
from .selectors import USAGE_FIELDS, action_dict, usage_dict

# How long a finished turn stays on the Live turns page, so staff see how it ended.
RECENT_SECONDS = 120
# At most this many finished turns are listed (the newest), however busy the system.
RECENT_LIMIT = 100
# Code points of an answer sent to the Live turns page (its end, where it grows).
LIVE_TEXT_LIMIT = 1000
# Code points of the question shown above a live answer.
QUESTION_CHARS = 300
# Code points of a message shown in a list (the admin's message list, the thread's inline).
PREVIEW_CHARS = 80

# The last pieces of a streaming message that hold its final LIVE_TEXT_LIMIT
# code points, joined in order: from the last piece starting at or before
# that point (its bound is evaluated once per message: an InitPlan on
# PostgreSQL), through an index range on (message_id, start), so the cost
# follows the tail, not the message's length. The inner ORDER BY makes both
# databases walk chat_chunk_unique_start; SQLite before 3.44 has no ORDER BY
# inside an aggregate and joins the rows of that ordered subquery, which it
# does not flatten into an aggregate (its rule 16).
_PIECES_SQL = (
    "SELECT c.start, c.text FROM chat_messagechunk c WHERE c.message_id = chat_message.id AND c.start >= "
    "COALESCE((SELECT MAX(b.start) FROM chat_messagechunk b"
    " WHERE b.message_id = chat_message.id AND b.start <= chat_message.content_length - %s), 0)"
    " ORDER BY c.start"
)
_TAIL_SQL = {
    "postgresql": f"(SELECT STRING_AGG(t.text, '' ORDER BY t.start) FROM ({_PIECES_SQL}) t)",
    "sqlite": f"(SELECT GROUP_CONCAT(t.text, '') FROM ({_PIECES_SQL}) t)",
}


def _chunk_tail(limit: int) -> RawSQL:
    return RawSQL(_TAIL_SQL[connection.vendor], [limit])


def _question() -> Subquery:
    """The start of the user message of the same turn (unique index chat_message_unique_turn_role)."""
    # `turn_id <> ''` is the index's own condition: without it the planner may not use it.
    user_message = (
        Message.objects.filter(thread_id=OuterRef("thread_id"), turn_id=OuterRef("turn_id"), role=Message.Role.USER)
        .exclude(turn_id="")
        .order_by()
        .values(text=Substr("content", 1, QUESTION_CHARS))[:1]
    )
    return Subquery(user_message)


_LIVE_FIELDS = (
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


def _live_rows() -> QuerySet[Message, dict[str, Any]]:
    """Assistant messages as what a Live turns card shows, texts cut in SQL; `content` itself is never read.

    Plain rows (`values`), not model instances: at a thousand running turns
    building instances and their related managers cost more than the SQL.
    """
    return Message.objects.values(*_LIVE_FIELDS).annotate(
        content_tail=Substr("content", Greatest(Length("content") - LIVE_TEXT_LIMIT + 1, Value(1))),
        chunk_tail=_chunk_tail(LIVE_TEXT_LIMIT),
        question=_question(),
    )


def _cards(rows: list[dict[str, Any]], now: datetime) -> list[dict]:
    """Cards of these rows, with their tool calls and (finished messages only have any) usage in one query each.

    By lists of ids, so each is a lookup in the message's index whatever the
    tables hold.
    """
    ids = [row["id"] for row in rows]
    finished = [row["id"] for row in rows if row["status"] != Message.Status.STREAMING]
    actions: dict[int, list[dict]] = {}
    usage: dict[int, dict] = {}
    if ids:
        for action in AgentAction.objects.filter(message_id__in=ids).order_by("message_id", "id"):
            actions.setdefault(action.message_id, []).append(action_dict(action))
    if finished:
        for record in TokenUsage.objects.filter(message_id__in=finished).values("message_id", *USAGE_FIELDS):
            usage[record.pop("message_id")] = record
    return [live_row(row, actions.get(row["id"], []), usage.get(row["id"]), now) for row in rows]


def live_row(row: dict[str, Any], actions: list[dict], usage: dict | None, now: datetime) -> dict:
    """One card of the Live turns page, from a row of `_live_rows`."""
    text = ((row["content_tail"] or "") + (row["chunk_tail"] or ""))[-LIVE_TEXT_LIMIT:]
    running = row["status"] == Message.Status.STREAMING
    end = now if running else row["updated_at"]
    metadata = row["metadata"] if isinstance(row["metadata"], dict) else {}
    length = row["content_length"]
    words = len(text.split())
    if length > len(text) > 0:
        words = round(words * length / len(text))  # an estimate from the tail
    return {
        "message_id": row["id"],
        "thread_id": row["thread_id"],
        "thread_title": row["thread__title"],
        "user": row["thread__owner__username"],
        "turn_id": row["turn_id"],
        "status": row["status"],
        "running": running,
        "cancel_requested": row["cancel_requested"],
        "agent": metadata.get("agent", ""),
        "model": metadata.get("model", ""),
        "question": row["question"] or "",
        "started_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
        "elapsed_seconds": max(0.0, (end - row["created_at"]).total_seconds()),
        "heartbeat_at": row["heartbeat_at"].isoformat() if row["heartbeat_at"] else None,
        "length": length,
        # Models report tokens only at the end; words show progress meanwhile.
        "words": words,
        "text": text,
        "truncated": length > len(text),
        "actions": actions,
        "usage": usage_dict(usage),
    }


def live_turns(recent_seconds: float = RECENT_SECONDS, recent_limit: int = RECENT_LIMIT) -> list[dict]:
    """Every running turn across users, oldest first (a stuck one stays on top), then the newest finished ones.

    Finished means in the last `recent_seconds`, at most `recent_limit` of
    them. Four queries: running turns (index chat_message_streaming_start),
    finished ones (chat_message_role_updated), then their tool calls and the
    finished ones' usage.
    """
    now = timezone.now()
    since = now - timedelta(seconds=recent_seconds)
    running = list(_live_rows().filter(status=Message.Status.STREAMING).order_by("created_at"))
    finished = list(
        _live_rows()
        .filter(role=Message.Role.ASSISTANT, updated_at__gte=since)
        .exclude(status=Message.Status.STREAMING)
        .order_by("-updated_at")[:recent_limit]
    )
    return _cards(running + finished, now)


def live_turn_rows(message_ids: list[int]) -> list[dict]:
    """The Live turns cards of these assistant messages (for the pushes of agents.livefeed)."""
    if not message_ids:
        return []
    rows = _live_rows().filter(pk__in=message_ids, role=Message.Role.ASSISTANT).order_by("created_at")
    return _cards(list(rows), timezone.now())


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

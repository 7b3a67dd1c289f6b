"""Reads for the staff pages of the admin: running turns and token usage over time.

Queries only; every write of a turn row stays in chat.turns.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

from django.db.models import Count, Prefetch, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from .models import AgentAction, Message, MessageChunk, TokenUsage
from .selectors import action_dict, message_text, usage_dict

# How long a finished turn stays on the Live turns page, so staff see how it ended.
RECENT_SECONDS = 120
# Code points of an answer sent to the Live turns page (its end, where it grows).
LIVE_TEXT_LIMIT = 6000


def live_turns(recent_seconds: float = RECENT_SECONDS) -> list[dict]:
    """Every streaming assistant message across users, then those finished in the last `recent_seconds`.

    Oldest running first, so a stuck turn stays at the top.
    """
    now = timezone.now()
    since = now - timedelta(seconds=recent_seconds)
    queryset = (
        Message.objects.filter(role=Message.Role.ASSISTANT)
        .filter(Q(status=Message.Status.STREAMING) | Q(updated_at__gte=since))
        .select_related("thread", "thread__owner")
        .prefetch_related(
            Prefetch("chunks", queryset=MessageChunk.objects.order_by("start")),
            Prefetch("actions", queryset=AgentAction.objects.order_by("id")),
            "usage_records",
        )
        .order_by("created_at")
    )
    messages = list(queryset)
    questions = _questions(messages)
    rows: list[dict[str, Any]] = []
    for message in messages:
        text = message_text(message)
        running = message.status == Message.Status.STREAMING
        end = now if running else message.updated_at
        usage = next(iter(message.usage_records.all()), None)
        rows.append(
            {
                "message_id": message.pk,
                "thread_id": message.thread_id,
                "thread_title": message.thread.title,
                "user": message.thread.owner.get_username(),
                "turn_id": message.turn_id,
                "status": message.status,
                "running": running,
                "cancel_requested": message.cancel_requested,
                "agent": (message.metadata or {}).get("agent", ""),
                "model": (message.metadata or {}).get("model", ""),
                "question": questions.get((message.thread_id, message.turn_id), ""),
                "started_at": message.created_at.isoformat(),
                "elapsed_seconds": max(0.0, (end - message.created_at).total_seconds()),
                "heartbeat_at": message.heartbeat_at.isoformat() if message.heartbeat_at else None,
                "length": len(text),
                # Models report tokens only at the end; words show progress meanwhile.
                "words": len(text.split()),
                "text": text[-LIVE_TEXT_LIMIT:],
                "truncated": len(text) > LIVE_TEXT_LIMIT,
                "actions": [action_dict(a) for a in message.actions.all()],
                "usage": usage_dict(usage),
            }
        )
    live = [row for row in rows if row["running"]]
    finished = sorted((row for row in rows if not row["running"]), key=lambda row: row["started_at"], reverse=True)
    return live + finished


def _questions(messages: list[Message]) -> dict[tuple[int, str], str]:
    """The user message of each turn, by (thread id, turn id)."""
    keys = {(m.thread_id, m.turn_id) for m in messages if m.turn_id}
    if not keys:
        return {}
    query = Q()
    for thread_id, turn_id in keys:
        query |= Q(thread_id=thread_id, turn_id=turn_id)
    rows = Message.objects.filter(query, role=Message.Role.USER).values_list("thread_id", "turn_id", "content")
    return {(thread_id, turn_id): content for thread_id, turn_id, content in rows}


def turn_of_message(message_id: int) -> tuple[int, str] | None:
    """(thread id, turn id) of an assistant message, for cancelling its turn; None if it is gone."""
    row = Message.objects.filter(pk=message_id, role=Message.Role.ASSISTANT).values_list("thread_id", "turn_id").first()
    return (row[0], row[1]) if row else None


# --- usage -------------------------------------------------------------------

_SUMS = {
    "turns": Count("id"),
    "prompt_tokens": Sum("prompt_tokens"),
    "completion_tokens": Sum("completion_tokens"),
    "total_tokens": Sum("total_tokens"),
    "cost_micros": Sum("cost_micros"),
}


def _clean(row: Mapping[str, Any]) -> dict[str, Any]:
    """Zeros for the sums of empty groups, and the cost in dollars as text."""
    clean = {key: (value if value is not None else 0) for key, value in row.items()}
    if "cost_micros" in clean:
        clean["cost"] = dollars(clean["cost_micros"])
    return clean


def dollars(micros: int) -> str:
    return f"{micros / 1_000_000:.6f}".rstrip("0").rstrip(".") if micros else "0"


def usage_report(start: date, end: date) -> dict:
    """Tokens and cost per day, per model and per user for the days start..end (inclusive, UTC).

    `days` lists every day of the range, zero when nothing was used, so a chart has no holes.
    """
    usage = TokenUsage.objects.filter(created_at__date__gte=start, created_at__date__lte=end)
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

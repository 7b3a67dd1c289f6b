"""Reads of threads and messages in the JSON shapes of docs/protocol.md.

Every read of a streaming message assembles its text from `content` and its
pieces (see MessageChunk), so the API, the snapshot and the admin all see the
full text committed so far.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

from django.contrib.auth.models import AnonymousUser, User
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Prefetch, QuerySet
from django.utils import timezone

from .models import AgentAction, Message, MessageChunk, Thread, TokenUsage

SNAPSHOT_MESSAGES = 50


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def thread_dict(thread: Thread) -> dict:
    return {
        "id": thread.pk,
        "title": thread.title,
        "created_at": _iso(thread.created_at),
        "updated_at": _iso(thread.updated_at),
    }


def duration_ms(action: AgentAction) -> int | None:
    """How long a tool call ran, in milliseconds; None while it runs."""
    if not (action.finished_at and action.started_at):
        return None
    return int((action.finished_at - action.started_at).total_seconds() * 1000)


def action_dict(action: AgentAction) -> dict:
    return {
        "id": action.pk,
        "call_id": action.call_id,
        "tool": action.tool,
        "input": action.input,
        "output": action.output,
        "status": action.status,
        "position": action.position,
        "duration_ms": duration_ms(action),
        "started_at": _iso(action.started_at),
        "finished_at": _iso(action.finished_at),
    }


USAGE_FIELDS = ("model", "prompt_tokens", "completion_tokens", "total_tokens", "cost_micros")


def usage_dict(usage: TokenUsage | dict | None) -> dict | None:
    """The contract's usage object from a TokenUsage row or a usage dict; None stays None."""
    if not usage:
        return None
    if isinstance(usage, dict):
        return {key: usage[key] for key in USAGE_FIELDS}
    return {key: getattr(usage, key) for key in USAGE_FIELDS}


def message_text(message: Message) -> str:
    """The full text of a message: content plus any streaming pieces (uses prefetched chunks).

    The row and its pieces come from two queries, and under READ COMMITTED a
    finalize can commit between them: the pieces are then gone, folded into
    the row's content. Appends only add pieces, so text shorter than the
    row's `content_length` means exactly that, and the row is read again.
    """
    if message.status != Message.Status.STREAMING:
        return message.content
    text = message.content + "".join(chunk.text for chunk in message.chunks.all())
    if len(text) < message.content_length:
        final = Message.objects.filter(pk=message.pk).values_list("content", flat=True).first()
        return text if final is None else final
    return text


def message_dict(message: Message) -> dict:
    """A message object of the contract; expects `_message_queryset`'s prefetches."""
    usage = message.usage_records.all()
    return {
        "id": message.pk,
        "seq": message.seq,
        "role": message.role,
        "turn_id": message.turn_id,
        "status": message.status,
        "content": message_text(message),
        "metadata": message.metadata,
        "actions": [action_dict(a) for a in message.actions.all()],
        "usage": usage_dict(usage[0]) if usage else None,
        "created_at": _iso(message.created_at),
        "updated_at": _iso(message.updated_at),
    }


def _message_queryset() -> QuerySet[Message]:
    return Message.objects.prefetch_related(
        Prefetch("actions", queryset=AgentAction.objects.order_by("id")),
        Prefetch("chunks", queryset=MessageChunk.objects.order_by("start")),
        "usage_records",
    )


def own_thread(user: User | AnonymousUser, thread_id: int) -> Thread | None:
    """The thread if it exists and belongs to `user`; None otherwise (the caller answers 404)."""
    if not isinstance(user, User) or not user.is_authenticated:
        return None
    return Thread.objects.filter(pk=thread_id, owner=user).first()


def list_threads(user: User) -> list[dict]:
    return [thread_dict(t) for t in Thread.objects.filter(owner=user).order_by("-updated_at", "-id")]


def thread_detail(thread: Thread) -> dict:
    """The thread with every message in seq order, read in one transaction."""
    with transaction.atomic():
        messages = list(_message_queryset().filter(thread=thread).order_by("seq"))
    return {**thread_dict(thread), "messages": [message_dict(m) for m in messages]}


def thread_snapshot(thread_id: int, limit: int = SNAPSHOT_MESSAGES) -> dict:
    """The `snapshot` frame: the latest messages and the running turn, read in one transaction."""
    with transaction.atomic():
        messages = list(_message_queryset().filter(thread_id=thread_id).order_by("-seq")[:limit])
        active = (
            Message.objects.filter(thread_id=thread_id, role=Message.Role.ASSISTANT, status=Message.Status.STREAMING)
            .order_by("-seq")
            .values("pk", "turn_id")
            .first()
        )
    messages.reverse()
    return {
        "type": "snapshot",
        "thread_id": thread_id,
        "messages": [message_dict(m) for m in messages],
        "active_turn": {"turn_id": active["turn_id"], "message_id": active["pk"]} if active else None,
    }


def message_tail(message_id: int, start: int) -> tuple[str, str] | None:
    """The text of a message from code point `start` on, and its status; None if it is gone."""
    with transaction.atomic():
        message = _message_queryset().filter(pk=message_id).first()
        if message is None:
            return None
        return message_text(message)[start:], message.status


def has_live_turn(thread_id: int, beat_within: float) -> bool:
    """Whether a streaming assistant message of the thread has a heartbeat newer than `beat_within` seconds."""
    since = timezone.now() - timedelta(seconds=beat_within)
    return Message.objects.filter(
        thread_id=thread_id, role=Message.Role.ASSISTANT, status=Message.Status.STREAMING, heartbeat_at__gte=since
    ).exists()


def turn_user_message(thread_id: int, turn_id: str) -> dict | None:
    """The stored user message of a turn, or None when the turn_id is new in the thread."""
    message = _message_queryset().filter(thread_id=thread_id, turn_id=turn_id, role=Message.Role.USER).first()
    return message_dict(message) if message else None


def user_message_dict(message_id: int) -> dict | None:
    message = _message_queryset().filter(pk=message_id).first()
    return message_dict(message) if message else None


def turn_runner(message_id: int) -> str:
    """The channel of the process running this message's turn ("" when unknown)."""
    return Message.objects.filter(pk=message_id).values_list("runner", flat=True).first() or ""


def content_length(message_id: int) -> int:
    return Message.objects.filter(pk=message_id).values_list("content_length", flat=True).first() or 0


HISTORY_MESSAGES = 200


def history_entries(thread_id: int, before_message_id: int, limit: int = HISTORY_MESSAGES) -> list[dict]:
    """The latest earlier messages of the thread, oldest first, for a model's history: role, content, actions."""
    before = Message.objects.filter(pk=before_message_id).values_list("seq", flat=True).first()
    messages = _message_queryset().filter(thread_id=thread_id)
    if before is not None:
        messages = messages.filter(seq__lt=before)
    latest = list(messages.order_by("-seq")[:limit])
    latest.reverse()
    return [
        {
            "role": m.role,
            "content": message_text(m),
            "actions": [
                {"call_id": a.call_id, "tool": a.tool, "input": a.input, "output": a.output, "status": a.status}
                for a in m.actions.all()
            ],
        }
        for m in latest
    ]


def live_turns_elsewhere(owner_id: int, thread_id: int, beat_within: float) -> int:
    """How many turns of the owner's other threads are running (heartbeat newer than `beat_within` seconds).

    The thread's own running turn is not counted: a new message cancels it.
    """
    since = timezone.now() - timedelta(seconds=beat_within)
    return (
        Message.objects.filter(
            thread__owner_id=owner_id,
            role=Message.Role.ASSISTANT,
            status=Message.Status.STREAMING,
            heartbeat_at__gte=since,
        )
        .exclude(thread_id=thread_id)
        .count()
    )


def database_answers() -> bool:
    """Run `SELECT 1` (the health check): raises when the database is unreachable."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        return cursor.fetchone() == (1,)


class UnstartedTurn(NamedTuple):
    thread_id: int
    turn_id: str
    age: float  # seconds since the user message was stored
    latest: bool  # no newer user message in its thread


def unstarted_turns(older_than: float, newer_than: float) -> list[UnstartedTurn]:
    """User messages stored between `newer_than` and `older_than` seconds ago whose turn has no assistant message.

    Served by chat_message_user_created (created_at of user messages).
    """
    now = timezone.now()
    answered = Message.objects.filter(
        thread_id=OuterRef("thread_id"), turn_id=OuterRef("turn_id"), role=Message.Role.ASSISTANT
    )
    newer = Message.objects.filter(thread_id=OuterRef("thread_id"), role=Message.Role.USER, seq__gt=OuterRef("seq"))
    rows = (
        Message.objects.filter(
            role=Message.Role.USER,
            created_at__lte=now - timedelta(seconds=older_than),
            created_at__gte=now - timedelta(seconds=newer_than),
        )
        .exclude(turn_id="")
        .filter(~Exists(answered))
        .annotate(superseded=Exists(newer))
        .values_list("thread_id", "turn_id", "created_at", "superseded")
    )
    return [UnstartedTurn(t, turn, (now - at).total_seconds(), not sup) for t, turn, at, sup in rows]

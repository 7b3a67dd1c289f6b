"""Writes of threads themselves: create, change, switch the active path, import, delete; with the per-user
thread cap and the title length.

`import_thread` is the one writer of messages besides chat.turns: it copies a
checked export into a new thread in one transaction.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import transaction

from .exports import Export
from .models import AgentAction, Message, Thread, TokenUsage
from .selectors import Tree

MAX_SYSTEM_PROMPT = 8000
USAGE_COUNTS = {"model", "prompt_tokens", "completion_tokens", "total_tokens", "cost_micros"}


class ThreadRefused(Exception):
    """A thread write the server will not make: the API's error code and a message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_title(title: str) -> str:
    """The title, trimmed; ThreadRefused("invalid_title") when longer than CHAT_MAX_TITLE_CHARS."""
    if len(title) > settings.CHAT_MAX_TITLE_CHARS:
        raise ThreadRefused(
            "invalid_title", f"title must be text of at most {settings.CHAT_MAX_TITLE_CHARS} characters."
        )
    return title.strip()


def create_thread(owner: User, title: str = "", agent_id: int | None = None, system_prompt: str = "") -> Thread:
    """A new thread of `owner`; ThreadRefused("too_many_threads") past CHAT_MAX_THREADS_PER_USER.

    The owner's row is locked while counting, so concurrent creates cannot pass the cap together.
    """
    title = check_title(title)
    with transaction.atomic():
        get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
        if Thread.objects.filter(owner=owner).count() >= settings.CHAT_MAX_THREADS_PER_USER:
            raise ThreadRefused(
                "too_many_threads",
                f"A user may keep at most {settings.CHAT_MAX_THREADS_PER_USER} threads; delete some.",
            )
        return Thread.objects.create(
            owner=owner, title=title, agent_id=agent_id, system_prompt=system_prompt[:MAX_SYSTEM_PROMPT]
        )


def update_thread(thread: Thread, **fields: Any) -> Thread:
    """Change the named fields among title, agent_id and system_prompt; the others stay as they were."""
    if "title" in fields:
        fields["title"] = check_title(fields["title"])
    if "system_prompt" in fields:
        fields["system_prompt"] = fields["system_prompt"][:MAX_SYSTEM_PROMPT]
    unknown = set(fields) - {"title", "agent_id", "system_prompt"}
    if unknown:
        raise ValueError(f"not a thread field: {', '.join(sorted(unknown))}")
    for name, value in fields.items():
        setattr(thread, name, value)
    thread.save(update_fields=[*fields, "updated_at"])
    return thread


def switch_version(thread_id: int, message_id: int) -> int | None:
    """Make the active path run through `message_id`, then down its newest versions; return the new leaf.

    None when the message is not in the thread (nothing changes). The thread
    row is locked first, so a message inserted meanwhile (which also locks
    it to take its seq) is either seen here or comes after the switch.
    """
    with transaction.atomic():
        if not Thread.objects.select_for_update().filter(pk=thread_id).exists():
            return None
        tree = Tree(thread_id)
        if message_id not in tree.parents:
            return None
        leaf = tree.newest_leaf_below(message_id)
        Thread.objects.filter(pk=thread_id).update(active_leaf_id=leaf)
    return leaf


def import_thread(owner: Any, export: Export, agent_id: int | None) -> Thread:
    """A new thread of `owner` holding a checked export: new ids, seq in the export's order, same tree and times.

    A message still streaming in the export is stored `interrupted`. The
    active path ends at the newest leaf. All or nothing: one transaction.
    """
    with transaction.atomic():
        thread = create_thread(owner, export.thread.title, agent_id, export.thread.system_prompt)
        new_ids: dict[int, int] = {}
        for seq, item in enumerate(export.messages, start=1):
            new_ids[item.id] = _import_message(
                thread, seq, item, None if item.parent_id is None else new_ids[item.parent_id]
            )
        parents = {item.parent_id for item in export.messages}
        leaves = [new_ids[item.id] for item in export.messages if item.id not in parents]
        times = {"created_at": export.thread.created_at, "updated_at": export.thread.updated_at}
        Thread.objects.filter(pk=thread.pk).update(
            last_seq=len(export.messages),
            active_leaf_id=leaves[-1] if leaves else None,
            **{name: value for name, value in times.items() if value is not None},
        )
        thread.refresh_from_db()
    return thread


def _import_message(thread: Thread, seq: int, item: Any, parent_id: int | None) -> int:
    status = Message.Status.INTERRUPTED if item.status == Message.Status.STREAMING else item.status
    metadata = dict(item.metadata)
    metadata.update(
        streaming=False,
        cancelled=status == Message.Status.CANCELLED,
        has_error=status in (Message.Status.FAILED, Message.Status.INTERRUPTED),
    )
    message = Message.objects.create(
        thread=thread,
        role=item.role,
        seq=seq,
        parent_id=parent_id,
        content=item.content,
        content_length=len(item.content),
        status=status,
        metadata=metadata,
    )
    times = {"created_at": item.created_at, "updated_at": item.updated_at}
    if any(times.values()):
        Message.objects.filter(pk=message.pk).update(**{k: v for k, v in times.items() if v is not None})
    for action in item.actions:
        row = AgentAction.objects.create(
            message=message,
            call_id=action.call_id,
            tool=action.tool,
            input=action.input,
            output=action.output,
            status=action.status,
            position=action.position,
            finished_at=action.finished_at,
        )
        if action.started_at is not None:
            AgentAction.objects.filter(pk=row.pk).update(started_at=action.started_at)
    if item.usage is not None and item.role == Message.Role.ASSISTANT:
        TokenUsage.objects.create(
            message=message,
            thread=thread,
            user=thread.owner,
            usage_type="import",
            estimated=item.usage.estimated,
            **item.usage.model_dump(
                include={"model", "prompt_tokens", "completion_tokens", "total_tokens", "cost_micros"}
            ),
        )
    return message.pk


def delete_thread(thread: Thread) -> None:
    """Delete the thread with its messages, actions and pieces (usage rows are kept, detached).

    Its streaming messages are locked first: an append still in flight
    either committed its pieces before (and they are deleted here) or finds
    its message gone and stores nothing (`chat_messagechunk` has no
    foreign key in the database to refuse an orphan piece; see MessageChunk).
    """
    with transaction.atomic():
        streaming = Message.objects.select_for_update().filter(thread=thread, status=Message.Status.STREAMING)
        list(streaming.values_list("pk", flat=True))
        thread.delete()

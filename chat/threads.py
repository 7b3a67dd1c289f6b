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

from .models import Thread
from .selectors import Tree

MAX_SYSTEM_PROMPT = 8000


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


def delete_thread(thread: Thread) -> None:
    """Delete the thread with its messages, actions and pieces (usage rows are kept, detached)."""
    thread.delete()

"""Writes of threads themselves: create, rename, delete; with the per-user thread cap and the title length."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import transaction

from .models import Thread


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


def create_thread(owner: User, title: str = "") -> Thread:
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
        return Thread.objects.create(owner=owner, title=title)


def rename_thread(thread: Thread, title: str) -> Thread:
    thread.title = check_title(title)
    thread.save(update_fields=["title", "updated_at"])
    return thread


def delete_thread(thread: Thread) -> None:
    """Delete the thread with its messages, actions and pieces (usage rows are kept, detached)."""
    thread.delete()

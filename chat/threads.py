"""Writes of threads themselves: create, rename, delete."""

from __future__ import annotations

from django.contrib.auth.models import User

from .models import Thread

MAX_TITLE = 200


def create_thread(owner: User, title: str = "") -> Thread:
    return Thread.objects.create(owner=owner, title=title[:MAX_TITLE])


def rename_thread(thread: Thread, title: str) -> Thread:
    thread.title = title[:MAX_TITLE]
    thread.save(update_fields=["title", "updated_at"])
    return thread


def delete_thread(thread: Thread) -> None:
    """Delete the thread with its messages, actions and pieces (usage rows are kept, detached)."""
    thread.delete()
